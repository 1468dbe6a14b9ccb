"""Evaluation stage: the same items through every available stage of a run, side by side.

    python -m kit eval --recipe tiny

Systems: `base` (no adapter), `sft`, `rl` (their adapters on the base) and `gguf-<quant>` (the
exported file through llama.cpp), each only when it exists. Tasks: multiple-choice accuracy on the
data stage's `eval.jsonl` (MedQA-style, MMLU-Pro), judged accuracy on open-ended verifiable problems
(`rl.jsonl`, the RL stage's judge), format adherence and mean reasoning / answer lengths. Every
figure comes with its sample size and a 95% Wilson interval. Writes `runs/<recipe>/eval/`:
`results.json`, `results.md`, `accuracy.png`, `outputs.jsonl`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

from .data import read_jsonl
from .formatting import extract_choice, final_answer, parse
from .generation import (Completion, HFEngine, LlamaCppEngine, Sampling, VLLMEngine, choose, free_memory,
                         prompt_texts, say_once, vllm_adapter_problem)
from .judge import Judge
from .recipe import Recipe, RecipeError
from .runs import Timer, require, stage_dir, start_stage, write_metrics

def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (successes may be a mean times n).

    >>> [round(x, 3) for x in wilson(8, 10)]
    [0.49, 0.943]
    """
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def proportion(successes: int, n: int) -> dict:
    low, high = wilson(successes, n)
    return {"value": successes / n if n else None, "n": n, "ci95": [round(low, 4), round(high, 4)]}


def mean_over_samples(per_item: list[list[bool]]) -> dict:
    """Accuracy when each item has k sampled completions: the mean of the per-item means. Its 95%
    interval is Wilson's over the items (the independent draws; an item's k samples are not), which is
    conservative: a per-item mean in [0, 1] varies at most as a single yes/no would, and the interval
    never collapses to a point when every item scores the same.

    >>> mean_over_samples([[True, True], [True, False], [False, False], [True, True]])
    {'value': 0.625, 'n': 4, 'samples': 2, 'ci95': [0.2194, 0.9081]}
    """
    k = max((len(x) for x in per_item), default=1)
    means = [sum(x) / len(x) for x in per_item if x]
    value = sum(means) / len(means) if means else None
    low, high = wilson(sum(means), len(means))
    return {"value": value, "n": len(means), "samples": k, "ci95": [round(low, 4), round(high, 4)]}


def sample_items(rows: list[dict], k: int, seed: int) -> list[dict]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:k]


def score_mcq(items: list[dict], completions: list[list[str]]) -> dict:
    """Accuracy and unparseable rate for items with one or more completions each."""
    picks = [[extract_choice(c, "".join(sorted(it["options"]))) for c in cs] for it, cs in zip(items, completions)]
    correct = [[p == it["gold"] for p in ps] for ps, it in zip(picks, items)]
    unparseable = [[p is None for p in ps] for ps in picks]
    return {"accuracy": mean_over_samples(correct), "unparseable": mean_over_samples(unparseable), "picks": picks}


def format_stats(completions: list[Completion], count_tokens) -> dict:
    parsed = [parse(c.text) for c in completions]
    well = sum(p.well_formed for p in parsed)
    mean = (lambda xs: round(sum(xs) / len(xs), 1) if xs else None)
    return {"format_adherence": proportion(well, len(parsed)),
            "truncated": proportion(sum(c.truncated for c in completions), len(completions)),
            "mean_completion_tokens": mean([c.tokens for c in completions]),
            "mean_reasoning_tokens": mean([count_tokens(p.reasoning) for p in parsed]),
            "mean_answer_tokens": mean([count_tokens(p.answer) for p in parsed])}


# ---------------------------------------------------------------- systems


def systems(recipe: Recipe) -> list[tuple[str, Path | None]]:
    """(name, adapter folder or GGUF file) of every stage this run has; `base` always."""
    out: list[tuple[str, Path | None]] = [("base", None)]
    for stage in ("sft", "rl"):
        adapter = stage_dir(recipe, stage) / "adapter"
        if (adapter / "adapter_config.json").exists():
            out.append((stage, adapter))
    gguf_dir = stage_dir(recipe, "export") / "gguf"
    for kind in ("q4_k_m", "q8_0"):
        path = gguf_dir / f"{recipe.name}-{kind}.gguf"
        if path.exists():
            if importlib.util.find_spec("llama_cpp") is None:
                say_once(f"[kit] eval: {path.name} is not evaluated: llama-cpp-python is not installed here")
                break
            out.append((f"gguf-{kind}", path))
            break
    return out


