"""Shared fixtures: every test that runs a stage gets its own runs folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from child import failure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_OWN_RUNS: list[str] = []


def pytest_configure(config):
    """The tests never write into the checkout's runs/, where a user's own runs live: each process of the
    session gets a runs folder of its own, unless KIT_RUNS_DIR is set. The notebooks' kernels inherit it (or
    `shared_runs`' while that is set), so they find the stages the shared fixtures already ran.

    Run by pytest-xdist (`make test`: two workers on two cores), every worker and every process it starts
    computes on one thread: two processes of two OpenMP threads each on two cores wait on each other's
    descheduled threads (a tiny SFT run alone 63 s; two at once, 2 threads each, 226 s; 1 thread each, 81 s).
    The figures the tests assert are the same on one thread or two. vLLM's CPU build pins its own threads to
    the cores unless told not to."""
    if not os.environ.get("KIT_RUNS_DIR"):
        _OWN_RUNS.append(tempfile.mkdtemp(prefix="kit-test-runs-"))
        os.environ["KIT_RUNS_DIR"] = _OWN_RUNS[-1]
    # The notebooks under nbval run the tiny recipe; notebook 00 runs only on its default without a GPU, smollm2, in the
    # real-model lane (tests/test_real_model.py), under nbval too, with its quick settings.
    os.environ.setdefault("KIT_RECIPE", "tiny")
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


# The test files that use the fixtures whose stages one process runs once for many tests (and the notebooks then
# find): under pytest-xdist they and the notebooks are one work unit, run by one worker in their usual order.
SHARED_FIXTURES = {"shared_runs", "sft_metrics", "export_metrics", "demo_url"}
SHARED_FILES = {"tests/test_demo.py", "tests/test_demo_browser.py", "tests/test_evaluate.py", "tests/test_export.py",
                "tests/test_gpu_check.py", "tests/test_harness.py", "tests/test_notebook_setup.py", "tests/test_rl.py",
                "tests/test_sft.py"}
# The work units that take minutes, started first so that neither worker is left with a long one at the end.
LONGEST_FIRST = ["tests/test_real_model.py", "shared", "tests/test_vllm.py", "tests/test_vision_language.py",
                 "tests/test_launch.py", "tests/test_multiprocess.py", "tests/test_gpu_pins.py", "tests/test_pipeline.py"]


NOTEBOOK_00 = "notebooks/00_workshop.ipynb"


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its file (a module's fixtures run once), or "shared"."""
    path = nodeid.split("::")[0]
    return "shared" if path in SHARED_FILES or path.endswith(".ipynb") else path


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs two xdist workers that take whole work units (xdist's loadscope with units of our own,
    in collected order). Not `--dist loadgroup` with xdist_group marks: xdist 3.8 marks a group by rewriting
    the test's node id, which pytest 9.2 no longer reads, so the marks are silently ignored
    (pytest-dev/pytest-xdist#1386)."""
    from xdist.scheduler import LoadScopeScheduling

    class KitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False
    return KitScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """A test that uses a shared fixture must be in SHARED_FILES; under xdist, the longest work units first."""
    strays = {item.nodeid.split("::")[0] for item in items
              if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())) and work_unit(item.nodeid) != "shared"}
    if strays:
        raise pytest.UsageError(f"tests/conftest.py: add {', '.join(sorted(strays))} to SHARED_FILES (it uses a shared fixture)")
    # Notebook 00 runs in the real-model lane, under nbval, on its own default without a GPU (smollm2): a second
    # pass on the tiny recipe would run its whole pipeline again (its eval and RL cells alone 336 s of one worker on
    # an AMD EPYC core) for the same cells. Named on the command line, it runs on whatever KIT_RECIPE says.
    if os.environ.get("KIT_RECIPE") == "tiny" and not any(Path(NOTEBOOK_00).name in str(a) for a in config.args):
        twice = [item for item in items if item.nodeid.split("::")[0].endswith(NOTEBOOK_00)]
        if twice:
            config.hook.pytest_deselected(items=twice)
            items[:] = [item for item in items if item not in twice]
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))


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


def kill_during_save(stage: str, sets: list[str], ckpts, step: int) -> str:
    """Run `python -m kit STAGE --recipe tiny` until a real SIGKILL comes inside the Trainer's save of checkpoint
    `step` (tests/kill_in_save.py: its weights written, its optimizer file half written, no trainer_state.json).
    Returns the newest complete checkpoint's name, the one a resumed run must start from."""
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "kill_in_save.py"), str(step), stage, "--recipe",
                           "tiny", *sets], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"{stage} was not killed in its save:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    half = ckpts / f"checkpoint-{step}"
    assert (half / "optimizer.pt").exists() and not (half / "trainer_state.json").exists(), sorted(half.glob("*"))
    done = max((p for p in ckpts.glob("checkpoint-*") if (p / "trainer_state.json").exists()),
               key=lambda p: int(p.name.split("-")[1]))
    return done.name
