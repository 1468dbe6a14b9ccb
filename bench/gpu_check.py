"""GPU check: the tiny pipeline through the Unsloth end and the plain transformers+peft end.

    make gpu-check        # = .venv/bin/python bench/gpu_check.py

On a CUDA machine, runs the tiny recipe's stages (data → sft → rl → export → eval) once per end and
prints, side by side, SFT steps/s and, per stage, seconds and peak GPU memory. Needs no hub: the
tiny model is built locally. On a machine without a GPU it says so and exits 2.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ["data", "sft", "rl", "export", "eval"]


def run_end(end: str) -> dict:
    env = {**os.environ, "KIT_END": end, "KIT_RUNS_DIR": tempfile.mkdtemp(prefix=f"gpu-check-{end[:4]}-")}
    out = {}
    for stage in STAGES:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "kit", stage, "--recipe", "tiny"], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            out[stage] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            break
        metrics = json.loads((Path(env["KIT_RUNS_DIR"]) / "tiny" / stage / "metrics.json").read_text())
        out[stage] = {"seconds": round(time.perf_counter() - t, 1), "peak_gpu_mb": metrics.get("peak_gpu_mb"),
                      "steps_per_second": metrics.get("steps_per_second"), "end": metrics.get("end")}
    return out


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU; this machine has none (the CPU end is what `make smoke` runs).")
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    results = {end: run_end(end) for end in ("unsloth", "transformers+peft")}
    print(f"{'stage':<8} | {'unsloth: s / peak MiB':>24} | {'transformers+peft: s / peak MiB':>32}")
    for stage in STAGES:
        cells = []
        for end in results:
            r = results[end].get(stage, {})
            cells.append(r.get("error") or f"{r.get('seconds')} s / {r.get('peak_gpu_mb')}")
        print(f"{stage:<8} | {cells[0]:>24} | {cells[1]:>32}")
    sps = [results[e].get("sft", {}).get("steps_per_second") for e in results]
    print(f"SFT steps/s: unsloth {sps[0]}, transformers+peft {sps[1]}")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
