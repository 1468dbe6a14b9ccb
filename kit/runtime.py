"""The facts of this process, in one place: which end trains (Unsloth on a CUDA GPU that has it, else
transformers + peft), how it was launched (one process, or one of several under `torchrun` / `accelerate
launch`, and what that launch shards), the settings vLLM's CPU build needs, and peak memory.

The stages ask here; nothing here loads a model.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import KitError
from .recipe import Recipe

UNSLOTH = "unsloth"
TRANSFORMERS = "transformers+peft"


class CapacityError(KitError, RuntimeError):
    """The recipe asks for more than this machine has; raised before anything is loaded."""


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_end() -> str:
    """Unsloth on a CUDA machine that has it, else transformers+peft; `KIT_END` forces one (gpu-check)."""
    forced = os.environ.get("KIT_END")
    if forced:
        if forced not in (UNSLOTH, TRANSFORMERS):
            raise CapacityError(f"KIT_END must be '{UNSLOTH}' or '{TRANSFORMERS}', got '{forced}'")
        if forced == UNSLOTH and not has_cuda():
            raise CapacityError("KIT_END=unsloth needs a CUDA GPU (unsloth cannot be imported without one)")
        return forced
    if world_size() > 1:  # Unsloth trains on one GPU; several processes use this end
        return TRANSFORMERS
    if has_cuda() and importlib.util.find_spec("unsloth") is not None:
        return UNSLOTH
    return TRANSFORMERS


def import_end() -> str:
    """Pick the end and, on the Unsloth end, import unsloth now, before transformers, TRL or peft:
    unsloth patches them when it is imported and warns (and skips its patches) when it comes later.
    Every stage calls this first."""
    end = pick_end()
    if end == UNSLOTH:
        import unsloth  # noqa: F401

    return end


# ---- how this process was launched

def world_size() -> int:
    """Processes in this job: 1, or how many `torchrun` / `accelerate launch` started (WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def how_launched() -> dict:
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
    """The process that writes a stage's files (the only one, or rank 0 of several). Read from the launcher's
    environment, so that it answers before the process group exists (accelerate's PartialState would start it)."""
    return int(os.environ.get("RANK", "0")) == 0


def start_processes() -> None:
    """Under a multi-process launch, join the process group now (accelerate's PartialState, as the
    trainer would later: gloo on a CPU, NCCL on GPUs), so that the main process can prepare the stage's
    folder while the others wait at `wait_for_main`."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # the state the trainer's arguments then find


def wait_for_main() -> None:
    """Every process waits here until the main process has written what the others read next (accelerate's
    `wait_for_everyone`)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def gather(value) -> list:
    """`value` from every process, in rank order (one process: [value]): accelerate's `gather_object`."""
    if world_size() == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


@dataclass
class Sharding:
    """What a multi-process launch splits across its GPUs, read from its accelerate config: DDP nothing;
    FSDP (FULL_SHARD) and ZeRO-3 the weights, gradients and optimiser state; SHARD_GRAD_OP and ZeRO-2
    the gradients and optimiser state."""

    name: str
    weights: bool = False
    states: bool = False

    @classmethod
    def of(cls, kind: str, reshard: str = "FULL_SHARD", zero_stage: int = 0) -> "Sharding":
        """From accelerate's names: `distributed_type`, FSDP's reshard-after-forward (or sharding
        strategy), DeepSpeed's ZeRO stage."""
        if kind == "FSDP":
            return cls("fsdp", weights=str(reshard).upper() in ("FULL_SHARD", "1", "TRUE"), states=True)
        if kind == "DEEPSPEED":
            return cls(f"zero{zero_stage}", weights=zero_stage >= 3, states=zero_stage >= 2)
        return cls("ddp")

    @classmethod
    def from_config(cls, path: str | Path | None) -> "Sharding":
        """The sharding an accelerate config file asks for."""
        import yaml

        cfg = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
        fsdp = cfg.get("fsdp_config") or {}
        return cls.of(cfg.get("distributed_type", "MULTI_GPU"),
                      fsdp.get("fsdp_reshard_after_forward", fsdp.get("fsdp_sharding_strategy", "FULL_SHARD")),
                      int((cfg.get("deepspeed_config") or {}).get("zero_stage", 0)))

    @classmethod
    def from_env(cls) -> "Sharding":
        """The sharding of the launch this process is part of, from what `accelerate launch` exports."""
        env = os.environ.get
        kind = "FSDP" if env("ACCELERATE_USE_FSDP", "").lower() == "true" else \
            "DEEPSPEED" if env("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else "MULTI_GPU"
        return cls.of(kind, env("FSDP_RESHARD_AFTER_FORWARD", env("FSDP_SHARDING_STRATEGY", "FULL_SHARD")),
                      int(env("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0))


def sharded() -> bool:
    """Inside a launch that shards the weights (FSDP FULL_SHARD, ZeRO-3): no process holds the whole
    model, so nothing generates from it alone, and saving it is a collective step."""
    return Sharding.from_env().weights


# ---- CPU threads

def cpu_threads(env=os.environ) -> int:
    """How many threads a CPU compute library (llama.cpp) should use: OMP_NUM_THREADS where it is set, as torch
    reads it, so that a process limited to N threads is limited everywhere (two processes sharing two cores each
    spinning two threads wait on each other's descheduled threads: several times slower); else the CPUs this
    process may run on.

    >>> cpu_threads({"OMP_NUM_THREADS": "1"}), cpu_threads({}) == len(os.sched_getaffinity(0))
    (1, True)
    """
    value = env.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---- vLLM's CPU build

# vLLM's CPU build: its Gated DeltaNet kernels (Qwen3.5's linear attention) run in bf16 only, and it sizes its KV
# cache from VLLM_CPU_KVCACHE_SPACE (GiB), whose default wants more memory than the small models need
VLLM_CPU = {"dtype": "bfloat16", "gpu_memory_utilization": 0.15, "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}}


def vllm_distribution() -> str | None:
    """Which vLLM is installed: "vllm" (the CUDA build), "vllm-cpu" (the CPU build, a distribution of its own
    whose package is still `vllm`), or None. The one place that tells them apart."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("vllm", "vllm-cpu"):
        try:
            version(name)
            return name
        except PackageNotFoundError:
            continue
    return None


def vllm_settings(cuda: bool, gpu_memory_utilization: float) -> dict:
    """A vLLM engine's dtype and memory share: the recipe's share and the model's dtype on a GPU, the CPU
    build's settings (and environment, `env`) elsewhere.

    >>> vllm_settings(False, 0.9)["dtype"], vllm_settings(True, 0.9)
    ('bfloat16', {'dtype': 'auto', 'gpu_memory_utilization': 0.9, 'env': {}})
    """
    return VLLM_CPU if not cuda else {"dtype": "auto", "gpu_memory_utilization": gpu_memory_utilization, "env": {}}


# ---- memory

def peak_memory_logger():
    """A trainer callback that adds the peak GPU memory so far (MiB) to every log line, printed with it:
    a run stopped before its end (metrics.json is written at the end) still says what it used."""
    from transformers import TrainerCallback

    class PeakMemory(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and has_cuda():
                import torch

                logs["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)

    return PeakMemory()


def peak_memory_mb() -> dict:
    """Peak GPU memory (when on a GPU) and this process's peak resident memory, in MiB."""
    import resource

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if has_cuda():
        import torch

        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


class LaunchError(KitError, RuntimeError):
    """A launch this machine cannot run as asked (GPUs, config), with the way out."""


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them ([] without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named:
        return [g.strip() for g in named.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def split_gpus(gpus: list[str], processes: int, server_gpus: int) -> tuple[list[str], list[str]]:
    """(the training processes' GPUs, the rollout server's): the first `processes`, then the next
    `server_gpus`. Without GPUs (CPU processes, no server) both are empty."""
    if processes < 1 or server_gpus < 0:
        raise LaunchError(f"--processes must be at least 1 and rl.vllm_server_gpus at least 0, got {processes}, "
                          f"{server_gpus}")
    if not gpus:
        return [], []
    if processes + server_gpus > len(gpus):
        fix = f"--processes {len(gpus) - server_gpus}" if len(gpus) > server_gpus else "fewer rl.vllm_server_gpus"
        raise LaunchError(f"{processes} training processes + {server_gpus} GPU(s) for the rollout server need "
                          f"{processes + server_gpus} GPUs; this machine has {len(gpus)} ({fix})")
    return gpus[:processes], gpus[processes:processes + server_gpus]


def wants_server(recipe: Recipe) -> bool:
    """The recipe asks the launch for a rollout server: RL in server mode with no address given."""
    return bool(recipe.data.rl) and recipe.rl.vllm_mode == "server" and not recipe.rl.vllm_server_url
