"""Medical VQA sources (kit/vqa.py): the four sets' schemas read into one shape, images in every form a dataset gives
them, and a missing, corrupt or oversized image stopped with the file and the row."""

import io
import json

import pytest
from PIL import Image

from kit import vqa
from kit.recipe import DatasetSpec
from kit.runs import SAMPLES_DIR
from kit.sources import DataError, image_roots, load_rows


def png_bytes(size=(32, 32), colour=(200, 10, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("name", ["slake", "vqa_rad", "path_vqa", "pmc_vqa", "slake_test", "pmc_vqa_test"])
def test_every_bundled_sample_reads_and_its_images_are_stored_once(tmp_path, name):
    spec = DatasetSpec(f"bundled:{name}")
    rows, label = load_rows(spec)
    checked = vqa.read(rows, name.removesuffix("_test"), label, image_roots(spec), tmp_path)
    assert len(checked.rows) == len(rows) and not checked.dropped
    stored = {r["image"] for r in checked.rows}
    assert len(stored) == len(list((tmp_path / "images").iterdir()))  # one file per distinct image
    assert len(stored) < len(rows) or name.startswith("pmc")  # SLAKE, VQA-RAD, PathVQA ask several questions of one
    closed = [r for r in checked.rows if r["closed"]]
    assert closed and all(r["answer"].lower() in vqa.CLOSED_ANSWERS or r.get("gold") for r in closed)


def test_slake_keeps_its_languages_and_answer_types(tmp_path):
    rows, label = load_rows(DatasetSpec("bundled:slake"))
    checked = vqa.read(rows, "slake", label, image_roots(DatasetSpec("bundled:slake")), tmp_path)
    assert set(vqa.counts(checked.rows)) == {"en closed", "en open", "zh closed", "zh open"}
    (task,) = {vqa.task_name("slake", r["language"], None) for r in checked.rows if r["language"] == "zh"}
    assert task == "slake_zh"


def test_pmc_vqa_choices_lose_their_letter_prefix_and_the_gold_letter_is_kept(tmp_path):
    row = {"Figure_path": "f.png", "Question": "Which?", "Answer": "Left", "Choice A": "A:Right", "Choice B": " B: Left",
           "Choice C": "C:Both", "Choice D": "D:None", "Answer_label": "B"}
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "f.png").write_bytes(png_bytes())
    (item,) = vqa.read([row], "pmc_vqa", "pmc.csv", [tmp_path], tmp_path / "out").rows
    assert item["options"] == {"A": "Right", "B": "Left", "C": "Both", "D": "None"} and item["gold"] == "B"
    sft = vqa.as_sft(item)
    assert sft["messages"][1]["content"].endswith("The answer is B.") and "B. Left" in sft["messages"][0]["content"]


@pytest.mark.parametrize("form", ["pil", "bytes", "feature", "path"])
def test_an_image_is_read_in_every_form_a_dataset_gives(tmp_path, form):
    data = png_bytes()
    (tmp_path / "x.png").write_bytes(data)
    value = {"pil": Image.open(io.BytesIO(data)), "bytes": data, "feature": {"bytes": data, "path": None},
             "path": "x.png"}[form]
    (item,) = vqa.read([{"image": value, "question": "is it red?", "answer": "yes"}], "vqa_rad", "rad", [tmp_path],
                       tmp_path / "out").rows
    stored = Image.open(tmp_path / "out" / item["image"])
    assert stored.size == (32, 32) and stored.convert("RGB").getpixel((0, 0)) == (200, 10, 10) and item["closed"]


@pytest.mark.parametrize("case, message", [
    ("missing", "image file gone.png not found"),
    ("corrupt", "cannot be read"),
    ("oversized", "above 8192 on a side"),
])
def test_a_bad_image_stops_the_stage_naming_the_source_row_field_and_file(tmp_path, case, message):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    big = io.BytesIO()
    Image.new("L", (9000, 8), 0).save(big, format="PNG")
    (tmp_path / "big.png").write_bytes(big.getvalue())
    ok = {"img_name": "ok.png", "question": "q", "answer": "Yes", "answer_type": "CLOSED", "q_lang": "en"}
    (tmp_path / "ok.png").write_bytes(png_bytes())
    name = {"missing": "gone.png", "corrupt": "bad.png", "oversized": "big.png"}[case]
    with pytest.raises(DataError) as e:
        vqa.read([ok, {**ok, "question": "q2", "img_name": name}], "slake", "slake/train.json", [tmp_path], tmp_path / "o")
    assert str(e.value).startswith("slake/train.json row 2, field 'img_name'") and message in str(e.value)
    assert name in str(e.value)


def test_rows_with_unusable_text_are_dropped_and_counted_not_fatal(tmp_path):
    (tmp_path / "ok.png").write_bytes(png_bytes())
    good = {"img_name": "ok.png", "question": "q", "answer": "Yes", "answer_type": "CLOSED", "q_lang": "en"}
    rows = [good, {**good, "answer": ""}, {**good, "answer_type": "MAYBE", "question": "q3"},
            {**good, "question": "a </think> b"}, dict(good)]
    checked = vqa.read(rows, "slake", "s", [tmp_path], tmp_path / "o")
    assert len(checked.rows) == 1
    assert checked.dropped == {"empty field 'answer'": 1, "field 'answer_type' is neither OPEN nor CLOSED": 1,
                               "field 'question' contains '</think>'": 1, "duplicate row": 1}
    assert checked.first_bad["duplicate row"] == "s row 5"


def test_the_samples_are_what_their_generator_writes(tmp_path):
    """The bundled files are the generator's output, byte for byte (rerun `python -m kit.vqa_samples` after a change)."""
    from kit.vqa_samples import write

    write(tmp_path)
    for name in ("slake", "vqa_rad", "path_vqa", "pmc_vqa"):
        assert (tmp_path / f"{name}.jsonl").read_text() == (SAMPLES_DIR / f"{name}.jsonl").read_text()
    row = json.loads((SAMPLES_DIR / "slake.jsonl").read_text().splitlines()[0])
    assert (SAMPLES_DIR / "slake" / "imgs" / row["img_name"]).is_file()


def test_the_reader_on_generated_probes_it_was_not_tuned_on():
    """bench/bench_vqa_reader.py: 800 rows of the four schemas, each valid or broken by one drawn change with its verdict
    written beside it; on the held-out half no usable row is rejected or misread and no broken one kept."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from bench_vqa_reader import main

    report = main()
    for half in ("tune", "held-out"):
        r = report[half]
        assert r["expected keep"] > 100 and r["expected drop"] > 100 and r["expected error"] > 80, r
        assert (r["false rejections"], r["false acceptances"], r["wrong reason"], r["misread"]) == (0, 0, 0, 0), r["misses"]
