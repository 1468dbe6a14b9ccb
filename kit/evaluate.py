"""Evaluation stage: every stage of a run on the same items, per benchmark, compared item by item.

    python -m kit eval --recipe tiny

Systems: `base` (no adapter), `sft`, `rl` (their adapters on the base) and `gguf-<quant>` (the
exported file through llama.cpp), each only when it exists. Tasks: each multiple-choice benchmark on its
own (`medqa`, `mmlu_pro_biology`, `mmlu_pro_health`, ...; `eval.max_items` items each), open-ended
verifiable problems graded by the RL stage's judge (`open`), and the format. Each figure comes with its
n and a 95% Wilson interval, beside its unparseable and truncation rates. Every system sees the same
items and seeds, so two systems are compared item by item: McNemar's exact test (statsmodels) for one
completion per item, a paired permutation test with a paired-bootstrap interval (scipy) for the
per-item mean of k samples. Writes `runs/<recipe>/eval/`: `metrics.json`, `results.md` (our table, the
harness-format table with the protocol, the comparisons, the published figures of the models the kit
reproduces), `accuracy.png`, `outputs.jsonl`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
from pathlib import Path

from .base_model import model_path
from .benchmarks import filter_name, harness_filter, loglikelihood
from .capacity import check_capacity
from .data import read_jsonl
from .formatting import THINK_CLOSE, THINK_OPEN, extract_choice, final_answer, opens_thinking, parse
from .generation import (Completion, HFEngine, LlamaCppEngine, Sampling, VLLMEngine, choose, free_memory, prompt_texts,
                         say_once, vllm_adapter_problem)
from .judge import Criterion, Judge
from .judge.rubric import conversation_text, from_rows, met_by_kind, score as rubric_score
from .modeling import inference_dtype, load_model, load_tokenizer
from .plots import bar_plot, budget_plot
from .recipe import DatasetSpec, Recipe, RecipeError
from .reports import results_table
from .runs import (TRAINED, Timer, gguf_file, metrics_header, require, stage_adapter, stage_dir, start_stage,
                   write_metrics)
from .runtime import import_end, peak_memory_mb
from .sources import DataError, load_rows
from .stats import clipped_mean, macro_f1, mean_over_samples, paired_test, proportion
from .tracking import log_run, point_at_runs


def sample_items(rows: list[dict], k: int, seed: int) -> list[dict]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:k]


def score_mcq(items: list[dict], completions: list[list[str]], thinking: bool = True) -> dict:
    """Accuracy and unparseable rate for items with one or more completions each. `thinking`: the prompt
    opened the reasoning block (Qwen's templates with thinking on), so only text after `</think>` counts."""
    picks = [[extract_choice(c, "".join(sorted(it["options"])), thinking) for c in cs]
             for it, cs in zip(items, completions)]
    correct = [[p == it["gold"] for p in ps] for ps, it in zip(picks, items)]
    unparseable = [[p is None for p in ps] for ps in picks]
    return {"accuracy": mean_over_samples(correct), "unparseable": mean_over_samples(unparseable), "picks": picks,
            "correct": correct}


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
    out += [(stage, path) for stage in TRAINED if (path := stage_adapter(recipe, stage))]
    path = gguf_file(recipe, kinds=("q4_k_m", "q8_0"))  # a quantized file: what users run
    if path and importlib.util.find_spec("llama_cpp") is None:
        say_once(f"[kit] eval: {path.name} is not evaluated: llama-cpp-python is not installed here")
    elif path:
        out.append((f"gguf-{path.stem.removeprefix(recipe.name + '-')}", path))
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
    hf engine, loads its own model, kept for that system's next requests (the thinking budgets) and freed
    before another system's; GGUF files go through llama.cpp."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.context = recipe.model.max_seq_length + recipe.eval.max_new_tokens  # a prompt and its completion
        self.engine, self.why = choose(recipe.eval.generation, "evaluation")
        self.vllm = None
        self.loaded: tuple[str, object] | None = None  # (system, its model on the hf engine)
        if self.engine == "vllm":
            self.vllm = VLLMEngine(model_path(recipe), max_model_len=self.context, max_lora_rank=recipe.lora.r,
                                   seed=recipe.eval.seed, gpu_memory_utilization=recipe.eval.gpu_memory_utilization)

    def __call__(self, name: str, path: Path | None, prompts: list[str], s: Sampling) -> tuple[list[list[Completion]], str]:
        """(completions per prompt, the engine that made them and why)."""
        recipe = self.recipe
        if name.startswith("gguf"):
            self.release()  # never two models at once
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

        if self.loaded is None or self.loaded[0] != name:
            self.release()
            self.loaded = (name, load_model(recipe, adapter=path, trainable=False, merge=True,
                                            dtype=inference_dtype(recipe.eval.cpu_dtype)))
        loaded = self.loaded[1]
        dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
        return HFEngine(loaded.model, loaded.tokenizer, recipe.eval.batch_size).generate(prompts, s), \
            f"hf ({dtype}; {why})"

    def request_size(self, name: str, path: Path | None) -> int | None:
        """How many prompts to send this system's engine at a time: None (all of them) where vLLM serves it, which
        schedules them itself; `eval.batch_size`, one full generate call, on hf and llama.cpp."""
        if self.vllm and not name.startswith("gguf") and vllm_adapter_problem(path, self.recipe.lora.r) is None:
            return None
        return self.recipe.eval.batch_size

    def release(self):
        """Free the model the hf engine holds, if any."""
        if self.loaded is not None:
            self.loaded = None
            free_memory()

    def close(self):
        self.release()
        if self.vllm is not None:
            self.vllm.close()


# ---------------------------------------------------------------- items

def load_items(recipe: Recipe) -> dict[str, list[dict]]:
    """`eval.max_items` items per multiple-choice task (seeded, the same for every system), and as many
    open-ended problems (`open`) when the run has RL data."""
    cfg, data_dir = recipe.eval, stage_dir(recipe, "data")
    tasks: dict[str, list[dict]] = {}
    for row in read_jsonl(require(recipe, "data", "eval.jsonl")):
        tasks.setdefault(row.get("task", "medqa"), []).append(row)
    items = {task: sample_items(rows, cfg.max_items, cfg.seed) for task, rows in tasks.items()}
    if (data_dir / "rl.jsonl").exists():  # the reference-graded problems; a rubric source is an eval task of its own
        reference_rows = [r for r in read_jsonl(data_dir / "rl.jsonl") if not r.get("rubric")]
        if reference_rows:
            items["open"] = sample_items(reference_rows, cfg.max_items, cfg.seed)
    return items


# ---------------------------------------------------------------- generation

def generate(recipe: Recipe, items: dict[str, list[dict]], sampling: Sampling, tokenizer) -> tuple[dict[str, dict], str, str, dict | None]:
    """Every system's completions for every item, ({system: {engine, seconds, tokens/s, completions: {task:
    [[Completion] per item]}}}, the engine asked for, why, the budget curve when `eval.budgets` asks for
    one); all prompts of a system go to its engine at once, and the budgets to the same engine."""
    order = [(task, it) for task, its in items.items() for it in its]
    prompts = prompt_texts(tokenizer, [it["prompt"] for _, it in order])
    by_task_prompts: dict[str, list[str]] = {task: [] for task in items}
    for (task, _), prompt in zip(order, prompts):
        by_task_prompts[task].append(prompt)
    kept = Finished(stage_dir(recipe, "eval") / "partial", recipe.stage_hash("eval"), sampling)
    generators, out = Generators(recipe), {}
    try:
        run_systems = systems(recipe)
        per_system = len(prompts) * (1 if sampling.greedy else sampling.n)
        print(f"[kit] eval: about to generate {per_system} completions for each of {len(run_systems)} systems "
              f"({', '.join(n for n, _ in run_systems)}), {per_system * len(run_systems)} in all, up to "
              f"{sampling.max_new_tokens} tokens each (at most {per_system * len(run_systems) * sampling.max_new_tokens:,} "
              f"tokens); each system's rate and time follow it")
        for name, path in run_systems:
            print(f"[kit] eval: {name} on {', '.join(f'{len(v)} {k}' for k, v in items.items())} items, {sampling.describe()}")
            by_task: dict[str, list] = {}
            engine, tokens, reused = "reused from an earlier, stopped eval", 0, []
            with Timer() as t:
                for task, task_prompts in by_task_prompts.items():
                    by_task[task] = kept.load(name, path, task, task_prompts)
                    if by_task[task] is not None:
                        reused.append(task)
                # the tasks left, their prompts end to end, in requests of the engine's size: a full hf batch
                # (`eval.batch_size`) whatever the tasks' sizes (a task of 4 items alone decoded 4 rows a step),
                # all at once to vLLM; a task is kept as soon as its last prompt is made
                todo = [task for task in by_task_prompts if by_task[task] is None]
                queue = [p for task in todo for p in by_task_prompts[task]]
                size = generators.request_size(name, path) or max(1, len(queue))
                made = []

                def keep_finished():
                    nonlocal made, tokens
                    while todo and len(made) >= len(by_task_prompts[todo[0]]):
                        task = todo.pop(0)
                        by_task[task], made = made[:len(by_task_prompts[task])], made[len(by_task_prompts[task]):]
                        kept.save(name, path, task, by_task_prompts[task], by_task[task])
                        tokens += sum(c.tokens for cs in by_task[task] for c in cs)

                for i in range(0, len(queue), size):
                    done, engine = generators(name, path, queue[i:i + size], sampling)
                    made += done
                    keep_finished()
                keep_finished()  # tasks with no items left to make
            if reused:
                print(f"[kit] eval: {name}: {len(reused)} of {len(items)} tasks reused from an earlier eval that was stopped "
                      f"({', '.join(reused)})")
            out[name] = {"engine": engine, "seconds": round(t.seconds, 1),
                         "generated_tokens_per_second": round(tokens / t.seconds, 1) if t.seconds and tokens else None,
                         "completions": by_task}
            left = len(run_systems) - len(out)
            print(f"[kit] eval: {name} took {t.seconds:.0f} s ({out[name]['generated_tokens_per_second']} tokens/s on "
                  f"{engine})" + (f"; about {left * t.seconds:.0f} s more for the other {left} systems" if left else ""),
                  flush=True)
        budgets = budget_curve(recipe, generators, run_systems, items, tokenizer, sampling) if recipe.eval.budgets else None
    finally:
        generators.close()
    return out, generators.engine, generators.why, budgets


class Finished:
    """The completions an eval has made, per system and task, kept as it goes (`eval/partial/<system>/<task>.jsonl`,
    each system's once its request returns), so that a rerun of an eval that was stopped (a Colab session that timed
    out at 80%) makes only what is left.
    Each file is stamped with what made it: the eval's stage hash, the decoding, the prompts, and the system's
    weights (their files' sizes and times); a stamp that differs is made again. A finished eval removes them.
    Every engine seeds each call, so a task made again gives what it gave before (vLLM's CPU build seeds its
    engine once instead: there a resumed eval's samples differ from an uninterrupted one's)."""

    def __init__(self, root: Path, stage_hash: str, sampling: Sampling):
        self.root, self.base = root, {"stage_hash": stage_hash, "sampling": repr(sampling)}

    def _stamp(self, path: Path | None, prompts: list[str]) -> dict:
        files = [] if path is None else sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]
        weights = [[str(f.name), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]
        digest = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()
        return {**self.base, "prompts": digest, "weights": weights}

    def _file(self, system: str, task: str) -> Path:
        return self.root / re.sub(r"[^\w.-]", "_", system) / (re.sub(r"[^\w.-]", "_", task) + ".jsonl")

    def load(self, system: str, path: Path | None, task: str, prompts: list[str]) -> list[list[Completion]] | None:
        try:
            lines = self._file(system, task).read_text(encoding="utf-8").splitlines()
            if not lines or json.loads(lines[0]) != self._stamp(path, prompts) or len(lines) - 1 != len(prompts):
                return None
            return [[Completion(**c) for c in json.loads(line)] for line in lines[1:]]
        except (OSError, ValueError, TypeError):  # absent, or cut short by the kill: made again
            return None

    def save(self, system: str, path: Path | None, task: str, prompts: list[str], completions: list[list[Completion]]):
        file = self._file(system, task)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        lines = [json.dumps(self._stamp(path, prompts))]
        lines += [json.dumps([dataclasses.asdict(c) for c in cs], ensure_ascii=False) for cs in completions]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, file)  # whole or absent, whenever the eval is killed

    def clear(self):
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- accuracy against the thinking budget

