"""bench/sft_seeds.py: one short seed through the real data and SFT stages, figures read back."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT
from child import failure


@pytest.mark.slow
def test_one_short_seed_prints_its_figures():
    sets = ["sft.trainer.max_steps=2", "sft.trainer.logging_steps=1", "sft.trainer.eval_strategy=no",
            "sft.format_check_questions=2", "sft.format_check_max_new_tokens=4"]
    proc = subprocess.run([sys.executable, "bench/sft_seeds.py", "--seeds", "7", *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, failure(proc)
    row = re.search(r"^\s+7\s+[\d.]+\s+([\d.]+) → ([\d.]+)\s+\S+\s+0\.00 → ([\d.]+)\s+2$", proc.stdout, re.M)
    assert row, proc.stdout
    assert float(row.group(1)) > 0 and float(row.group(2)) > 0
    assert proc.stdout.rstrip().endswith(f"lowest format adherence after SFT: {float(row.group(3)):.2f}")
