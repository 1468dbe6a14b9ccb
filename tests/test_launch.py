"""`python -m kit launch` (several processes as one job, then export and eval once), the rollout server
it starts for RL in TRL's server mode (`trl vllm-serve`, here through vLLM's CPU build in .venv-vllm),
and what `kit check` estimates per GPU of a launch.

What cannot run here: TRL pushes the trainer's weights into the server over NCCL, which needs a CUDA
GPU on the trainer (its VLLMClient.init_communicator refuses any other device), so on a CPU a server-mode
recipe trains with HF rollouts and says why; the server itself and TRL's client generating from it run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from kit.launch import rollout_server_command
from kit.runtime import LaunchError, split_gpus
from kit.recipe import load_recipe
from child import failure

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "kit" / "accelerate"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def test_the_rollout_server_takes_the_gpus_after_the_training_ones():
    eight = [str(i) for i in range(8)]
    assert split_gpus(eight, 7, 1) == (eight[:7], ["7"])
    assert split_gpus(eight, 4, 2) == (eight[:4], ["4", "5"])
    assert split_gpus(["2", "5"], 1, 1) == (["2"], ["5"])  # names as CUDA_VISIBLE_DEVICES gave them
    with pytest.raises(LaunchError, match=r"need 9 GPUs; this machine has 8 \(--processes 7\)"):
        split_gpus(eight, 8, 1)
    assert split_gpus([], 2, 1) == ([], [])  # CPU processes: no GPUs to hand out, no server


def test_the_rollout_server_command_is_trls_vllm_serve():
    cmd = rollout_server_command(load_recipe("tiny"), "127.0.0.1", 8123, gpus=2)
    text = " ".join(cmd)
    # TRL's own settings for its trainers: the NCCL weight-transfer engine, processed log-probabilities
    assert '--weight-transfer-config {"backend": "nccl"}' in text and "--logprobs-mode processed_logprobs" in text
    assert "--tensor-parallel-size 2" in text and "--port 8123" in text
    r = load_recipe("tiny")
    assert f"--max-model-len {r.model.max_seq_length + r.rl.trainer['max_completion_length']}" in text
    assert "tiny-qwen3.5" in text  # the base: TRL pushes the merged LoRA weights into it


def test_where_the_rollouts_are_served_does_not_change_what_rl_makes():
    a = load_recipe("tiny", ["rl.vllm_mode=server"])
    b = load_recipe("tiny", ["rl.vllm_mode=server", "rl.vllm_server_url=http://127.0.0.1:41234",
                             "rl.vllm_server_gpus=2"])
    assert a.stage_hash("rl") == b.stage_hash("rl") and a.hash() == b.hash()
    assert a.stage_hash("rl") != load_recipe("tiny").stage_hash("rl")  # the mode itself is part of the run


def test_server_mode_on_a_cpu_generates_with_hf_and_says_why():
    from kit.generation import GenerationError
    from kit.runtime import TRANSFORMERS, UNSLOTH
    from kit.rl import rollout_engine

    with_url = ["rl.vllm_mode=server", "rl.vllm_server_url=http://127.0.0.1:8000"]
    engine, why = rollout_engine(load_recipe("tiny", with_url), TRANSFORMERS)
    assert engine == "hf" and ("NCCL" in why or "not installed" in why), why
    with pytest.raises(GenerationError):
        rollout_engine(load_recipe("tiny", [*with_url, "rl.generation=vllm"]), TRANSFORMERS)
    with pytest.raises(Exception, match="rl.vllm_mode must be colocate or server"):
        rollout_engine(load_recipe("tiny", ["rl.vllm_mode=remote"]), UNSLOTH)


def test_kit_check_estimates_per_gpu_with_the_launchs_sharding():
    from kit.memory import count, estimate, model_config, per_gpu
    from kit.runtime import Sharding

    kinds = {n: Sharding.from_config(CONFIGS / f"{n}.yaml") for n in ("ddp", "fsdp", "zero3")}
    assert (kinds["ddp"].weights, kinds["ddp"].states) == (False, False)
    assert kinds["fsdp"].weights and kinds["fsdp"].states and kinds["zero3"].weights and kinds["zero3"].states
    recipe = load_recipe("qwen3.5-4b-gspo-bf16")
    c = count(model_config(recipe), recipe)
    one = {e.stage: e for e in estimate(recipe, c, unsloth=False)}
    ddp = {e.stage.split(",")[0]: e for e in per_gpu(recipe, c, list(one.values()), 8, kinds["ddp"])}
    fsdp = {e.stage.split(",")[0]: e for e in per_gpu(recipe, c, list(one.values()), 8, kinds["fsdp"])}
    step = "sft (train step)"
    assert ddp[step].total == one[step].total  # DDP: a whole copy per GPU
    w = one[step].terms["weights"]
    assert fsdp[step].terms["weights (1/8)"] == w / 8 and 0 < fsdp[step].terms["2 layers gathered"] < w / 8
    assert fsdp[step].total < one[step].total - 0.5 * w  # most of the 16-bit weights gone from each GPU
    assert fsdp["eval (HF generate)"].total == one["eval (HF generate)"].total  # eval runs once, on one GPU
    server = per_gpu(recipe, c, list(one.values()), 7, kinds["ddp"], server_gpus=2)[-1]
    assert server.stage.startswith("rl rollout server") and server.terms["weights (16-bit, 1/2)"] == c.total


def test_a_stage_inside_a_sharded_launch_checks_its_share_of_the_memory(monkeypatch):
    """The 16-bit 27B: GRPO needs ~96 GiB on one GPU, ~48 GiB per GPU of an 8-way FSDP launch (what
    each process's capacity check must use), and export and eval after it fit one H100."""
    from kit.memory import GPUS, needed_gib
    from kit.runtime import Sharding

    r = load_recipe("qwen3.6-27b-grpo", ["model.load_in_4bit=false"])
    alone, after = needed_gib(r, unsloth=False, stages=["rl"]), needed_gib(r, unsloth=False, stages=["eval", "export"])
    for k, v in {"WORLD_SIZE": "8", "ACCELERATE_USE_FSDP": "true", "FSDP_RESHARD_AFTER_FORWARD": "full_shard"}.items():
        monkeypatch.setenv(k, v)  # what `accelerate launch --config_file fsdp.yaml` exports to each process
    assert Sharding.from_env() == Sharding("fsdp", weights=True, states=True)
    shared = needed_gib(r, unsloth=False, stages=["rl"])
    assert shared < GPUS["H100"] < alone
    assert needed_gib(r, unsloth=False, stages=["eval", "export"]) == after < GPUS["H100"]


def test_kit_check_prints_the_launch():
    out = subprocess.run([sys.executable, "-m", "kit", "check", "--recipe", "tiny", "--processes", "2", "--config",
                          str(CONFIGS / "fsdp.yaml")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, failure(out)
    assert "2 training processes, one per GPU, on the transformers+peft end" in out.stdout
    assert "sft (train step), per GPU (fsdp)" in out.stdout and "weights sharded" in out.stdout
    assert "max_concurrency is shared: 8 per process" in out.stdout  # the tiny recipe's 16, over 2
    single = subprocess.run([sys.executable, "-m", "kit", "check", "--recipe", "tiny", "--processes", "1", "--config",
                             str(CONFIGS / "fsdp.yaml")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert single.returncode == 0 and "per GPU" not in single.stdout and "[kit] launch" not in single.stdout  # make's NPROC=1
    plan = subprocess.run(["make", "-n", "workshop", "NPROC=2"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "-m kit launch --recipe workshop --processes 2 --config kit/accelerate/ddp.yaml" in plan.stdout
    assert "kit pipeline" not in plan.stdout
    assert "-m kit pipeline --recipe workshop" in subprocess.run(["make", "-n", "workshop"], capture_output=True,
                                                                  text=True, timeout=120, cwd=ROOT).stdout


@pytest.mark.slow
def test_launch_runs_sft_and_gspo_as_one_two_process_job_then_the_rest_once(tmp_path):
    """The CPU end of `make train-27b NPROC=8 SET='rl.vllm_mode=server'`: data, SFT and GSPO as two
    processes (accelerate, gloo), then export and eval once, with RL and SFT found up to date."""
    runs = tmp_path / "runs"
    sets = ["sft.trainer.max_steps=10", "sft.format_check_questions=2", "sft.format_check_max_new_tokens=16",
            "rl.trainer.max_steps=4", "rl.trainer.per_device_train_batch_size=4",  # 2 × 4 = the recipe's 8
            "rl.vllm_mode=server", "export.quantizations=[q8_0]", "eval.max_items=4", "eval.max_new_tokens=16",
            "eval.budgets=[]", "data.eval=[{path: 'bundled:medqa_4options'}]"]
    proc = subprocess.run([sys.executable, "-m", "kit", "launch", "--recipe", "tiny", "--processes", "2",
                           *[a for s in sets for a in ("--set", s)]], env={**os.environ, "KIT_RUNS_DIR": str(runs)},
                          capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout[-3000:], failure(proc))
    out = proc.stdout
    assert "rollout server not started: RL generates with hf" in out  # no CUDA here: said, not hidden
    assert "sft: up to date" in out and "rl: up to date" in out, out[-3000:]  # the pipeline did not redo them
    sft = json.loads((runs / "tiny" / "sft" / "metrics.json").read_text())
    rl = json.loads((runs / "tiny" / "rl" / "metrics.json").read_text())
    assert sft["launch"]["world_size"] == rl["launch"]["world_size"] == 2 and rl["launch"]["backend"] == "gloo"
    assert out.count("rl done") == 1 and rl["steps"] == 4 and rl["adapter_max_abs_change"] > 0
    # every completion of both processes counted once in the run's ledger: 2 generation rounds × 8 × 2
    counts = rl["judge"]["reward_counts"]
    assert counts["graded"] + counts["broken_format"] + counts["skipped"] == 2 * 8 * 2, counts
    assert json.loads((runs / "tiny" / "rl" / "judge_ledger.json").read_text())["reward_counts"] == counts
    assert (runs / "tiny" / "export" / "gguf" / "tiny-q8_0.gguf").exists()
    assert (runs / "tiny" / "eval" / "metrics.json").exists()


@pytest.mark.slow
def test_kit_starts_trls_rollout_server_and_trls_client_generates_from_it(tmp_path):
    assert VLLM_PYTHON.exists(), "the CPU lane's vLLM environment is missing: run `make setup`"
    from kit.children import free_port

    port = free_port()
    env = {**os.environ, "KIT_RUNS_DIR": str(tmp_path / "runs")}
    server = subprocess.Popen([str(VLLM_PYTHON), "-m", "kit", "rollout-server", "--recipe", "tiny", "--port",
                               str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        client = textwrap.dedent(f"""
            import json
            from transformers import AutoTokenizer
            from trl.generation.vllm_client import VLLMClient
            from kit.base_model import model_path
            from kit.recipe import load_recipe
            tok = AutoTokenizer.from_pretrained(model_path(load_recipe("tiny")))
            prompt = tok.apply_chat_template([{{"role": "user", "content": "What causes iron deficiency anaemia?"}}],
                                             tokenize=False, add_generation_prompt=True)
            c = VLLMClient(base_url="http://127.0.0.1:{port}", connection_timeout=30)
            out = c.generate(prompts=[prompt], n=4, max_tokens=24, temperature=1.0, top_p=0.95, top_k=20)
            print(json.dumps(dict(world=c.get_world_size(), transfer=c.get_server_info()["weight_transfer_config"],
                                  lengths=[len(x) for x in out["completion_ids"]],
                                  logprobs=[len(x) for x in out["logprobs"]],
                                  prompt_ids=out["prompt_ids"][0] == tok(prompt)["input_ids"])))
        """)
        got = subprocess.run([str(VLLM_PYTHON), "-c", client], capture_output=True, text=True, timeout=300, env=env)
        assert got.returncode == 0, failure(got)
        result = json.loads(got.stdout.strip().splitlines()[-1])
        # TRL's trainer finds what it needs: one worker to join, the NCCL weight-transfer engine, 4 sampled
        # completions of the prompt it sent, with a log-probability per token for the importance ratios
        assert result["world"] == 1 and result["transfer"] == {"backend": "nccl"}
        assert len(result["lengths"]) == 4 and all(n > 0 for n in result["lengths"])
        assert result["logprobs"] == result["lengths"] and result["prompt_ids"]
    finally:
        server.send_signal(signal.SIGTERM)  # the kit stops the server's whole process group
        server.wait(timeout=120)
    time.sleep(2)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    assert f"rl.vllm_server_url=http://127.0.0.1:{port}" in server.stdout.read()


def test_inside_a_sharded_launch_4_bit_weights_are_stored_in_the_models_dtype_and_placed_by_it(monkeypatch):
    """FSDP-QLoRA as bitsandbytes documents it: quant storage = the model's dtype (FSDP shards one dtype
    per wrapped unit), no device_map (the launcher places the shards; ZeRO-3 refuses one), no
    prepare_model_for_kbit_training (its fp32 upcasts would mix dtypes). Loaded and trained one step here."""
    import collections

    import torch

    from kit.modeling import load_kwargs, load_model

    r = load_recipe("tiny", ["model.load_in_4bit=true"])
    alone = load_kwargs(r, True, "cuda:1")
    assert alone["device_map"] == "cuda:1" and alone["quantization_config"].bnb_4bit_quant_storage == torch.uint8
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "full_shard")
    sharded = load_kwargs(r, True, "cuda:1")
    assert "device_map" not in sharded and sharded["quantization_config"].bnb_4bit_quant_storage == sharded["dtype"]
    loaded = load_model(r)
    layers = collections.Counter(type(m).__name__ for _, m in loaded.model.named_modules())
    assert layers["Linear4bit"] > 0
    assert {p.dtype for p in loaded.model.parameters()} == {sharded["dtype"]}  # one dtype: FSDP can flatten it
    ids = loaded.tokenizer("Iron deficiency anaemia", return_tensors="pt").input_ids
    loaded.model(input_ids=ids, labels=ids).loss.backward()
    assert any(p.grad is not None for n, p in loaded.model.named_parameters() if "lora_" in n)


def test_inside_a_sharded_launch_nothing_generates_alone_and_the_adapter_change_comes_from_the_files(
        monkeypatch, tmp_path):
    """No process holds the whole model under FSDP FULL_SHARD or ZeRO-3: SFT's format check is left to
    eval (said, not faked), and RL measures how far its adapter moved from the files it started from and
    wrote (the Trainer gathers and saves the adapter there)."""
    from types import SimpleNamespace

    import torch
    from safetensors.torch import save_file

    from kit.rl import adapter_change, lora_snapshot
    from kit.sft import format_check

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    model = torch.nn.Linear(2, 2)
    assert format_check(None, model, ["q"], load_recipe("tiny")) == (None, [])
    assert lora_snapshot(model) == {}
    start, end = tmp_path / "sft", tmp_path / "rl"
    for d in (start, end):
        d.mkdir()
    key = "base_model.model.layers.0.q_proj.lora_B.weight"
    save_file({key: torch.zeros(4, 2)}, str(start / "adapter_model.safetensors"))
    save_file({key: torch.tensor([[0.0, 0.25]] * 4)}, str(end / "adapter_model.safetensors"))
    session = SimpleNamespace(lora_before={}, start_adapter=str(start), trainer=None)
    assert adapter_change(session, end) == 0.25
    assert adapter_change(SimpleNamespace(lora_before={}, start_adapter=None, trainer=None), end) is None


def test_a_recipe_without_max_completion_length_gets_trls_default_everywhere():
    """The memory estimate, the rollout server's context and the data stage's warning read the setting as the
    built GRPOConfig will have it: TRL's own default where the recipe leaves it out (512 in TRL 1.15/1.16)."""
    import dataclasses

    from trl import GRPOConfig

    from kit.data import length_warnings
    from kit.memory import Counts, Lengths, estimate
    from kit.recipe import trainer_setting

    trl_default = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}["max_completion_length"]
    recipe = load_recipe("tiny")
    del recipe.rl.trainer["max_completion_length"]
    assert trainer_setting(recipe, "rl", "max_completion_length") == trl_default
    cmd = " ".join(rollout_server_command(recipe, "127.0.0.1", 8123, gpus=1))
    assert f"--max-model-len {recipe.model.max_seq_length + trl_default}" in cmd
    warnings = length_warnings(recipe, {"sft": [100] * 20, "sft_completion": [trl_default + 50] * 20})
    assert any(f"rl.trainer.max_completion_length {trl_default}" in w for _, w in warnings), warnings
    assert not any("rl.trainer" in w for _, w in length_warnings(recipe, {"sft": [100] * 20,
                                                                          "sft_completion": [trl_default - 50] * 20}))
    counts = Counts(total=10**8, text=10**8, linear=9 * 10**7, lora=10**6, full=0, hidden=512, intermediate=2048,
                    layers=8, vocab=32000, kv_bytes_per_token=4096, state_bytes_per_sequence=0, vision_language=False)
    longer = load_recipe("tiny")
    longer.rl.trainer["max_completion_length"] = trl_default * 2
    rl_memory = lambda r: next(e for e in estimate(r, counts, False, Lengths(256, 64)) if e.stage.startswith("rl"))  # noqa: E731
    assert rl_memory(recipe).total < rl_memory(longer).total  # the default's tokens, not a copied 256
