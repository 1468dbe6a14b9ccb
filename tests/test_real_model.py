"""The real-model lane, short: SmolLM2-135M-Instruct (a real pretrained chat model, Llama architecture, ChatML
template without a thinking switch) through every stage of the `smollm2` recipe on the CPU, a few steps each
(bench/real_model.py's quick settings), as a laptop without a GPU runs it: notebook 00, whose default there it is,
under nbval; then `kit pipeline` finds every stage up to date. bench/real_model.py runs the long version through
the CLI and measures the trends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from real_model import QUICK  # noqa: E402
from child import failure  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("real") / "runs"
    old = os.environ.get("KIT_RUNS_DIR")
    os.environ["KIT_RUNS_DIR"] = str(runs)
    env = {**os.environ, "KIT_RECIPE": "smollm2", "KIT_SET": json.dumps(QUICK)}
    notebook = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--nbval-lax",
                str(ROOT / "notebooks" / "00_workshop.ipynb")]
    proc = subprocess.run(notebook, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, failure(proc)
    # the same resolved recipe from the command line: nothing to run again, the summary written
    pipeline = [sys.executable, "-m", "kit", "pipeline", "--recipe", "smollm2", *sum((["--set", s] for s in QUICK), [])]
    proc = subprocess.run(pipeline, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, failure(proc)
    assert proc.stdout.count("skipped (up to date)") == 5, proc.stdout[-3000:]  # the summary's table
    yield runs
    if old is None:
        os.environ.pop("KIT_RUNS_DIR", None)
    else:
        os.environ["KIT_RUNS_DIR"] = old


def metrics(runs: Path, stage: str) -> dict:
    return json.loads((runs / "smollm2" / stage / "metrics.json").read_text())


def test_the_model_is_the_real_one_and_its_own_tokenizer_measures_the_data(real_runs):
    from kit.base_model import SMOLLM2, ensure

    built = json.loads((ensure(SMOLLM2) / "BUILT_BY_KIT.json").read_text())
    assert built["parameters"] == 134_515_008 and "SmolLM2-135M-Instruct.Q4_1.gguf" in built["from"]
    data = metrics(real_runs, "data")
    assert data["tokenizer"] == "builtin:smollm2-135m-instruct; 49152 tokens"
    assert data["sft"]["kept"] == 64 and data["rl"]["kept"] == 32 and data["sft"]["completion_tokens"]["p95"] > 50


def test_sft_teaches_the_think_format_to_a_model_that_never_writes_it(real_runs):
    sft = metrics(real_runs, "sft")
    assert sft["format_adherence_before"] == 0.0  # SmolLM2 answers directly: no </think>
    assert sft["format_adherence_after"] > sft["format_adherence_before"]
    assert sft["eval_loss"] < sft["eval_loss_before"]  # held-out rows, before any step and after
    assert any(o.lstrip().startswith("<think>") and "</think>" in o for o in sft["format_check"]["after"])


def test_rl_trains_on_the_real_model_and_records_every_completions_reward(real_runs):
    rl = metrics(real_runs, "rl")
    assert rl["rewards_finite"] and rl["adapter_max_abs_change"] > 0
    trend = rl["reward_trend"]
    # one generation for both steps (steps_per_generation 2): 2 × 2 prompts × 4 completions
    assert trend["total"]["completions"] == trend["judge"]["completions"] == 16
    assert rl["judge"]["reward_counts"]["graded"] + rl["judge"]["reward_counts"]["broken_format"] == 16


def test_the_gguf_is_a_llama_llamacpp_recognises_and_tokenises_alike(real_runs):
    files = metrics(real_runs, "export")["gguf"]
    assert files["f16"]["architecture"] == "llama" and files["f16"]["pre_tokenizer"] == "smollm"
    assert files["f16"]["pre_tokenizer_recognised"]
    for info in files.values():
        assert info["tokenizer_matches"] and info["generated_tokens"] >= 1
    modelfile = (real_runs / "smollm2" / "export" / "gguf" / "Modelfile").read_text()
    assert "<|im_start|>assistant\n\"\"\"" in modelfile  # no <think> opened for it: the model writes its own


def test_eval_reads_every_system_and_the_summary_shows_what_training_changed(real_runs):
    ev = metrics(real_runs, "eval")
    assert list(ev["results"]) == ["base", "sft", "rl", "gguf-q8_0"]
    assert "as the model writes it" in ev["decoding"]
    for r in ev["results"].values():
        assert set(r["tasks"]) == {"medqa", "mmlu_pro_biology", "mmlu_prox_zh_biology", "cmmlu_clinical_knowledge", "open"}
    # lm-eval's own protocol beside the kit's: its filter on every system's outputs, its log-likelihood on the
    # systems it can load (not the GGUF file)
    assert all("harness" in r["tasks"]["mmlu_prox_zh_biology"] for r in ev["results"].values())
    assert "harness" in ev["results"]["rl"]["tasks"]["cmmlu_clinical_knowledge"]
    assert "harness" not in ev["results"]["gguf-q8_0"]["tasks"]["cmmlu_clinical_knowledge"]
    assert [b["budget"] for b in ev["budgets"]["curve"]] == [24, 96] and ev["budgets"]["system"] == "rl"
    # the base model answers without a reasoning block: read as an answer, not as unparseable thinking
    base = [json.loads(line) for line in (real_runs / "smollm2" / "eval" / "outputs.jsonl").read_text().splitlines()
            if line.startswith('{"system": "base"')]
    assert all("</think>" not in r["completion"] for r in base)
    summary = (real_runs / "smollm2" / "summary.md").read_text()
    assert "held-out loss" in summary and "first → last quarter" in summary and "format adherence 0.00 →" in summary


def test_kit_serve_answers_on_the_llamacpp_end_without_qwens_parsers(real_runs):
    from openai import BadRequestError, OpenAI

    from kit.serve import Server

    with Server("smollm2") as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        q = [{"role": "user", "content": "What is the antidote for opioid overdose?"}]
        r = client.chat.completions.create(model="smollm2", messages=q, max_tokens=96, seed=0)
        message = r.choices[0].message
        assert "<think>" not in (message.content or "") and "</think>" not in (message.content or "")
        assert (message.content or (message.model_extra or {}).get("reasoning_content"))
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
        with pytest.raises(BadRequestError, match="no tool-call format"):
            client.chat.completions.create(model="smollm2", messages=q, max_tokens=8, tools=tools)
