"""SFT steps/s: the kit's stage versus a bare TRL SFTTrainer script, same tiny model, data and run.

    .venv/bin/python bench/bench_sft.py [--steps 60]

Both train the tiny recipe's LoRA (rank, dropout, targets, full modules) on its data with evaluation
off; the ratio kit / bare should be ≥ 0.97 (the kit must cost nothing).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bare_trl(model_dir, lora, train_rows, steps, out):
    """What a user would write by hand with transformers + peft + TRL."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
                      target_modules=lora.target_modules, modules_to_save=lora.modules_to_save or None)
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=8, learning_rate=3e-3,
                     lr_scheduler_type="cosine", warmup_steps=10, logging_steps=10, save_strategy="no",
                     assistant_only_loss=True, activation_checkpointing=False, max_length=384, bf16=False,
                     report_to="none", seed=42)
    ds = datasets.Dataset.from_list([{"messages": r["messages"]} for r in train_rows])
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
    t = time.perf_counter()
    trainer.train()
    return steps / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    os.environ.setdefault("KIT_RUNS_DIR", tempfile.mkdtemp())
    import torch

    torch.set_num_threads(os.cpu_count())
    from kit import data, sft
    from kit.base_model import model_path
    from kit.recipe import load_recipe
    from kit.runs import stage_dir

    recipe = load_recipe("tiny", [f"sft.trainer.max_steps={args.steps}", "sft.trainer.eval_strategy=no",
                                  "sft.trainer.save_strategy=no", "sft.format_check_questions=1",
                                  "sft.format_check_max_new_tokens=4"])
    data.run(recipe)
    rows = data.read_jsonl(stage_dir(recipe, "data") / "sft_train.jsonl")
    results = {}
    for name in ("bare", "kit", "bare2", "kit2"):  # interleaved, so drift of the machine hits both
        if name.startswith("kit"):
            m = sft.train(sft.prepare(recipe))
            results[name] = m["steps_per_second"]
        else:
            results[name] = bare_trl(model_path(recipe), recipe.lora, rows, args.steps, tempfile.mkdtemp())
        print(f"{name}: {results[name]:.3f} steps/s")
    kit_sps = (results["kit"] + results["kit2"]) / 2
    bare_sps = (results["bare"] + results["bare2"]) / 2
    print(f"kit {kit_sps:.3f} steps/s, bare TRL {bare_sps:.3f} steps/s, ratio kit/bare = {kit_sps / bare_sps:.3f}")


if __name__ == "__main__":
    main()