def close_thinking(text: str) -> tuple[str, bool]:
    """The reasoning of a completion cut at the end of its thinking, and whether the thinking had to be
    closed for it (no `</think>` within the budget: budget forcing appends one).

    >>> close_thinking("weighing A and B</think>\\n\\nThe answer is B.")
    ('weighing A and B', False)
    >>> close_thinking("still weighing A and<|im_end|>")
    ('still weighing A and', True)
    """
    return parse(text).reasoning, THINK_CLOSE not in text  # the kit's one split (formatting.parse)


def budget_curve(recipe: Recipe, generators: "Generators", run_systems: list, items: dict[str, list[dict]],
                 tokenizer, sampling: Sampling) -> dict:
    """Accuracy at each thinking budget of `eval.budgets`, on the last trained system (base when none):
    the model thinks up to the budget, the kit closes the thinking (`</think>`, budget forcing) where the
    model did not, and the answer follows in up to `eval.budget_answer_tokens`. Each budget is its own set
    of requests to the one engine. Per budget: accuracy with its interval, the share of forced closes."""
    cfg = recipe.eval
    name, path = next((s for s in reversed(run_systems) if s[0] in ("rl", "sft")), run_systems[0])
    chosen = [it for its in items.values() if its and "options" in its[0] for it in its[: cfg.budget_items]]
    prompts = prompt_texts(tokenizer, [it["prompt"] for it in chosen])
    curve = []
    for budget in sorted(set(cfg.budgets)):
        think = dataclasses.replace(sampling, max_new_tokens=budget, n=1)
        thoughts = [close_thinking(cs[0].text) for cs in generators(name, path, prompts, think)[0]]
        follow = [p + t + THINK_CLOSE + "\n\n" for p, (t, _) in zip(prompts, thoughts)]
        answer = dataclasses.replace(sampling, max_new_tokens=cfg.budget_answer_tokens, n=1)
        answers = [cs[0].text for cs in generators(name, path, follow, answer)[0]]
        picks = [extract_choice(THINK_CLOSE + a, "".join(sorted(it["options"]))) for a, it in zip(answers, chosen)]
        correct = sum(p == it["gold"] for p, it in zip(picks, chosen))
        forced = sum(f for _, f in thoughts)
        tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t, _ in thoughts]
        curve.append({"budget": budget, "accuracy": proportion(correct, len(chosen)),
                      "forced_close": proportion(forced, len(chosen)),
                      "mean_thinking_tokens": round(sum(tokens) / len(tokens), 1) if tokens else None})
        print(f"[kit] eval: thinking budget {budget}: accuracy {correct}/{len(chosen)}, forced closes {forced}")
    return {"system": name, "items": len(chosen), "answer_tokens": cfg.budget_answer_tokens,
            "decoding": sampling.describe().split(", max")[0], "curve": curve}


