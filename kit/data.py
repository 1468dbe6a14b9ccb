"""Data stage: load, validate, format and measure the recipe's datasets.

    python -m kit data --recipe tiny

Writes `runs/<recipe>/data/`: `sft_train.jsonl`, `sft_val.jsonl` (chat messages), `rl.jsonl`
(prompt + reference), `eval.jsonl` (prompt + gold letter), `lengths.json` and `metrics.json`.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path

from .base_model import tokenizer_path
from .benchmarks import items
from .formatting import CONTROL_STRINGS, LETTERS, MCQ_INSTRUCTION, join_reasoning
from .judge import read_rubric
from .judge.rubric import CJK, as_rows as rubric_rows, key as rubric_key
from .modeling import load_tokenizer
from .recipe import DatasetSpec, Recipe, trainer_setting
from .runs import Timer, metrics_header, start_stage, write_metrics
from .sources import Checked, DataError, control_reason, image_roots, load_rows, text_reason
from . import vqa


# The real datasets' columns. Each kind is formatted by one function below.
SCHEMAS = {
    "sft": ["Question", "Complex_CoT", "Response"],  # FreedomIntelligence/medical-o1-reasoning-SFT
    "rl": ["Open-ended Verifiable Question", "Ground-True Answer"],  # .../medical-o1-verifiable-problem
    "mcq": ["question", "options", "answer_idx"],  # GBaker/MedQA-USMLE-4-options (and MMLU-Pro, mapped)
}


def normalise_mcq(row: dict) -> dict:
    """MMLU-Pro rows (options as a list, `answer` a letter) take MedQA's shape."""
    if isinstance(row.get("options"), list):
        options = {LETTERS[i]: o for i, o in enumerate(row["options"])}
        return {**row, "options": options, "answer_idx": row.get("answer_idx", row.get("answer"))}
    return row


def control_text(row: dict, kind: str) -> str | None:
    """The drop reason when a text field holds a think tag or a chat control token, else None.

    >>> control_text({"Question": "Q", "Complex_CoT": "a </think> b", "Response": "R"}, "sft")
    "field 'Complex_CoT' contains '</think>'"
    """
    return control_reason(row, SCHEMAS[kind])


def rubric_reason(row: dict, where: str, seen: set) -> str | None:
    """Why a rubric row is dropped (a think tag or chat token in its question, a duplicate), or None; a rubric that
    cannot be graded is a RubricError naming `where`, not a row dropped."""
    question, criteria, _ = read_rubric(row, where)
    key = (question, rubric_key(criteria, True))
    if reason := next((f"the question contains '{t}'" for t in CONTROL_STRINGS if t in question), None):
        return reason
    if key in seen:
        return "duplicate row"
    seen.add(key)
    return None


def row_reason(row: dict, kind: str, seen: set) -> str | None:
    """Why a row of a column schema is dropped, or None."""
    reason = None
    for col in SCHEMAS[kind]:
        value = row.get(col)
        if col != "options" or value is None:
            reason = text_reason(row, col)
        elif not isinstance(value, dict) or len([v for v in value.values() if v]) < 2:
            reason = "field 'options' is not a mapping of at least two options"
        elif any(v is not None and not isinstance(v, str) for v in value.values()):
            reason = "field 'options' has a non-string option"
        if reason:
            return reason
    if kind == "mcq" and row["answer_idx"] not in row["options"]:
        return "field 'answer_idx' is not one of the option letters"
    if reason := control_text(row, kind):
        return reason
    key = tuple(str(row[c]).strip() for c in SCHEMAS[kind])
    if key in seen:
        return "duplicate row"
    seen.add(key)
    return None


