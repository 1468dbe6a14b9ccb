"""RL rollouts on the CPU end, as they were and as they are (issue: the laptop workshop's speed), side by side in one
run: the RL stage's own GRPOTrainer on the smollm2 recipe, continuing its SFT adapter, asked for the same
generation batches (the recipe's: 4 prompts × 4 completions × ≤128 tokens, sampled at temperature 1.0) by TRL's
own `_generate`, the call its training step makes, with each `rl.cpu_dtype`:

- `train`: TRL's generation on the training model (the `PeftModel`, adapter unmerged, fp32): the kit before;
- `float32`: the kit's rollout function on a merged fp32 copy of the policy, synced before the generation;
- `auto`: the same copy in bf16 where the CPU multiplies it in hardware (the smollm2 recipe now).

Tokens/s counts the tokens the model wrote (the completions TRL receives, stop token included); each row's
sampling differs between settings (the numbers differ), so every setting generates the same batches `--repeats`
times and the rate is their total. The machine's bound (bench_generation.py's: every decode step reads every
weight once) is printed beside each rate.

    .venv/bin/python bench/bench_rollouts_cpu.py                 # data + SFT of smollm2 first (~4 min), then ~4 min
    .venv/bin/python bench/bench_rollouts_cpu.py --runs runs     # reuse a runs folder that has smollm2's data and SFT
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=None, help="a runs folder with smollm2's data and sft stages done")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", default="train,float32,auto")
    args = parser.parse_args()
    runs = Path(args.runs).resolve() if args.runs else Path(tempfile.mkdtemp(prefix="bench-rollouts-")) / "runs"
    os.environ["KIT_RUNS_DIR"] = str(runs)
    if not (runs / "smollm2" / "sft" / "adapter" / "adapter_config.json").exists():
        from real_model import kit

        kit(runs, "data", "--recipe", "smollm2")
        kit(runs, "sft", "--recipe", "smollm2")
    import torch

    from bench_generation import decode_bound, machine_bounds
    from kit import rl
    from kit.recipe import load_recipe

    bounds = machine_bounds()
    print(f"[bench] {torch.get_num_threads()} threads; bandwidth {bounds['bandwidth_gbs']:.1f} GB/s, matmul "
          f"{bounds['matmul_gflops_float32']:.0f} GFLOP/s fp32, {bounds['matmul_gflops_bfloat16']:.0f} bf16", flush=True)
    rates = {}
    for setting in args.settings.split(","):
        # report_to none: outside train(), TRL's profiling would log to a tracker not yet started
        session = rl.prepare(load_recipe("smollm2", [f"rl.cpu_dtype={setting}", "rl.trainer.report_to=none"]))
        trainer, cfg = session.trainer, session.trainer.args
        per_generation = cfg.per_device_train_batch_size * cfg.steps_per_generation
        group = cfg.num_generations
        prompts = [r["prompt"] for r in session.rows[: per_generation // group] for _ in range(group)]
        trainer._generate(prompts[:group])  # warm-up (and the copy's first sync)
        torch.manual_seed(0)
        tokens, rows_x_steps, seconds = 0, 0, 0.0
        for _ in range(args.repeats):
            t = time.perf_counter()
            completions = trainer._generate(prompts)[1]
            seconds += time.perf_counter() - t
            tokens += sum(len(ids) for ids in completions)
            rows_x_steps += len(completions) * max(len(ids) for ids in completions)
        rate = tokens / seconds
        rates[setting] = rate
        model = session.copy_rollouts.copy.model if session.copy_rollouts else trainer.model
        dtype = next(model.parameters()).dtype
        params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
        bf16 = dtype == torch.bfloat16
        ceiling, limit = decode_bound(params, params * dtype.itemsize, len(prompts), bounds,
                                      bounds["matmul_gflops_bfloat16" if bf16 else "matmul_gflops_float32"])
        print(f"[bench] rl.cpu_dtype={setting} ({session.rollouts.split('(', 1)[0].strip()}, {str(dtype)[6:]}): "
              f"{args.repeats} × {len(prompts)} completions, {tokens} tokens in {seconds:.1f} s = {rate:.1f} tokens/s "
              f"({rate / rates[args.settings.split(',')[0]]:.2f}x); rows kept decoding {rows_x_steps} row-steps "
              f"({tokens / rows_x_steps:.0%} of them real tokens); bound {ceiling:,.0f} tokens/s ({limit}), "
              f"{rate / ceiling:.1%} of it", flush=True)
        del session, trainer, model


if __name__ == "__main__":
    main()
