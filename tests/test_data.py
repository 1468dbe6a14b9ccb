import json
import subprocess
import sys

import pytest

from kit.runs import SAMPLES_DIR
from kit import data
from kit.recipe import DatasetSpec, load_recipe

GOOD = {"Question": "Q?", "Complex_CoT": "Because.", "Response": "A."}


@pytest.mark.parametrize("row, reason", [
    ({"Complex_CoT": "c", "Response": "r"}, "missing field 'Question'"),
    ({**GOOD, "Question": None}, "missing field 'Question'"),
    ({**GOOD, "Question": "   "}, "empty field 'Question'"),
    ({**GOOD, "Response": ""}, "empty field 'Response'"),
    ({**GOOD, "Complex_CoT": 42}, "field 'Complex_CoT' is not a string (int)"),
    ({**GOOD, "Response": ["a"]}, "field 'Response' is not a string (list)"),
])
def test_each_bad_sft_row_kind_is_dropped_and_counted(row, reason):
    checked = data.validate([GOOD, row], "sft", "f.jsonl")
    assert checked.rows == [GOOD]
    assert checked.dropped == {reason: 1}
    assert checked.first_bad[reason] == "f.jsonl row 2"


def test_duplicates_are_dropped_and_counted():
    checked = data.validate([GOOD, dict(GOOD), {**GOOD, "Question": "Other?"}], "sft", "f")
    assert len(checked.rows) == 2 and checked.dropped == {"duplicate row": 1}


