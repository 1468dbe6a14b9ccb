"""The evaluation's tables, as a reader sees them: per language, in lm-evaluation-harness's table format
beside the kit's own columns, each with its protocol and the published figures for orientation."""

from __future__ import annotations

from .stats import stderr


# Figures others published for the models the kit reproduces and their peers: theirs, under their protocols,
# shown for orientation beside a run, never mixed into its table.
CARD_27B = "Reasoning-Medical-27B (Qwen3.6-27B, GRPO)"


PUBLISHED = [
    {"model": CARD_27B, "task": "medqa", "value": 0.93, "source": "its model card, lm-evaluation-harness table"},
    {"model": CARD_27B, "task": "mmlu_pro_biology", "value": 0.85, "source": "its model card, lm-evaluation-harness table"},
    {"model": "Reasoning-Medical0.1-27B (an earlier release)", "task": "mmlu_prox_en_biology", "value": 0.968,
     "source": "its model listing (custom-extract); the same listing gives MedQA 0.969, not the card's 0.93"},
    {"model": "HuatuoGPT-o1-8B (SFT + RL)", "task": "medqa", "value": 0.726, "source": "HuatuoGPT-o1 paper"},
    {"model": "HuatuoGPT-o1-8B (SFT only, no RL)", "task": "medqa", "value": 0.690, "source": "HuatuoGPT-o1 paper"},
    {"model": "HuatuoGPT-o1-8B (SFT + RL)", "task": "medmcqa", "value": 0.604, "source": "HuatuoGPT-o1 paper"},
    {"model": "HuatuoGPT-o1-8B (SFT + RL)", "task": "pubmedqa", "value": 0.792, "source": "HuatuoGPT-o1 paper"},
]


LANGUAGES = {"en": "English", "zh": "Chinese", "mul": "Multilingual"}


PROTOCOL = ("0-shot; the prompt is the question and its lettered options (a task from lm-evaluation-harness: its own "
            "`description` and `doc_to_text`, word choices lettered), then, where that prompt asks for no answer form "
            "(multiple-choice tasks and MedQA), \"Answer with the letter of the correct option, in the form \"The answer "
            "is X\".\" (in Chinese for a Chinese task), in the model's chat template with thinking on. "
            "Extraction: only the text after `</think>` is read; it must commit explicitly (\"the answer is X\", \"Answer: "
            "X\", `\\boxed{X}`, \"答案是X\", \"故选X\", `{\"answer\": \"X\"}`, or a lone letter on the last line); a "
            "completion cut off before `</think>`, or one that names two letters, commits to nothing. Unparseable counts "
            "as wrong. Open-ended: the judge grades the conclusion against the reference. Rows filtered `custom-extract` "
            "apply lm-eval's own filter to the same conclusions; rows filtered `loglikelihood` are lm-eval's own "
            "protocol (the likeliest choice after the prompt, no chat template, no generation).")


def _fmt(p: dict | None) -> str:
    if not p or p.get("value") is None:
        return "-"
    return f"{p['value']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] (n={p['n']})"


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _rate(p: dict | None) -> str:
    return "-" if not p or p.get("value") is None else f"{p['value']:.2f}"


def harness_table(name: str, res: dict, decoding: str) -> str:
    """One system's figures in lm-evaluation-harness's table layout: the kit's reading of each task, and the
    harness's own protocol below it where the task is the harness's."""
    lines = [f"#### {name} ({res['engine'].split(' ')[0]}; {decoding})", "",
             "|Tasks|Version|Filter|n-shot|Metric| |Value| |Stderr|", "|---|---:|---|---:|---|---|---:|---|---:|"]
    for task, figures in res["tasks"].items():
        metric, filt = ("judged_correct", "judge") if task == "open" else ("exact_match", "after-think-extract")
        if "by_tag" in figures:
            metric, filt = "rubric_score", "judge"
        acc = figures["accuracy"]
        if acc["value"] is not None:  # a rubric score's error: its bootstrap deviation, as HealthBench reports it
            err = acc["std"] if acc.get("std") is not None else stderr(acc)
            lines.append(f"|{task}|kit-1|{filt}|0|{metric}|↑|{acc['value']:.4f}|±|{err:.4f}|")
        theirs = figures.get("harness")
        if theirs and theirs["accuracy"]["value"] is not None:
            loglik = theirs["protocol"].startswith("log-likelihood")
            filt, metric = ("loglikelihood", "acc") if loglik else (theirs["protocol"].split(" ")[0], "exact_match")
            a = theirs["accuracy"]
            lines.append(f"| - {task}|lm-eval|{filt}|0|{metric}|↑|{a['value']:.4f}|±|{stderr(a):.4f}|")
    return "\n".join(lines)