def validate(rows: list[dict], kind: str, source: str) -> Checked:
    """Drop rows with missing, empty or non-string fields, think tags or chat tokens in text, and duplicates,
    counting each reason; a rubric that cannot be graded stops here (`kit.judge.read_rubric`)."""
    out = Checked(rows=[])
    seen: set = set()
    for i, row in enumerate(rows):
        if kind == "mcq":
            row = normalise_mcq(row)
        reason = rubric_reason(row, f"{source} row {i + 1}", seen) if kind == "rubric" else row_reason(row, kind, seen)
        if reason:
            out.dropped[reason] += 1
            out.first_bad.setdefault(reason, f"{source} row {i + 1}")
        else:
            out.rows.append(row)
    if not out.rows:
        detail = "; ".join(f"{r} (first at {w})" for r, w in out.first_bad.items()) or "the source is empty"
        expected = ", ".join(SCHEMAS[kind]) if kind in SCHEMAS else "RaR-Medicine's (question, rubric) or HealthBench's (prompt, rubrics)"
        raise DataError(f"no usable rows in {source}: {detail}. Expected columns: {expected}")
    return out


def assistant_text(reasoning: str, answer: str) -> str:
    return join_reasoning(reasoning.strip(), answer.strip(), opened=False)


def format_sft(row: dict, spec: DatasetSpec | None = None) -> dict:
    """User asks the question; the assistant thinks inside <think>…</think>, then answers."""
    return {"messages": [
        {"role": "user", "content": row["Question"].strip()},
        {"role": "assistant", "content": assistant_text(row["Complex_CoT"], row["Response"])},
    ]}


def format_rubric_rl(row: dict, spec: DatasetSpec | None = None) -> dict:
    """A rubric row (RaR-Medicine's or HealthBench's schema, read by `kit.judge.read_rubric`) as an RL problem: the
    question (HealthBench's conversation as its turns), and the criteria the `rubric` reward grades against."""
    question, criteria, _ = read_rubric(row, "")
    prompt = row["prompt"] if isinstance(row.get("prompt"), list) else [{"role": "user", "content": question}]
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in prompt], "question": question,
            "reference": (row.get("reference_answer") or "").strip(), "rubric": rubric_rows(criteria)}


def format_rubric_eval(row: dict, spec: DatasetSpec | None = None) -> dict:
    """A rubric row as an evaluation item, scored HealthBench's way: the prompt (HealthBench's conversation as
    given), the criteria, the example's tags (HealthBench's themes), its language, and its task: the recipe's
    name for the source, else the dataset's (`healthbench`, `rar_medicine`), with `_zh` for the Chinese rows of
    a source whose language the recipe does not give, so each language has its own table."""
    item = format_rubric_rl(row, spec)
    language = (spec.language if spec else None) or ("zh" if CJK.search(item["question"]) else "en")
    name = (spec.task if spec else None) or ("healthbench" if isinstance(row.get("rubrics"), list) else "rar_medicine")
    explicit = spec is not None and (spec.task or spec.language)
    return {**item, "tags": [str(t) for t in row.get("example_tags") or []], "language": language,
            "task": name if explicit or language == "en" else f"{name}_{language}"}


def format_rl(row: dict, spec: DatasetSpec | None = None) -> dict:
    question = row["Open-ended Verifiable Question"].strip()
    return {
        "prompt": [{"role": "user", "content": question}],
        "question": question,
        "reference": row["Ground-True Answer"].strip(),
    }


def task_name(row: dict, spec: DatasetSpec | None = None) -> str:
    """The task an item scores under: the recipe's name for the source, else lm-evaluation-harness's
    (`mmlu_pro_biology` for an MMLU-Pro row of that category), else `medqa`."""
    if spec is not None and spec.task:
        return spec.task
    return f"mmlu_pro_{row['category'].replace(' ', '_')}" if row.get("category") else "medqa"


def format_mcq(row: dict, spec: DatasetSpec | None = None) -> dict:
    options = {k: v for k, v in row["options"].items() if v}
    lines = [row["question"].strip(), ""] + [f"{k}. {v.strip()}" for k, v in sorted(options.items())]
    lines += ["", MCQ_INSTRUCTION]
    return {
        "prompt": [{"role": "user", "content": "\n".join(lines)}],
        "question": row["question"].strip(),
        "options": options,
        "gold": row["answer_idx"],
        "task": task_name(row, spec),
    }


