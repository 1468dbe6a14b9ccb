"""GPU check: the tiny pipeline through the Unsloth end and the plain transformers+peft end.

    make gpu-check                                   # = .venv/bin/python bench/gpu_check.py
    python bench/gpu_check.py --ends unsloth --logs gpu-logs --json gpu-check.json

On a CUDA machine, runs the tiny recipe's stages (data → sft → rl → export → eval) once per end, each
stage in its own process as `python -m kit <stage>` runs it, and prints per stage the seconds, the end
that really ran and the peak GPU memory, then the figures that say the stage did its work (loss,
format adherence, reward, merge check, GGUF sizes, accuracies). Each end starts with empty compiler
caches. Needs no hub: the tiny model is built locally. On a machine without a GPU it says so and exits 2.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ["data", "sft", "rl", "export", "eval"]
ENDS = ["unsloth", "transformers+peft"]


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
        return {name: {"mcq": r["mcq_accuracy"]["value"], "unparseable": r.get("mcq_unparseable"),
                       "judged": (r.get("judged_accuracy") or {}).get("value"), "seconds": r["seconds"]}
                for name, r in m["results"].items()}
    return {}


def run_end(end: str, logs: Path | None) -> dict:
    runs = tempfile.mkdtemp(prefix=f"gpu-check-{end[:4]}-")
    # Each end starts with empty compiler caches (inductor, Triton, Unsloth's generated modules): the
    # figures then include compile time, and no kernel compiled by an earlier run is reused (re-runs
    # on one machine crashed in Unsloth's compiled block; see bench/RESULTS.md).
    caches = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton",
              "UNSLOTH_COMPILE_LOCATION": "unsloth_compiled_cache"}
    env = {**os.environ, "KIT_END": end, "KIT_RUNS_DIR": runs,
           **{var: str(Path(runs) / "_caches" / name) for var, name in caches.items()}}
    out = {}
    for stage in STAGES:
        log = (logs or Path(runs)) / f"{end.split('+')[0]}-{stage}.log"
        t = time.perf_counter()
        with log.open("w") as f:  # streamed, so a stage that is stopped still leaves its output
            proc = subprocess.run([sys.executable, "-m", "kit", stage, "--recipe", "tiny"], env=env,
                                  stdout=f, stderr=subprocess.STDOUT, text=True)
        seconds = round(time.perf_counter() - t, 1)
        if proc.returncode != 0:
            lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
            out[stage] = {"seconds": seconds, "error": lines[-1] if lines else f"exit {proc.returncode}"}
            break
        metrics = json.loads((Path(runs) / "tiny" / stage / "metrics.json").read_text())
        out[stage] = {"seconds": seconds, "end": metrics.get("end"), "peak_gpu_mb": metrics.get("peak_gpu_mb"),
                      **key_figures(stage, metrics)}
    return out


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
    for end in args.ends:
        results[end] = run_end(end, args.logs)
        print(f"{end}: {json.dumps(results[end])}", flush=True)
    print(f"\n{'stage':<8} | " + " | ".join(f"{e + ': s / peak GPU MiB':>34}" for e in results))
    for stage in STAGES:
        print(f"{stage:<8} | " + " | ".join(f"{cell(results[end].get(stage)):>34}" for end in results))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "results": results}, indent=2))
    print(json.dumps(results, indent=2))
    return 1 if any("error" in r for res in results.values() for r in res.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
