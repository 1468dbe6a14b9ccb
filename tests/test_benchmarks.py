"""lm-evaluation-harness's task definitions as the kit's eval items: every task the recipes name, offline
on its bundled items; the errors a user meets; the harness's own protocols on known inputs."""

import json

import pytest

from kit.runs import SAMPLES_DIR
from kit import benchmarks, data, sources
from kit.recipe import DatasetSpec, load_recipe

TINY = [s.path for s in load_recipe("tiny").data.eval if benchmarks.is_harness(s)]


@pytest.mark.parametrize("path", TINY)
def test_every_task_reads_its_bundled_items_through_the_harness(path):
    items, label = benchmarks.items(DatasetSpec(path), offline=True)
    name = path.removeprefix("harness:")
    assert items and "offline" in label and name in label
    config = benchmarks.config(name)
    for i, it in enumerate(items):
        assert it["gold"] in it["options"] and len(it["options"]) >= 3
        assert it["doc_id"] == i and it["task"] == name and it["protocol"] == config["output_type"]
        text = it["prompt"][0]["content"]
        if config.get("description"):
            assert text.startswith(config["description"].strip())  # the harness's own words first
        if it["protocol"] == "multiple_choice":  # the kit asks for an answer form after the harness's cue
            assert text.endswith(benchmarks.INSTRUCTION[it["language"]])
        else:  # the harness's own prompt already asks for one, as its filter reads it
            assert text.endswith(("Let's think step by step.", "让我们一步一步地思考。")), text[-60:]
    assert {it["language"] for it in items} == {"zh" if name.startswith(("cmmlu", "ceval", "mmlu_prox_zh")) else "en"}


def test_word_choices_are_lettered_before_the_answer_cue():
    items, _ = benchmarks.items(DatasetSpec("harness:pubmedqa"), offline=True)
    assert items[0]["options"] == {"A": "yes", "B": "no", "C": "maybe"}
    assert "\nA. yes\nB. no\nC. maybe\nAnswer:" in items[0]["question"]
    golds = [json.loads(line)["final_decision"] for line in (SAMPLES_DIR / "pubmedqa.jsonl").read_text().splitlines()]
    assert [it["options"][it["gold"]] for it in items] == golds


def test_an_unknown_task_names_the_close_ones():
    with pytest.raises(data.DataError, match=r"has no task 'medmcqa_x'; did you mean medmcqa"):
        benchmarks.config("medmcqa_x")


def test_a_row_the_harness_cannot_read_is_named(tmp_path, monkeypatch):
    rows = (SAMPLES_DIR / "medmcqa.jsonl").read_text().splitlines()
    broken = json.loads(rows[1])
    del broken["opd"]
    (tmp_path / "medmcqa.jsonl").write_text("\n".join([rows[0], json.dumps(broken)]) + "\n")
    monkeypatch.setattr(sources, "SAMPLES_DIR", tmp_path)  # where bundled samples are read
    with pytest.raises(data.DataError, match=r"harness:medmcqa .* row 2: option D is empty \(a missing column"):
        benchmarks.items(DatasetSpec("harness:medmcqa"), offline=True)


def test_a_harness_task_is_evaluation_data_only():
    with pytest.raises(data.DataError, match="harness:medmcqa: a harness task is an evaluation source"):
        data.prepare_kind("sft", [DatasetSpec("harness:medmcqa")], None, 512, 1, offline=True)


def test_the_harness_filter_reads_its_own_forms_only():
    # MMLU-ProX zh's custom-extract wants "答案是 (X)" with its space; the kit's reader reads both
    assert benchmarks.harness_filter("mmlu_prox_zh_health", ["所以答案是 (B)", "答案是B", ""]) == ["B", None, None]
    assert benchmarks.harness_filter("mmlu_prox_en_biology", ["so the answer is (C).", "C"]) == ["C", None]
    assert benchmarks.filter_name("mmlu_pro_biology") == "custom-extract"


def test_log_likelihood_scores_exactly_the_items_asked_for(runs_dir):
    from kit.modeling import load_model

    recipe = load_recipe("tiny")
    loaded = load_model(recipe, trainable=False)
    picks = benchmarks.loglikelihood(loaded.model, loaded.tokenizer, {"medmcqa": [0, 3], "pubmedqa": [2]},
                                     offline=True, max_length=recipe.model.max_seq_length)
    assert set(picks["medmcqa"]) == {0, 3} and set(picks["pubmedqa"]) == {2}
    assert set(picks["medmcqa"].values()) <= set("ABCD") and picks["pubmedqa"][2] in "ABC"


def test_without_lm_eval_a_harness_source_says_what_to_install(monkeypatch):
    import sys

    benchmarks.manager.cache_clear()
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)  # import lm_eval.tasks now fails as if not installed
    try:
        with pytest.raises(data.DataError, match=r"needs lm-evaluation-harness.*pip install lm_eval"):
            benchmarks.items(DatasetSpec("harness:medmcqa"), offline=True)
    finally:
        benchmarks.manager.cache_clear()