# ---------------------------------------------------------------- scoring

def score_task(items: list[dict], completions: list[list[Completion]], thinking: bool = True) -> dict:
    """Accuracy, unparseable and truncation rates of one multiple-choice task, and the per-item
    correctness the paired tests compare."""
    scored = score_mcq(items, [[c.text for c in cs] for cs in completions], thinking)
    return {"accuracy": scored["accuracy"], "unparseable": scored["unparseable"],
            "truncated": mean_over_samples([[c.truncated for c in cs] for cs in completions]),
            "picks": scored["picks"], "correct": scored["correct"]}


def concluded(text: str, thinking: bool) -> str:
    """What of a completion goes to the judge (which keeps only the text after `</think>`): nothing when the
    reasoning was never closed (cut off while thinking: the judge never sees reasoning), else the completion.

    >>> concluded("weighing</think> Naloxone.", True), concluded("still weighing", True), concluded("Naloxone.", False)
    ('weighing</think> Naloxone.', '', 'Naloxone.')
    """
    if THINK_CLOSE in text:
        return text
    return "" if thinking or text.lstrip().startswith(THINK_OPEN) else text


def judge_open(judge: Judge, items: list[dict], completions: list[list[Completion]], thinking: bool = True) -> dict:
    """Judged accuracy on open-ended problems: the judge sees each conclusion and the reference. A
    completion the judge could not grade counts as wrong, and is counted."""
    pairs = [(it, c) for it, cs in zip(items, completions) for c in cs]
    verdicts = iter(judge.grade([it["question"] for it, _ in pairs], [concluded(c.text, thinking) for _, c in pairs],
                                [it["reference"] for it, _ in pairs]))
    graded = [[next(verdicts) for _ in cs] for cs in completions]
    correct = [[v.error is None and v.verdict == "correct" for v in vs] for vs in graded]
    return {"accuracy": mean_over_samples(correct), "judge_errors": sum(v.error is not None for vs in graded for v in vs),
            "truncated": mean_over_samples([[c.truncated for c in cs] for cs in completions]), "correct": correct}


