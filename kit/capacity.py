"""Whether this machine (or a named GPU) can run a recipe, checked once per stage before anything is read or
loaded, and `python -m kit check`: the memory and disk estimates of kit.memory per stage, the judge's key,
the GPUs of a multi-process launch."""

from __future__ import annotations

import json

from .data import length_warnings
from .judge import Judge, concurrency_share
from .memory import GPUS, free_disk_gib, needed_gib, report
from .recipe import Recipe
from .runs import runs_root, stage_dir
from .runtime import (UNSLOTH, CapacityError, Sharding, has_cuda, pick_end, split_gpus, visible_gpus, wants_server,
                      world_size)


def gpu_memory_needed(recipe: Recipe, stages=None) -> float:
    """GiB of GPU memory the recipe needs: the recipe's figure, else kit.memory's estimate of the largest
    of `stages` (default: every stage; per GPU inside a multi-process launch). 0 = runs on a CPU."""
    if recipe.model.min_gpu_memory_gb is not None:
        return recipe.model.min_gpu_memory_gb

    return round(needed_gib(recipe, unsloth=pick_end() == UNSLOTH if has_cuda() else True, stages=stages), 1)


def check_capacity(recipe: Recipe, stages=None, need: float | None = None) -> None:
    """Fail early, with the reason, when this machine cannot run the recipe's `stages` (default: all),
    or give a GPU the `need` GiB (`kit check` of a launch: its per-GPU estimate). A recipe that states its
    own figure (`model.min_gpu_memory_gb`; 0: it runs on a CPU) is held to that figure, not to an estimate."""
    if need is None or recipe.model.min_gpu_memory_gb is not None:
        need = gpu_memory_needed(recipe, stages)
    if need <= 0:
        return
    if not has_cuda():
        raise CapacityError(
            f"recipe '{recipe.name}' ({recipe.model.name_or_path}, {recipe.model.params_b:g}B parameters) "
            f"needs a CUDA GPU with about {need:g} GiB of memory; this machine has none. "
            f"On a CPU use the 'tiny' recipe: python -m kit <stage> --recipe tiny"
        )
    import torch

    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    if total < need:
        which = "stages" if stages is None else ", ".join(stages)
        raise CapacityError(
            f"recipe '{recipe.name}' needs about {need:g} GiB of GPU memory (the largest of its {which}"
            f"{' per GPU of this launch' if world_size() > 1 else ''}; "
            f"`python -m kit check --recipe {recipe.name}` shows each); {torch.cuda.get_device_name(0)} has "
            f"{total:.1f} GiB. Try the 'workshop' recipe, or a smaller batch or sequence length."
        )


def preflight(recipe: Recipe, gpu: str | None = None, processes: int = 1, config: str | None = None) -> int:
    """Fail before any download or training when the machine or the environment cannot run the recipe:
    GPU memory and disk estimated per stage (kit.memory; per GPU of a launch of `processes` with the
    accelerate `config`), the judge's key."""

    if gpu == "all":
        gpus = GPUS
    elif gpu:
        gpus = {gpu: GPUS[gpu]}
    elif has_cuda():
        import torch

        gpus = {torch.cuda.get_device_name(0): torch.cuda.get_device_properties(0).total_memory / 2**30}
    else:
        gpus = GPUS
    gpu_recipe = recipe.model.min_gpu_memory_gb != 0
    launched = processes > 1  # one process: the single-GPU pipeline, whatever the config

    server_gpus = recipe.rl.vllm_server_gpus if launched and wants_server(recipe) else 0
    sharding = Sharding.from_config(config) if launched else None
    unsloth = False if launched else (pick_end() == UNSLOTH if has_cuda() else gpu_recipe)
    table, peak, disk = report(recipe, gpus, unsloth, processes, sharding, server_gpus)
    print(table, flush=True)
    for warning in budget_warnings(recipe):
        print(f"[kit] ⚠ {warning}", flush=True)
    if gpu:  # planning for the named GPU(s): this machine's own GPU, or its lack of one, is not the question
        return plan(recipe, gpus, round(peak, 1) if launched else gpu_memory_needed(recipe), disk)
    check_capacity(recipe, need=round(peak, 1) if launched else None)
    free = free_disk_gib(runs_root())
    if disk > free:
        raise CapacityError(f"recipe '{recipe.name}' needs about {disk:.0f} GiB of disk for its artefacts; "
                            f"{runs_root()} has {free:.0f} GiB free (set KIT_RUNS_DIR to a larger disk)")
    if launched:  # what the launch will use
        print(f"[kit] launch: {processes} training processes, one per GPU, on the transformers+peft end (Unsloth "
              f"trains on one GPU), {sharding.name}: the rows above are per GPU"
              f"{'; weights sharded' if sharding.weights else ''}"
              f"{'; gradients and optimiser state sharded' if sharding.states else ''}"
              f"{f'; rollout server on {server_gpus} more GPU(s)' if server_gpus else ''}. Global batch = "
              f"{processes} × the recipe's per-device batch × accumulation; the judge's max_concurrency is shared: "
              f"{concurrency_share(recipe.rl.judge.max_concurrency, processes)} per process.")
        if has_cuda():
            split_gpus(visible_gpus(), processes, server_gpus)  # LaunchError: the GPUs do not add up
    judge = Judge(recipe.rl.judge)
    print(f"[kit] {recipe.name}: OK on the {pick_end()} end; disk {disk:.0f} of {free:.0f} GiB free; judge {judge!r}")
    return 0


def plan(recipe, gpus: dict[str, float], need: float, disk: float) -> int:
    """`kit check --gpu NAME|all`: the recipe against the named GPU(s), wherever the check runs (a laptop
    plans for a rented GPU). 0 when it fits at least one of them; the reason otherwise."""

    fits = [name for name, cap in gpus.items() if need <= cap]
    if not fits:
        raise CapacityError(f"recipe '{recipe.name}' needs about {need:g} GiB of GPU memory at its largest stage; "
                            f"{', '.join(f'{n} has {c:g}' for n, c in gpus.items())}. Try the 'workshop' recipe, "
                            "or a smaller batch or sequence length.")
    memory = f"about {need:g} GiB of GPU memory" if need > 0 else "no GPU (it runs on a CPU)"
    print(f"[kit] plan: {recipe.name} needs {memory} and {disk:.0f} GiB of disk; it fits "
          f"{', '.join(fits)}{'' if len(fits) == len(gpus) else ' (not ' + ', '.join(n for n in gpus if n not in fits) + ')'}. "
          f"On that machine, `python -m kit check --recipe {recipe.name}` checks its GPU, disk and judge key.")
    return 0


def budget_warnings(recipe, sections: tuple[str, ...] | None = None) -> list[str]:
    """The recipe's token budgets against the lengths the data stage measured (with the real tokenizer, also
    offline on the bundled samples), when it has run; only those of `sections` where given (the rl stage: a
    thinking budget below what SFT teaches cuts most completions before their answer, and whole groups then
    score alike)."""
    path = stage_dir(recipe, "data") / "lengths.json"
    if not path.exists():
        return []
    return [w for section, w in length_warnings(recipe, json.loads(path.read_text())) if sections is None or section in sections]
