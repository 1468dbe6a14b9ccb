"""Several GPUs as one training job, and the rollout server beside it.

    python -m kit launch --recipe qwen3.6-27b-grpo --processes 8 [--config kit/accelerate/fsdp.yaml]
    python -m kit rollout-server --recipe qwen3.6-27b-grpo [--host 0.0.0.0] [--port 8000]

`launch` runs the data stage once, SFT and RL through `accelerate launch` (one process per GPU, on the
transformers+peft end: Unsloth trains on one GPU), then export and eval once through the pipeline,
which finds SFT and RL up to date. `make train-27b NPROC=8` calls it.

RL rollouts, as TRL runs them (`rl.generation: auto | vllm`):
- `rl.vllm_mode: colocate`: each training process holds a vLLM engine on its own GPU (a share of it,
  `rl.gpu_memory_utilization`); one node, nothing to start.
- `rl.vllm_mode: server`: generation has GPUs of its own. With no `rl.vllm_server_url`, the launch
  starts `trl vllm-serve` on the last `rl.vllm_server_gpus` GPUs (tensor-parallel across them), trains on
  the `--processes` before them, points RL at the server and stops it after RL. With a URL, RL uses
  that server (another node's `python -m kit rollout-server --host 0.0.0.0`). After each optimiser
  step the main process pushes the merged weights to the server over NCCL (TRL's VLLMClient), so the
  trainer needs a CUDA GPU; on a machine without one, RL generates with HF and says why.

`trl vllm-serve` is `vllm serve` with the weight-transfer engine and the log-probabilities TRL needs:
the kit builds its command with TRL's own `build_command`, so both move together.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from .base_model import model_path
from .chat_api import is_loopback
from .children import ChildServer, free_port
from .recipe import Recipe, load_recipe, trainer_setting
from .rl import rollout_engine
from .runs import runs_root
from .runtime import TRANSFORMERS, VLLM_CPU, LaunchError, split_gpus, visible_gpus, vllm_settings, wants_server
from .vllm_end import vllm_serve_head

CONFIGS = Path(__file__).resolve().parent / "accelerate"


def rollout_server_command(recipe: Recipe, host: str, port: int, gpus: int) -> list[str]:
    """`trl vllm-serve` for the recipe's base model, as TRL builds it (`build_command`: `vllm serve` with
    the NCCL weight-transfer engine, processed log-probabilities, no cap on them), with a context that
    holds a prompt and its completion. On vLLM's CPU build: its server module, bf16 and a small share."""
    import torch
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    settings = vllm_settings(torch.cuda.is_available(), 0.9)
    max_len = recipe.model.max_seq_length + trainer_setting(recipe, "rl", "max_completion_length")
    args = ScriptArguments(model=model_path(recipe), host=host, port=port, tensor_parallel_size=max(gpus, 1),
                           max_model_len=max_len, enable_prefix_caching=True, log_level="warning",
                           dtype=settings["dtype"], gpu_memory_utilization=settings["gpu_memory_utilization"])
    cmd = build_command(args)
    model_at = cmd.index("serve") + 1
    return [*vllm_serve_head(cmd[model_at]), *cmd[model_at + 1:]]


class RolloutServer(ChildServer):
    """`trl vllm-serve` in a process group of its own, on the given GPUs, until the block ends:
    `with RolloutServer(recipe, port, gpus) as url:`. Its log goes to runs/<recipe>/rollout_server.log."""

    def __init__(self, recipe: Recipe, port: int, gpus: list[str] | None = None, host: str = "127.0.0.1",
                 timeout_s: float = 1200):
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}  # the weight-transfer endpoints TRL calls
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        else:
            env = {**VLLM_CPU["env"], **env}
        # what others point rl.vllm_server_url at; this machine checks it on the loopback when it listens on all
        self.url = f"http://{socket.gethostname() if host == '0.0.0.0' else host}:{port}"
        super().__init__(rollout_server_command(recipe, host, port, len(gpus or [])),
                         f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/health", timeout_s, env,
                         log=runs_root() / recipe.name / "rollout_server.log")

    def __enter__(self) -> str:
        print(f"[kit] rollout server: {' '.join(self.cmd[1:])} (log: {self.log})", flush=True)
        super().__enter__()
        print(f"[kit] rollout server ready at {self.url}", flush=True)
        return self.url