def judge_rubric(judge: Judge, items: list[dict], completions: list[list[Completion]], thinking: bool = True,
                 seed: int = 0) -> dict:
    """A rubric task scored HealthBench's way (simple-evals' healthbench_eval.py): each completion's score is the
    points of the criteria its conclusion meets over the positive points (a met pitfall subtracts; not clipped);
    the task's figure is the mean over items, clipped to [0, 1], with a 95% bootstrap interval over the items;
    the same per theme (the example's `theme:` tags) and per axis (the criteria's `axis:` tags, each item scored on
    the criteria of that axis). A conclusion the screen stops, or one cut off while thinking, meets no criterion;
    one the judge could not grade scores 0, and is counted. `correct` holds the per-sample scores for the paired
    tests."""
    rubrics = [from_rows(it["rubric"]) for it in items]
    pairs = [(i, c) for i, cs in enumerate(completions) for c in cs]
    verdicts = iter(judge.grade([items[i]["question"] for i, _ in pairs], [concluded(c.text, thinking) for _, c in pairs],
                                [items[i].get("reference") or "" for i, _ in pairs], [rubrics[i] for i, _ in pairs]))
    met: list[list[list[bool]]] = []
    errors = 0
    for i, cs in enumerate(completions):
        met.append([])
        for _ in cs:
            v = next(verdicts)
            errors += v.error is not None
            met[i].append(list(v.met) if v.met and v.error is None else [False] * len(rubrics[i]))
    scores = [[rubric_score(rubrics[i], flags, clip=False) for flags in met[i]] for i in range(len(items))]

    def item_means(per_item: list[list[float | None]]) -> list[float]:
        return [sum(v) / len(v) for vs in per_item if (v := [x for x in vs if x is not None])]

    by_tag: dict[str, dict] = {}
    for theme in sorted({t for it in items for t in it.get("tags") or [] if t.startswith("theme:")}):
        by_tag[theme] = clipped_mean(item_means([s for it, s in zip(items, scores) if theme in (it.get("tags") or [])]), seed)
    for axis in sorted({t for r in rubrics for c in r for t in c.tags if t.startswith("axis:")}):
        per_item = []
        for r, flags_per_sample in zip(rubrics, met):
            keep = [k for k, c in enumerate(r) if axis in c.tags]
            if any(r[k].points > 0 for k in keep):  # HealthBench scores an axis only where it has positive points
                per_item.append([rubric_score([r[k] for k in keep], [f[k] for k in keep], clip=False) for f in flags_per_sample])
        by_tag[axis] = clipped_mean(item_means(per_item), seed)
    figures = clipped_mean(item_means(scores), seed)
    return {"accuracy": figures | {"samples": max((len(cs) for cs in completions), default=1)},
            "judge_errors": errors, "by_tag": by_tag,
            "met": {kind: round(rate, 4) for kind, rate in
                    met_by_kind((r, flags) for r, samples in zip(rubrics, met) for flags in samples).items()},
            "truncated": mean_over_samples([[c.truncated for c in cs] for cs in completions]), "correct": scores}


