import json
import shutil
import subprocess
import sys

import pytest

from conftest import kill_during_save
from fake_openai import FakeOpenAI
from kit import rl
from kit.recipe import RecipeError, load_recipe
from child import failure

FAST = ["rl.trainer.max_steps=4", "rl.trainer.save_steps=2"]


def test_algorithm_maps_to_importance_sampling_level(tmp_path):
    gspo = rl.build_config(load_recipe("tiny"), tmp_path)
    assert gspo.importance_sampling_level == "sequence" and gspo.loss_type == "grpo"
    assert gspo.epsilon == pytest.approx(3e-4) and gspo.epsilon_high == pytest.approx(4e-4)
    # slightly off-policy, which is where GSPO differs from GRPO
    assert gspo.steps_per_generation > gspo.gradient_accumulation_steps
    grpo = rl.build_config(load_recipe("tiny", ["rl.algorithm=grpo"]), tmp_path)
    assert grpo.importance_sampling_level == "token"
    with pytest.raises(RecipeError, match="contradicts"):
        rl.build_config(load_recipe("tiny", ["rl.trainer.importance_sampling_level=token"]), tmp_path)
    with pytest.raises(RecipeError, match="rl.algorithm"):
        rl.build_config(load_recipe("tiny", ["rl.algorithm=ppo"]), tmp_path)


@pytest.mark.parametrize("name", ["tiny", "qwen3.5-4b-gspo", "qwen3.5-4b-gspo-bf16", "qwen3.6-27b-grpo", "workshop"])
def test_every_recipe_builds_its_grpo_config(name, tmp_path):
    cfg = rl.build_config(load_recipe(name), tmp_path)
    assert cfg.importance_sampling_level == {"gspo": "sequence", "grpo": "token"}[load_recipe(name).rl.algorithm]


def test_rollouts_fall_back_to_hf_loudly_where_vllm_cannot_run(monkeypatch, capsys):
    from kit import generation
    from kit.generation import GenerationError
    from kit.runtime import TRANSFORMERS, UNSLOTH

    monkeypatch.setattr(generation, "_said", set())
    engine, why = rl.rollout_engine(load_recipe("tiny"), TRANSFORMERS)  # no vLLM in this environment
    assert engine == "hf" and "vLLM is not installed" in why
    assert "NOT vLLM" in capsys.readouterr().out
    with pytest.raises(GenerationError, match="asks for vLLM"):
        rl.rollout_engine(load_recipe("tiny", ["rl.generation=vllm"]), TRANSFORMERS)
    assert rl.rollout_engine(load_recipe("tiny", ["rl.generation=hf"]), TRANSFORMERS)[0] == "hf"
    # with vLLM installed, a CPU still cannot colocate it with training
    monkeypatch.setattr(generation, "vllm_problem", lambda: None)
    engine, why = rl.rollout_engine(load_recipe("tiny"), TRANSFORMERS)
    assert engine == "hf" and "no CUDA GPU" in why
    # server mode: the trainer pushes its weights over NCCL (a CUDA GPU), to the server at its address
    assert "NCCL" in rl.rollout_engine(load_recipe("tiny", ["rl.vllm_mode=server"]), TRANSFORMERS)[1]
    monkeypatch.setattr(rl, "has_cuda", lambda: True)
    assert "vllm_server_url" in rl.rollout_engine(load_recipe("tiny", ["rl.vllm_mode=server"]), TRANSFORMERS)[1]
    served = load_recipe("tiny", ["rl.vllm_mode=server", "rl.vllm_server_url=http://gen:8000"])
    assert rl.rollout_engine(served, TRANSFORMERS)[0] == "vllm"
    assert "transformers+peft end" in rl.rollout_engine(served, UNSLOTH)[1]  # TRL's mode, not Unsloth's
    # a 4-bit base: TRL would push packed 4-bit tensors into vLLM's 16-bit model, in either mode
    for mode in ("server", "colocate"):
        engine, why = rl.rollout_engine(load_recipe("tiny", [f"rl.vllm_mode={mode}", "model.load_in_4bit=true",
                                                             "rl.vllm_server_url=http://gen:8000"]), TRANSFORMERS)
        assert engine == "hf" and "load_in_4bit=false" in why, why
    assert rl.rollout_engine(load_recipe("tiny"), TRANSFORMERS)[0] == "vllm"  # colocate, 16-bit, CUDA
    assert rl.vllm_args(served, "vllm", UNSLOTH) == {}  # Unsloth turns use_vllm on from its fast_inference engine


