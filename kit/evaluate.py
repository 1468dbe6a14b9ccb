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

import json
import math
import random
from pathlib import Path

from .data import read_jsonl
from .formatting import extract_choice, parse
from .judge import Judge
from .recipe import Recipe
from .runs import Timer, require, stage_dir, start_stage, write_metrics

def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion.

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


def sample_items(rows: list[dict], k: int, seed: int) -> list[dict]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:k]


def score_mcq(items: list[dict], completions: list[str]) -> dict:
    picks = [extract_choice(c, "".join(sorted(it["options"]))) for it, c in zip(items, completions)]
    correct = sum(p == it["gold"] for p, it in zip(picks, items))
    unparseable = sum(p is None for p in picks)
    return {"accuracy": proportion(correct, len(items)), "unparseable": proportion(unparseable, len(items)),
            "picks": picks}


def format_stats(completions: list[str], count_tokens) -> dict:
    parsed = [parse(c) for c in completions]
    well = sum(p.well_formed for p in parsed)
    mean = (lambda xs: round(sum(xs) / len(xs), 1) if xs else None)
    return {"format_adherence": proportion(well, len(parsed)),
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
            out.append((f"gguf-{kind}", path))
            break
    return out


def generate_hf(recipe: Recipe, adapter: Path | None, prompts: list[list[dict]]) -> list[str]:
    from .generation import generate
    from .modeling import load_model

    loaded = load_model(recipe, adapter=adapter, trainable=False)
    return generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=recipe.eval.max_new_tokens,
                    batch_size=recipe.eval.batch_size, seed=recipe.eval.seed)


def generate_gguf(recipe: Recipe, path: Path, prompts: list[list[dict]], tokenizer) -> list[str]:
    from . import gguf
    from .generation import prompt_texts

    llm = gguf.load(path, n_ctx=recipe.model.max_seq_length + recipe.eval.max_new_tokens)
    outs = []
    try:
        for text in prompt_texts(tokenizer, prompts):
            out = llm.create_completion(prompt=text, max_tokens=recipe.eval.max_new_tokens, temperature=0.0,
                                        stop=["<|im_end|>", "<|endoftext|>"], seed=recipe.eval.seed)
            choice = out["choices"][0]
            outs.append(choice["text"] + ("<|im_end|>" if choice["finish_reason"] == "stop" else ""))
    finally:
        llm.close()
    return outs


def run(recipe: Recipe) -> dict:
    from .modeling import check_capacity, import_end, load_tokenizer, peak_memory_mb

    end = import_end()
    check_capacity(recipe)
    out = start_stage(recipe, "eval")
    cfg = recipe.eval
    mcq = sample_items(read_jsonl(require(recipe, "data", "eval.jsonl")), cfg.max_items, cfg.seed)
    data_dir = stage_dir(recipe, "data")
    open_items = sample_items(read_jsonl(data_dir / "rl.jsonl"), cfg.max_items, cfg.seed) \
        if (data_dir / "rl.jsonl").exists() else []
    tokenizer = load_tokenizer(recipe)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    judge = Judge(recipe.rl.judge, cache_path=out / "judge_cache.sqlite")
    prompts = [it["prompt"] for it in mcq] + [it["prompt"] for it in open_items]
    results, examples = {}, []
    for name, path in systems(recipe):
        print(f"[kit] eval: {name} on {len(mcq)} multiple-choice + {len(open_items)} open-ended items")
        with Timer() as t:
            if name.startswith("gguf"):
                completions = generate_gguf(recipe, path, prompts, tokenizer)
            else:
                completions = generate_hf(recipe, path, prompts)
        mc_out, open_out = completions[: len(mcq)], completions[len(mcq):]
        scored = score_mcq(mcq, mc_out)
        res = {"seconds": round(t.seconds, 1), "mcq_accuracy": scored["accuracy"],
               "mcq_unparseable": scored["unparseable"], **format_stats(completions, count_tokens)}
        if open_items:
            verdicts = judge.grade([it["question"] for it in open_items], open_out,
                                   [it["reference"] for it in open_items])
            graded = [v for v in verdicts if v.error is None]
            res["judged_accuracy"] = proportion(sum(v.verdict == "correct" for v in graded), len(graded))
            res["judge_errors"] = len(verdicts) - len(graded)
        results[name] = res
        for it, c, pick in zip(mcq, mc_out, scored["picks"]):
            examples.append({"system": name, "question": it["question"], "gold": it["gold"], "pick": pick,
                             "completion": c})
    metrics = {"recipe": recipe.name, "recipe_hash": recipe.hash(), "stage_hash": recipe.stage_hash("eval"),
               "items": {"mcq": len(mcq), "open": len(open_items)}, "seed": cfg.seed,
               "decoding": f"greedy, thinking on, max_new_tokens {cfg.max_new_tokens}",
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


def _fmt(p: dict | None) -> str:
    if not p or p.get("value") is None:
        return "-"
    return f"{p['value']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] (n={p['n']})"


def results_table(metrics: dict) -> str:
    lines = [f"# Evaluation · `{metrics['recipe']}`", "",
             f"Decoding: {metrics['decoding']}. Intervals: 95% Wilson. Judge: {metrics['judge']['preset']}.",
             "Not medical advice; not validated for clinical use.", "",
             "| system | MC accuracy | MC unparseable | judged accuracy (open) | format adherence | "
             "mean reasoning / answer tokens |", "|---|---|---|---|---|---|"]
    for name, r in metrics["results"].items():
        lines.append(f"| {name} | {_fmt(r['mcq_accuracy'])} | {_fmt(r['mcq_unparseable'])} | "
                     f"{_fmt(r.get('judged_accuracy'))} | {_fmt(r['format_adherence'])} | "
                     f"{r['mean_reasoning_tokens']} / {r['mean_answer_tokens']} |")
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
