"""Where each stage writes: `runs/<recipe>/<stage>/`, with the resolved recipe and `metrics.json`."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .recipe import Recipe, save_resolved

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


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


def world_size() -> int:
    """Processes in this job: 1, or how many `torchrun` / `accelerate launch` started (WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch() -> dict:
    """How this process was launched: one process, or one of several (`torchrun`, `accelerate launch`),
    from the variables those launchers set."""
    world = world_size()
    out = {"world_size": world, "rank": int(os.environ.get("RANK", "0")),
           "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}
    if world > 1:
        from accelerate import PartialState

        out["backend"] = PartialState().backend
    return out


def is_main() -> bool:
    """The process that writes a stage's files (the only one, or rank 0 of several)."""
    return int(os.environ.get("RANK", "0")) == 0


def start_processes() -> None:
    """Under a multi-process launch, join the process group now (accelerate's PartialState, as the
    trainer would later: gloo on a CPU, NCCL on GPUs), so that the main process can prepare the stage's
    folder while the others wait at `wait_for_main`."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # the state the trainer's arguments then find


def sharded() -> bool:
    """Inside a launch that shards the weights (FSDP FULL_SHARD, ZeRO-3): no process holds the whole
    model, so nothing generates from it alone, and saving it is a collective step."""
    from .memory import Sharding

    return Sharding.from_env().weights


def wait_for_main() -> None:
    """Every process waits here until the main process has written what the others read next."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather(value) -> list:
    """`value` from every process, in rank order (one process: [value])."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def stage_dir(recipe: Recipe | str, stage: str) -> Path:
    name = recipe if isinstance(recipe, str) else recipe.name
    return runs_root() / name / stage


def start_stage(recipe: Recipe, stage: str, *, quiet: bool = False) -> Path:
    """Create the stage folder, save and print the resolved recipe."""
    out = stage_dir(recipe, stage)
    if not is_main():  # one writer: the main process (the others find the folder after `wait_for_main`)
        return out
    out.mkdir(parents=True, exist_ok=True)
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


def read_metrics(recipe: Recipe | str, stage: str) -> dict:
    path = stage_dir(recipe, stage) / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the '{stage}' stage first")
    return json.loads(path.read_text(encoding="utf-8"))


def require(recipe: Recipe, stage: str, filename: str) -> Path:
    """A file an earlier stage must have written; a clear error naming the command otherwise."""
    path = stage_dir(recipe, stage) / filename
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m kit {stage} --recipe {recipe.name}` first"
        )
    return path


def fresh_checkpoints(ckpt_dir: Path, recipe: Recipe, stage: str) -> None:
    """Checkpoints made under other settings for this stage are not resumed from: they are removed."""
    stamp, current = ckpt_dir / "stage_hash", recipe.stage_hash(stage)
    if not is_main():
        return
    if ckpt_dir.exists() and (not stamp.exists() or stamp.read_text().strip() != current):
        print(f"[kit] {ckpt_dir} holds checkpoints of other {stage} settings: starting afresh")
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current)


def last_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest complete checkpoint (one whose trainer state was written), or None."""
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def train_resumable(trainer, resume: str | None, adapter_dir: Path, loaded) -> float:
    """Train from `resume` (a checkpoint) or from scratch; save the adapter with the tokenizer (the whole
    processor for a vision-language checkpoint); return seconds."""
    from .modeling import peak_memory_logger

    if resume and is_main():
        print(f"[kit] resuming from {resume}")
    # first, so the printing callbacks see the figure it adds to each log line
    trainer.callback_handler.callbacks.insert(0, peak_memory_logger())
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    if sharded():  # every process hands in its shard; the Trainer gathers the adapter and the main one writes it
        trainer.save_model(str(adapter_dir))
    elif is_main():
        trainer.model.save_pretrained(adapter_dir)
    if is_main():
        loaded.save_tokenizer(adapter_dir)
    return seconds


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