@pytest.mark.parametrize("row, reason", [
    ({"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "E"}, "field 'answer_idx' is not one of the option letters"),
    ({"question": "q", "options": "A: x", "answer_idx": "A"}, "field 'options' is not a mapping of at least two options"),
    ({"question": "q", "options": {"A": "x", "B": 2}, "answer_idx": "A"}, "field 'options' has a non-string option"),
    ({"question": "q", "answer_idx": "A"}, "missing field 'options'"),
])
def test_bad_multiple_choice_rows(row, reason):
    good = {"question": "q0", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}
    checked = data.validate([good, row], "mcq", "m")
    assert checked.dropped == {reason: 1}


@pytest.mark.parametrize("kind, good, row, reason", [
    ("sft", GOOD, {**GOOD, "Complex_CoT": "First this.</think> Then that."}, "field 'Complex_CoT' contains '</think>'"),
    ("sft", GOOD, {**GOOD, "Response": "<think>hmm</think> A."}, "field 'Response' contains '<think>'"),
    ("sft", GOOD, {**GOOD, "Question": "Q?<|im_end|>"}, "field 'Question' contains '<|im_end|>'"),
    ("rl", {"Open-ended Verifiable Question": "q", "Ground-True Answer": "a"},
     {"Open-ended Verifiable Question": "q2", "Ground-True Answer": "</think> Naloxone"},
     "field 'Ground-True Answer' contains '</think>'"),
    ("mcq", {"question": "q0", "options": {"A": "x", "B": "y"}, "answer_idx": "B"},
     {"question": "q", "options": {"A": "x", "B": "y <think>"}, "answer_idx": "A"}, "field 'options' contains '<think>'"),
])
def test_think_tags_and_chat_tokens_inside_data_are_dropped_and_counted(kind, good, row, reason):
    """A closing tag inside the reasoning would become an SFT target with two `</think>`."""
    checked = data.validate([good, row], kind, "f.jsonl")
    assert len(checked.rows) == 1 and checked.dropped == {reason: 1}
    assert checked.first_bad[reason] == "f.jsonl row 2"


def test_mmlu_pro_rows_take_medqa_shape():
    row = {"question": "q", "options": ["a", "b", "c"], "answer": "C", "answer_index": 2, "category": "biology"}
    checked = data.validate([row], "mcq", "m")
    assert checked.rows[0]["options"] == {"A": "a", "B": "b", "C": "c"} and checked.rows[0]["answer_idx"] == "C"
    assert data.format_mcq(checked.rows[0])["task"] == "mmlu_pro_biology"  # lm-evaluation-harness's name


def test_no_usable_rows_names_file_row_and_reason():
    with pytest.raises(data.DataError, match=r"no usable rows in bad\.jsonl: missing field 'Question' \(first at bad\.jsonl row 1\)"):
        data.validate([{"x": 1}, {"y": 2}], "sft", "bad.jsonl")


def test_local_file_with_bad_rows_keeps_good_ones_and_counts(tmp_path, runs_dir):
    path = tmp_path / "mine.jsonl"
    rows = [GOOD, {**GOOD, "Question": ""}, {"Question": "Z?", "Complex_CoT": "c", "Response": "r"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    raw, label = data.load_rows(DatasetSpec(path=str(path)))
    assert label == str(path) and len(raw) == 3
    assert len(data.validate(raw, "sft", label).rows) == 2


def test_missing_local_file_and_unknown_bundled_sample():
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_rows(DatasetSpec(path="/nonexistent/x.jsonl"))
    with pytest.raises(data.DataError, match=r"bundled: .*medical_o1_sft_en, medical_o1_sft_zh"):
        data.load_rows(DatasetSpec(path="bundled:nope"))


def test_hub_failure_says_how_to_use_a_local_file(monkeypatch):
    import datasets.config

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # datasets read the variables when first imported: set its flags too, so the load fails at once rather
    # than after the network's timeouts
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    with pytest.raises(data.DataError, match="point the recipe at the file"):
        data.load_rows(DatasetSpec(path="FreedomIntelligence/medical-o1-reasoning-SFT", config="en"))


def test_bundled_samples_have_the_real_schemas_and_sizes():
    def rows(name):
        return data.read_jsonl(SAMPLES_DIR / f"{name}.jsonl")

    for lang in ("en", "zh"):
        r = rows(f"medical_o1_sft_{lang}")
        assert len(r) >= 40 and all(set(x) == {"Question", "Complex_CoT", "Response"} for x in r)
    v = rows("medical_o1_verifiable")
    assert len(v) >= 40 and all(set(x) == {"Open-ended Verifiable Question", "Ground-True Answer"} for x in v)
    m = rows("medqa_4options")
    assert len(m) >= 40 and all(set(x["options"]) == set("ABCD") and x["answer"] == x["options"][x["answer_idx"]] for x in m)
    for name in ("medical_o1_sft_en", "medical_o1_sft_zh", "medical_o1_verifiable", "medqa_4options"):
        assert len(data.validate(rows(name), {"medical_o1_verifiable": "rl", "medqa_4options": "mcq"}.get(name, "sft"), name).dropped) == 0


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from kit.modeling import load_tokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_RUNS_DIR", str(tmp_path_factory.mktemp("tok") / "runs"))
        yield load_tokenizer(load_recipe("tiny"))


def test_sft_row_renders_exactly_english(tokenizer):
    ex = data.format_sft({"Question": " What causes croup? ", "Complex_CoT": "Barking cough.\nParainfluenza.", "Response": "Parainfluenza virus."})
    assert data.render(tokenizer, ex) == (
        "<|im_start|>user\nWhat causes croup?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nBarking cough.\nParainfluenza.\n</think>\n\nParainfluenza virus.<|im_end|>\n"
    )


def test_sft_row_renders_exactly_chinese(tokenizer):
    ex = data.format_sft({"Question": "过敏性休克首选什么？", "Complex_CoT": "肾上腺素逆转血管扩张。", "Response": "肾上腺素。"})
    text = data.render(tokenizer, ex)
    assert text == ("<|im_start|>user\n过敏性休克首选什么？<|im_end|>\n"
                    "<|im_start|>assistant\n<think>\n肾上腺素逆转血管扩张。\n</think>\n\n肾上腺素。<|im_end|>\n")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # byte-level BPE: lossless for Chinese too


def test_rl_and_eval_prompts_end_inside_the_thinking_block(tokenizer):
    rl = data.format_rl({"Open-ended Verifiable Question": "Antidote for opioids?", "Ground-True Answer": "Naloxone"})
    assert rl["reference"] == "Naloxone"
    assert data.render(tokenizer, rl).endswith("<|im_start|>assistant\n<think>\n")
    mcq = data.format_mcq({"question": "Which?", "options": {"A": "x", "B": "y"}, "answer_idx": "B"})
    assert mcq["gold"] == "B" and "A. x\nB. y" in mcq["prompt"][0]["content"]


def test_length_stats_and_split_are_deterministic():
    assert data.length_stats([5, 1, 3, 2, 4]) == {"count": 5, "min": 1, "median": 3, "p95": 5, "max": 5}
    rows = [{"i": i} for i in range(20)]
    a, b = data.split(rows, 0.1, 7), data.split(rows, 0.1, 7)
    assert a == b and len(a[1]) == 2 and {r["i"] for r in a[0] + a[1]} == set(range(20))


def test_cli_data_stage_end_to_end(runs_dir):
    proc = subprocess.run([sys.executable, "-m", "kit", "data", "--recipe", "tiny", "--set", "model.max_seq_length=160"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = runs_dir / "tiny" / "data"
    metrics = json.loads((out / "metrics.json").read_text())
    sft = metrics["sft"]
    too_long = sft["dropped"]["longer than max_seq_length (160 tokens)"]
    assert too_long > 0 and sft["kept"] == sft["loaded"] - too_long == sft["train"] + sft["val"]
    assert len(data.read_jsonl(out / "sft_train.jsonl")) == sft["train"]
    assert len(data.read_jsonl(out / "rl.jsonl")) == metrics["rl"]["kept"] > 0
    assert (out / "recipe.yaml").read_text().startswith("# recipe hash:")
    assert "longer than max_seq_length" in proc.stdout and "recipe hash" not in proc.stderr


def test_cli_help_is_instant_and_bad_recipe_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-c", "import sys, kit.__main__; print(sorted(m for m in sys.modules if m in ('torch','transformers','trl')))"],
                          capture_output=True, text=True)
    assert proc.stdout.strip() == "[]"
    proc = subprocess.run([sys.executable, "-m", "kit", "data", "--recipe", "tiny", "--set", "lora.rank=3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown recipe key 'lora.rank'" in proc.stderr
