"""Does the model read the image? Closed questions of the held-out image items (the data stage's eval.jsonl), answered
greedily with their image and with the same image blanked (one flat grey of its mean), and a paired test of the two
accuracies (McNemar's exact test on the items where they differ). A model that ignores the image scores the same both
ways.

    R=bench/recipes/tiny-vl.yaml
    python -m kit data --recipe $R && python -m kit sft --recipe $R
    python bench/vqa_uses_image.py --recipe $R            # the SFT adapter; --base for the untrained model

Runs where the recipe's vision-language model loads (for builtin:tiny-vl, the vLLM lane's environment, whose
torchvision Qwen's processor needs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit.data import read_jsonl  # noqa: E402
from kit.formatting import extract_choice, final_answer  # noqa: E402
from kit.generation import HFEngine, Sampling, asking, prompt_texts, texts  # noqa: E402
from kit.modeling import load_model  # noqa: E402
from kit.recipe import load_recipe  # noqa: E402
from kit.runs import stage_dir  # noqa: E402
from kit.sft import stored_images  # noqa: E402
from kit.stats import paired_test, proportion  # noqa: E402


def blank(image):
    from PIL import Image, ImageStat

    mean = tuple(int(v) for v in ImageStat.Stat(image).mean)
    return Image.new("RGB", image.size, mean)


def right(text: str, item: dict) -> bool:
    """The closed answer is the gold one: a multiple-choice item's letter as the eval reads it, else the text after
    `</think>` (case and final punctuation aside)."""
    if item.get("options"):
        return extract_choice(text, "".join(sorted(item["options"]))) == item["gold"]
    return final_answer(text).strip().rstrip("。.").strip().lower() == item["gold"].strip().lower()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="bench/recipes/tiny-vl.yaml")
    ap.add_argument("--base", action="store_true", help="the untrained model, not the SFT adapter")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    recipe = load_recipe(args.recipe, args.set)
    folder = stage_dir(recipe, "data")
    items = [r for r in read_jsonl(folder / "eval.jsonl") if r.get("images") and r.get("closed")]
    adapter = None if args.base else stage_dir(recipe, "sft") / "adapter"
    loaded = load_model(recipe, adapter=adapter, trainable=False)
    engine = HFEngine(loaded.model, loaded.tokenizer, recipe.eval.batch_size, loaded.processor)
    prompts = prompt_texts(loaded.tokenizer, [asking(r["prompt"][0]["content"], len(r["images"])) for r in items])
    images = stored_images(recipe, [r["images"] for r in items])
    s = Sampling(recipe.eval.max_new_tokens)
    seen = [right(t, r) for t, r in zip(texts(engine.generate(prompts, s, images)), items)]
    unseen = [right(t, r) for t, r in zip(texts(engine.generate(prompts, s, [[blank(i) for i in row] for row in images])), items)]
    tasks = sorted({r["task"] for r in items})
    out = {"model": "base" if args.base else "sft", "items": len(items),
           "with_image": proportion(sum(seen), len(seen)), "image_blanked": proportion(sum(unseen), len(unseen)),
           "paired": paired_test([[u] for u in unseen], [[v] for v in seen]),
           "per_task": {t: {"with_image": round(sum(v for v, r in zip(seen, items) if r["task"] == t)
                                                / sum(r["task"] == t for r in items), 3),
                            "image_blanked": round(sum(u for u, r in zip(unseen, items) if r["task"] == t)
                                                   / sum(r["task"] == t for r in items), 3)} for t in tasks}}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
