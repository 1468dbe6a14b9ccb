"""lm-evaluation-harness beside the kit's eval: the local task file, the agreement of the two readers,
and a run through `kit serve` on the tiny model."""

import json
import subprocess
import sys

import pytest

from kit import harness
from kit.recipe import RecipeError, load_recipe
from child import failure


def _row(response, harness_pick, target, options=6):
    return {"doc": {"options": ["x"] * options}, "resps": [[response]], "filtered_resps": [harness_pick], "target": target}


def test_agreement_of_the_harness_filter_and_the_kit_reader_on_known_outputs():
    rows = [
        _row("The answer is (C).", "C", "C"),       # both read C, right
        _row("Answer: B", "[invalid]", "B"),        # the kit reads "Answer: X"; custom-extract needs "answer is"
        _row("No idea.", "[invalid]", "A"),         # neither reads a letter: they agree
        _row("the answer is D", "D", "A"),          # both read D, wrong
    ]
    got = harness.agreement({"t": rows})["t"]
    assert got == {"n": 4, "agreement": 0.75, "kit_accuracy": 0.5, "harness_accuracy": 0.25}


def test_offline_the_stock_task_reads_the_recipes_local_data(tmp_path):
    from lm_eval.tasks import TaskManager, get_task_dict

    recipe = load_recipe("tiny")
    names = harness.task_files(recipe, tmp_path)
    assert names == [f"mmlu_pro{x}_{c}_local" for x in ("", "x_en", "x_zh") for c in ("biology", "health")]
    spec = json.loads((tmp_path / "mmlu_pro_biology_local.yaml").read_text())  # JSON is YAML
    assert spec["include"].endswith("mmlu_pro/mmlu_pro_biology.yaml") and spec["dataset_path"] == "json"
    tasks = get_task_dict(names, TaskManager(include_path=str(tmp_path)))
    docs = list(tasks["mmlu_pro_biology_local"].test_docs())
    assert len(docs) == 6 and {d["category"] for d in docs} == {"biology"}  # the stock filter by category
    assert tasks["mmlu_pro_biology_local"].config.filter_list[0]["name"] == "custom-extract"
    assert harness.task_files(recipe, tmp_path, only=["mmlu_prox_zh_health"]) == ["mmlu_prox_zh_health_local"]
    with pytest.raises(RecipeError, match="medmcqa not among the recipe's generative tasks"):
        harness.task_files(recipe, tmp_path, only=["medmcqa"])  # multiple-choice: log-likelihood, in `kit eval`


def test_mmlu_pro_given_as_data_still_runs_under_the_stock_task(tmp_path):
    recipe = load_recipe("tiny", ["data.eval=[{path: 'bundled:mmlu_pro', where: {category: health}}]"])
    assert harness.task_files(recipe, tmp_path) == ["mmlu_pro_health_local"]


def test_a_hub_source_runs_the_stock_task(tmp_path):
    recipe = load_recipe("qwen3.6-27b-grpo")
    assert harness.task_files(recipe, tmp_path) == ["mmlu_pro_biology", "mmlu_pro_health", "mmlu_prox_en_biology",
                                                    "mmlu_prox_zh_biology"]
    assert not list(tmp_path.glob("*.yaml"))


@pytest.mark.slow
def test_the_harness_runs_against_kit_serve_on_the_tiny_model(export_metrics, shared_runs):
    proc = subprocess.run([sys.executable, "-m", "kit", "harness", "--recipe", "tiny", "--limit", "3",
                           "--tasks", "mmlu_pro_biology,mmlu_prox_zh_health"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, failure(proc)
    out = shared_runs / "tiny" / "eval" / "harness"
    results = json.loads((out / "results.json").read_text())
    for task in ("mmlu_pro_biology_local", "mmlu_prox_zh_health_local"):
        assert "exact_match,custom-extract" in results["results"][task]
        assert results["n-shot"][task] == 0
    agreed = json.loads((out / "agreement.json").read_text())
    assert {a["n"] for a in agreed.values()} == {3} and all(0 <= a["agreement"] <= 1 for a in agreed.values())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(s["response"] is not None for s in samples)
    assert "|Tasks|Version|" in (out / "results.md").read_text().replace(" ", "")
