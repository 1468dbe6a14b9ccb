"""lm-evaluation-harness beside the kit's own evaluation: the harness's generative tasks (MMLU-Pro,
MMLU-ProX) — their prompt, their few-shot examples, their `custom-extract` filter — run against the kit's
OpenAI-compatible server (`local-chat-completions`, the reasoning cut at `</think>`), and its extraction
compared with the kit's on the same outputs.

    python -m kit harness --recipe tiny [--limit 4]

With a model hub the stock tasks run (e.g. `mmlu_pro_biology`: TIGER-Lab/MMLU-Pro, 5-shot from its
validation split). Offline (`data.offline`, or MMLU-Pro data given as a local file) the stock task runs
through a task file that includes it and changes only where the data comes from. The multiple-choice
tasks (MedMCQA, PubMedQA, CMMLU, C-Eval) are scored by log-likelihood, which a chat API with thinking on
cannot give: `kit eval` runs that protocol in-process (kit/benchmarks.py). The served model is the run's
exported one. Writes `runs/<recipe>/eval/harness/`: `results.json` (the harness's own), `results.md` (its
table, then the agreement), `samples.jsonl`, `agreement.json`.
"""

from __future__ import annotations

import json
import os
import secrets
from unittest import mock
from pathlib import Path

from .benchmarks import HARNESS_INVALID, PREFIX, config, is_harness, manager, offline_data
from .data import task_name
from .formatting import LETTERS, extract_choice
from .recipe import DatasetSpec, Recipe, RecipeError
from .runs import require, stage_dir
from .serve import Server
from .sources import LOCAL_SUFFIXES, bundled_file



def generative_tasks(recipe: Recipe) -> list[str]:
    """The recipe's eval sources the harness scores by generating: its `harness:` tasks whose output is
    generated text (MMLU-Pro, MMLU-ProX: `custom-extract`), and MMLU-Pro categories given as data
    (`where: {category: ...}`). A multiple-choice task is scored by log-likelihood, which `kit eval` runs
    in-process (a chat API with thinking on cannot give it)."""
    tasks = []
    for spec in recipe.data.eval:
        if is_harness(spec):
            name = spec.path[len(PREFIX):]
            if config(name)["output_type"] == "generate_until":
                tasks.append(name)
        elif spec.where and "category" in spec.where:
            tasks.append(task_name({"category": spec.where["category"]}))
    return tasks


def local_files(spec: DatasetSpec) -> dict[str, str] | None:
    """{test, validation} files for an offline MMLU-Pro source given as data, or None for a hub dataset.
    A bundled sample's few-shot examples are its `_validation` file; a local file serves as its own."""
    if spec.path.startswith("bundled:"):
        test = bundled_file(spec.path)
        validation = test.with_name(f"{test.stem}_validation.jsonl")
        return {"test": str(test), "validation": str(validation if validation.exists() else test)}
    if Path(spec.path).suffix in LOCAL_SUFFIXES:
        path = str(Path(spec.path).resolve())
        return {"test": path, "validation": path}
    return None


def task_files(recipe: Recipe, folder: Path, only: list[str] | None = None) -> list[str]:
    """The harness task for each generative source: the stock one, or — offline, or for local data — a task
    file written into `folder` that includes the stock task and changes only where its data comes from."""
    tasks = []
    by_category = {s.where["category"]: s for s in recipe.data.eval if not is_harness(s) and s.where and "category" in s.where}
    known = generative_tasks(recipe)
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise RecipeError(f"--tasks: {', '.join(unknown)} not among the recipe's generative tasks ({', '.join(known)})")
    for stock in [t for t in known if not only or t in only]:
        category = stock.removeprefix("mmlu_pro_").replace("_", " ")
        if stock.startswith("mmlu_pro_") and category in by_category:
            files = local_files(by_category[category])
            data = None if files is None else {"dataset_path": "json", "dataset_name": None,
                                               "dataset_kwargs": {"data_files": files}}
        else:
            data = offline_data(config(stock))[0] if recipe.data.offline else None
        if data is None:
            tasks.append(stock)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        local = f"{stock}_local"
        text = {"include": str(manager().task_index[stock].yaml_path), "task": local, **data}
        (folder / f"{local}.yaml").write_text(json.dumps(text, indent=1, ensure_ascii=False))  # JSON is YAML
        tasks.append(local)
    return tasks


