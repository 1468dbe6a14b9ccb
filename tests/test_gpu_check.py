"""bench/gpu_check.py: refuses a machine without a GPU, and reads the stages' real metrics."""

import importlib.util
import subprocess
import sys

from conftest import ROOT
from child import failure

SCRIPT = ROOT / "bench" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_2():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, failure(proc)
    assert "needs a CUDA GPU" in proc.stdout


def test_key_figures_come_from_the_stage_metrics(sft_metrics, export_metrics):
    gpu_check = load_script()
    sft = gpu_check.key_figures("sft", sft_metrics)
    assert sft["steps"] == sft_metrics["steps"] > 0
    assert sft["train_loss_last"] < sft["train_loss_first"]
    assert sft["format_adherence_before"] == sft_metrics["format_adherence_before"]
    export = gpu_check.key_figures("export", export_metrics)
    assert export["merge_dtype"] == "float32" and export["max_abs_logit_diff"] < 1e-3
    assert 0 < export["q4_k_m_mib"] < export["q8_0_mib"] < export["f16_mib"]


def test_the_real_shape_lane_has_an_estimate_for_every_stage_it_measures(tmp_path):
    """The lane itself needs a GPU; its recipe and the estimates it prints beside the peaks are checked here."""
    gpu_check = load_script()
    est = gpu_check.estimates("workshop", gpu_check.SHAPE_SETS, str(tmp_path))
    assert set(est) == {"sft", "rl", "export", "eval"} and all(v > 0.5 for v in est.values()), est
    assert est["export"] > 1.4  # 0.75B parameters in 16-bit, one copy


def test_a_stage_killed_by_a_signal_is_reported_as_such():
    """The H200 run's export segfaulted in llama.cpp: the check had shown its last log line as the error."""
    gpu_check = load_script()
    log = "[kit] merged into a bfloat16 base: max |Δlogit| vs adapter-on-base 6.25e-02\n"
    assert gpu_check.failure(-11, log) == "killed by SIGSEGV after: [kit] merged into a bfloat16 base: " \
                                          "max |Δlogit| vs adapter-on-base 6.25e-02"
    assert gpu_check.failure(2, "Traceback ...\nkit.runs.StageError: no adapter\n") == "kit.runs.StageError: no adapter"
    assert gpu_check.failure(1, "") == "exit 1"
