"""GPU check: the tiny pipeline through the Unsloth end and the plain transformers+peft end, then the
workshop recipe on a random-init model of Qwen3.5-0.8B's real shape, beside kit.memory's estimates.

    make gpu-check                                   # = .venv/bin/python bench/gpu_check.py
    python bench/gpu_check.py --ends unsloth --logs gpu-logs --json gpu-check.json
    python bench/gpu_check.py --lanes shape          # only the real-shape lane

The real-shape lane builds the model locally (`builtin:shape:Qwen/Qwen3.5-0.8B`: its layers, widths and
248k vocabulary, random weights, the language model only), runs the workshop recipe's settings on the
bundled samples with fewer steps through the Unsloth end, and prints per stage the seconds, the peak GPU
memory and the estimate `python -m kit check` makes for the same recipe, with their ratio.

On a CUDA machine, runs the tiny recipe's stages (data → sft → rl → export → eval) once per end, each
stage in its own process as `python -m kit <stage>` runs it, and prints per stage the seconds, the end
that really ran and the peak GPU memory, then the figures that say the stage did its work (loss,
format adherence, reward, merge check, GGUF sizes, accuracies). Each end starts with empty compiler
caches. Needs no hub: the tiny model is built locally. On a machine without a GPU it says so and exits 2.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ["data", "sft", "rl", "export", "eval"]
ENDS = ["unsloth", "transformers+peft"]
SHAPE = "Qwen/Qwen3.5-0.8B"
SHAPE_SETS = [f"model.name_or_path=builtin:shape:{SHAPE}",
              "data.sft=[{path: 'bundled:medical_o1_sft_en'}, {path: 'bundled:medical_o1_sft_zh'}]",
              "data.rl=[{path: 'bundled:medical_o1_verifiable'}]", "data.eval=[{path: 'bundled:medqa_4options'}]",
              "data.val_fraction=0.2", "sft.trainer.max_steps=30", "sft.trainer.eval_steps=15",
              "sft.trainer.save_steps=15", "sft.format_check_questions=8", "rl.trainer.max_steps=6",
              "rl.trainer.save_steps=3", "eval.max_items=16", "export.quantizations=[q4_k_m]"]
# which of kit.memory's rows each stage's peak is compared with
ESTIMATE_ROWS = {"sft": ("sft (train step)", "sft (eval step)"), "rl": ("rl (GSPO/GRPO step)",),
                 "export": ("export (16-bit merge)",), "eval": ("eval (HF generate)",)}


def key_figures(stage: str, m: dict) -> dict:
    """The few numbers per stage that show it did its work."""
    if stage == "sft":
        return {k: m.get(k) for k in ("steps", "steps_per_second", "train_loss_first", "train_loss_last",
                                      "eval_loss", "format_adherence_before", "format_adherence_after")}
    if stage == "rl":
        return {k: m.get(k) for k in ("steps", "steps_per_second", "reward_first", "reward_last",
                                      "adapter_max_abs_change", "importance_sampling_level", "loss_type")}
    if stage == "export":
        return {"merge_dtype": m["merge"]["dtype"], "max_abs_logit_diff": m["merge"]["max_abs_logit_diff"],
                **{f"{k}_mib": round(v["bytes"] / 2**20, 2) for k, v in m.get("gguf", {}).items()}}
    if stage == "eval":
        return {name: {**{task: f["accuracy"]["value"] for task, f in r["tasks"].items()}, "seconds": r["seconds"]}
                for name, r in m["results"].items()}
    return {}


def failure(returncode: int, log: str) -> str:
    """What a failed stage says: its last line, and the signal where one killed it (a native crash
    prints no Python error, so its last line is whatever it printed before)."""
    lines = [ln for ln in log.splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit {returncode}"
    return f"killed by {signal.Signals(-returncode).name} after: {last}" if returncode < 0 else last


def run_end(end: str, logs: Path | None, recipe: str = "tiny", sets: list[str] = ()) -> dict:
    runs = tempfile.mkdtemp(prefix=f"gpu-check-{end[:4]}-{recipe}-")
    # Each end starts with empty compiler caches (inductor, Triton, Unsloth's generated modules): the
    # figures then include compile time, and no kernel compiled by an earlier run is reused (re-runs
    # on one machine crashed in Unsloth's compiled block; see bench/RESULTS.md).
    caches = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton",
              "UNSLOTH_COMPILE_LOCATION": "unsloth_compiled_cache"}
    env = {**os.environ, "KIT_END": end, "KIT_RUNS_DIR": runs,
           **{var: str(Path(runs) / "_caches" / name) for var, name in caches.items()}}
    out = {}
    for stage in STAGES:
        log = (logs or Path(runs)) / f"{recipe}-{end.split('+')[0]}-{stage}.log"
        t = time.perf_counter()
        with log.open("w") as f:  # streamed, so a stage that is stopped still leaves its output
            cmd = [sys.executable, "-m", "kit", stage, "--recipe", recipe, *[a for x in sets for a in ("--set", x)]]
            proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
        seconds = round(time.perf_counter() - t, 1)
        if proc.returncode != 0:
            out[stage] = {"seconds": seconds, "error": failure(proc.returncode, log.read_text())}
            break
        metrics = json.loads((Path(runs) / recipe / stage / "metrics.json").read_text())
        out[stage] = {"seconds": seconds, "end": metrics.get("end"), "peak_gpu_mb": metrics.get("peak_gpu_mb"),
                      **key_figures(stage, metrics)}
    if recipe != "tiny":
        out["estimates_gib"] = estimates(recipe, sets, runs)
    return out


def estimates(recipe: str, sets: list[str], runs: str) -> dict:
    """kit.memory's estimate per stage for the recipe as run (the data stage's measured lengths included)."""
    from kit.memory import GiB, count, estimate, lengths, model_config
    from kit.recipe import load_recipe

    old = os.environ.get("KIT_RUNS_DIR")
    os.environ["KIT_RUNS_DIR"] = runs  # where the data stage measured the lengths
    try:
        r = load_recipe(recipe, list(sets))
        rows = {e.stage: e.total / GiB for e in estimate(r, count(model_config(r), r), unsloth=True, n=lengths(r))}
    finally:
        if old is None:
            del os.environ["KIT_RUNS_DIR"]
        else:
            os.environ["KIT_RUNS_DIR"] = old
    return {stage: round(max(rows[n] for n in names if n in rows), 2) for stage, names in ESTIMATE_ROWS.items()
            if any(n in rows for n in names)}


def cell(r: dict | None) -> str:
    """One stage of one end in the printed table."""
    if not r:
        return "not run"
    if "error" in r:
        return f"{r['seconds']} s ERROR {r['error'][:60]}"
    return f"{r['seconds']} s / {r.get('peak_gpu_mb')} ({r.get('end') or '-'})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ends", nargs="+", choices=ENDS, default=ENDS)
    ap.add_argument("--lanes", nargs="+", choices=["tiny", "shape"], default=["tiny", "shape"])
    ap.add_argument("--logs", type=Path, help="folder for each stage's full output")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU; this machine has none (the CPU end is what `make smoke` runs).")
        return 2
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    device = f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    print(f"GPU: {device}", flush=True)
    results = {}
    for end in args.ends if "tiny" in args.lanes else []:
        results[end] = run_end(end, args.logs)
        print(f"{end}: {json.dumps(results[end])}", flush=True)
    if results:
        print(f"\n{'stage':<8} | " + " | ".join(f"{e + ': s / peak GPU MiB':>34}" for e in results))
        for stage in STAGES:
            print(f"{stage:<8} | " + " | ".join(f"{cell(results[end].get(stage)):>34}" for end in results))
    if "shape" in args.lanes:
        shape = results[f"workshop on {SHAPE} (unsloth)"] = run_end("unsloth", args.logs, "workshop", SHAPE_SETS)
        print(f"\nworkshop settings on a random-init {SHAPE} (Unsloth end): measured vs kit.memory's estimate")
        print(f"{'stage':<8} | {'seconds':>8} | {'peak GiB':>8} | {'estimate':>8} | ratio")
        for stage in STAGES:
            r, est = shape.get(stage) or {}, shape.get("estimates_gib", {}).get(stage)
            peak = (r.get("peak_gpu_mb") or 0) / 1024
            ratio = f"{est / peak:.2f}" if est and peak else "-"
            print(f"{stage:<8} | {r.get('seconds', '-'):>8} | {peak:8.2f} | {est or '-':>8} | {ratio}"
                  + (f"  ERROR {r['error'][:80]}" if "error" in r else ""))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "results": results}, indent=2))
    print(json.dumps(results, indent=2))
    return 1 if any(isinstance(r, dict) and "error" in r for res in results.values() for r in res.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
