"""Where each stage writes: `runs/<recipe>/<stage>/`, with the resolved recipe and `metrics.json`."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .recipe import Recipe, save_resolved
from .runtime import is_main

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(__file__).parent / "samples"  # the bundled dataset samples
TRAINED = ("sft", "rl")  # the stages that write an adapter, in training order
GGUF_PREFERENCE = ("q4_k_m", "q8_0", "f16")  # the GGUF a server, the demo and the eval take, in this order


@dataclass(frozen=True)
class Quant:
    """A GGUF type: llama.cpp's file type id (what its quantiser is asked for), the tensor type most of the file's
    weights then carry (what the export verifies), and bytes per weight (llama.cpp's block sizes: q8_0 is 34 B per
    32 weights, q4_k_m ~4.85 bits; what the disk and memory estimates use)."""

    ftype: int
    tensor_type: str
    bytes_per_weight: float


# The one table of GGUF types, for the quantiser (kit/gguf.py), the export's check and the estimates (kit/memory.py)
QUANTS = {"f16": Quant(1, "F16", 2.0), "q8_0": Quant(7, "Q8_0", 34 / 32), "q4_k_m": Quant(15, "Q4_K", 4.85 / 8),
          "q5_k_m": Quant(17, "Q5_K", 5.7 / 8), "q6_k": Quant(18, "Q6_K", 6.56 / 8), "q4_0": Quant(2, "Q4_0", 18 / 32)}


def runs_root() -> Path:
    """`$KIT_RUNS_DIR`, else `runs/` in the repository checkout (or the current folder when installed)."""
    if os.environ.get("KIT_RUNS_DIR"):
        return Path(os.environ["KIT_RUNS_DIR"]).resolve()
    if (PACKAGE_ROOT / "pyproject.toml").exists():
        return PACKAGE_ROOT / "runs"
    return Path.cwd() / "runs"


def cache_dir() -> Path:
    """`$KIT_CACHE_DIR`, else `~/.cache/medreason-kit`: what the kit fetches or converts once for every run
    (llama.cpp's converter, the models built from registry packages)."""
    return Path(os.environ.get("KIT_CACHE_DIR", Path.home() / ".cache" / "medreason-kit"))


def stage_dir(recipe: Recipe | str, stage: str) -> Path:
    name = recipe if isinstance(recipe, str) else recipe.name
    return runs_root() / name / stage


def start_stage(recipe: Recipe, stage: str, *, quiet: bool = False) -> Path:
    """Create the stage folder, save and print the resolved recipe."""
    out = stage_dir(recipe, stage)
    if not is_main():  # one writer: the main process (the others find the folder after `wait_for_main`)
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # not finished until this run writes it again (`finished`)
    path = save_resolved(recipe, out)
    if not quiet:
        print(f"[kit] {stage} · recipe {recipe.name} ({recipe.hash()}) → {out}")
        print(f"[kit] resolved recipe saved to {path}")
    return out


def write_metrics(out_dir: Path, metrics: dict) -> Path:
    path = out_dir / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def metrics_header(recipe: Recipe, stage: str) -> dict:
    """What every stage's metrics.json opens with: the recipe, its hash, and the stage's settings hash (what
    the pipeline compares to decide whether the stage is up to date)."""
    return {"recipe": recipe.name, "recipe_hash": recipe.hash(), "stage_hash": recipe.stage_hash(stage)}


def stage_adapter(recipe: Recipe | str, stage: str) -> Path | None:
    """The LoRA adapter `stage` (sft or rl) wrote, or None where it has not."""
    path = stage_dir(recipe, stage) / "adapter"
    return path if (path / "adapter_config.json").exists() else None


def final_adapter(recipe: Recipe | str) -> Path | None:
    """The run's last adapter: RL's, else SFT's; None before either has run."""
    return next((a for stage in reversed(TRAINED) if (a := stage_adapter(recipe, stage))), None)


def finished(recipe: Recipe | str, stage: str) -> bool:
    """Whether `stage` ran to its end: its metrics.json is written last (atomically), and removed when the stage
    starts again, so a stage stopped midway, or stopped while it ran again, is not finished."""
    return (stage_dir(recipe, stage) / "metrics.json").exists()


def gguf_file(recipe: Recipe, prefer: str | None = None, kinds: tuple[str, ...] = GGUF_PREFERENCE) -> Path | None:
    """The run's GGUF file: the `prefer`red quantization where it was written, else the first of `kinds` that
    was; None where the export wrote none of them, or has not finished (a killed export's files are not taken)."""
    if not finished(recipe, "export"):
        return None
    folder = stage_dir(recipe, "export") / "gguf"
    return next((path for kind in ([prefer] if prefer else []) + list(kinds)
                 if (path := folder / f"{recipe.name}-{kind}.gguf").exists()), None)


def require(recipe: Recipe, stage: str, filename: str) -> Path:
    """A file an earlier stage must have written; a clear error naming the command otherwise."""
    path = stage_dir(recipe, stage) / filename
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m kit {stage} --recipe {recipe.name}` first"
        )
    return path


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
