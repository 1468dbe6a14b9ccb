"""Medical visual question answering: the public sets in their own schemas (SLAKE, VQA-RAD, PathVQA, PMC-VQA), read
into one shape (question, answer, closed or open, options for a multiple-choice set, language, image), each image
checked and written once into the data folder, and formatted as SFT rows, RL problems and evaluation items.

An image comes as the dataset gives it: a Pillow image, bytes, the datasets library's `{"bytes", "path"}`, or a path
relative to the dataset (SLAKE's `img_name` under `imgs/`, PMC-VQA's `Figure_path` under `images/`). A missing,
corrupt or oversized image stops the stage with the file and the row; rows with unusable text are dropped and
counted, as for text data (kit.data).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .formatting import MCQ_INSTRUCTION, join_reasoning
from .images import open_dataset_image, store_png
from .sources import Checked, DataError, control_reason, text_reason

# The real datasets' columns (their own names), and the column holding the image.
SCHEMAS = {
    "slake": ["img_name", "question", "answer", "answer_type", "q_lang"],  # BoKelvin/SLAKE
    "vqa_rad": ["image", "question", "answer"],  # flaviagiammarino/vqa-rad
    "path_vqa": ["image", "question", "answer"],  # flaviagiammarino/path-vqa
    # xmcmic/PMC-VQA: choices as written there ("A:Left"), the gold letter in Answer_label
    "pmc_vqa": ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"],
}
IMAGE_FIELD = {"slake": "img_name", "vqa_rad": "image", "path_vqa": "image", "pmc_vqa": "Figure_path"}
# VQA-RAD and PathVQA mark no answer type: a yes/no answer is closed, as their papers count it
CLOSED_ANSWERS = {"yes", "no", "是", "否"}


def is_vqa(schema: str | None) -> bool:
    return schema in SCHEMAS


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


def row_reason(row: dict, schema: str) -> str | None:
    """Why a row's text is dropped (missing, empty or non-string fields, a gold letter that is not a choice, an answer
    type that is neither OPEN nor CLOSED, a think tag or chat token), or None. Duplicates are found by `read`."""
    text = [c for c in SCHEMAS[schema] if c != IMAGE_FIELD[schema]]
    optional = ("Choice C", "Choice D") if schema == "pmc_vqa" else ()  # PMC-VQA has two-choice questions
    for col in text:
        if (reason := text_reason(row, col)) and not (col in optional and row.get(col) in (None, "")):
            return reason
    if schema == "pmc_vqa" and row["Answer_label"].strip().upper() not in [x for x in "ABCD" if row.get(f"Choice {x}")]:
        return "field 'Answer_label' is not one of the choice letters"
    if schema == "slake" and row["answer_type"].strip().upper() not in ("OPEN", "CLOSED"):
        return "field 'answer_type' is neither OPEN nor CLOSED"
    return control_reason(row, [c for c in text if isinstance(row.get(c), str)])


def read(rows: list[dict], schema: str, source: str, roots: list[Path], out_dir: Path):
    """The usable rows of a source in one of the VQA schemas, each normalised with its image stored in `out_dir`
    (`image`, a path relative to it); the counts of dropped rows per reason and where each was first seen. A missing,
    corrupt or oversized image is a DataError naming the source, the row, the field and the file."""
    out = Checked(rows=[])
    seen: set = set()
    stored: dict = {}  # image reference → stored path: SLAKE asks many questions of one image
    for i, row in enumerate(rows):
        where = f"{source} row {i + 1}"
        if reason := row_reason(row, schema):
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
                image = open_dataset_image(row[field], roots)
            except ValueError as e:
                raise DataError(f"{where}, field '{field}': {e}") from None
            rel = store_png(image, out_dir)
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


def target_answer(item: dict) -> str:
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
                         {"role": "assistant", "content": join_reasoning(reasoning(item), target_answer(item), opened=False)}],
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
    return [as_eval(r, task_name(schema, r["language"], spec.task)) for r in checked_rows]


def counts(rows: list[dict]) -> dict:
    """Closed and open questions per language, as the data stage reports them."""
    c = Counter((r["language"], "closed" if r["closed"] else "open") for r in rows)
    return {f"{lang} {kind}": n for (lang, kind), n in sorted(c.items())}

