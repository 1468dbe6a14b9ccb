import json
import os
import shutil
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


def tracked(runs_dir) -> dict:
    """{run: logged rows} of the tiny recipe's trackio project, read in a process of its own (trackio reads its
    folder once, when first imported)."""
    code = "import json; from kit.tracking import logged; print(json.dumps(logged('tiny'), default=str))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KIT_RUNS_DIR": str(runs_dir)})
    assert proc.returncode == 0, failure(proc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
def test_pipeline_runs_everything_then_skips_what_is_up_to_date(runs_dir, monkeypatch):
    monkeypatch.delenv("TRACKIO_DIR", raising=False)  # an earlier test in this process may have pointed it elsewhere
    out = pipeline(*FAST)
    summary = (runs_dir / "tiny" / "summary.md").read_text()
    for stage in ("data", "sft", "rl", "export", "eval"):
        assert f"| {stage} | ran |" in summary
    assert "not medical advice" in summary.lower() and "tiny/export/gguf/tiny-q4_k_m.gguf" in summary
    assert (runs_dir / "tiny" / "loss.png").stat().st_size > 1000 and (runs_dir / "tiny" / "reward.png").exists()
    assert "pipeline done" in out
    assert "trackio project `medreason-tiny` (`runs/trackio`)" in summary and "kit dashboard --recipe tiny" in summary

    logged = tracked(runs_dir)  # the live curves, read back from the recipe's local trackio project
    sft_keys = set().union(*(row for run, rows in logged.items() if run.startswith("sft-") for row in rows))
    rl_keys = set().union(*(row for run, rows in logged.items() if run.startswith("rl-") for row in rows))
    eval_keys = set().union(*(row for run, rows in logged.items() if run.startswith("eval-") for row in rows))
    assert {"train/loss", "eval/loss", "train/learning_rate"} <= sft_keys, sorted(sft_keys)
    assert {"train/reward", "train/judge/screened", "train/completions/mean_length", "train/completions/clipped_ratio"} <= rl_keys, sorted(rl_keys)
    assert any(k.startswith("train/rewards/") for k in rl_keys) and "rl/medqa/accuracy" in eval_keys, sorted(eval_keys)
    first = runs_dir.parent / "first"
    shutil.copytree(runs_dir / "tiny", first / "tiny")

    again = pipeline(*FAST)
    assert again.count("skipped (FORCE=1 reruns it)") == 5
    changed = pipeline(*FAST, "rl.trainer.learning_rate=1e-5")
    assert "data: up to date" in changed and "sft: up to date" in changed
    # the two runs side by side: the same items, so a paired test, and the one setting that differs
    proc = subprocess.run([sys.executable, "-m", "kit", "compare", str(first / "tiny"), "tiny", "--out",
                           str(runs_dir.parent / "compare.png")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KIT_RUNS_DIR": str(runs_dir)})
    assert proc.returncode == 0, failure(proc)
    assert "| rl | medqa | " in proc.stdout and "McNemar exact (n=4)" in proc.stdout, proc.stdout
    assert "rl.trainer.learning_rate: " in proc.stdout and "sft.trainer" not in proc.stdout, proc.stdout
    assert (runs_dir.parent / "compare.png").stat().st_size > 10_000
    summary = (runs_dir / "tiny" / "summary.md").read_text()
    assert "| rl | ran |" in summary and "| export | ran |" in summary and "| eval | ran |" in summary
    assert "## Evaluation" in summary and "| gguf-q4_k_m |" in summary
    forced = pipeline(*FAST, force=True)
    assert "up to date" not in forced
    assert json.loads((runs_dir / "tiny" / "rl" / "metrics.json").read_text())["steps"] == 2