def published_rows(tasks: list[str]) -> list[str]:
    rows = [p for p in PUBLISHED if p["task"] in tasks]
    if not rows:
        return ["No published figure of the seeds or of HuatuoGPT-o1 on these tasks."]
    return (["Published (theirs, not this run; other protocols and items):", "", "| model | task | value | source |",
             "|---|---|---:|---|"] + [f"| {p['model']} | {p['task']} | {p['value']:.3f} | {p['source']} |" for p in rows])


def budget_table(budgets: dict) -> list[str]:
    lines = [f"System `{budgets['system']}`, {budgets['items']} items ({budgets['decoding']}); at each budget the "
             f"model thinks up to that many tokens, `</think>` is appended where it did not close its thinking "
             f"(budget forcing), and the answer follows in up to {budgets['answer_tokens']} tokens.", "",
             "| thinking budget (tokens) | accuracy [95% CI] | forced closes | mean thinking tokens |", "|---:|---|---|---:|"]
    lines += [f"| {b['budget']} | {_fmt(b['accuracy'])} | {_rate(b['forced_close'])} | {b['mean_thinking_tokens']} |"
              for b in budgets["curve"]]
    return lines


def results_table(metrics: dict) -> str:
    languages = metrics.get("languages") or {}
    lines = [f"# Evaluation · `{metrics['recipe']}`", "",
             f"Decoding: {metrics['decoding']}. Items per task: "
             + ", ".join(f"{t} {n}" for t, n in metrics["items"].items())
             + f" (seed {metrics['seed']}, the same for every system). Intervals: 95% Wilson (over items when several "
             f"samples per item). Judge: {metrics['judge']['preset']}.",
             "Not medical advice; not validated for clinical use."]
    for lang in dict.fromkeys(languages.get(t, "en") for t in metrics["items"]):
        tasks = [t for t in metrics["items"] if languages.get(t, "en") == lang]
        lines += ["", f"## {LANGUAGES.get(lang, lang)} tasks", "",
                  "| system | task | accuracy [95% CI] | unparseable | truncated | lm-eval's protocol | its accuracy | agreement |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in metrics["results"].items():
            for task in tasks:
                f = r["tasks"][task]
                unparseable = f"{f['judge_errors']} judge errors" if "judge_errors" in f else _rate(f.get("unparseable"))
                h = f.get("harness")
                theirs = (f"{h['protocol']} | {_fmt(h['accuracy'])} | {_rate(h['agreement'])}" if h else "- | - | -")
                lines.append(f"| {name} | {task} | {_fmt(f['accuracy'])} | {unparseable} | {_rate(f['truncated'])} | {theirs} |")
        lines += [""] + published_rows(tasks)
    if rubric := rubric_tasks(metrics):
        lines += [""] + rubric_tables(metrics, rubric)
    if metrics.get("judge_agreement"):
        lines += [""] + agreement_lines(metrics["judge_agreement"])
    lines += ["", "Agreement: the share of items on which lm-eval's protocol picks the letter the kit's reader read (the "
              "first sample). The kit's figure is generative, thinking on, read after `</think>`.", "",
              "| system | engine | format adherence | truncated (all) | mean reasoning / answer tokens | tokens/s |",
              "|---|---|---|---|---|---|"]
    for name, r in metrics["results"].items():
        lines.append(f"| {name} | {r['engine'].split(' ')[0]} | {_fmt(r['format_adherence'])} | {_fmt(r['truncated'])} | "
                     f"{r['mean_reasoning_tokens']} / {r['mean_answer_tokens']} | {r['generated_tokens_per_second']} |")
    if metrics.get("comparisons"):
        lines += ["", "## Comparisons (same items, paired tests)", ""]
        lines += [f"- {comparison_line(c)}" for c in metrics["comparisons"]]
    if metrics.get("budgets"):
        lines += ["", "## Accuracy against the thinking budget", ""] + budget_table(metrics["budgets"])
    lines += ["", "## In lm-evaluation-harness's table format", "", f"Protocol: {PROTOCOL}", ""]
    for name, r in metrics["results"].items():
        lines += [harness_table(name, r, metrics["decoding"]), ""]
    lines += ["Engines: " + "; ".join(f"{name}: {r['engine']}" for name, r in metrics["results"].items())]
    return "\n".join(lines) + "\n"


def rubric_tasks(metrics: dict) -> list[str]:
    """The eval's tasks scored against rubrics (HealthBench's way), in the eval's order."""
    return [t for t in metrics["items"] if any("by_tag" in r["tasks"].get(t, {}) for r in metrics["results"].values())]


def rubric_tables(metrics: dict, tasks: list[str]) -> list[str]:
    """The rubric tasks per theme and per axis, HealthBench's way, with the criteria met by kind."""
    lines = ["## Rubric tasks (HealthBench's score)", "",
             "Each answer scores the points of the criteria its conclusion meets over the positive points (a met pitfall "
             "subtracts); a task's figure is the mean over items clipped to [0, 1], with a 95% bootstrap interval over "
             "the items. The judge sees the conclusion only, never the reasoning.", "",
             "| system | task | score [95% CI] | positive criteria met | pitfalls met | by theme and axis |", "|---|---|---|---|---|---|"]
    for name, r in metrics["results"].items():
        for task in tasks:
            f = r["tasks"][task]
            tags = "; ".join(f"{tag.split(':', 1)[1]} ({tag.split(':', 1)[0]}) {_fmt(v)}" for tag, v in f["by_tag"].items()
                             if v.get("value") is not None) or "-"
            lines.append(f"| {name} | {task} | {_fmt(f['accuracy'])} | {f['met'].get('positive', '-')} | "
                         f"{f['met'].get('pitfall', '-')} | {tags} |")
    return lines


def agreement_lines(a: dict) -> list[str]:
    """The judge's agreement with physicians' labels of rubric criteria, beside the physicians' own."""
    judge, docs = a["judge"], a["physicians"]
    lines = ["## How far to trust the rubric judge", "",
             f"Its verdicts against physicians' labels of {a['rows']} criteria ({a['source']}; {judge['n']} verdict-label "
             f"pairs, {a['judge_errors']} not graded, {a['screened']} stopped by the screen): **macro-F1 {_score(judge['macro_f1'])}** (F1 of "
             f"'met' {judge['f1_met']}, of 'not met' {judge['f1_not_met']}); the physicians' own, each against the others: "
             f"{_score(docs['macro_f1'])} ({docs['physicians']} physicians). HealthBench's "
             "meta-evaluation measure; a judge near the physicians' figure grades about as consistently as they do.", "",
             "| category | macro-F1 | pairs |", "|---|---|---|"]
    lines += [f"| {c} | {_score(v['macro_f1'])} | {v['n']} |" for c, v in a["by_category"].items()]
    return lines


def comparison_line(c: dict, alpha: float = 0.05) -> str:
    """ "SFT → RL on medqa: +4.0 points (p = 0.012)" only when the test holds; otherwise it says so.

    >>> comparison_line({"from": "sft", "to": "rl", "task": "medqa", "difference": 0.04, "p_value": 0.012, "test": "t"})
    'SFT → RL on medqa: +4.0 points (p = 0.012, t)'
    >>> comparison_line({"from": "sft", "to": "rl", "task": "medqa", "difference": 0.04, "p_value": 0.4, "test": "t"})
    'SFT → RL on medqa: no significant difference (+4.0 points, p = 0.4, t)'
    """
    head = f"{c['from'].upper()} → {c['to'].upper()} on {c['task']}: "
    points = f"{100 * c['difference']:+.1f} points"
    if c["p_value"] < alpha and c["difference"] != 0:
        return head + f"{points} (p = {c['p_value']:.3g}, {c['test']})"
    return head + f"no significant difference ({points}, p = {c['p_value']:.3g}, {c['test']})"
