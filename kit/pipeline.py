"""The whole pipeline, stage after stage, with a summary at the end.

    python -m kit pipeline --recipe tiny [--force]

A stage whose `metrics.json` was written for the same resolved recipe is skipped, unless an earlier
stage ran again in this invocation or `--force` (make: FORCE=1) is given; an interrupted stage
resumes from its last checkpoint. Writes `runs/<recipe>/summary.md` with the loss and reward curves.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from pathlib import Path

from .capacity import check_capacity
from .cards import NOT_MEDICAL_ADVICE
from .plots import loss_curve, reward_curve
from .recipe import STAGES as RECIPE_STAGES, Recipe
from .rl import trend_line
from .runs import runs_root, stage_dir
from .tracking import default_report_to, project, tracking_dir

# The one list of stages, in order: name → (its module, whose run(recipe) returns the stage's metrics; what it
# does). The CLI's stage commands and `make data|sft|rl|export` are these.
STAGES = dict(zip(RECIPE_STAGES, (  # recipe.STAGES, each with its module and what it does
    ("kit.data", "load, validate, format and measure the datasets"),
    ("kit.sft", "supervised fine-tuning (LoRA) on reasoning + answer"),
    ("kit.rl", "GSPO / GRPO with the judge reward, from the SFT adapter"),
    ("kit.export", "merge into a 16-bit base, GGUF (f16, q8_0, q4_k_m), verify each file"),
    ("kit.evaluate", "base vs SFT vs RL vs GGUF on the same items, with 95% intervals"),
), strict=True))


def is_done(recipe: Recipe, stage: str) -> bool:
    path = stage_dir(recipe, stage) / "metrics.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("stage_hash") == recipe.stage_hash(stage)
    except json.JSONDecodeError:
        return False


def run(recipe: Recipe, force: bool = False, stages: list[str] | None = None) -> dict:
    order = stages or list(STAGES)
    todo = next((i for i, s in enumerate(order) if force or not is_done(recipe, s)), len(order))
    check_capacity(recipe, order[todo:])  # what will run: after a multi-GPU launch, export and eval on one GPU
    times, status = {}, {}
    rerun_downstream = force
    t0 = time.perf_counter()
    for stage in order:
        if stage == "sft" and not recipe.data.sft:
            status[stage] = "not in recipe"
            continue
        if not rerun_downstream and is_done(recipe, stage):
            status[stage] = "skipped (up to date)"
            print(f"[kit] {stage}: up to date ({stage} settings hash {recipe.stage_hash(stage)}), skipped "
                  f"(FORCE=1 reruns it)")
            continue
        start = time.perf_counter()
        importlib.import_module(STAGES[stage][0]).run(recipe)
        times[stage] = round(time.perf_counter() - start, 1)
        status[stage] = "ran"
        rerun_downstream = True  # everything after a stage that ran depends on its new outputs
    total = round(time.perf_counter() - t0, 1)
    summary = write_summary(recipe, times, status, total)
    print(f"[kit] pipeline done in {total} s; summary → {summary}")
    print(summary.read_text())
    return {"times": times, "status": status, "total_seconds": total, "summary": str(summary)}


def earlier(stage: str) -> list[str]:
    """The pipeline stages before `stage`; the demo (not a stage) reads what eval reads."""
    names = list(STAGES)
    return names[: names.index(stage if stage in STAGES else "eval")]


def upstream(recipe: Recipe, stage: str) -> list[str]:
    """The stages whose outputs `stage` reads: every earlier one the recipe has."""
    return [s for s in earlier(stage) if s != "sft" or recipe.data.sft]


def prepare_inputs(recipe: Recipe, stage: str, source: str = "run") -> list[str]:
    """Make the inputs of `stage` exist, saying so in one line when they do not: `source` "run" runs the
    upstream stages (those up to date are skipped); a folder, or "hf:<user>/<repo>", holding
    `<recipe>/<stage>/` as `save_outputs` writes them, is copied in instead. Returns the stages it made."""
    missing = [s for s in upstream(recipe, stage) if not is_done(recipe, s)]
    if not missing:
        return []
    if source == "run":
        print(f"[kit] {stage} needs {', '.join(missing)} of recipe '{recipe.name}', not in {runs_root()}: running them now")
        run(recipe, stages=upstream(recipe, stage))
        return missing
    folder = _fetch(source, recipe.name, missing)
    print(f"[kit] {stage} needs {', '.join(missing)} of recipe '{recipe.name}': loading them from {source}")
    for s in missing:
        found = folder / recipe.name / s
        if not (found / "metrics.json").exists():
            raise FileNotFoundError(f"{source} has no {recipe.name}/{s}/metrics.json: save that stage there "
                                    f"first (SAVE_TO), or set UPSTREAM = 'run' to run it here")
        if json.loads((found / "metrics.json").read_text()).get("stage_hash") != recipe.stage_hash(s):
            print(f"[kit] note: {source}/{recipe.name}/{s} was made with other {s} settings than this recipe's")
        shutil.copytree(found, stage_dir(recipe, s), dirs_exist_ok=True)
    return missing


def _fetch(source: str, name: str, stages: list[str]) -> Path:
    if not source.startswith("hf:"):
        return Path(source).expanduser()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source[3:], allow_patterns=[f"{name}/{s}/**" for s in stages]))


def save_outputs(recipe: Recipe, stage: str, dest: str | None) -> str | None:
    """Copy a finished stage's outputs (not its checkpoints) to a folder (Google Drive, /kaggle/working)
    or a private Hub repository "hf:<user>/<repo>", where `prepare_inputs` of a later session finds them."""
    if not dest:
        return None
    src = stage_dir(recipe, stage)
    if dest.startswith("hf:"):
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(dest[3:], private=True, exist_ok=True)
        api.upload_folder(repo_id=dest[3:], folder_path=src, path_in_repo=f"{recipe.name}/{stage}",
                          ignore_patterns=["checkpoints/*"])
    else:
        shutil.copytree(src, Path(dest).expanduser() / recipe.name / stage, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("checkpoints"))
    print(f"[kit] {stage} outputs saved to {dest}/{recipe.name}/{stage}")
    return f"{dest}/{recipe.name}/{stage}"


def _size(path: Path) -> str:
    n = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return f"{n / 2**20:.1f} MiB"


def key_figures(stage: str, m: dict) -> str:
    """One line of the figures that matter for a stage, from its metrics.json."""
    try:
        if stage == "data":
            return f"SFT rows {m['sft']['kept']} (train {m['sft']['train']}, val {m['sft']['val']})" if "sft" in m else ""
        if stage == "sft":
            held_out = f"; held-out loss {m['eval_loss_before']:.3f} → {m['eval_loss']:.3f}" \
                if m.get("eval_loss_before") is not None and m.get("eval_loss") is not None else ""
            return (f"loss {m['train_loss_first']:.3f} → {m['train_loss_last']:.3f}{held_out}; format adherence "
                    f"{m['format_adherence_before']:.2f} → {m['format_adherence_after']:.2f}")
        if stage == "rl":
            trend = trend_line(m["reward_trend"]["total"]) if "reward_trend" in m else \
                f"{m['reward_first']:.3f} → {m['reward_last']:.3f}"
            screened = m["judge"]["ledger"].get("screened") or {}
            stopped = f", {sum(screened.values())} conclusions screened ({', '.join(f'{k} {v}' for k, v in screened.items())})" \
                if screened else ""
            return (f"{m['algorithm'].upper()}: reward {trend}; judge {m['judge']['preset']}, "
                    f"{m['judge']['ledger']['calls']} calls{stopped}")
        if stage == "export":
            return f"max Δlogit {m['merge']['max_abs_logit_diff']:.1e}; GGUF: " + \
                ", ".join(f"{k} {v['bytes'] / 2**20:.1f} MiB" for k, v in m["gguf"].items())
        if stage == "eval":
            first = next(t for t in next(iter(m["results"].values()))["tasks"] if t != "open")
            return f"{first} accuracy " + ", ".join(f"{k} {v['tasks'][first]['accuracy']['value']:.2f}" for k, v in m["results"].items())
    except (KeyError, TypeError, StopIteration):  # a stage skipped, or metrics from an older kit
        pass
    return ""


def _where(path: Path) -> str:
    """A folder as the summary names it: inside the runs folder, relative to it."""
    try:
        return f"`runs/{path.resolve().relative_to(runs_root())}`"
    except ValueError:
        return f"`{path}`"


def write_summary(recipe: Recipe, times: dict, status: dict, total: float) -> Path:
    root = runs_root() / recipe.name
    metrics = {s: json.loads((stage_dir(recipe, s) / "metrics.json").read_text())
               for s in STAGES if (stage_dir(recipe, s) / "metrics.json").exists()}
    lines = [f"# Run summary · `{recipe.name}`", "", NOT_MEDICAL_ADVICE, "",
             f"- Recipe hash `{recipe.hash()}`; base model `{recipe.model.name_or_path}`; total {total} s this invocation.",
             "", "| stage | status | seconds | end | key figures |", "|---|---|---|---|---|"]
    for s in STAGES:
        m = metrics.get(s, {})
        fig = key_figures(s, m) if m else ""
        lines.append(f"| {s} | {status.get(s, '-')} | {times.get(s, m.get('seconds', '-'))} | {m.get('end', '-')} | {fig} |")
    if "sft" in metrics:
        loss_curve(metrics["sft"]["loss_history"], root / "loss.png")
        lines += ["", "![loss](loss.png)"]
    if "rl" in metrics and metrics["rl"]["reward_history"]:
        reward_curve(metrics["rl"]["reward_history"], root / "reward.png")
        lines += ["", "![reward](reward.png)"]
    if default_report_to() == "trackio":
        lines += ["", f"Live curves of every step (loss, reward by component, the judge's screened counts, completion "
                      f"lengths) are in the trackio project `{project(recipe.name)}` ({_where(tracking_dir())}): "
                      f"`python -m kit dashboard --recipe {recipe.name}` opens them; `python -m kit compare RUN_A RUN_B` "
                      f"sets two runs side by side."]
    if (root / "eval" / "results.md").exists():
        table = (root / "eval" / "results.md").read_text().split("\n", 2)[2]
        lines += ["", "## Evaluation", "", table.strip(), "", "![accuracy](eval/accuracy.png)"]
    lines += ["", "## Artefacts", "", "| artefact | path | size |", "|---|---|---|"]
    for label, path in [("SFT adapter", stage_dir(recipe, "sft") / "adapter"),
                        ("RL adapter", stage_dir(recipe, "rl") / "adapter"),
                        ("merged model", stage_dir(recipe, "export") / "merged"),
                        *[(f"GGUF {k}", stage_dir(recipe, "export") / "gguf" / v["file"])
                          for k, v in metrics.get("export", {}).get("gguf", {}).items()]]:
        if path.exists():
            lines.append(f"| {label} | `{path.relative_to(runs_root())}` | {_size(path)} |")
    out = root / "summary.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