def agreement(samples: dict[str, list[dict]]) -> dict:
    """The harness's `custom-extract` and the kit's reader on the same outputs: how often they read the
    same letter (both finding none counts as agreeing), and the accuracy each gives."""
    out = {}
    for task, rows in samples.items():
        same = ours_right = theirs_right = 0
        for row in rows:
            doc = row["doc"]  # MMLU-Pro lists its options; MMLU-ProX has option_0 … option_9
            letters = LETTERS[: len(doc["options"])] if "options" in doc else LETTERS
            text = row["resps"][0][0] or ""
            ours = extract_choice(text, letters, thinking=False)  # the server already cut the reasoning off
            theirs = row["filtered_resps"][0]
            theirs = None if theirs in (HARNESS_INVALID, "", None) else str(theirs).upper()
            same += ours == theirs
            ours_right += ours == row["target"]
            theirs_right += theirs == row["target"]
        n = len(rows)
        out[task] = {"n": n, "agreement": same / n if n else None, "kit_accuracy": ours_right / n if n else None,
                     "harness_accuracy": theirs_right / n if n else None}
    return out


def run(recipe: Recipe, limit: int | None = None, overrides: list[str] | None = None,
        only: list[str] | None = None) -> dict:
    """Serve the exported model, run the harness on the recipe's generative tasks (`only`: those of them)
    through it, and compare."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    require(recipe, "export", "metrics.json")
    out = stage_dir(recipe, "eval") / "harness"
    tasks = task_files(recipe, out / "tasks", only)
    if not tasks:
        raise FileNotFoundError(f"recipe '{recipe.name}' has no generative harness task in data.eval (e.g. "
                                f"{{path: 'harness:mmlu_pro_biology'}}) for the harness to run")
    cfg = recipe.eval
    print(f"[kit] harness: {', '.join(tasks)} through lm-evaluation-harness {lm_eval.__version__}, "
          f"local-chat-completions against `kit serve`")
    key = secrets.token_urlsafe(24)  # the server this run starts asks for a key of its own; lm-eval sends it
    with Server(recipe.name, overrides=overrides, timeout_s=600, api_key=key, log=out / "server.log") as url, \
            mock.patch.dict(os.environ, OPENAI_API_KEY=key):
        results = lm_eval.simple_evaluate(
            model="local-chat-completions",
            model_args={"base_url": f"{url}/chat/completions", "model": recipe.name, "num_concurrent": 1,
                        "max_retries": 3, "tokenized_requests": False, "think_end_token": "</think>"},
            tasks=tasks, task_manager=TaskManager(include_path=str(out / "tasks")), apply_chat_template=True,
            fewshot_as_multiturn=cfg.harness_num_fewshot != 0, num_fewshot=cfg.harness_num_fewshot, limit=limit,
            log_samples=True, gen_kwargs=f"max_gen_toks={cfg.max_new_tokens}", random_seed=cfg.seed)
    samples = results.pop("samples")
    agreed = agreement(samples)
    table = make_table(results)
    lines = [f"# lm-evaluation-harness · `{recipe.name}` (the exported model through `kit serve`)", "",
             "Not medical advice; not validated for clinical use.", "", table, "",
             "## The harness's extraction and the kit's, on the same outputs", "",
             "| task | n | agree | accuracy, harness's custom-extract | accuracy, kit's reader |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {a['n']} | {a['agreement']:.2f} | {a['harness_accuracy']:.2f} | {a['kit_accuracy']:.2f} |"
              for t, a in agreed.items()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "agreement.json").write_text(json.dumps(agreed, indent=2))
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (out / "samples.jsonl").open("w", encoding="utf-8") as f:
        for task, rows in samples.items():
            for row in rows:
                f.write(json.dumps({"task": task, "doc_id": row["doc_id"], "target": row["target"],
                                    "response": row["resps"][0][0], "harness_pick": row["filtered_resps"][0]},
                                   ensure_ascii=False) + "\n")
    print(table)
    print("\n".join(lines[-len(agreed) - 2:]))
    return {"tasks": tasks, "results": results["results"], "agreement": agreed}