def score(items: dict[str, list[dict]], generated: dict[str, dict], judge: Judge, count_tokens,
          thinking: bool = True, seed: int = 0) -> dict:
    """{system: {engine, seconds, tasks: {task: figures}, format figures}} for every system."""
    def task_figures(task: str, its: list[dict], completions: list[list[Completion]]) -> dict:
        if its and its[0].get("rubric"):
            return judge_rubric(judge, its, completions, thinking, seed)
        if task == "open":
            return judge_open(judge, its, completions, thinking)
        return score_task(its, completions, thinking)

    results = {}
    for name, g in generated.items():
        tasks = {task: task_figures(task, its, g["completions"][task]) for task, its in items.items()}
        flat = [c for cs_list in g["completions"].values() for cs in cs_list for c in cs]
        results[name] = {k: v for k, v in g.items() if k != "completions"} | {"tasks": tasks} | format_stats(flat, count_tokens)
    return results


def judge_agreement(recipe: Recipe, judge: Judge) -> dict | None:
    """How far the rubric judge agrees with physicians (`eval.judge_agreement`: rows in HealthBench's meta-evaluation
    schema, each a conversation, a completion, one criterion and the physicians' `binary_labels`): the judge grades
    each criterion as the rubric task does (the screen first), and its verdicts are compared with every physician's
    label of the row, HealthBench's macro-F1 (`stats.macro_f1`); beside it, the physicians' own, each physician
    against the others on the rows they share, averaged over physicians (simple-evals' healthbench_meta_eval.py).
    A row the judge could not grade is left out, and counted. At most `eval.judge_agreement_max_rows` rows, a seeded
    sample of the source's."""
    source = recipe.eval.judge_agreement
    if not source:
        return None
    rows, label = load_rows(DatasetSpec(source), recipe.data.offline)
    if len(rows) > recipe.eval.judge_agreement_max_rows:  # a seeded sample of the rows, as simple-evals takes one
        rows = random.Random(recipe.eval.seed).sample(rows, recipe.eval.judge_agreement_max_rows)
        label += f" ({len(rows)} rows sampled)"
    for i, row in enumerate(rows):
        labels, where = row.get("binary_labels"), f"{label} row {i + 1}"
        if not isinstance(row.get("rubric"), str) or not row["rubric"].strip():
            raise DataError(f"{where}: field 'rubric' (the criterion) is missing or empty")
        if not isinstance(row.get("completion"), str):
            raise DataError(f"{where}: field 'completion' is not a string")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, bool) for x in labels):
            raise DataError(f"{where}: field 'binary_labels' must be a non-empty list of true/false")
    verdicts = judge.grade([conversation_text(r.get("prompt") or "") for r in rows], [r["completion"] for r in rows],
                           [""] * len(rows), [[Criterion(r["rubric"].strip(), 1.0, terms=tuple(r.get("terms") or ()))]
                                              for r in rows])
    graded = [(r, bool(v.met and v.met[0])) for r, v in zip(rows, verdicts) if v.error is None]
    grader = macro_f1([p for _, p in graded], [r["binary_labels"] for r, _ in graded])
    by_category: dict[str, list] = {}
    for r, p in graded:
        by_category.setdefault(r.get("category") or "-", []).append((p, r["binary_labels"]))
    physicians: dict[str, tuple[list, list]] = {}
    for r in rows:
        ids = r.get("anonymized_physician_ids") or []
        for k, (who, own) in enumerate(zip(ids, r["binary_labels"])):
            others = r["binary_labels"][:k] + r["binary_labels"][k + 1:]
            if others:
                physicians.setdefault(who, ([], []))[0].append(own)
                physicians[who][1].append(others)
    each = [f for own, others in physicians.values() if (f := macro_f1(own, others)["macro_f1"]) is not None]
    return {"source": label, "rows": len(rows), "judge_errors": len(rows) - len(graded),
            "screened": sum(v.screened is not None for v in verdicts), "judge": grader,
            "physicians": {"macro_f1": round(sum(each) / len(each), 4) if each else None, "physicians": len(each)},
            "by_category": {c: macro_f1([p for p, _ in v], [ls for _, ls in v]) for c, v in sorted(by_category.items())}}


