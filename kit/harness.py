"""lm-evaluation-harness beside the kit's own evaluation: the harness's MMLU-Pro tasks — its prompt, its
few-shot examples, its `custom-extract` filter — run against the kit's OpenAI-compatible server
(`local-chat-completions`, the reasoning cut at `</think>`), and its extraction compared with the kit's
on the same outputs.

    python -m kit harness --recipe tiny [--limit 4]

With a model hub the stock tasks run (`mmlu_pro_biology`, `mmlu_pro_health`: TIGER-Lab/MMLU-Pro, 5-shot
from its validation split). Offline, the recipe's own MMLU-Pro data (a bundled sample, or a file in
MMLU-Pro's schema) goes under the stock task through a task file that changes only where the data comes
from. The served model is the run's exported one. Writes `runs/<recipe>/eval/harness/`: `results.json`
(the harness's own), `results.md` (its table, then the agreement), `samples.jsonl`, `agreement.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import LETTERS, LOCAL_SUFFIXES, bundled_file, task_name
from .formatting import extract_choice
from .recipe import DatasetSpec, Recipe
from .runs import require, stage_dir

HARNESS_INVALID = "[invalid]"  # what lm-eval's filters leave when their regex finds nothing


def mmlu_pro_sources(recipe: Recipe) -> list[DatasetSpec]:
    """The recipe's eval sources that are MMLU-Pro categories (selected with `where: {category: ...}`)."""
    return [s for s in recipe.data.eval if s.where and "category" in s.where]


def local_files(spec: DatasetSpec) -> dict[str, str] | None:
    """{test, validation} files for an offline source, or None for a hub dataset (the stock task reads it).
    A bundled sample's few-shot examples are its `_validation` file; a local file serves as its own."""
    if spec.path.startswith("bundled:"):
        test = bundled_file(spec.path)
        validation = test.with_name(f"{test.stem}_validation.jsonl")
        return {"test": str(test), "validation": str(validation if validation.exists() else test)}
    if Path(spec.path).suffix in LOCAL_SUFFIXES:
        path = str(Path(spec.path).resolve())
        return {"test": path, "validation": path}
    return None


def task_files(recipe: Recipe, folder: Path) -> list[str]:
    """The harness task for each MMLU-Pro source: the stock one, or a local task file written into
    `folder` that includes the stock task and changes only `dataset_path` / `dataset_kwargs`."""
    import lm_eval

    stock_dir = Path(lm_eval.__file__).parent / "tasks" / "mmlu_pro"
    tasks = []
    for spec in mmlu_pro_sources(recipe):
        stock = task_name({"category": spec.where["category"]})
        files = local_files(spec)
        if files is None:
            tasks.append(stock)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        local = f"{stock}_local"
        text = {"include": str(stock_dir / f"{stock}.yaml"), "task": local, "dataset_path": "json",
                "dataset_name": None, "dataset_kwargs": {"data_files": files}}
        (folder / f"{local}.yaml").write_text(json.dumps(text, indent=1))  # JSON is YAML
        tasks.append(local)
    return tasks


def agreement(samples: dict[str, list[dict]]) -> dict:
    """The harness's `custom-extract` and the kit's reader on the same outputs: how often they read the
    same letter (both finding none counts as agreeing), and the accuracy each gives."""
    out = {}
    for task, rows in samples.items():
        same = ours_right = theirs_right = 0
        for row in rows:
            letters = LETTERS[: len(row["doc"]["options"])]
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


def run(recipe: Recipe, limit: int | None = None, overrides: list[str] | None = None) -> dict:
    """Serve the exported model, run the harness on the recipe's MMLU-Pro tasks through it, and compare."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    from .serve import Server

    require(recipe, "export", "metrics.json")
    out = stage_dir(recipe, "eval") / "harness"
    tasks = task_files(recipe, out / "tasks")
    if not tasks:
        raise FileNotFoundError(f"recipe '{recipe.name}' has no MMLU-Pro source in data.eval "
                                f"(a source with where: {{category: ...}}) for the harness to run")
    cfg = recipe.eval
    print(f"[kit] harness: {', '.join(tasks)} through lm-evaluation-harness {lm_eval.__version__}, "
          f"local-chat-completions against `kit serve`")
    with Server(recipe.name, overrides=overrides, timeout_s=600) as url:
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