def format_mcq_sft(row: dict, spec: DatasetSpec | None = None) -> dict:
    """A multiple-choice row as an SFT conversation: the evaluation's own prompt, a short reasoning that
    names the right option, and an answer that commits to its letter the way the evaluation reads it."""
    item = format_mcq(row, spec)
    gold = item["gold"]
    reasoning = f"Weighing each option against the question, {item['options'][gold].strip()} fits best; the others do not."
    return {"messages": [*item["prompt"],
                         {"role": "assistant", "content": assistant_text(reasoning, f"The answer is {gold}.")}]}


def format_mcq_rl(row: dict, spec: DatasetSpec | None = None) -> dict:
    """A multiple-choice row as an RL problem with a verifiable reference: the evaluation's own prompt, and
    the gold letter, which the judge (the rule judge reads the letter the conclusion commits to) checks."""
    item = format_mcq(row, spec)
    return {"prompt": item["prompt"], "question": item["question"], "reference": item["gold"]}


# (kind of data, schema of the source) -> formatter
FORMATTERS = {("sft", "sft"): format_sft, ("sft", "mcq"): format_mcq_sft, ("rl", "rl"): format_rl,
              ("rl", "mcq"): format_mcq_rl, ("rl", "rubric"): format_rubric_rl, ("mcq", "mcq"): format_mcq,
              ("mcq", "rubric"): format_rubric_eval}


def render(tokenizer, example: dict) -> str:
    """Text the model sees: the full conversation, or the prompt with the generation prefix."""
    if "messages" in example:
        return tokenizer.apply_chat_template(example["messages"], tokenize=False)
    return tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)


def token_lengths(tokenizer, examples: list[dict], num_proc: int = 1) -> list[int]:
    """Token counts of the rendered examples: chat template and tokeniser applied in batches, in
    `num_proc` processes when more than one."""
    import datasets

    datasets.disable_progress_bars()
    column = "messages" if "messages" in examples[0] else "prompt"
    ds = datasets.Dataset.from_dict({column: [e[column] for e in examples]})

    def count(batch):
        texts = [render(tokenizer, {column: conv}) for conv in batch[column]]
        return {"n": [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]}

    lengths = ds.map(count, batched=True, batch_size=500, num_proc=num_proc if num_proc > 1 else None,
                     remove_columns=[column])
    return list(lengths["n"])


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"count": 0}
    ordered = sorted(lengths)
    return {
        "count": len(ordered), "min": ordered[0], "median": statistics.median(ordered),
        "p95": p95(ordered), "max": ordered[-1],
    }


