"""Medical visual question answering: the public sets in their own schemas (SLAKE, VQA-RAD, PathVQA, PMC-VQA), read
into one shape (question, answer, closed or open, options for a multiple-choice set, language, image), each image
checked and written once into the data folder, and formatted as SFT rows, RL problems and evaluation items.

An image comes as the dataset gives it: a Pillow image, bytes, the datasets library's `{"bytes", "path"}`, or a path
relative to the dataset (SLAKE's `img_name` under `imgs/`, PMC-VQA's `Figure_path` under `images/`). A missing,
corrupt or oversized image stops the stage with the file and the row; rows with unusable text are dropped and
counted, as for text data (kit.data).
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from pathlib import Path

from .formatting import CONTROL_STRINGS, MCQ_INSTRUCTION, join_reasoning
from .sources import Checked, DataError

# The real datasets' columns (their own names), and the column holding the image.
SCHEMAS = {
    "slake": ["img_name", "question", "answer", "answer_type", "q_lang"],  # BoKelvin/SLAKE
    "vqa_rad": ["image", "question", "answer"],  # flaviagiammarino/vqa-rad
    "path_vqa": ["image", "question", "answer"],  # flaviagiammarino/path-vqa
    # xmcmic/PMC-VQA: choices as written there ("A:Left"), the gold letter in Answer_label
    "pmc_vqa": ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"],
}
IMAGE_FIELD = {"slake": "img_name", "vqa_rad": "image", "path_vqa": "image", "pmc_vqa": "Figure_path"}
# where a dataset's relative image paths are found under its folder (SLAKE ships imgs/, PMC-VQA images/)
IMAGE_FOLDERS = ("", "imgs", "images")
# VQA-RAD and PathVQA mark no answer type: a yes/no answer is closed, as their papers count it
CLOSED_ANSWERS = {"yes", "no", "是", "否"}
MAX_IMAGE_SIDE = 8192  # pixels; whole-slide pathology needs tiling first, not one image of this size
MAX_IMAGE_MB = 64


def is_vqa(schema: str | None) -> bool:
    return schema in SCHEMAS


def open_image(value, roots: list[Path]):
    """The RGB Pillow image a dataset row holds (Pillow image, bytes, `{"bytes", "path"}`, or a path relative to one
    of `roots`) and its file name (or None); a ValueError saying why when there is none, or it is too large."""
    from PIL import Image

    name = None
    if isinstance(value, dict):  # the datasets library's Image feature, undecoded
        name = value.get("path")
        value = value.get("bytes") or value.get("path")
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, (bytes, bytearray)):
        image = _decode(io.BytesIO(value), name or "the image bytes")
    elif isinstance(value, str) and value.strip():
        name = value
        candidates = [Path(value)] if Path(value).is_absolute() else [r / f / value for r in roots for f in IMAGE_FOLDERS]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise ValueError(f"image file {value} not found (looked in {', '.join(sorted({str(p.parent) for p in candidates}))})")
        if path.stat().st_size > MAX_IMAGE_MB * 2**20:
            raise ValueError(f"image file {value} is {path.stat().st_size / 2**20:.0f} MB, above {MAX_IMAGE_MB} MB")
        image = _decode(path, value)
    else:
        raise ValueError(f"holds no image ({type(value).__name__})")
    if max(image.size) > MAX_IMAGE_SIDE:
        raise ValueError(f"image {name or '(bytes)'} is {image.size[0]}×{image.size[1]} pixels, above {MAX_IMAGE_SIDE} "
                         f"on a side: resize or tile it first")
    return image.convert("RGB"), name


def _decode(source, name: str):
    from PIL import Image

    try:
        image = Image.open(source)
        if max(image.size) > MAX_IMAGE_SIDE:  # read from the header: the pixels are not decoded
            return image
        image.load()
        return image
    except Exception as e:
        raise ValueError(f"image {name} cannot be read ({type(e).__name__}: {e})") from None


def store_image(image, out_dir: Path) -> str:
    """The image written once as PNG under `out_dir/images/` (named by its content, so an image that many questions
    share is stored once); its path relative to `out_dir`."""
    png = io.BytesIO()
    image.save(png, format="PNG")
    data = png.getvalue()
    rel = f"images/{hashlib.sha1(data).hexdigest()[:16]}.png"
    path = out_dir / rel
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return rel


def _text(row: dict, col: str) -> str | None:
    """Why a text field is unusable, or None."""
    value = row.get(col)
    if value is None:
        return f"missing field '{col}'"
    if not isinstance(value, str):
        return f"field '{col}' is not a string ({type(value).__name__})"
    if not value.strip():
        return f"empty field '{col}'"
    return None


def _choice(text: str, letter: str) -> str:
    """PMC-VQA writes each choice with its letter ("A:Left", "A: Left"); the option's text alone."""
    text = text.strip()
    for sep in (":", ".", ")"):
        if text[:2].upper() == f"{letter}{sep}":
            return text[2:].strip()
    return text