def test_vllm_rollouts_reach_trls_config(tmp_path):
    from kit.runtime import TRANSFORMERS

    recipe = load_recipe("tiny", ["rl.gpu_memory_utilization=0.4"])
    cfg = rl.build_config(recipe, tmp_path, rl.vllm_args(recipe, "vllm", TRANSFORMERS))
    assert cfg.use_vllm and cfg.vllm_mode == "colocate" and cfg.vllm_gpu_memory_utilization == 0.4
    served = load_recipe("tiny", ["rl.vllm_mode=server", "rl.vllm_server_url=http://gen:8000"])
    cfg = rl.build_config(served, tmp_path, rl.vllm_args(served, "vllm", TRANSFORMERS))
    assert cfg.use_vllm and cfg.vllm_mode == "server" and cfg.vllm_server_base_url == "http://gen:8000"
    assert not rl.build_config(recipe, tmp_path, rl.vllm_args(recipe, "hf", TRANSFORMERS)).use_vllm


def test_a_budget_below_the_sft_lengths_is_warned_about(tmp_path, monkeypatch):
    from kit.capacity import budget_warnings

    monkeypatch.setenv("KIT_RUNS_DIR", str(tmp_path))
    (tmp_path / "tiny" / "data").mkdir(parents=True)
    (tmp_path / "tiny" / "data" / "lengths.json").write_text(json.dumps({"sft": list(range(100, 300)), "rl": [40, 50, 60]}))
    assert budget_warnings(load_recipe("tiny", ["rl.trainer.max_completion_length=240"]), ("rl",)) == []
    (warning,) = budget_warnings(load_recipe("tiny", ["rl.trainer.max_completion_length=160"]), ("rl",))
    assert "below the 95th percentile" in warning and "~240 tokens" in warning


def test_unknown_reward_name():
    with pytest.raises(RecipeError, match="rl.reward_weights.style"):
        rl.build_rewards(load_recipe("tiny", ["rl.reward_weights={format: 1, style: 1}"]), None, [1])


def run_rl(shared_runs, *sets):
    proc = subprocess.run([sys.executable, "-m", "kit", "rl", "--recipe", "tiny", *sum((["--set", s] for s in sets), [])],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, failure(proc)
    return json.loads((shared_runs / "tiny" / "rl" / "metrics.json").read_text()), proc


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, level", [("gspo", "sequence"), ("grpo", "token")])
def test_rl_runs_from_the_sft_adapter(sft_metrics, shared_runs, algorithm, level):
    m, proc = run_rl(shared_runs, f"rl.algorithm={algorithm}", *FAST)
    assert m["algorithm"] == algorithm and m["importance_sampling_level"] == level
    assert m["start_adapter"] == "sft/adapter" and m["steps"] == 4
    assert m["rewards_finite"] and m["reward_history"]
    assert all("rewards/format_reward/mean" in h and "rewards/judge/mean" in h for h in m["reward_history"])
    assert m["adapter_max_abs_change"] > 0, "the adapter did not change"
    assert (shared_runs / "tiny" / "rl" / "adapter" / "adapter_model.safetensors").exists()
    card = (shared_runs / "tiny" / "rl" / "adapter" / "README.md").read_text()
    assert "not medical advice" in card.lower()
    assert m["judge"]["preset"] == "rule" and m["judge"]["ledger"]["calls"] == 0


@pytest.mark.slow
def test_rl_with_a_remote_judge_over_http(sft_metrics, shared_runs):
    """The GRPOTrainer's rewards come from a real OpenAI-compatible server, reasoning never sent."""
    from kit.formatting import THINK_CLOSE

    with FakeOpenAI() as server:
        recipe = load_recipe("tiny", [*FAST, "rl.trainer.max_steps=2", "rl.judge.preset=openai-compatible",
                                      f"rl.judge.base_url={server.url}", "rl.judge.model=fake-judge",
                                      "rl.trainer.temperature=0.3"])
        session = rl.prepare(recipe)
        m = rl.train(session)
    counts = m["judge"]["reward_counts"]
    assert counts["graded"] + counts["broken_format"] == 2 * 8
    # before training, the preflight calibrated this (gullible) judge and said so; then the run's own requests
    calibration = m["judge"]["calibration"]
    assert calibration["gullible"] and calibration["paid_attacks"]["rate"] == 1.0
    assert m["judge"]["reference_screen"]["stopped"] == 0
    preflight = calibration["requests"] + 1  # the calibration's requests and the key check's one
    assert m["judge"]["ledger"]["calls"] == server.requests - preflight
    # every graded conclusion is asked once, except those the cache answered and those the screen stopped unasked
    ledger = m["judge"]["ledger"]
    assert server.requests - preflight == counts["graded"] - ledger["cache_hits"] - sum(ledger["screened"].values())
    assert all(THINK_CLOSE not in json.dumps(b) for b in server.bodies)


def test_a_judge_key_the_provider_refuses_stops_the_rl_stage_before_training(sft_metrics, shared_runs):
    """A 401 (or 403) is not retried through a run of fallback rewards: the stage stops in its preflight."""
    from kit.judge import JudgeAccessError

    with FakeOpenAI(default_tag="unauthorized") as server:
        recipe = load_recipe("tiny", [*FAST, "rl.judge.preset=openai-compatible", f"rl.judge.base_url={server.url}",
                                      "rl.judge.model=fake-judge", "rl.judge.calibrate=false"])
        with pytest.raises(JudgeAccessError, match="401"):
            rl.prepare(recipe)
        assert server.requests == 1  # one try: no retry mends a refused key
    with FakeOpenAI(default_tag="forbidden") as server:
        with pytest.raises(JudgeAccessError, match="403.*fake-judge"):
            rl.prepare(load_recipe("tiny", [*FAST, "rl.judge.preset=openai-compatible", f"rl.judge.base_url={server.url}",
                                            "rl.judge.model=fake-judge"]))


@pytest.mark.slow
def test_interrupted_rl_resumes(sft_metrics, shared_runs):
    sets = sum((["--set", s] for s in ["rl.trainer.max_steps=12", "rl.trainer.save_steps=2",
                                        "rl.trainer.max_completion_length=48"]), [])
    shutil.rmtree(shared_runs / "tiny" / "rl", ignore_errors=True)
    # a SIGKILL in the middle of the save of checkpoint-4
    whole = kill_during_save("rl", sets, shared_runs / "tiny" / "rl" / "checkpoints", step=4)
    assert whole == "checkpoint-2"
    done = subprocess.run([sys.executable, "-m", "kit", "rl", "--recipe", "tiny", *sets], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, failure(done)
    m = json.loads((shared_runs / "tiny" / "rl" / "metrics.json").read_text())
    assert m["resumed_from"] == whole and m["steps"] == 12


def test_an_inference_copy_follows_the_policy_and_leaves_it_untouched():
    """The copy RL rollouts are sampled from on the CPU end (`rl.cpu_dtype`): stale until synced, then the policy's
    logits (fp32: to rounding), its LoRA and its weights trained in full (the tiny recipe's embeddings and head)
    included; syncing changes nothing in the policy, bit for bit."""
    import torch

    from kit.modeling import InferenceCopy, load_model

    recipe = load_recipe("tiny")
    model = load_model(recipe, trainable=True).model
    copy = InferenceCopy(model, load_model(recipe, trainable=False, dtype=torch.float32).model)
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])

    def logits(m):
        m.eval()
        with torch.no_grad():
            return m(input_ids=ids).logits.float()

    torch.manual_seed(0)
    for _ in range(2):
        with torch.no_grad():  # a training step's worth of change: every trained weight moves
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.05)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert (logits(copy.model) - logits(model)).abs().max() > 1e-3, "the copy followed without a sync"
        copy.sync()
        assert all(torch.equal(before[n], p) for n, p in model.named_parameters()), "the sync changed the policy"
        torch.testing.assert_close(logits(copy.model), logits(model), atol=1e-5, rtol=1e-5)
    half = InferenceCopy(model, load_model(recipe, trainable=False, dtype=torch.bfloat16).model)
    half.sync()
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert (logits(half.model) - logits(model)).abs().max() < 0.1 * logits(model).abs().max()


@pytest.mark.slow
def test_rl_rollouts_sampled_from_a_merged_copy(sft_metrics, shared_runs):
    """`rl.cpu_dtype`: TRL's trainer asks the kit's rollout function, which tokenizes the prompts as TRL does,
    returns completions that end at a stop token or the limit, syncs the copy once per generation, and the run
    trains as it does on TRL's own rollouts."""
    from kit.generation import stop_token_ids

    recipe = load_recipe("tiny", [*FAST, "rl.cpu_dtype=float32"])
    session = rl.prepare(recipe)
    assert session.copy_rollouts is not None and "merged float32 copy" in session.rollouts
    prompts = [r["prompt"] for r in session.rows[:2] for _ in range(2)]
    out = session.copy_rollouts(prompts, session.trainer)
    assert out["prompt_ids"] == session.trainer._tokenize_prompts(prompts)[0]  # what TRL's own path would generate from
    stops, limit = set(stop_token_ids(session.loaded.tokenizer)), session.trainer.args.max_completion_length
    assert len(out["completion_ids"]) == len(prompts)
    for ids in out["completion_ids"]:
        assert ids and (ids[-1] in stops or len(ids) == limit) and not stops & set(ids[:-1])
    m = rl.train(session)
    # 4 steps, a generation every 2 (steps_per_generation): steps 0 and 2, the call above at step 0 included
    assert m["rollout_generation"]["syncs"] == 2 and m["rollout_generation"]["tokens"] > 0
    assert m["steps"] == 4 and m["rewards_finite"] and m["adapter_max_abs_change"] > 0


def test_copy_rollouts_refuse_trl_generation_settings_they_would_drop():
    """The merged copy samples with TRL's temperature / top_p / top_k / min_p / repetition penalty and the kit's chat
    template call; TRL's free-form generation_kwargs and chat_template_kwargs would be silently ignored there."""
    from types import SimpleNamespace

    from kit.runtime import TRANSFORMERS

    loaded = SimpleNamespace(end=TRANSFORMERS, processor=None, tokenizer=None)
    assert rl.copy_rollouts(load_recipe("tiny"), loaded, "hf") is None  # rl.cpu_dtype: train, TRL's own
    assert rl.copy_rollouts(load_recipe("tiny", ["rl.cpu_dtype=float32"]), loaded, "hf") is not None
    assert rl.copy_rollouts(load_recipe("tiny", ["rl.cpu_dtype=float32"]), loaded, "vllm") is None
    for key in ("generation_kwargs={suppress_tokens: [5]}", "chat_template_kwargs={enable_thinking: false}"):
        with pytest.raises(RecipeError, match=f"rl.trainer.{key.split('=')[0]}.*rl.cpu_dtype: train"):
            rl.copy_rollouts(load_recipe("tiny", ["rl.cpu_dtype=float32", f"rl.trainer.{key}"]), loaded, "hf")
    with pytest.raises(RecipeError, match="rl.cpu_dtype must be auto, float32 or bfloat16"):
        rl.copy_rollouts(load_recipe("tiny", ["rl.cpu_dtype=fp16"]), loaded, "hf")
