import json
import subprocess
import sys

import pytest

from kit.recipe import load_recipe
from child import failure

# eval on one task without the thinking-budget curve: the pipeline's bookkeeping is the point here (test_evaluate
# and the evaluation notebook run the recipe's whole eval)
FAST = ["sft.trainer.max_steps=20", "sft.trainer.eval_steps=10", "sft.trainer.save_steps=10",
        "sft.format_check_questions=2", "sft.format_check_max_new_tokens=16",
        "rl.trainer.max_steps=2", "rl.trainer.max_completion_length=32", "export.quantizations=[q4_k_m]",
        "eval.max_items=4", "eval.max_new_tokens=16",
        "eval.budgets=[]", "data.eval=[{path: 'bundled:medqa_4options'}]"]


def pipeline(*sets, force=False):
    cmd = [sys.executable, "-m", "kit", "pipeline", "--recipe", "tiny", *sum((["--set", s] for s in sets), [])]
    proc = subprocess.run(cmd + (["--force"] if force else []), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, failure(proc)
    return proc.stdout


def test_stage_hash_covers_a_stage_and_what_came_before():
    a, b = load_recipe("tiny"), load_recipe("tiny", ["rl.trainer.max_steps=3"])
    assert a.stage_hash("data") == b.stage_hash("data") and a.stage_hash("sft") == b.stage_hash("sft")
    assert a.stage_hash("rl") != b.stage_hash("rl") and a.stage_hash("export") != b.stage_hash("export")
    c = load_recipe("tiny", ["data.seed=1"])
    assert all(a.stage_hash(s) != c.stage_hash(s) for s in ("data", "sft", "rl", "export"))


@pytest.mark.slow
def test_pipeline_runs_everything_then_skips_what_is_up_to_date(runs_dir):
    out = pipeline(*FAST)
    summary = (runs_dir / "tiny" / "summary.md").read_text()
    for stage in ("data", "sft", "rl", "export", "eval"):
        assert f"| {stage} | ran |" in summary
    assert "not medical advice" in summary.lower() and "tiny/export/gguf/tiny-q4_k_m.gguf" in summary
    assert (runs_dir / "tiny" / "loss.png").stat().st_size > 1000 and (runs_dir / "tiny" / "reward.png").exists()
    assert "pipeline done" in out

    again = pipeline(*FAST)
    assert again.count("skipped (FORCE=1 reruns it)") == 5
    changed = pipeline(*FAST, "rl.trainer.learning_rate=1e-5")
    assert "data: up to date" in changed and "sft: up to date" in changed
    summary = (runs_dir / "tiny" / "summary.md").read_text()
    assert "| rl | ran |" in summary and "| export | ran |" in summary and "| eval | ran |" in summary
    assert "## Evaluation" in summary and "| gguf-q4_k_m |" in summary
    forced = pipeline(*FAST, force=True)
    assert "up to date" not in forced
    assert json.loads((runs_dir / "tiny" / "rl" / "metrics.json").read_text())["steps"] == 2