# ---------------------------------------------------------------- comparisons


def comparisons(results: dict, seed: int = 0) -> list[dict]:
    """Each stage against the one before it (base → sft → rl → gguf), and base against the last trained
    stage, per task."""
    names = list(results)
    pairs = list(zip(names, names[1:]))
    trained = [n for n in names if n in TRAINED]
    if trained and ("base", trained[-1]) not in pairs and "base" in names:
        pairs.append(("base", trained[-1]))
    out = []
    for a, b in pairs:
        for task in results[a]["tasks"]:
            fa, fb = results[a]["tasks"][task], results[b]["tasks"][task]
            test = paired_test(fa["correct"], fb["correct"], seed, scores="by_tag" in fa)  # a rubric's scores
            out.append({"from": a, "to": b, "task": task, **test})
    return out


# ---------------------------------------------------------------- the harness's protocol beside the kit's

def harness_beside(recipe: Recipe, items: dict[str, list[dict]], generated: dict[str, dict], results: dict) -> None:
    """For each task from lm-evaluation-harness (kit/benchmarks.py), the harness's own protocol on the same
    items, with its agreement with the kit's reading (first sample): a generative task's own filter on the
    same conclusions; a multiple-choice task's log-likelihood ranking of the choices, per system the kit can
    load (not a GGUF file). Adds `harness` to each such task's figures."""
    harnessed = {task: its for task, its in items.items() if its and "harness_task" in its[0]}
    if harnessed and importlib.util.find_spec("lm_eval") is None:
        say_once("[kit] eval: lm-evaluation-harness is not installed in this environment: its protocol is not run "
                 "beside the kit's (`pip install lm_eval`)")
        return

    def record(figures: dict, protocol: str, picks: list[str | None], its: list[dict]) -> None:
        ours = [p[0] for p in figures["picks"]]
        figures["harness"] = {"protocol": protocol,
                              "accuracy": proportion(sum(p == it["gold"] for p, it in zip(picks, its)), len(its)),
                              "agreement": proportion(sum(p == o for p, o in zip(picks, ours)), len(its))}

    for task, its in harnessed.items():
        if its[0]["protocol"] != "generate_until":
            continue
        name = its[0]["harness_task"]
        for system, g in generated.items():
            # what the harness sees through `kit serve`: the conclusion; nothing when cut off while thinking
            texts = [final_answer(cs[0].text) if THINK_CLOSE in cs[0].text else "" for cs in g["completions"][task]]
            record(results[system]["tasks"][task], f"{filter_name(name)} (lm-eval's filter, same outputs)",
                   harness_filter(name, texts), its)
    choice = {task: its for task, its in harnessed.items() if its[0]["protocol"] == "multiple_choice"}
    if not choice or not recipe.eval.loglikelihood:
        return

    for system, path in systems(recipe):
        if system.startswith("gguf"):
            continue  # llama.cpp's file is not scored by lm-eval in-process
        print(f"[kit] eval: {system}: lm-evaluation-harness's log-likelihood protocol on {', '.join(choice)}")
        loaded = load_model(recipe, adapter=path, trainable=False)
        try:
            picks = loglikelihood(loaded.model, loaded.tokenizer,
                                  {its[0]["harness_task"]: [it["doc_id"] for it in its] for its in choice.values()},
                                  recipe.data.offline, recipe.eval.batch_size, recipe.model.max_seq_length)
        finally:
            del loaded
            free_memory()
        for task, its in choice.items():
            got = picks[its[0]["harness_task"]]
            record(results[system]["tasks"][task], "log-likelihood (lm-eval acc, 0-shot, no chat template)",
                   [got.get(it["doc_id"]) for it in its], its)


