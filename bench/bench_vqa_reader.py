"""The medical VQA reader (kit.vqa.read, kit.images.open_dataset_image) on generated probes: rows of the four schemas,
each made valid or broken by one change drawn at random, with the verdict that change calls for written down beside it
(kept, dropped, or an error naming the row), independently of the reader's code. Probes with an even index are the
half the reader may be tuned on; the odd half is reported apart, as cases it was not tuned on.

    python bench/bench_vqa_reader.py            # prints, per half: false rejections, false acceptances, wrong reasons

A false rejection is a usable row dropped or stopped; a false acceptance a broken row kept; a wrong reason a broken
row caught for another reason than its own (a row dropped where an error was due, or the reverse); a misread a usable
row kept with another reading (question, answer, closed or open, PMC-VQA's options and gold letter) than it was made with.
"""

from __future__ import annotations

import io
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit import vqa  # noqa: E402
from kit.sources import DataError  # noqa: E402

QUESTIONS = ["Is the lesion on the left?", "Where is the abnormality?", "病灶位于哪一侧？", "Is there a fracture?",
             "What organ is shown?", "how many nodules are there?", "Is this a CT image?", "该图像是什么成像方式？"]
ANSWERS = ["Yes", "no", "Left lung", "右侧", "2", "Liver", "CT", "是"]


def png(rng: random.Random, size=None) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size or (rng.randint(8, 96), rng.randint(8, 96)), tuple(rng.randrange(256) for _ in range(3))).save(
        out, format="PNG")
    return out.getvalue()


