"""The GPU pins on the CPU: the tiny pipeline through the transformers+peft end with the transformers, TRL and
datasets versions a GPU runs (requirements-gpu.txt: what the pinned Unsloth allows), in the overlay venv
`make setup-test` builds (tests/gpu_pins_env.py). The rest of the suite runs the CPU pins (requirements.txt);
a trainer argument renamed between the two (`activation_checkpointing`, which broke SFT on the first GPU run)
fails here, not on a rented GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from child import failure
from gpu_pins_env import gpu_pins

ROOT = Path(__file__).resolve().parent.parent
PINS_PYTHON = ROOT / ".venv-gpupins" / "bin" / "python"
# short stages; activation checkpointing on in SFT, the argument whose rename broke the first GPU run; eval on
# one task of the kit's schema and one of lm-evaluation-harness's (datasets 4.8.5 under lm-eval)
SETS = ["sft.trainer.max_steps=10", "sft.trainer.logging_steps=5", "sft.trainer.eval_steps=10",
        "sft.trainer.save_steps=10", "sft.trainer.activation_checkpointing=true", "sft.format_check_questions=2",
        "sft.format_check_max_new_tokens=16", "rl.trainer.max_steps=2", "rl.trainer.max_completion_length=32",
        "export.quantizations=[q8_0]", "eval.max_items=2", "eval.max_new_tokens=16", "eval.budgets=[]",
        "data.eval=[{path: 'bundled:medqa_4options'}, {path: 'harness:medmcqa'}]"]

pytestmark = pytest.mark.slow


def versions(python: Path | str) -> dict:
    code = "import json, transformers, trl, datasets; print(json.dumps({m.__name__: m.__version__ for m in (transformers, trl, datasets)}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, failure(out)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_tiny_pipeline_runs_on_the_gpu_pins(tmp_path):
    assert PINS_PYTHON.exists(), "the GPU-pins lane's venv is missing: run `make setup-test`"
    pinned = dict(p.split("==") for p in gpu_pins())
    assert versions(PINS_PYTHON) == pinned and versions(sys.executable) != pinned  # two lanes, two sets of pins
    runs = tmp_path / "runs"
    proc = subprocess.run([str(PINS_PYTHON), "-X", "faulthandler", "-m", "kit", "pipeline", "--recipe", "tiny",
                           *[a for s in SETS for a in ("--set", s)]], env={**os.environ, "KIT_RUNS_DIR": str(runs)},
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, failure(proc)

    def metrics(stage):
        return json.loads((runs / "tiny" / stage / "metrics.json").read_text())

    sft, rl = metrics("sft"), metrics("rl")
    assert sft["end"] == rl["end"] == "transformers+peft"
    losses = [h["loss"] for h in sft["loss_history"]["train"]]
    assert sft["steps"] == 10 and len(losses) == 2 and losses[-1] < losses[0], losses
    assert rl["steps"] == 2 and rl["rewards_finite"] and rl["adapter_max_abs_change"] > 0
    assert rl["reward_trend"]["total"]["completions"] == 16  # one generation for both steps: 2 × 2 prompts × 4 completions
    gguf = metrics("export")["gguf"]["q8_0"]
    assert gguf["tokenizer_matches"] and gguf["generated_tokens"] >= 1
    results = metrics("eval")["results"]
    assert list(results) == ["base", "sft", "rl", "gguf-q8_0"]
    assert all(set(r["tasks"]) >= {"medqa", "medmcqa"} for r in results.values())