def eval_sampling(recipe: Recipe) -> Sampling:
    """Decoding for every system: the thinking preset with k samples (Qwen advises against greedy
    decoding with thinking on: it loops to the token limit), or greedy when the recipe asks."""
    cfg = recipe.eval
    if cfg.decoding == "greedy":
        return Sampling(cfg.max_new_tokens, seed=cfg.seed)
    if cfg.decoding != "sampled":
        raise RecipeError(f"eval.decoding must be 'sampled' or 'greedy', got '{cfg.decoding}'")
    return Sampling.from_preset(recipe.sampling.thinking, cfg.max_new_tokens, n=max(1, cfg.samples), seed=cfg.seed)


class Generators:
    """Completions for each system of a run. With vLLM, one engine loads the base once and serves the
    base, SFT and RL systems through LoRA requests; a system vLLM cannot serve, and every system on the
    hf engine, loads its own model (freed before the next); GGUF files go through llama.cpp."""

    def __init__(self, recipe: Recipe):
        from .modeling import model_path

        self.recipe = recipe
        self.context = recipe.model.max_seq_length + recipe.eval.max_new_tokens  # a prompt and its completion
        self.engine, self.why = choose(recipe.eval.generation, "evaluation")
        self.vllm = None
        if self.engine == "vllm":
            self.vllm = VLLMEngine(model_path(recipe), max_model_len=self.context, max_lora_rank=recipe.lora.r,
                                   seed=recipe.eval.seed, gpu_memory_utilization=recipe.eval.gpu_memory_utilization)

    def __call__(self, name: str, path: Path | None, prompts: list[str], s: Sampling) -> tuple[list[list[Completion]], str]:
        """(completions per prompt, the engine that made them and why)."""
        recipe = self.recipe
        if name.startswith("gguf"):
            engine = LlamaCppEngine(path, n_ctx=self.context)
            try:
                return engine.generate(prompts, s), "llama.cpp (the exported file)"
            finally:
                engine.close()
        problem = vllm_adapter_problem(path, recipe.lora.r) if self.vllm else None
        if self.vllm and problem is None:
            return self.vllm.generate(prompts, s, adapter=path, adapter_name=name), \
                f"vllm ({'LoRA request' if path else 'base'} on one engine)"
        why = self.why
        if problem:
            say_once(f"[kit] ⚠ evaluation of {name}: generating with HF model.generate, NOT vLLM, because {problem}")
            why = problem
        from .modeling import load_model

        loaded = load_model(recipe, adapter=path, trainable=False)
        try:
            return HFEngine(loaded.model, loaded.tokenizer, recipe.eval.batch_size).generate(prompts, s), f"hf ({why})"
        finally:
            del loaded
            free_memory()

    def close(self):
        if self.vllm is not None:
            self.vllm.close()


