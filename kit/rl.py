"""RL stage: GSPO or GRPO with the judge reward, continuing the SFT adapter.

    python -m kit rl --recipe tiny

Reads `runs/<recipe>/data/rl.jsonl` and `runs/<recipe>/sft/adapter/` (when the recipe has an SFT
stage), writes `runs/<recipe>/rl/`: `adapter/`, `checkpoints/`, `judge_cache.sqlite`,
`metrics.json` (reward curve, judge ledger). GSPO is GRPO with sequence-level importance ratios:
a config, not another trainer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .cards import model_card
from .data import read_jsonl
from .formatting import final_answer
from .judge import Judge
from .modeling import (Loaded, check_capacity, import_end, load_model, peak_memory_mb, precision_args,
                       restore_full_module_dtypes)
from .recipe import Recipe, RecipeError, check_trainer_keys
from .rewards import JudgeReward, completion_text, format_reward
from .runs import fresh_checkpoints, last_checkpoint, require, start_stage, train_resumable, write_metrics

# What each algorithm sets unless the recipe says otherwise. GSPO: sequence-level ratios, the GSPO
# paper's tight clipping range and its per-sequence objective (loss_type "grpo"; Unsloth's notebook
# uses "dr_grpo", which TRL warns weights each sequence by its length); GRPO: token-level ratios.
ALGORITHMS = {
    "gspo": {"importance_sampling_level": "sequence", "loss_type": "grpo", "epsilon": 3e-4, "epsilon_high": 4e-4},
    "grpo": {"importance_sampling_level": "token"},
}


def build_config(recipe: Recipe, output_dir: Path):
    from trl import GRPOConfig

    if recipe.rl.algorithm not in ALGORITHMS:
        raise RecipeError(f"rl.algorithm must be one of {', '.join(ALGORITHMS)}, got '{recipe.rl.algorithm}'")
    trainer = check_trainer_keys(recipe.rl.trainer, GRPOConfig, "rl.trainer")
    args = {**ALGORITHMS[recipe.rl.algorithm], **precision_args(recipe), **trainer}
    if recipe.rl.trainer.get("importance_sampling_level", args["importance_sampling_level"]) != \
            ALGORITHMS[recipe.rl.algorithm]["importance_sampling_level"]:
        raise RecipeError("rl.trainer.importance_sampling_level contradicts rl.algorithm: set only rl.algorithm")
    args.setdefault("seed", recipe.data.seed)
    args.setdefault("report_to", "none")
    return GRPOConfig(output_dir=str(output_dir), **args)


def build_rewards(recipe: Recipe, cache_path: Path | None) -> tuple[list, list[float], JudgeReward]:
    """Reward functions in a fixed order with their weights from `rl.reward_weights`."""
    cfg = recipe.rl.judge
    judge = Judge(cfg, cache_path=cache_path)
    judge_reward = JudgeReward(judge, incorrect_floor=cfg.incorrect_floor, error_fallback=cfg.error_fallback)
    available = {"format": format_reward, "judge": judge_reward}
    unknown = sorted(set(recipe.rl.reward_weights) - set(available))
    if unknown:
        raise RecipeError(f"unknown reward 'rl.reward_weights.{unknown[0]}' (rewards: {', '.join(available)})")
    names = [n for n in available if n in recipe.rl.reward_weights]
    return [available[n] for n in names], [float(recipe.rl.reward_weights[n]) for n in names], judge_reward


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


def lora_snapshot(model) -> dict:
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if "lora_" in n}


def prepare(recipe: Recipe) -> RLSession:
    """Load the RL prompts, the model (continuing the SFT adapter) and the judge; build the GRPOTrainer."""
    import_end()
    import datasets
    from trl import GRPOTrainer

    check_capacity(recipe)
    out = start_stage(recipe, "rl")
    rows = read_jsonl(require(recipe, "data", "rl.jsonl"))
    if recipe.rl.max_rows:
        rows = rows[: recipe.rl.max_rows]
    adapter = None
    if recipe.data.sft:
        adapter = require(recipe, "sft", "adapter/adapter_config.json").parent
    ckpt_dir = out / "checkpoints"
    fresh_checkpoints(ckpt_dir, recipe, "rl")
    config = build_config(recipe, ckpt_dir)
    funcs, weights, judge_reward = build_rewards(recipe, out / "judge_cache.sqlite")
    config.reward_weights = weights
    loaded = load_model(recipe, adapter=adapter, trainable=True)
    dataset = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "question", "reference")} for r in rows])
    trainer = GRPOTrainer(model=loaded.model, reward_funcs=funcs, args=config, train_dataset=dataset,
                          processing_class=loaded.tokenizer)
    restore_full_module_dtypes(loaded, trainer.model)
    print(f"[kit] {recipe.rl.algorithm.upper()} (importance_sampling_level={config.importance_sampling_level}, "
          f"loss_type={config.loss_type}) on {len(rows)} prompts; judge: {judge_reward.judge!r}")
    return RLSession(recipe, out, loaded, trainer, judge_reward, rows, last_checkpoint(ckpt_dir),
                     str(adapter) if adapter else None, lora_snapshot(loaded.model))


def preview(session: RLSession, n: int = 4, num_generations: int = 2) -> list[dict]:
    """Sampled completions for the first `n` prompts with each reward: the table to compare after training."""
    from .generation import generate

    rows = session.rows[:n]
    prompts = [r["prompt"] for r in rows for _ in range(num_generations)]
    cfg = session.trainer.args
    outs = generate(session.trainer.model, session.loaded.tokenizer, prompts,
                    max_new_tokens=cfg.max_completion_length, do_sample=True, temperature=cfg.temperature,
                    top_p=cfg.top_p, top_k=cfg.top_k or 0, seed=cfg.seed)
    refs = [r["reference"] for r in rows for _ in range(num_generations)]
    questions = [r["question"] for r in rows for _ in range(num_generations)]
    fmt = format_reward(outs)
    judged = session.judge_reward(outs, reference=refs, question=questions)
    return [{"question": q, "conclusion": final_answer(completion_text(o))[:120], "reference": r,
             "format": f, "judge": j} for q, o, r, f, j in zip(questions, outs, refs, fmt, judged)]


def reward_history(log_history: list[dict]) -> list[dict]:
    keep = ("reward", "reward_std", "completions/mean_length", "completions/clipped_ratio", "loss",
            "clip_ratio/region_mean", "judge/errors")
    return [{"step": h["step"], **{k: v for k, v in h.items() if k in keep or k.startswith("rewards/")}}
            for h in log_history if "reward" in h]


def train(session: RLSession) -> dict:
    import torch

    recipe, trainer, out = session.recipe, session.trainer, session.out
    adapter_dir = out / "adapter"
    seconds = train_resumable(trainer, session.resume, adapter_dir, session.loaded.tokenizer)
    after = lora_snapshot(trainer.model)
    change = max((after[n] - session.lora_before[n]).abs().max().item() for n in after) if after else 0.0
    history = reward_history(trainer.state.log_history)
    rewards = [h["reward"] for h in history]
    steps = trainer.state.global_step
    metrics = {
        "recipe": recipe.name, "recipe_hash": recipe.hash(), "stage_hash": recipe.stage_hash("rl"), "end": session.loaded.end,
        "device": session.loaded.device, "algorithm": recipe.rl.algorithm,
        "importance_sampling_level": trainer.args.importance_sampling_level, "loss_type": trainer.args.loss_type,
        "start_adapter": Path(session.start_adapter).parent.name + "/adapter" if session.start_adapter else None,
        "steps": steps, "resumed_from": Path(session.resume).name if session.resume else None,
        "seconds": round(seconds, 2), "prompts": len(session.rows),
        "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None,
        "reward_history": history,
        "rewards_finite": all(r is not None and torch.isfinite(torch.tensor(float(r))) for r in rewards),
        "adapter_max_abs_change": change,
        "judge": {"preset": session.judge_reward.judge.preset, "model": session.judge_reward.judge.model,
                  "ledger": session.judge_reward.judge.ledger.as_dict(), "reward_counts": session.judge_reward.counts},
        **peak_memory_mb(),
    }
    write_metrics(out, metrics)
    (out / "judge_ledger.json").write_text(json.dumps(metrics["judge"], indent=2))
    (adapter_dir / "README.md").write_text(model_card(recipe, "rl", metrics), encoding="utf-8")
    print(f"[kit] rl done: {steps} {recipe.rl.algorithm.upper()} steps in {metrics['seconds']} s; reward "
          f"{metrics['reward_first']} → {metrics['reward_last']}; judge ledger {metrics['judge']['ledger']}")
    return metrics


def run(recipe: Recipe) -> dict:
    return train(prepare(recipe))