def normalise(row: dict, schema: str) -> dict:
    """A row of one of the sets as one shape: question, answer, closed, language, options and gold (PMC-VQA), and the
    fields SLAKE describes its image with (modality, location), where there."""
    if schema == "pmc_vqa":
        options = {x: _choice(row[f"Choice {x}"], x) for x in "ABCD" if isinstance(row.get(f"Choice {x}"), str)
                   and row[f"Choice {x}"].strip()}
        gold = row["Answer_label"].strip().upper()
        return {"question": row["Question"].strip(), "answer": options.get(gold, row["Answer"].strip()), "closed": True,
                "options": options, "gold": gold, "language": "en"}
    answer = row["answer"].strip()
    closed = (row["answer_type"].strip().upper() == "CLOSED") if schema == "slake" else answer.lower() in CLOSED_ANSWERS
    out = {"question": row["question"].strip(), "answer": answer, "closed": closed,
           "language": row["q_lang"].strip() if schema == "slake" else "en"}
    for key in ("modality", "location"):
        if isinstance(row.get(key), str) and row[key].strip():
            out[key] = row[key].strip()
    return out


def row_reason(row: dict, schema: str, seen: set) -> str | None:
    """Why a row's text is dropped (missing, empty or non-string fields, a gold letter that is not a choice, a think tag
    or chat token, a duplicate of another row's question about the same image), or None."""
    for col in SCHEMAS[schema]:
        if col != IMAGE_FIELD[schema] and (reason := _text(row, col)):
            if not (schema == "pmc_vqa" and col in ("Choice C", "Choice D") and row.get(col) in (None, "")):
                return reason
    if schema == "pmc_vqa" and row["Answer_label"].strip().upper() not in [x for x in "ABCD" if row.get(f"Choice {x}")]:
        return "field 'Answer_label' is not one of the choice letters"
    if schema == "slake" and row["answer_type"].strip().upper() not in ("OPEN", "CLOSED"):
        return "field 'answer_type' is neither OPEN nor CLOSED"
    for col in SCHEMAS[schema]:
        if isinstance(row.get(col), str) and (tag := next((t for t in CONTROL_STRINGS if t in row[col]), None)):
            return f"field '{col}' contains '{tag}'"
    return None


def read(rows: list[dict], schema: str, source: str, roots: list[Path], out_dir: Path):
    """The usable rows of a source in one of the VQA schemas, each normalised with its image stored in `out_dir`
    (`image`, a path relative to it); the counts of dropped rows per reason and where each was first seen. A missing,
    corrupt or oversized image is a DataError naming the source, the row, the field and the file."""
    out = Checked(rows=[])
    seen: set = set()
    stored: dict = {}  # image reference → stored path: SLAKE asks many questions of one image
    for i, row in enumerate(rows):
        where = f"{source} row {i + 1}"
        if reason := row_reason(row, schema, seen):
            out.dropped[reason] += 1
            out.first_bad.setdefault(reason, where)
            continue
        field = IMAGE_FIELD[schema]
        if field not in row or row[field] is None:
            raise DataError(f"{where}: missing field '{field}' (the image)")
        ref = _reference(row[field])
        if ref is not None and ref in stored:
            rel = stored[ref]
        else:
            try:
                image, _ = open_image(row[field], roots)
            except ValueError as e:
                raise DataError(f"{where}, field '{field}': {e}") from None
            rel = store_image(image, out_dir)
            if ref is not None:
                stored[ref] = rel
        item = {**normalise(row, schema), "image": rel}
        key = (item["question"], rel)
        if key in seen:
            out.dropped["duplicate row"] += 1
            out.first_bad.setdefault("duplicate row", where)
            continue
        seen.add(key)
        out.rows.append(item)
    if not out.rows:
        detail = "; ".join(f"{r} (first at {w})" for r, w in out.first_bad.items()) or "the source is empty"
        raise DataError(f"no usable rows in {source}: {detail}. Expected columns: {', '.join(SCHEMAS[schema])}")
    return out