# ---------------------------------------------------------------- the stage


def run(recipe: Recipe) -> dict:
    point_at_runs()  # before TRL is imported: the tracker reads its folder then
    end = import_end()
    check_capacity(recipe, ["eval"])
    out = start_stage(recipe, "eval")
    sampling = eval_sampling(recipe)
    items = load_items(recipe)
    tokenizer = load_tokenizer(recipe)
    generated, engine, why, budgets = generate(recipe, items, sampling, tokenizer)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    judge = Judge(recipe.rl.judge, cache_path=out / "judge_cache.sqlite")
    # Qwen's templates open the reasoning in the prompt; a model without a thinking switch (SmolLM2) writes
    # `<think>` itself once trained to, and its base model answers without one
    thinking = opens_thinking(tokenizer)
    results = score(items, generated, judge, count_tokens, thinking, recipe.eval.seed)
    agreement = judge_agreement(recipe, judge)
    harness_beside(recipe, items, generated, results)
    compared = comparisons(results, recipe.eval.seed)
    metrics = {**metrics_header(recipe, "eval"),
               "items": {task: len(its) for task, its in items.items()}, "seed": recipe.eval.seed,
               "languages": {task: its[0].get("language", "en") if its else "en" for task, its in items.items()},
               "decoding": f"{sampling.describe()}, thinking {'on' if thinking else 'as the model writes it (no switch)'}",
               "engine": engine,
               "engine_reason": why, "judge": {"preset": judge.preset, "ledger": judge.ledger.as_dict()},
               "results": results, "comparisons": compared, "budgets": budgets, "judge_agreement": agreement,
               "end": end, **peak_memory_mb()}
    write(out, metrics, items, generated)
    Finished(out / "partial", recipe.stage_hash("eval"), sampling).clear()  # finished: nothing to resume
    print(results_table(metrics))
    log_run(recipe, "eval", {f"{system}/{task}/accuracy": f["accuracy"]["value"] for system, r in results.items()
                             for task, f in r["tasks"].items() if f["accuracy"]["value"] is not None},
            {"items": metrics["items"], "decoding": metrics["decoding"], "engine": engine})
    return metrics