def completion_lengths(tokenizer, examples: list[dict]) -> list[int]:
    """Tokens of each SFT example's assistant turn (reasoning + answer + end of turn), as the model generates
    it: the whole conversation less the prompt with its generation prefix."""
    out = []
    for e in examples:
        full = render(tokenizer, e)
        prompt = tokenizer.apply_chat_template(e["messages"][:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer([full, prompt], add_special_tokens=False)["input_ids"]
        out.append(len(ids[0]) - len(ids[1]))
    return out


def p95(values: list[int]) -> int:
    """
    >>> p95(list(range(1, 101))), p95([5, 1, 3, 2, 4])
    (96, 5)
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def length_warnings(recipe: Recipe, lengths: dict) -> list[tuple[str, str]]:
    """(section, warning) for each budget of the recipe below the 95th percentile of what its data measures:
    the sequence length against the SFT rows, and the thinking budgets (RL's completions, eval's new tokens)
    against the SFT answers (reasoning + answer). Lengths as the data stage writes them (`lengths.json`)."""
    out = []
    sft = lengths.get("sft") or []
    if sft and recipe.model.max_seq_length < p95(sft):
        long = sum(n > recipe.model.max_seq_length for n in sft)
        out.append(("model", f"model.max_seq_length {recipe.model.max_seq_length} is below the 95th percentile of the SFT "
                             f"rows ({p95(sft)} tokens): {long} of {len(sft)} rows are dropped as too long"))
    answers = lengths.get("sft_completion")
    if not answers and sft:  # lengths from an older kit: whole rows less a typical question
        prompts = sorted(lengths.get("rl") or [0])
        answers = [n - prompts[len(prompts) // 2] for n in sft]
    if not answers:
        return out
    need = p95(answers)
    budgets = [("rl", "rl.trainer.max_completion_length", trainer_setting(recipe, "rl", "max_completion_length"),
                "many completions will be cut off before their answer"),
               ("eval", "eval.max_new_tokens", recipe.eval.max_new_tokens,
                "many answers will be cut off while still thinking and count as unparseable")]
    for section, key, limit, why in budgets:
        if (section != "rl" or recipe.data.rl) and limit < need:
            out.append((section, f"{key} {limit} is below the 95th percentile of the SFT answers (~{need} tokens of "
                                 f"reasoning + answer): {why}"))
    return out


def prepare_kind(kind: str, specs: list[DatasetSpec], tokenizer, max_len: int, num_proc: int,
                 offline: bool = False, out: Path | None = None) -> tuple[list[dict], dict]:
    """Load, validate, format and length-filter one kind of data; return the examples and counts. The images of a
    medical VQA source (kit.vqa) are checked and written under `out/images/`."""
    examples, counts = [], {"sources": []}
    dropped = Counter()
    for spec in specs:
        if spec.path.startswith("harness:"):  # an lm-evaluation-harness task: its own prompt, choices and answer
            if kind != "mcq":
                raise DataError(f"{spec.path}: a harness task is an evaluation source (data.eval), not {kind} data")

            formatted, label = items(spec, offline)
            examples.extend(formatted)
            counts["sources"].append({"source": label, "loaded": len(formatted), "valid": len(formatted),
                                      "dropped": {}, "first_bad": {}, "language": formatted[0]["language"]})
            continue
        raw, label = load_rows(spec, offline)
        schema = spec.schema or kind
        if vqa.is_vqa(schema):
            if out is None:
                raise DataError(f"{label}: image data needs a folder to write its images to")
            checked = vqa.read(raw, schema, label, image_roots(spec, offline), out)
            dropped.update(checked.dropped)
            formatted = vqa.format_source(kind, checked.rows, schema, spec)
            examples.extend(formatted)
            counts["sources"].append({"source": label, "loaded": len(raw), "valid": len(checked.rows),
                                      "dropped": dict(checked.dropped), "first_bad": checked.first_bad,
                                      "language": spec.language, "images": len({r["image"] for r in checked.rows}),
                                      "questions": vqa.counts(checked.rows)})
            continue
        if (kind, schema) not in FORMATTERS:
            raise DataError(f"{label}: schema '{schema}' cannot feed the {kind} data (an SFT or RL source may be 'mcq')")
        checked = validate(raw, schema, label)
        dropped.update(checked.dropped)
        formatted = [FORMATTERS[kind, schema](r, spec) for r in checked.rows]
        if kind == "sft":
            for ex in formatted:
                ex["language"] = spec.language
        examples.extend(formatted)
        counts["sources"].append({"source": label, "loaded": len(raw), "valid": len(checked.rows),
                                  "dropped": dict(checked.dropped), "first_bad": checked.first_bad,
                                  "language": spec.language})
    lengths = token_lengths(tokenizer, examples, num_proc) if examples else []
    if kind == "sft" and examples:
        counts["completion_lengths"] = completion_lengths(tokenizer, examples)
        counts["completion_tokens"] = length_stats(counts["completion_lengths"])
    kept = [e for e, n in zip(examples, lengths) if n <= max_len]
    if len(kept) < len(examples):
        dropped[f"longer than max_seq_length ({max_len} tokens)"] += len(examples) - len(kept)
    counts.update({"loaded": sum(s["loaded"] for s in counts["sources"]), "kept": len(kept),
                   "dropped": dict(dropped), "tokens": length_stats(lengths),
                   "lengths": lengths})
    return kept, counts


def split(rows: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded shuffle, then hold out `val_fraction` (at least one row when there are two or more). Not
    `Dataset.train_test_split`: the rows are plain dicts written as JSONL, and its rounding and shuffle would
    move every row and with it every figure measured so far (bench/RESULTS.md)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_val = max(1, round(len(rows) * val_fraction)) if len(rows) > 1 and val_fraction > 0 else 0
    return rows[n_val:], rows[:n_val]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def run(recipe: Recipe) -> dict:
    """The data stage. Returns its metrics (also written to metrics.json)."""
    out = start_stage(recipe, "data")
    tokenizer = load_tokenizer(recipe)
    max_len = recipe.model.max_seq_length
    metrics: dict = {**metrics_header(recipe, "data"),
                     "tokenizer": tokenizer_source(recipe, tokenizer), "offline": recipe.data.offline}
    with Timer() as t:
        kinds = {"sft": recipe.data.sft, "rl": recipe.data.rl, "mcq": recipe.data.eval}
        files = {"sft": None, "rl": "rl.jsonl", "mcq": "eval.jsonl"}
        lengths = {}
        for kind, specs in kinds.items():
            if not specs:
                continue
            kept, counts = prepare_kind(kind, specs, tokenizer, max_len, recipe.data.num_proc, recipe.data.offline, out)
            lengths[kind] = counts.pop("lengths")
            if "completion_lengths" in counts:
                lengths["sft_completion"] = counts.pop("completion_lengths")
            if kind == "sft":
                train, val = split(kept, recipe.data.val_fraction, recipe.data.seed)
                write_jsonl(out / "sft_train.jsonl", train)
                write_jsonl(out / "sft_val.jsonl", val)
                counts.update(train=len(train), val=len(val))
            else:
                write_jsonl(out / files[kind], kept)
            metrics[kind] = counts
    (out / "lengths.json").write_text(json.dumps(lengths))
    metrics["warnings"] = [w for _, w in length_warnings(recipe, lengths)]
    metrics["seconds"] = round(t.seconds, 2)
    write_metrics(out, metrics)
    print_counts(metrics)
    for warning in metrics["warnings"]:
        print(f"[kit] ⚠ {warning}")
    return metrics


def tokenizer_source(recipe: Recipe, tokenizer) -> str:
    """Which tokenizer measured the lengths: the model's own, or the kit's built-in copy of it (offline)."""
    path = tokenizer_path(recipe)
    own = recipe.model.name_or_path
    if path == own or own.startswith("builtin:"):
        where = own
    else:
        where = f"{Path(path).name} (the kit's built-in copy of {own}'s tokenizer)"
    return f"{where}; {len(tokenizer)} tokens"


def counts_table(metrics: dict) -> list[dict]:
    """One row per source: loaded, valid, dropped per reason."""
    rows = []
    for kind in ("sft", "rl", "mcq"):
        for s in metrics.get(kind, {}).get("sources", []):
            rows.append({"kind": kind, "source": s["source"],
                         "loaded": s["loaded"], "valid": s["valid"],
                         "dropped": ", ".join(f"{r}: {n}" for r, n in s["dropped"].items()) or "-"})
        if kind in metrics:
            too_long = {r: n for r, n in metrics[kind]["dropped"].items() if r.startswith("longer")}
            if too_long:
                rows.append({"kind": kind, "source": "(all)", "loaded": "", "valid": "",
                             "dropped": ", ".join(f"{r}: {n}" for r, n in too_long.items())})
    return rows


def print_counts(metrics: dict) -> None:
    for row in counts_table(metrics):
        print(f"[kit] data {row['kind']:<4} {row['source']:<40} loaded {row['loaded']!s:>6} "
              f"valid {row['valid']!s:>6} dropped: {row['dropped']}")
    for kind in ("sft", "rl", "mcq"):
        if kind in metrics:
            t = metrics[kind]["tokens"]
            print(f"[kit] data {kind:<4} kept {metrics[kind]['kept']} rows; tokens min {t.get('min')} "
                  f"median {t.get('median')} p95 {t.get('p95')} max {t.get('max')}")
            if "completion_tokens" in metrics[kind]:
                c = metrics[kind]["completion_tokens"]
                print(f"[kit] data {kind:<4} answers (reasoning + answer): tokens median {c['median']} p95 {c['p95']} "
                      f"max {c['max']}")
    if "tokenizer" in metrics:
        print(f"[kit] data tokenizer: {metrics['tokenizer']}")