def _reference(value) -> str | None:
    """A key for an image given by path (a path names the same image every time), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("path"), str) and not value.get("bytes"):
        return value["path"]
    return None


def prompt_text(item: dict) -> str:
    """The question as the model is asked it: a multiple-choice set's options and the kit's instruction to answer
    with a letter; an open or closed question as written."""
    if not item.get("options"):
        return item["question"]
    lines = [item["question"], ""] + [f"{k}. {v}" for k, v in sorted(item["options"].items())]
    return "\n".join(lines + ["", MCQ_INSTRUCTION])


def final_answer(item: dict) -> str:
    return f"The answer is {item['gold']}." if item.get("gold") else item["answer"]


def reasoning(item: dict) -> str:
    """A short reasoning for an SFT target. The VQA sets give an answer and no reasoning, so this names what the
    row says of its image (SLAKE's modality and organ, where given) and reads the answer from it: SFT teaches the
    format and the answers; reasoning at length is GRPO's to grow, as in Unsloth's vision GRPO notebook."""
    zh = item["language"] == "zh"
    seen = [item[k] for k in ("modality", "location") if item.get(k)]
    answer = item["options"][item["gold"]] if item.get("gold") else item["answer"]
    if zh:
        what = f"这是一张{'的'.join(reversed(seen))}图像。" if seen else ""
        return f"{what}问题问的是图像中所见。观察图像，答案是：{answer}。"
    what = f"This is {' of the '.join(seen)} image. " if seen else ""
    return f"{what}The question asks what the image shows. Reading the image, the answer is: {answer}."


def as_sft(item: dict) -> dict:
    """An SFT row: the question asked of the image, then `<think>` reasoning `</think>` and the answer."""
    return {"messages": [{"role": "user", "content": prompt_text(item)},
                         {"role": "assistant", "content": join_reasoning(reasoning(item), final_answer(item), opened=False)}],
            "images": [item["image"]], "language": item["language"], "closed": item["closed"]}


def as_rl(item: dict) -> dict:
    """An RL problem: the prompt with its image, and the reference a reward checks: the gold letter, the closed
    answer (checked by the rule), or the open answer (for the judge, which sees only the conclusion)."""
    return {"prompt": [{"role": "user", "content": prompt_text(item)}], "images": [item["image"]],
            "question": item["question"], "reference": item.get("gold") or item["answer"], "closed": item["closed"],
            "language": item["language"]}


def as_eval(item: dict, task: str) -> dict:
    """An evaluation item: the RL problem's fields, its task (per language for SLAKE) and, for a multiple-choice set,
    its options and gold letter."""
    out = {**as_rl(item), "task": task, "gold": item.get("gold") or item["answer"]}
    if item.get("options"):
        out["options"] = item["options"]
    return out


def task_name(schema: str, language: str, spec_task: str | None) -> str:
    """
    >>> task_name("slake", "zh", None), task_name("vqa_rad", "en", None), task_name("slake", "en", "mine")
    ('slake_zh', 'vqa_rad', 'mine')
    """
    if spec_task:
        return spec_task
    return f"slake_{language}" if schema == "slake" else schema


def format_source(kind: str, checked_rows: list[dict], schema: str, spec) -> list[dict]:
    """The rows of one VQA source as examples of one kind of data (sft, rl or mcq)."""
    if kind == "sft":
        return [as_sft(r) for r in checked_rows]
    if kind == "rl":
        return [as_rl(r) for r in checked_rows]
    return [as_eval(r, task_name(schema, r["language"], getattr(spec, "task", None))) for r in checked_rows]


def counts(rows: list[dict]) -> dict:
    """Closed and open questions per language, as the data stage reports them."""
    c = Counter((r["language"], "closed" if r["closed"] else "open") for r in rows)
    return {f"{lang} {kind}": n for (lang, kind), n in sorted(c.items())}