def write(out: Path, metrics: dict, items: dict[str, list[dict]], generated: dict[str, dict]) -> None:
    """metrics.json (per-item vectors left out), outputs.jsonl (every completion with the
    choice read from it), results.md and accuracy.png."""
    with (out / "outputs.jsonl").open("w", encoding="utf-8") as f:
        for name, res in metrics["results"].items():
            for task, its in items.items():
                picks = res["tasks"][task].get("picks")
                for i, (it, cs) in enumerate(zip(its, generated[name]["completions"][task])):
                    for k, c in enumerate(cs):
                        row = {"system": name, "task": task, "item": i, "sample": k, "question": it["question"],
                               "gold": it.get("gold", it.get("reference")), "pick": picks[i][k] if picks else None,
                               "correct": res["tasks"][task]["correct"][i][k], "truncated": c.truncated,
                               "completion": c.text}
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    for res in metrics["results"].values():
        for figures in res["tasks"].values():
            figures.pop("picks", None)
            figures.pop("correct", None)
    (out / "results.md").write_text(results_table(metrics), encoding="utf-8")
    bar_plot(metrics["results"], out / "accuracy.png")
    if metrics.get("budgets"):
        budget_plot(metrics["budgets"], out / "budget.png")
    write_metrics(out, metrics)


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


# ---------------------------------------------------------------- reports


