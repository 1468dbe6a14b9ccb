"""SFT stage: teach the base model the format — reasoning in `<think>…</think>`, then the answer.

    python -m kit sft --recipe tiny

Reads `runs/<recipe>/data/`, writes `runs/<recipe>/sft/`: `adapter/` (LoRA, tokenizer, chat
template, model card), `checkpoints/` (resumed from when re-run after an interruption),
`metrics.json`. Loss is on the assistant turn only (reasoning + answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .capacity import check_capacity
from .cards import model_card
from .data import read_jsonl
from .formatting import adherence
from .generation import HFEngine, Sampling, asking, prompt_texts, texts
from .modeling import Loaded, load_model
from .recipe import Recipe, RecipeError
from .runs import metrics_header, require, stage_dir, start_stage, write_metrics
from .runtime import how_launched, import_end, is_main, peak_memory_mb, sharded, start_processes, wait_for_main
from .tracking import point_at_runs
from .training import fresh_checkpoints, last_checkpoint, restore_full_module_dtypes, train_resumable, trainer_args


def build_config(recipe: Recipe, output_dir: Path):
    from trl import SFTConfig

    args = trainer_args(recipe, SFTConfig, recipe.sft.trainer, "sft.trainer", {"max_length": recipe.model.max_seq_length})
    return SFTConfig(output_dir=str(output_dir), **args)


def training_format(config, tokenizer):
    """How SFT rows reach TRL, so that the loss falls on the assistant's turn only: conversations with
    `assistant_only_loss`, where the chat template marks the assistant's tokens (`{% generation %}`, or a
    training variant TRL ships, as for Qwen3.5/3.6); else, for a template TRL cannot mark (SmolLM2's ChatML),
    prompt-completion pairs, whose loss TRL puts on the completion (`completion_only_loss`): the same tokens
    for these single-turn rows, without writing a template of our own."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    conversation = lambda messages: {"messages": messages}  # noqa: E731
    if not config.assistant_only_loss or has_generation_markers(tokenizer.chat_template):
        return conversation
    try:
        get_training_chat_template(tokenizer)
        return conversation
    except ValueError:
        pass
    config.assistant_only_loss, config.completion_only_loss = False, True
    if is_main():
        print("[kit] this chat template has no {% generation %} markers and TRL has no training variant of it: SFT rows "
              "go to TRL as prompt-completion pairs, with the loss on the completion (the assistant's turn)")
    return lambda messages: {"prompt": messages[:-1], "completion": messages[-1:]}


def format_check(loaded: Loaded, model, questions: list[str], recipe: Recipe,
                 images: list[list] | None = None) -> tuple[float | None, list[str]]:
    """Greedy answers to held-out questions and the strict format-adherence fraction. The model being
    trained is in memory, so this generates with it directly (the hf engine), in the inference mode of
    the Unsloth class that loaded it (FastVisionModel or FastLanguageModel). Under a multi-process
    launch only the main process checks (it alone reports); the others return (None, []). Inside a launch
    that shards the weights no process can generate alone: (None, []) everywhere, and eval measures it."""
    if not is_main() or sharded():
        return None, []
    model = getattr(model, "module", model)  # the model itself, not its DDP wrapper
    loaded.for_inference()
    counts = [len(row) for row in images] if images else [0] * len(questions)  # an image question: its placeholders
    prompts = prompt_texts(loaded.tokenizer, [asking(q, n) for q, n in zip(questions, counts)])
    engine = HFEngine(model, loaded.tokenizer, recipe.eval.batch_size, loaded.processor)  # the eval's batch
    outs = texts(engine.generate(prompts, Sampling(recipe.sft.format_check_max_new_tokens), images))
    loaded.for_training()
    return adherence(outs), outs


def format_check_questions(recipe: Recipe, val_rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Questions SFT never trains on: the held-out SFT rows, then (when those are fewer than
    `sft.format_check_questions`) the RL stage's questions, which are what GSPO will ask the model next; and the
    images each is asked of (paths in the data folder; none for a text question)."""
    asked = [(r["messages"][0]["content"], r.get("images") or []) for r in val_rows]
    if len(asked) < recipe.sft.format_check_questions and recipe.data.rl:
        asked += [(r["prompt"][0]["content"] if r.get("images") else r["question"], r.get("images") or [])
                  for r in read_jsonl(require(recipe, "data", "rl.jsonl"))]
    asked = asked[: recipe.sft.format_check_questions]
    return [q for q, _ in asked], [i for _, i in asked]


def stored_images(recipe: Recipe, rows: list[list[str]]) -> list[list] | None:
    """The images the data stage stored (paths relative to its folder) as Pillow images; None when there are none."""
    if not any(rows):
        return None
    from PIL import Image

    folder = stage_dir(recipe, "data")
    return [[Image.open(folder / p).convert("RGB") for p in row] for row in rows]


def loss_history(log_history: list[dict]) -> dict:
    train = [{"step": h["step"], "loss": h["loss"]} for h in log_history if "loss" in h]
    val = [{"step": h["step"], "loss": h["eval_loss"]} for h in log_history if "eval_loss" in h]
    return {"train": train, "val": val}


@dataclass
class SFTSession:
    """Everything one SFT run holds between its steps (the notebook calls them one by one)."""

    recipe: Recipe
    out: Path
    loaded: Loaded
    trainer: object
    questions: list[str]
    before: float | None
    before_outputs: list[str]
    resume: str | None
    train_rows: int
    val_rows: int
    images: list[list] | None = None  # the images the format check's questions are asked of


def prepare(recipe: Recipe) -> SFTSession:
    """Load data and model, check the format before training, and build the SFTTrainer."""
    point_at_runs()  # before TRL is imported: the tracker reads its folder then
    import_end()
    from trl import SFTTrainer

    check_capacity(recipe, ["sft"])  # before anything is read or loaded
    start_processes()
    out = start_stage(recipe, "sft")
    if not recipe.data.sft:
        raise RecipeError(f"recipe '{recipe.name}' has no SFT data (data.sft is empty): it starts at the rl stage")
    train_rows = read_jsonl(require(recipe, "data", "sft_train.jsonl"))
    val_rows = read_jsonl(require(recipe, "data", "sft_val.jsonl"))
    ckpt_dir = out / "checkpoints"
    fresh_checkpoints(ckpt_dir, recipe, "sft")
    wait_for_main()  # the folder and the checkpoints every process resumes from are settled
    config = build_config(recipe, ckpt_dir)
    loaded = load_model(recipe)

    questions, asked_of = format_check_questions(recipe, val_rows)
    images = stored_images(recipe, asked_of)
    before, before_outs = format_check(loaded, loaded.model, questions, recipe, images)
    if is_main() and before is None:
        print("[kit] format check skipped: the weights are sharded across the processes (FSDP, ZeRO-3); the eval "
              "stage after the launch measures the format")
    elif is_main():
        print(f"[kit] format adherence before SFT: {before:.2f} on {len(questions)} questions it does not train on")

    vision = any(r.get("images") for r in train_rows + val_rows)
    if vision and loaded.processor is None:
        raise RecipeError(f"recipe '{recipe.name}': the SFT data has image rows, and {recipe.model.name_or_path} is not "
                          f"a vision-language checkpoint (no vision tower or image processor)")
    as_example = training_format(config, loaded.tokenizer)
    train_ds = sft_dataset(recipe, train_rows, as_example, vision)
    val_ds = sft_dataset(recipe, val_rows, as_example, vision) if val_rows else None
    if val_ds is None:
        config.eval_strategy = "no"
    # image rows: the processor fills each image's tokens (TRL's vision-language collator); text rows pass through it
    trainer = SFTTrainer(model=loaded.model, args=config, train_dataset=train_ds, eval_dataset=val_ds,
                         processing_class=loaded.processor if vision else loaded.tokenizer)
    restore_full_module_dtypes(loaded, trainer.model)
    return SFTSession(recipe, out, loaded, trainer, questions, before, before_outs,
                      last_checkpoint(ckpt_dir), len(train_rows), len(val_rows), images)


def sft_dataset(recipe: Recipe, rows: list[dict], as_example, vision: bool):
    """The rows as TRL takes them; with image rows, an `images` column (decoded from the data stage's files, lazily,
    by the datasets library), empty for a text row, so that text and image rows train together."""
    import datasets

    if not vision:
        return datasets.Dataset.from_list([as_example(r["messages"]) for r in rows])
    folder = stage_dir(recipe, "data")
    ds = datasets.Dataset.from_list([{**as_example(r["messages"]), "images": [str(folder / p) for p in r.get("images") or []]}
                                     for r in rows])
    return ds.cast_column("images", datasets.Sequence(datasets.Image()))


def sample(session: SFTSession, questions: list[str]) -> list[str]:
    """Greedy completions of the model as it is now (before or after training)."""
    images = session.images if questions == session.questions else None
    return format_check(session.loaded, session.trainer.model, questions, session.recipe, images)[1]


def train(session: SFTSession) -> dict:
    """Train (resuming from the last checkpoint if one exists), save the adapter, check the format."""
    recipe, trainer, out = session.recipe, session.trainer, session.out
    adapter_dir = out / "adapter"
    seconds = train_resumable(trainer, session.resume, adapter_dir, session.loaded)
    history = loss_history(trainer.state.log_history)
    final_eval = trainer.evaluate() if trainer.eval_dataset is not None else {}
    after, after_outs = format_check(session.loaded, trainer.model, session.questions, recipe, session.images)
    if not is_main():  # the main process writes the adapter, the metrics and the card
        return {"rank": how_launched()["rank"]}
    if after is not None:
        print(f"[kit] format adherence after SFT: {after:.2f}")

    steps = trainer.state.global_step
    metrics = {
        **metrics_header(recipe, "sft"), "end": session.loaded.end,
        "device": session.loaded.device, "steps": steps,
        "resumed_from": Path(session.resume).name if session.resume else None,
        "seconds": round(seconds, 2),
        "steps_per_second": round(steps / seconds, 3) if seconds else None,
        "train_loss_first": history["train"][0]["loss"] if history["train"] else None,
        "train_loss_last": history["train"][-1]["loss"] if history["train"] else None,
        "eval_loss": final_eval.get("eval_loss"),
        # the held-out loss before any step, where the recipe asks for it (`eval_on_start`)
        "eval_loss_before": next((h["loss"] for h in history["val"] if h["step"] == 0), None),
        "loss_history": history,
        "format_adherence_before": session.before, "format_adherence_after": after,
        "format_check": {"questions": session.questions, "before": session.before_outputs, "after": after_outs},
        "train_rows": session.train_rows, "val_rows": session.val_rows, "launch": how_launched(),
        **peak_memory_mb(),
    }
    write_metrics(out, metrics)
    (adapter_dir / "README.md").write_text(model_card(recipe, "sft", metrics), encoding="utf-8")
    print(f"[kit] sft done: {steps} steps in {metrics['seconds']} s; train loss "
          f"{metrics['train_loss_first']} → {metrics['train_loss_last']}; adapter → {adapter_dir}")
    return metrics


def run(recipe: Recipe) -> dict:
    if not recipe.data.sft:
        print(f"[kit] recipe '{recipe.name}' has no SFT data: the sft stage is skipped (rl starts from the base model)")
        return {"skipped": True}
    return train(prepare(recipe))