def server_needed(recipe: Recipe) -> bool:
    """Whether this launch starts the rollout server: the recipe wants one and the rollouts would really
    go through vLLM (else RL says why it generates with HF)."""
    if not wants_server(recipe):
        return False
    engine, why = rollout_engine(replace(recipe, rl=replace(recipe.rl, vllm_server_url="http://127.0.0.1")),
                                 TRANSFORMERS)
    if engine != "vllm":
        print(f"[kit] rollout server not started: RL generates with {engine} ({why})", flush=True)
    return engine == "vllm"


def kit_command(stage: str, recipe_name: str, sets: list[str]) -> list[str]:
    return [sys.executable, "-m", "kit", stage, "--recipe", recipe_name, *[a for s in sets for a in ("--set", s)]]


def accelerate_command(config: Path, processes: int, stage: str, recipe_name: str, sets: list[str]) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--num_processes", str(processes), *kit_command(stage, recipe_name, sets)[1:]]


def run_step(cmd: list[str], env: dict) -> None:
    """One step of the launch in the foreground. Ctrl-C reaches the launcher, which stops its workers
    (they run in sessions of their own: killing the launcher alone would leave them training)."""
    print(f"[kit] $ {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd, env=env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    if code:
        raise LaunchError(f"`{' '.join(cmd[1:])}` exited with code {code}: its output above says why")


def run(recipe_name: str, sets: list[str], processes: int, config: str | Path | None = None) -> None:
    """Data once; SFT and RL as one job of `processes` processes (and the rollout server where the
    recipe asks for one); export and eval once."""
    recipe = load_recipe(recipe_name, sets)
    config = Path(config) if config else CONFIGS / "ddp.yaml"
    if not config.exists():
        shipped = ", ".join(sorted(p.name for p in CONFIGS.glob("*.yaml")))
        raise LaunchError(f"accelerate config {config} does not exist (the kit ships {shipped} in {CONFIGS})")
    server = server_needed(recipe)
    train, generation = split_gpus(visible_gpus(), processes, recipe.rl.vllm_server_gpus if server else 0)
    env = {**os.environ, "KIT_END": os.environ.get("KIT_END", TRANSFORMERS)}  # the multi-GPU end, whatever the count
    if train:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(train)
    where = f"GPUs {','.join(train)}" if train else "the CPU"
    beside = f", rollout server on GPUs {','.join(generation)}" if server else ""
    print(f"[kit] launch: {processes} training process(es) on {where}{beside}; config {config.name}", flush=True)
    run_step(kit_command("data", recipe_name, sets), env)
    if recipe.data.sft:
        run_step(accelerate_command(config, processes, "sft", recipe_name, sets), env)
    if recipe.data.rl:
        with RolloutServer(recipe, free_port(), generation) if server else nullcontext() as url:
            at = [f"rl.vllm_server_url={url}"] if url else []
            run_step(accelerate_command(config, processes, "rl", recipe_name, [*sets, *at]), env)
    run_step(kit_command("pipeline", recipe_name, sets), env)


def serve_rollouts(recipe: Recipe, host: str, port: int) -> int:
    """`python -m kit rollout-server`: the server in the foreground until Ctrl-C (or SIGTERM), on this
    machine's GPUs (CUDA_VISIBLE_DEVICES picks them), tensor-parallel across them."""
    gpus = visible_gpus()

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # so that the server's group is stopped, not orphaned
    if not is_loopback(host):  # TRL's client carries no key, so the server cannot ask for one
        print(f"[kit] ⚠ the rollout server on {host}:{port} takes no key (TRL's client sends none): anyone who can "
              f"reach this port can generate with it and push weights into it. Keep it on a private network, or "
              f"use --host 127.0.0.1 with the trainer on this machine.", flush=True)
    server = RolloutServer(recipe, port, gpus, host=host)
    try:
        with server as url:
            print(f"[kit] train against it with --set rl.vllm_mode=server --set rl.vllm_server_url={url} "
                  f"(Ctrl-C stops it)", flush=True)
            return server.proc.wait()
    except KeyboardInterrupt:
        return 0
