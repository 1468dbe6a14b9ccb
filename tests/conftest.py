"""Shared fixtures: every test that runs a stage gets its own runs folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from child import failure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_OWN_RUNS: list[str] = []


def pytest_configure(config):
    """The tests never write into the checkout's runs/, where a user's own runs live: each process of the
    session gets a runs folder of its own, unless KIT_RUNS_DIR is set. The notebooks' kernels inherit it (or
    `shared_runs`' while that is set), so they find the stages the shared fixtures already ran."""
    if not os.environ.get("KIT_RUNS_DIR"):
        _OWN_RUNS.append(tempfile.mkdtemp(prefix="kit-test-runs-"))
        os.environ["KIT_RUNS_DIR"] = _OWN_RUNS[-1]


def pytest_unconfigure(config):
    for path in _OWN_RUNS:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory):
    """One runs folder for the session's slow end-to-end tests (data → sft → rl)."""
    path = tmp_path_factory.mktemp("shared") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_RUNS_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def sft_metrics(shared_runs):
    """The tiny recipe's data and SFT stages, run once through the CLI like a user would."""
    for stage in ("data", "sft"):
        proc = subprocess.run([sys.executable, "-m", "kit", stage, "--recipe", "tiny"], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, failure(proc)
    return json.loads((shared_runs / "tiny" / "sft" / "metrics.json").read_text())


@pytest.fixture(scope="session")
def export_metrics(sft_metrics, shared_runs):
    proc = subprocess.run([sys.executable, "-m", "kit", "export", "--recipe", "tiny"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, failure(proc)
    return json.loads((shared_runs / "tiny" / "export" / "metrics.json").read_text())


@pytest.fixture(scope="session")
def demo_url(export_metrics, shared_runs):
    from kit.demo import launch
    from kit.recipe import load_recipe

    app = launch(load_recipe("tiny"), "local", block=False)
    yield app.local_url
    app.close()


def kill_after_checkpoint(stage: str, sets: list[str], ckpts, pattern: str = "checkpoint-*") -> None:
    """Start `python -m kit STAGE --recipe tiny`, SIGKILL it once a complete checkpoint exists."""
    proc = subprocess.Popen([sys.executable, "-m", "kit", stage, "--recipe", "tiny", *sets],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(ckpts.glob(f"{pattern}/trainer_state.json")) and time.time() < deadline:
        assert proc.poll() is None, f"{stage} ended before it could be interrupted"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # the worst case: no chance to clean up
    proc.wait()
