"""Live curves: the trainers' tracker, trackio by default where it is installed.

TRL's trainers log every `logging_steps` (loss, learning rate, grad norm; for RL the reward by component, KL,
completion lengths and truncation, and the judge's screened counts and hacking signals the kit adds as
`judge/...`; peak GPU memory) to the trackers their `report_to` names. The kit's default, where trackio is
installed, is trackio: local-first (SQLite under `runs/trackio/`, a Gradio dashboard, no account), one
project per recipe (`medreason-<recipe>`), one run per stage invocation named after the stage's hash and the
time it started. Weights & Biases or TensorBoard: the trainer's own key (`--set sft.trainer.report_to=wandb`);
`none` there, or KIT_TRACKIO=0, turns tracking off. The eval stage logs its accuracies to the same project.

    python -m kit dashboard --recipe tiny     # trackio's dashboard of the recipe's project
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

from .runs import runs_root


def project(recipe_name: str) -> str:
    return f"medreason-{recipe_name}"


def point_at_runs() -> None:
    """TRACKIO_DIR, unless the user set it: `trackio/` in the runs folder. trackio reads it once, when it is first
    imported, and TRL (and Unsloth) import trackio at their own import: a stage calls this before anything else."""
    os.environ.setdefault("TRACKIO_DIR", str(runs_root() / "trackio"))


def tracking_dir() -> Path:
    """Where trackio keeps its projects: the folder it read on import, else where it will read it from."""
    utils = sys.modules.get("trackio.utils")
    return Path(utils.TRACKIO_DIR) if utils else Path(os.environ.get("TRACKIO_DIR") or runs_root() / "trackio")


def default_report_to() -> str:
    """trackio where it is installed and KIT_TRACKIO is not 0; else none."""
    if os.environ.get("KIT_TRACKIO", "1") == "0" or importlib.util.find_spec("trackio") is None:
        return "none"
    return "trackio"


def _uses_trackio(report_to) -> bool:
    return report_to == "trackio" or isinstance(report_to, (list, tuple)) and "trackio" in report_to


def run_name(stage: str, stage_hash: str) -> str:
    return f"{stage}-{stage_hash[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"


def tracker_args(recipe, stage: str, args: dict) -> dict:
    """The trainer's `report_to` (the recipe's, else `default_report_to`) and, for trackio, its project and run
    name (its folder: `point_at_runs`)."""
    if args.get("report_to") is None:
        args["report_to"] = default_report_to()
    if _uses_trackio(args["report_to"]):
        args.setdefault("project", project(recipe.name))
        args.setdefault("run_name", run_name(stage, recipe.stage_hash(stage)))
    return args


def _trackio():
    point_at_runs()
    import trackio

    return trackio


def log_run(recipe, stage: str, metrics: dict, config: dict | None = None) -> str | None:
    """Log one set of figures (the eval's accuracies) as a run of the recipe's project; its name, or None
    where tracking is off. Never fails the stage: a tracker that cannot write says so and is skipped."""
    trainers = [section.get("report_to") for section in (recipe.sft.trainer, recipe.rl.trainer)]
    if default_report_to() != "trackio" or any(r is not None and not _uses_trackio(r) for r in trainers):
        return None  # the recipe's trainers report elsewhere (or nowhere): the eval follows them
    name = run_name(stage, recipe.stage_hash(stage))
    try:
        trackio = _trackio()
        trackio.init(project=project(recipe.name), name=name, config=config or {})
        trackio.log(metrics)
        trackio.finish()
    except Exception as e:  # a tracker is a convenience; the stage's own files hold the figures
        print(f"[kit] note: trackio could not log the {stage} figures ({type(e).__name__}: {e})")
        return None
    return name


def logged(recipe_name: str, prefix: str | None = None) -> dict[str, list[dict]]:
    """{run name: its logged rows (step, timestamp and the figures)} of the recipe's project, read back through
    trackio's own storage; only the runs whose names begin with `prefix` when it is given."""
    _trackio()  # first: trackio reads TRACKIO_DIR when it is imported
    from trackio.sqlite_storage import SQLiteStorage

    name = project(recipe_name)
    runs = [r for r in SQLiteStorage.get_runs(name) if prefix is None or r.startswith(prefix)]
    return {r: SQLiteStorage.get_logs(name, r) for r in runs}


def latest(recipe_name: str, stage: str, keys: list[str]) -> list[dict]:
    """The newest run of `stage` in the recipe's project: its logged steps with `keys` (what a notebook shows to
    say the curves are there); [] where tracking is off."""
    if default_report_to() != "trackio":
        return []
    runs = logged(recipe_name, f"{stage}-")
    if not runs:
        return []
    rows = runs[list(runs)[-1]]  # trackio lists a project's runs in the order they were made
    return [{"step": r.get("train/global_step", r["step"]), **{k: r[k] for k in keys if k in r}}
            for r in rows if any(k in r for k in keys)]


def dashboard(recipe_name: str, host: str = "127.0.0.1", port: int | None = None, open_browser: bool = True):
    """trackio's dashboard of the recipe's project (blocks until interrupted, outside a notebook)."""
    trackio = _trackio()
    print(f"[kit] trackio dashboard of {project(recipe_name)} (runs in {tracking_dir()})")
    return trackio.show(project=project(recipe_name), host=host, server_port=port, open_browser=open_browser)
