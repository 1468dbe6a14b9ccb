"""What the two training stages (SFT and RL) share: the trainer's arguments, the checkpoints a run resumes
from, the resumable training loop that saves the adapter, and the dtypes of fully trained modules."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .modeling import Loaded, compute_dtype
from .recipe import Recipe, check_trainer_keys
from .runtime import UNSLOTH, has_cuda, is_main, peak_memory_logger, sharded
from .tracking import tracker_args


def trainer_args(recipe: Recipe, config_cls, section: dict, where: str, defaults: dict) -> dict:
    """A TRL config's arguments: the stage's `defaults`, this machine's precision flags, then the recipe's
    `section` (each key checked against the installed TRL class); the data seed, and the tracker
    (`kit.tracking`: trackio where it is installed, unless the section names its own `report_to`)."""
    args = {**defaults, **precision_args(recipe), **check_trainer_keys(section, config_cls, where)}
    args.setdefault("seed", recipe.data.seed)
    return tracker_args(recipe, where.split(".")[0], args)


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
    """The newest complete checkpoint (one whose trainer state was written), or None. Not transformers'
    `get_last_checkpoint`, which takes the newest folder even when a kill during the save left it half-written."""
    done = [p for p in ckpt_dir.glob("checkpoint-*") if _complete(p)]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _complete(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json last (after the weights, the optimiser and the RNG states): a
    checkpoint holds it, whole, only once everything else is written."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def train_resumable(trainer, resume: str | None, adapter_dir: Path, loaded) -> float:
    """Train from `resume` (a checkpoint) or from scratch; save the adapter with the tokenizer (the whole
    processor for a vision-language checkpoint); return seconds."""
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


def precision_args(recipe: Recipe) -> dict:
    """Trainer flags for this machine: bf16/fp16 as the dtype the model is loaded in, and `use_cpu` where
    there is no GPU (accelerate then runs several CPU processes as one job, over gloo; without it they
    each train alone, with no error)."""
    import torch

    dtype = compute_dtype(recipe)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16, "use_cpu": not has_cuda()}


def restore_full_module_dtypes(loaded: Loaded, model) -> None:
    """Put each module trained in full (`lora.modules_to_save`) back in the dtype of the module it replaces.

    TRL's trainers cast every trainable parameter of a quantized model to bf16 (the QLoRA convention
    for LoRA A/B; TRL PR #7272 and peft issue #2889 discuss it). A full copy of the embeddings or the
    head then hands bf16 activations to layers that compute in fp32, which fails (4-bit on a CPU). Call
    after building the trainer (`model` is the trainer's). Unsloth sets these dtypes itself: nothing to do there.
    """
    if loaded.end == UNSLOTH:
        return
    from peft.utils import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            for copy in module.modules_to_save.values():
                copy.to(next(module.original_module.parameters()).dtype)  # a block (a merger) has no one weight