def base_row(schema: str, rng: random.Random, image) -> dict:
    q, a = rng.choice(QUESTIONS), rng.choice(ANSWERS)
    if schema == "slake":
        return {"img_name": image, "question": q, "answer": a, "answer_type": rng.choice(["OPEN", "CLOSED"]),
                "q_lang": "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in q) else "en", "qid": rng.randrange(9999)}
    if schema in ("vqa_rad", "path_vqa"):
        return {"image": image, "question": q, "answer": a}
    choices = rng.sample(["Left", "Right", "Both", "Neither", "CT", "MRI"], 4)
    gold = rng.choice("ABCD")
    return {"Figure_path": image, "Question": q, "Answer": choices["ABCD".index(gold)],
            **{f"Choice {x}": f"{x}:{c}" for x, c in zip("ABCD", choices)}, "Answer_label": gold}


def expected_fields(schema: str, row: dict, choices: dict | None) -> dict:
    """What a kept row must read as, from how the probe made it (not from the reader): its question and answer, closed
    or open (SLAKE's answer type; VQA-RAD's and PathVQA's yes/no answers), PMC-VQA's option texts and gold letter."""
    if schema == "pmc_vqa":
        return {"question": row["Question"].strip(), "options": choices, "gold": row["Answer_label"], "closed": True}
    closed = row["answer_type"].strip().upper() == "CLOSED" if schema == "slake" else row["answer"] in ("Yes", "no", "是")
    return {"question": row["question"].strip(), "answer": row["answer"].strip(), "closed": closed}


def image_value(form: str, schema: str, rng: random.Random, root: Path, i: int):
    """An image in one of the forms datasets give (as the schema holds it: a path for SLAKE and PMC-VQA)."""
    data = png(rng)
    if schema in ("slake", "pmc_vqa") or form == "path":
        folder = rng.choice(["", "imgs", "images"])
        rel = f"p{i}/source.png" if schema == "slake" else f"p{i}.png"
        (root / folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / folder / rel).write_bytes(data)
        return rel if schema != "vqa_rad" else {"bytes": None, "path": rel}
    if form == "pil":
        from PIL import Image
        return Image.open(io.BytesIO(data))
    return data if form == "bytes" else {"bytes": data, "path": f"p{i}.png"}


TEXT = {"slake": ["question", "answer"], "vqa_rad": ["question", "answer"], "path_vqa": ["question", "answer"],
        "pmc_vqa": ["Question", "Answer", "Choice A", "Choice B"]}


def probe(i: int, rng: random.Random, root: Path):
    """(schema, rows, expected, change): the rows to read (the probed row last) and the verdict its change calls for: 'keep',
    'drop', or 'error'."""
    schema = rng.choice(list(vqa.SCHEMAS))
    form = rng.choice(["pil", "bytes", "feature", "path"])
    row = base_row(schema, rng, image_value(form, schema, rng, root, i))
    field = vqa.IMAGE_FIELD[schema]
    choices = {x: row[f"Choice {x}"].split(":", 1)[1] for x in "ABCD"} if schema == "pmc_vqa" else None
    change = rng.choice(["none", "none", "case", "choice_prefix", "two_choices", "big_ok", "empty", "blank", "missing",
                         "not_string", "think", "chat_token", "bad_type", "bad_label", "duplicate", "image_missing",
                         "image_corrupt", "image_truncated", "image_oversized", "image_none", "image_not_image"])
    rows = [row]
    col = rng.choice(TEXT[schema])
    if change in ("none", "case"):
        if change == "case" and schema == "slake":
            row["answer_type"] = rng.choice([" closed", "Open ", "CLOSED\n"])
        return schema, rows, ("keep", expected_fields(schema, row, choices)), change
    if change == "choice_prefix":
        if schema == "pmc_vqa":
            for x in "ABCD":
                text = row[f"Choice {x}"].split(":", 1)[1]
                row[f"Choice {x}"] = rng.choice([f"{x}: {text}", f"{x}.{text}", f"{x}) {text}", text, f" {x}:{text} "])
        return schema, rows, ("keep", expected_fields(schema, row, choices)), change
    if change == "two_choices":
        if schema == "pmc_vqa":
            row["Choice C"], row["Choice D"] = rng.choice([(None, None), ("", ""), (None, "")])
            row["Answer_label"] = rng.choice("AB")
            choices = {"A": choices["A"], "B": choices["B"]}
        return schema, rows, ("keep", expected_fields(schema, row, choices)), change
    if change == "big_ok":
        data = png(rng, (rng.randint(4000, 8192), rng.randint(2, 8)))
        rel = f"big{i}.png"
        (root / rel).write_bytes(data)
        row[field] = rel if schema in ("slake", "pmc_vqa") else rng.choice([data, {"bytes": None, "path": rel}])
        return schema, rows, ("keep", expected_fields(schema, row, choices)), change
    if change in ("empty", "blank", "missing", "not_string", "think", "chat_token"):
        if change == "missing":
            row.pop(col)
        else:
            row[col] = {"empty": "", "blank": rng.choice([" ", "\n\t"]), "not_string": rng.choice([3, 2.5, ["x"], True]),
                        "think": f"{row[col]} </think> x", "chat_token": rng.choice(["<|im_end|>", "<|im_start|>",
                                                                                      "<|endoftext|>", "<think>"]) + row[col]}[change]
        return schema, rows, "drop", change
    if change == "bad_type":
        if schema != "slake":
            row["question"] = row.get("question", row.get("Question"))  # no answer type to break: a plain valid row
            return schema, rows, ("keep", expected_fields(schema, row, choices)), "none"
        row["answer_type"] = rng.choice(["MAYBE", "yes/no", "OTHER"])
        return schema, rows, "drop", change
    if change == "bad_label":
        if schema != "pmc_vqa":
            return schema, rows, ("keep", expected_fields(schema, row, choices)), "none"
        if rng.random() < 0.5:
            row["Answer_label"] = rng.choice(["E", "Z", "AB"])
        else:
            row["Choice D"], row["Answer_label"] = None, "D"
        return schema, rows, "drop", change
    if change == "duplicate":
        rows = [dict(row), row]
        return schema, rows, "drop", change
    if change == "image_missing":
        row[field] = f"gone{i}.png" if schema in ("slake", "pmc_vqa") else {"bytes": None, "path": f"gone{i}.png"}
        return schema, rows, "error", change
    if change in ("image_corrupt", "image_truncated", "image_not_image"):
        data = {"image_corrupt": bytes(rng.randrange(256) for _ in range(64)), "image_truncated": png(rng, (64, 64))[:60],
                "image_not_image": b"Figure legend: not an image\n"}[change]
        rel = f"bad{i}.png"
        (root / rel).write_bytes(data)
        row[field] = rel if schema in ("slake", "pmc_vqa") else rng.choice([data, {"bytes": data, "path": rel}, rel])
        return schema, rows, "error", change
    if change == "image_oversized":
        data = png(rng, (rng.randint(8193, 12000), 4))
        rel = f"huge{i}.png"
        (root / rel).write_bytes(data)
        row[field] = rel if schema in ("slake", "pmc_vqa") else rng.choice([data, {"bytes": None, "path": rel}])
        return schema, rows, "error", change
    row[field] = rng.choice([None, 7, "", {"bytes": None, "path": None}])  # image_none
    return schema, rows, "error", change


def verdict(rows, schema_of, root: Path, out: Path, fields: dict | None) -> str:
    """'keep' (and read as the probe made it), 'misread' (kept, with another reading), 'drop', or 'error'."""
    try:
        checked = vqa.read(rows, schema_of, "probe.jsonl", [root], out)
    except DataError as e:
        if "no usable rows" in str(e):
            return "drop"
        return "error" if f"row {len(rows)}" in str(e) and "probe.jsonl" in str(e) else "error (wrong row)"
    if len(checked.rows) < len(rows):
        return "drop"
    got = checked.rows[-1]
    return "keep" if fields is None or all(got.get(k) == v for k, v in fields.items()) else "misread"


def main(n: int = 800, seed: int = 0) -> dict:
    rng = random.Random(seed)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tally = {"tune": Counter(), "held-out": Counter()}
        misses = {"tune": [], "held-out": []}
        changes = {"tune": Counter(), "held-out": Counter()}
        for i in range(n):
            root = Path(tmp) / f"probe{i}"
            root.mkdir()
            schema, rows, expected, change = probe(i, rng, root)
            expected, fields = expected if isinstance(expected, tuple) else (expected, None)
            got = verdict(rows, schema, root, root / "out", fields)
            half = "tune" if i % 2 == 0 else "held-out"
            t = tally[half]
            t["probes"] += 1
            changes[half][change] += 1
            t[f"expected {expected}"] += 1
            if expected == "keep" and got == "misread":
                t["misread"] += 1
            elif expected == "keep" and got != "keep":
                t["false rejections"] += 1
            elif expected != "keep" and got == "keep":
                t["false acceptances"] += 1
            elif expected != got:
                t["wrong reason"] += 1
            if got != expected:
                misses[half].append({"probe": i, "schema": schema, "change": change, "expected": expected, "got": got})
        for half in tally:
            t = tally[half]
            report[half] = {k: t[k] for k in ("probes", "expected keep", "expected drop", "expected error",
                                              "false rejections", "false acceptances", "wrong reason", "misread")}
            report[half]["changes"] = dict(sorted(changes[half].items()))
            report[half]["misses"] = misses[half][:10]
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return report


if __name__ == "__main__":
    main()
