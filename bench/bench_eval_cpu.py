"""The CPU end's evaluation generation, as it was and as it is (issue: the laptop workshop's speed), side by side in
one run on the smollm2 model with a LoRA adapter of the recipe's shape (random B, so its outputs differ from the
base's): the hf engine on the adapter unmerged in fp32, 8 prompts a call (the kit before), then merged into the
weights (`load_model(merge=True)`) in fp32, then merged in the dtype `eval.cpu_dtype: auto` picks here, 32 prompts a
call (the smollm2 recipe now). Greedy, 192 new tokens, the bundled RL questions; tokens/s counts the tokens the
model wrote (a finished row's padding is not counted). Also: how many completions are token for token those of
the unmerged fp32 adapter, and where the first difference falls.

    .venv/bin/python bench/bench_eval_cpu.py [--prompts 64] [--tokens 192]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=192)
    args = parser.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model

    from kit.generation import HFEngine, Sampling, prompt_texts
    from kit.modeling import cpu_has_native_bf16, inference_dtype, load_model
    from kit.recipe import load_recipe

    recipe = load_recipe("smollm2")
    base = load_model(recipe, trainable=False)
    adapter = Path(tempfile.mkdtemp(prefix="bench-eval-cpu-")) / "adapter"
    torch.manual_seed(0)
    lora = recipe.lora
    peft = get_peft_model(base.model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules,
                                                 task_type="CAUSAL_LM"))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    peft.save_pretrained(adapter)
    base.tokenizer.save_pretrained(adapter)
    del peft, base

    questions = [json.loads(line)["Open-ended Verifiable Question"]
                 for line in (ROOT / "kit" / "samples" / "medical_o1_verifiable.jsonl").read_text().splitlines()]
    questions = (questions * (args.prompts // len(questions) + 1))[:args.prompts]
    dtype = inference_dtype("auto")
    settings = [("adapter unmerged, fp32, 8 a call (before)", dict(merge=False), 8),
                ("merged, fp32, 8 a call", dict(merge=True), 8),
                ("merged, fp32, 32 a call", dict(merge=True), 32),
                (f"merged, {str(dtype).split('.')[-1]}, 32 a call (smollm2 now)", dict(merge=True, dtype=dtype), 32)]
    print(f"[bench] {torch.get_num_threads()} threads; CPU multiplies bf16 in hardware: {cpu_has_native_bf16()}")
    reference, first = None, None
    for label, kwargs, batch in settings:
        loaded = load_model(recipe, adapter=adapter, trainable=False, **kwargs)
        prompts = prompt_texts(loaded.tokenizer, [[{"role": "user", "content": q}] for q in questions])
        engine = HFEngine(loaded.model, loaded.tokenizer, batch)
        s = Sampling(args.tokens)
        engine.generate(prompts[:2], Sampling(8))  # warm-up
        t = time.perf_counter()
        out = [cs[0] for cs in engine.generate(prompts, s)]
        dt = time.perf_counter() - t
        tokens = sum(c.tokens for c in out)
        ids = [loaded.tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in out]
        if reference is None:
            reference, first = ids, tokens / dt
            same = ""
        else:
            equal = sum(a == b for a, b in zip(ids, reference))
            splits = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                      for a, b in zip(ids, reference) if a != b]
            same = (f"; {equal}/{len(ids)} completions token for token the same"
                    + (f", the others part at token {min(splits)}-{max(splits)} (median {sorted(splits)[len(splits) // 2]})"
                       if splits else ""))
        print(f"[bench] {label}: {tokens} tokens in {dt:.1f} s = {tokens / dt:.1f} tokens/s "
              f"({tokens / dt / first:.2f}x){same}", flush=True)
        del engine, loaded


if __name__ == "__main__":
    main()
