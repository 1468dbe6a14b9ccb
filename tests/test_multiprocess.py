"""Several processes as one training job on a CPU (gloo), the way a multi-GPU launch runs (NCCL there):
`torchrun --nproc_per_node 2`, and `accelerate launch` with the kit's DDP config. The two processes
train one model (DDP: gradients averaged), the main process alone writes the stage's files, an
interrupted two-process run resumes, and the shipped FSDP and ZeRO-3 configs are accepted by accelerate
(they cannot run here: accelerate's FSDP wants an accelerator device, ZeRO-3 DeepSpeed and a GPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from child import failure

SETS = ["sft.trainer.max_steps=20", "sft.trainer.logging_steps=1", "sft.trainer.eval_steps=20",
        "sft.trainer.save_steps=10", "sft.format_check_questions=2", "lora.dropout=0.0"]


CONFIGS = Path(__file__).resolve().parent.parent / "kit" / "accelerate"


def command(nproc: int, per_device: int, sets=SETS, accelerate: bool = False) -> list[str]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)] if nproc > 1 \
        else [sys.executable]
    if accelerate:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
                  "--num_processes", str(nproc)]
    return [*launch, "-m", "kit", "sft", "--recipe", "tiny",
            *[a for s in [*sets, f"sft.trainer.per_device_train_batch_size={per_device}"] for a in ("--set", s)]]


def env_for(runs) -> dict:
    return {**os.environ, "KIT_RUNS_DIR": str(runs)}


def data(runs) -> None:
    proc = subprocess.run([sys.executable, "-m", "kit", "data", "--recipe", "tiny"], env=env_for(runs),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, failure(proc)


@pytest.mark.slow
def test_two_cpu_processes_train_sft_as_one_job_and_only_the_main_one_writes(tmp_path):
    results = {}
    for name, nproc, per_device in (("two", 2, 4), ("one", 1, 8)):  # the same global batch of 8
        runs = tmp_path / name
        data(runs)
        proc = subprocess.run(command(nproc, per_device), env=env_for(runs), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, failure(proc)
        results[name] = (proc.stdout, json.loads((runs / "tiny" / "sft" / "metrics.json").read_text()))
    out, two = results["two"]
    _, one = results["one"]
    # each thing said and written once, by the main process
    assert out.count("format adherence before SFT") == 1 and out.count("sft done") == 1, out[-3000:]
    assert two["launch"] == {"world_size": 2, "rank": 0, "local_rank": 0, "backend": "gloo"}
    assert (tmp_path / "two" / "tiny" / "sft" / "adapter" / "adapter_model.safetensors").exists()
    # one model trained on both halves of each batch: the same curve as one process with the whole batch
    # (measured: the first 10 steps equal to 3 decimals, eval loss within 0.2 %; two processes that each
    # trained alone, as before `use_cpu`, ended 30 % higher)
    a = [h["loss"] for h in two["loss_history"]["train"]]
    b = [h["loss"] for h in one["loss_history"]["train"]]
    assert len(a) == len(b) == 20 and sum(abs(x - y) for x, y in zip(a, b)) / 20 < 0.15, (a, b)
    assert abs(two["eval_loss"] - one["eval_loss"]) / one["eval_loss"] < 0.02, (two["eval_loss"], one["eval_loss"])


@pytest.mark.slow
def test_an_interrupted_two_process_run_resumes_from_its_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    data(runs)
    ckpts, sets = runs / "tiny" / "sft" / "checkpoints", [*SETS, "sft.trainer.max_steps=40",
                                                           "sft.trainer.eval_steps=40", "sft.trainer.logging_steps=10"]
    proc = subprocess.Popen(command(2, 4, sets, accelerate=True), env=env_for(runs), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (ckpts / "checkpoint-10" / "trainer_state.json").exists() and time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.1)
    # the launcher and both workers at once, with no chance to clean up (torchrun starts its workers in
    # sessions of their own: killing the launcher alone leaves them training, and writing, on)
    import psutil

    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in tree:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    proc.wait()
    assert not (runs / "tiny" / "sft" / "metrics.json").exists()
    done = subprocess.run(command(2, 4, sets, accelerate=True), env=env_for(runs), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, failure(done)
    m = json.loads((runs / "tiny" / "sft" / "metrics.json").read_text())
    assert done.stdout.count("resuming from") == 1 and m["steps"] == 40, done.stdout[-2000:]
    assert 10 <= int(m["resumed_from"].split("-")[1]) < 40  # where the kill caught it, then on to the end
    assert m["launch"]["world_size"] == 2 and m["launch"]["backend"] == "gloo"  # accelerate really started two


def test_the_shipped_accelerate_configs_are_accepted_by_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    kinds = {name: load_config_from_file(str(CONFIGS / f"{name}.yaml")) for name in ("ddp", "fsdp", "zero3")}
    assert kinds["ddp"].distributed_type == DistributedType.MULTI_GPU
    assert kinds["fsdp"].distributed_type == DistributedType.FSDP and kinds["fsdp"].fsdp_config["fsdp_use_orig_params"]
    assert kinds["zero3"].distributed_type == DistributedType.DEEPSPEED and kinds["zero3"].deepspeed_config["zero_stage"] == 3