def run(recipe: Recipe) -> dict:
    from .modeling import check_capacity, import_end, load_tokenizer, peak_memory_mb

    end = import_end()
    check_capacity(recipe)
    out = start_stage(recipe, "eval")
    cfg = recipe.eval
    sampling = eval_sampling(recipe)
    mcq = sample_items(read_jsonl(require(recipe, "data", "eval.jsonl")), cfg.max_items, cfg.seed)
    data_dir = stage_dir(recipe, "data")
    open_items = sample_items(read_jsonl(data_dir / "rl.jsonl"), cfg.max_items, cfg.seed) \
        if (data_dir / "rl.jsonl").exists() else []
    tokenizer = load_tokenizer(recipe)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    judge = Judge(recipe.rl.judge, cache_path=out / "judge_cache.sqlite")
    prompts = prompt_texts(tokenizer, [it["prompt"] for it in mcq] + [it["prompt"] for it in open_items])
    results, examples = {}, []
    generators = Generators(recipe)
    try:
        for name, path in systems(recipe):
            print(f"[kit] eval: {name} on {len(mcq)} multiple-choice + {len(open_items)} open-ended items, "
                  f"{sampling.describe()}")
            with Timer() as t:
                completions, engine = generators(name, path, prompts, sampling)
            mc_out, open_out = completions[: len(mcq)], completions[len(mcq):]
            scored = score_mcq(mcq, [[c.text for c in cs] for cs in mc_out])
            flat = [c for cs in completions for c in cs]
            res = {"engine": engine, "seconds": round(t.seconds, 1),
                   "generated_tokens_per_second": round(sum(c.tokens for c in flat) / t.seconds, 1) if t.seconds else None,
                   "mcq_accuracy": scored["accuracy"], "mcq_unparseable": scored["unparseable"],
                   **format_stats(flat, count_tokens)}
            if open_items:
                pairs = [(it, c) for it, cs in zip(open_items, open_out) for c in cs]
                verdicts = judge.grade([it["question"] for it, _ in pairs], [c.text for _, c in pairs],
                                       [it["reference"] for it, _ in pairs])
                graded = [v for v in verdicts if v.error is None]
                res["judged_accuracy"] = proportion(sum(v.verdict == "correct" for v in graded), len(graded))
                res["judge_errors"] = len(verdicts) - len(graded)
            results[name] = res
            for it, cs, picks in zip(mcq, mc_out, scored["picks"]):
                for c, pick in zip(cs, picks):
                    examples.append({"system": name, "question": it["question"], "gold": it["gold"], "pick": pick,
                                     "truncated": c.truncated, "completion": c.text})
    finally:
        generators.close()
    metrics = {"recipe": recipe.name, "recipe_hash": recipe.hash(), "stage_hash": recipe.stage_hash("eval"),
               "items": {"mcq": len(mcq), "open": len(open_items)}, "seed": cfg.seed,
               "decoding": f"{sampling.describe()}, thinking on", "engine": generators.engine,
               "engine_reason": generators.why,
               "judge": {"preset": judge.preset, "ledger": judge.ledger.as_dict()}, "results": results,
               "end": end, **peak_memory_mb()}
    (out / "results.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    with (out / "outputs.jsonl").open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(results_table(metrics), encoding="utf-8")
    bar_plot(results, out / "accuracy.png")
    write_metrics(out, metrics)
    print(results_table(metrics))
    return metrics


def side_by_side(recipe: Recipe, names: tuple[str, ...] = ("base", "rl"), n: int = 3) -> list[dict]:
    """The first `n` multiple-choice items as each system concluded them (the text after `</think>`, its
    first sample), from the eval stage's `outputs.jsonl`: before and after, on the same questions."""
    rows = read_jsonl(require(recipe, "eval", "outputs.jsonl"))
    by_item: dict[str, dict] = {}
    for r in rows:
        if r["system"] in names:
            item = by_item.setdefault(r["question"], {"question": r["question"], "gold": r["gold"]})
            said = final_answer(r["completion"])[:160] if "</think>" in r["completion"] else "(no conclusion: still reasoning)"
            item.setdefault(r["system"], f"[{r['pick'] or '?'}] {said}")
    return [item for item in by_item.values() if all(s in item for s in names)][:n]


def _fmt(p: dict | None) -> str:
    if not p or p.get("value") is None:
        return "-"
    return f"{p['value']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] (n={p['n']})"


def results_table(metrics: dict) -> str:
    lines = [f"# Evaluation · `{metrics['recipe']}`", "",
             f"Decoding: {metrics['decoding']}. Intervals: 95% (Wilson; over items when several samples per item). "
             f"Judge: {metrics['judge']['preset']}.",
             "Not medical advice; not validated for clinical use.", "",
             "| system | engine | MC accuracy | MC unparseable | judged accuracy (open) | format adherence | "
             "truncated | mean reasoning / answer tokens |", "|---|---|---|---|---|---|---|---|"]
    for name, r in metrics["results"].items():
        lines.append(f"| {name} | {r['engine'].split(' ')[0]} | {_fmt(r['mcq_accuracy'])} | {_fmt(r['mcq_unparseable'])} | "
                     f"{_fmt(r.get('judged_accuracy'))} | {_fmt(r['format_adherence'])} | {_fmt(r['truncated'])} | "
                     f"{r['mean_reasoning_tokens']} / {r['mean_answer_tokens']} |")
    lines += ["", "Engines: " + "; ".join(f"{name}: {r['engine']}" for name, r in metrics["results"].items())]
    return "\n".join(lines) + "\n"


def bar_plot(results: dict, path: Path):
    from .plots import _figure

    fig, ax = _figure(8, 3.6)
    names = list(results)
    keys = [("mcq_accuracy", "MC accuracy"), ("judged_accuracy", "judged accuracy"),
            ("format_adherence", "format adherence")]
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        vals = [results[n].get(key) or {"value": 0, "ci95": [0, 0]} for n in names]
        centre = [v["value"] or 0 for v in vals]
        err = [[c - v["ci95"][0] for c, v in zip(centre, vals)], [v["ci95"][1] - c for c, v in zip(centre, vals)]]
        ax.bar([x + i * width for x in range(len(names))], centre, width, yerr=err, capsize=3, label=label)
    ax.set_xticks([x + width for x in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("proportion (95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig
