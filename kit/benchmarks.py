"""lm-evaluation-harness's task definitions as the kit's evaluation items, and the harness's own protocol
beside the kit's on the same items.

A recipe names a harness task as an eval source: `{path: "harness:medmcqa"}`. The data stage asks the
installed lm-eval for that task — its dataset, split, prompt (`doc_to_text`, with the task's
`description`), choices (`doc_to_choice`) and answer (`doc_to_target`) — and writes one item per
document, so `kit eval` asks the harness's question in the harness's words. With `data.offline` the
bundled sample in the dataset's own schema stands in for the hub data (`kit/samples/`, original items).

The eval stage reads every completion with the kit's reader (only the text after `</think>`) and, beside
it, with the harness's protocol on the same items: a generative task's own filter (`custom-extract`) on
the same text; a multiple-choice task's log-likelihood ranking of its choices (the model scores each
choice after the prompt, no chat template, 0-shot), which a thinking model's chat API cannot give.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from types import SimpleNamespace

from .formatting import LETTERS, MCQ_INSTRUCTION
from .recipe import DatasetSpec
from .sources import DataError, bundled_file, offline_path

PREFIX = "harness:"
HARNESS_INVALID = "[invalid]"  # what lm-eval's filters leave when their regex finds nothing
SPLITS = ("test_split", "validation_split", "training_split", "fewshot_split")
# The kit's instruction after a multiple-choice task's question, in the task's language: it asks for the
# form the reader reads first. A Chinese task's items are in Chinese (CMMLU, C-Eval, MMLU-ProX zh).
INSTRUCTION = {"en": MCQ_INSTRUCTION, "zh": "请用正确选项的字母作答，格式为“答案是X”。"}
_OPTION = re.compile(r"^\(?([A-P])[.)]\s+(.+)$", re.M)


def is_harness(spec: DatasetSpec) -> bool:
    return spec.path.startswith(PREFIX)


def language(task: str, given: str | None = None) -> str:
    """The language a task's items are in: the recipe's word for it, else read from the task's name.

    >>> [language(t) for t in ("medmcqa", "cmmlu_anatomy", "ceval-valid_physician", "mmlu_prox_zh_health")]
    ['en', 'zh', 'zh', 'zh']
    """
    if given:
        return given
    return "zh" if task.startswith(("cmmlu_", "ceval-", "mmlu_prox_zh_")) else "en"


@functools.cache
def manager():
    try:
        from lm_eval.tasks import TaskManager
    except ModuleNotFoundError:
        raise DataError("a harness:TASK source needs lm-evaluation-harness, which this environment lacks "
                        "(`pip install lm_eval`, as requirements.txt pins it)") from None
    return TaskManager()


def config(task: str) -> dict:
    """The task's configuration as the installed lm-eval resolves it (includes merged, `!function`s
    imported), or a DataError naming the closest tasks it has. A copy: the caller may change it."""
    manager()  # first: says so when lm-eval is not installed
    return copy.deepcopy(_config(task))


@functools.cache
def _config(task: str) -> dict:  # each task's yaml read once per process
    entry = manager().task_index.get(task)
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    if entry is None or entry.yaml_path is None:
        close = difflib.get_close_matches(task, manager().all_subtasks, n=3, cutoff=0.6)
        raise DataError(f"lm-evaluation-harness {lm_eval.__version__} has no task '{task}'"
                        + (f"; did you mean {', '.join(close)}?" if close else ""))
    return dict(load_yaml(entry.yaml_path, resolve_func=True))


def offline_data(cfg: dict) -> tuple[dict, str]:
    """(the config keys that point a task at the bundled samples of its dataset, one per split it reads;
    the sample of the split it is scored on)."""
    samples = {cfg[k]: offline_path(DatasetSpec(cfg["dataset_path"], cfg.get("dataset_name"), cfg[k]))
               for k in SPLITS if cfg.get(k)}
    data = {"dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: str(bundled_file(s)) for split, s in samples.items()}}}
    return data, samples[cfg.get("test_split") or cfg.get("validation_split")]


def load_task(task: str, offline: bool = False):
    """(the harness's task object, a label naming its data). Offline, every split the task reads comes
    from the bundled sample of its dataset (few-shot examples, where asked for, from the same items: the
    harness's sampler leaves the item itself out)."""
    cfg = config(task)
    from lm_eval.api.task import ConfigurableTask

    source = cfg["dataset_path"] + (f"[{cfg['dataset_name']}]" if cfg.get("dataset_name") else "")
    label = f"{PREFIX}{task} ({source})"
    if offline:
        data, sample = offline_data(cfg)
        cfg.update(data)
        label = f"{PREFIX}{task} ({sample}, offline, for {source})"
    try:
        return ConfigurableTask(config=cfg), label
    except Exception as e:  # hub unreachable, gated, renamed...
        raise DataError(f"could not load {label}: {type(e).__name__}: {e}\nTo work offline, measure the recipe on "
                        f"the kit's bundled samples with --set data.offline=true.") from None


def _options_for(task, doc, text: str) -> tuple[str, dict[str, str], str]:
    """(the prompt text, {letter: option}, the gold letter) of one document. A multiple-choice task whose
    choices are words (PubMedQA's yes / no / maybe) gets them as lettered options, before its answer cue."""
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = [str(c) for c in task.doc_to_choice(doc)]
        target = task.doc_to_target(doc)
        index = choices.index(target) if isinstance(target, str) and target in choices else int(target)
        if choices != list(LETTERS[: len(choices)]):
            lines = text.rstrip().split("\n")
            cue = [lines.pop()] if len(lines) > 1 and lines[-1].rstrip().endswith((":", "：")) else []
            text = "\n".join(lines + [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)] + cue)
            return text, {LETTERS[i]: c for i, c in enumerate(choices)}, LETTERS[index]
        return text, dict(_OPTION.findall(text)), LETTERS[index]
    return text, dict(_OPTION.findall(text)), str(task.doc_to_target(doc)).strip().upper()


def items(spec: DatasetSpec, offline: bool = False) -> tuple[list[dict], str]:
    """The task's documents as the kit's eval items (the shape `data.format_mcq` gives), each with its
    `doc_id` in the harness's order, its language and the harness's protocol; and a label."""
    name = spec.path[len(PREFIX):]
    task, label = load_task(name, offline)
    lang = language(name, spec.language)
    description = (task.config.description or "").strip()
    out = []
    for i, doc in enumerate(task.eval_docs):
        if spec.max_rows is not None and i >= spec.max_rows:
            break
        try:
            text, options, gold = _options_for(task, doc, task.doc_to_text(doc))
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise DataError(f"{label} row {i + 1}: the harness could not read it ({type(e).__name__}: {e}); "
                            f"expected the columns of {task.config.dataset_path}") from None
        empty = [k for k, v in options.items() if v.strip() in ("", "None")]
        if empty:  # the datasets loader fills a column a row lacks with None, and the harness prints it
            raise DataError(f"{label} row {i + 1}: option {empty[0]} is empty (a missing column? expected the "
                            f"columns of {task.config.dataset_path})")
        if gold not in options:
            raise DataError(f"{label} row {i + 1}: the answer '{gold}' is not one of its options "
                            f"({', '.join(options) or 'none found'})")
        # a generative task's own prompt asks for its answer form ("the answer is (X)", "答案是 (X)"), which the
        # kit's reader reads too; a multiple-choice prompt ends at an answer cue, so the kit asks for a form
        instruction = INSTRUCTION[lang] if task.OUTPUT_TYPE == "multiple_choice" else ""
        content = "\n\n".join(p for p in (description, text.strip(), instruction) if p)
        out.append({"prompt": [{"role": "user", "content": content}], "question": text.strip(),
                    "options": options, "gold": gold, "task": spec.task or name, "harness_task": name,
                    "doc_id": i, "language": lang, "protocol": task.OUTPUT_TYPE})
    if not out:
        raise DataError(f"{label}: the task has no items" + (" (max_rows 0)" if spec.max_rows == 0 else ""))
    return out, label


# ---------------------------------------------------------------- the harness's protocol beside the kit's


def harness_filter(task: str, texts: list[str]) -> list[str | None]:
    """A generative task's own filter (its first `filter_list` entry, e.g. MMLU-ProX's `custom-extract`
    regex then `take_first`) applied by lm-eval to each text; None where it finds nothing."""
    from lm_eval.filters import build_filter_ensemble

    spec = first_filter(task)
    ensemble = build_filter_ensemble(spec["name"], [[f["function"], {k: v for k, v in f.items() if k != "function"}]
                                                    for f in spec["filter"]])
    instances = [SimpleNamespace(resps=[t], doc={}, filtered_resps={}) for t in texts]
    ensemble.apply(instances)
    picks = [inst.filtered_resps[spec["name"]] for inst in instances]
    return [None if p in (None, "", HARNESS_INVALID) else str(p).strip().upper() for p in picks]


def first_filter(task: str) -> dict:
    """The task's first filter pipeline (`custom-extract` for MMLU-Pro/ProX), or the harness's default."""
    return (config(task).get("filter_list") or [{"name": "none", "filter": [{"function": "take_first"}]}])[0]


def filter_name(task: str) -> str:
    return first_filter(task)["name"]


def loglikelihood(model, tokenizer, tasks: dict[str, list[int]], offline: bool, batch_size: int = 8,
                  max_length: int | None = None) -> dict[str, dict[int, str]]:
    """{task: {doc_id: the letter of the choice the model finds likeliest}} for multiple-choice tasks,
    through lm-eval's own `hf` model and evaluator on exactly these documents (0-shot)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    objects = [load_task(name, offline)[0] for name in tasks]
    out = simple_evaluate(model=lm, tasks=objects, samples={n: sorted(ids) for n, ids in tasks.items()},
                          num_fewshot=0, log_samples=True, verbosity="WARNING")
    picks: dict[str, dict[int, str]] = {}
    for name, rows in out["samples"].items():
        for row in rows:
            scores = [r[0] for r in row["filtered_resps"]]
            picks.setdefault(name, {})[row["doc_id"]] = LETTERS[max(range(len(scores)), key=scores.__getitem__)]
    return picks
