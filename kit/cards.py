"""Model cards written beside every trained or exported artefact."""

from __future__ import annotations

from .recipe import Recipe
from .runs import TRAINED

NOT_MEDICAL_ADVICE = (
    "**Not medical advice.** This model's outputs are not medical advice and are not validated for "
    "clinical use. They can be wrong, incomplete or outdated, and must be reviewed by a qualified "
    "health professional before any use in care."
)


def model_card(recipe: Recipe, stage: str, metrics: dict, *, base: str | None = None, extra: str = "") -> str:
    base = base or recipe.model.name_or_path
    data = ", ".join(f"{d.path}" + (f" ({d.config})" if d.config else "")
                     for d in (recipe.data.sft if stage == "sft" else recipe.data.rl)) or "-"
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: peft" if stage in TRAINED else "library_name: transformers",
        "tags: [medical, reasoning, lora, unsloth, trl]",
        "---",
        f"# {recipe.name} · {stage}",
        "",
        NOT_MEDICAL_ADVICE,
        "",
        f"- Recipe: `{recipe.name}` (hash `{recipe.hash()}`), resolved in `recipe.yaml` beside this card.",
        f"- Base model: `{base}`; 4-bit: {recipe.model.load_in_4bit}; LoRA r={recipe.lora.r}, alpha={recipe.lora.alpha}.",
        f"- Stage: {stage}; training end: {metrics.get('end', '-')}; data: {data}.",
        "- Output format: reasoning inside `<think>…</think>`, then a concise final answer.",
    ]
    for key in ("train_loss_first", "train_loss_last", "eval_loss", "format_adherence_before",
                "format_adherence_after", "steps", "seconds"):
        if key in metrics:
            lines.append(f"- {key.replace('_', ' ')}: {metrics[key]}")
    lines += [
        "",
        "## Limitations",
        "Trained on a narrow set of medical questions; it can state wrong facts fluently, its reasoning "
        "can look convincing while being wrong, and it has not been evaluated for safety, bias or "
        "clinical accuracy. Built-in tiny recipes use a random-init toy model: their outputs are "
        "meaningless and exist only to test the pipeline.",
    ]
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"
