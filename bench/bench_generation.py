"""Generation throughput: the same prompts and sampling settings through HF `model.generate` and
through vLLM (`kit.generation`'s two engines), side by side in one run, and their ratio.

    # CPU: vLLM's CPU build lives in .venv-vllm, which has transformers too, so both engines run there
    .venv-vllm/bin/python bench/bench_generation.py
    # GPU with vLLM installed, on any model folder or hub id:
    python bench/bench_generation.py --model Qwen/Qwen3.5-0.8B --batches gspo=2x8x2048 eval=64x1x4096

A batch is PROMPTSxSAMPLESxMAX_NEW_TOKENS: `gspo` is a GSPO step of the tiny recipe (2 prompts × 4
generations × 192 tokens), `eval` an evaluation batch. Sampling: temperature 1.0, top_p 0.95,
top_k 20 (the thinking preset). Prompts are the bundled RL questions under the chat template.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_batch(text: str) -> tuple[str, int, int, int]:
    name, shape = text.split("=")
    prompts, samples, tokens = (int(x) for x in shape.split("x"))
    return name, prompts, samples, tokens


def run_engine(engine, prompts, sampling, repeats: int) -> list[float]:
    engine.generate(prompts[:1], sampling)  # warm-up: first-call compilation and allocation
    rates = []
    for r in range(repeats):
        t = time.perf_counter()
        out = engine.generate(prompts, sampling)
        dt = time.perf_counter() - t
        rates.append(sum(c.tokens for cs in out for c in cs) / dt)
    return rates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the kit's tiny model)")
    parser.add_argument("--batches", nargs="+", default=["gspo=2x4x192", "eval=32x1x128"])
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--dtype", default=None, help="HF dtype (default: bf16 on a GPU, fp32 on a CPU, as the kit loads)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.generation import HFEngine, Sampling, VLLMEngine, prompt_texts
    from kit.recipe import TinyModelConfig
    from kit.tiny_model import ensure

    model = args.model or str(ensure(TinyModelConfig()))
    tokenizer = AutoTokenizer.from_pretrained(model)
    questions = [json.loads(line)["Open-ended Verifiable Question"]
                 for line in (ROOT / "kit" / "samples" / "medical_o1_verifiable.jsonl").read_text().splitlines()]
    batches = [parse_batch(b) for b in args.batches]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if cuda else torch.float32)
    engines = args.engines.split(",")
    print(f"model {model}; {device}; torch {torch.__version__}; HF dtype {dtype}; vLLM dtype "
          f"{'auto' if cuda else 'bfloat16 (its CPU kernels for Qwen3.5 need it)'}")
    results: dict[str, dict[str, list[float]]] = {b[0]: {} for b in batches}
    max_len = max(len(tokenizer(t)["input_ids"]) for t in prompt_texts(tokenizer, [[{"role": "user", "content": q}] for q in questions]))
    for name in engines:
        if name == "hf":
            hf = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device)
            engine = HFEngine(hf, tokenizer, batch_size=64)
        else:
            engine = VLLMEngine(model, max_model_len=max_len + max(b[3] for b in batches), seed=0)
        for bname, n_prompts, samples, tokens in batches:
            prompts = prompt_texts(tokenizer, [[{"role": "user", "content": questions[i % len(questions)]}]
                                               for i in range(n_prompts)])
            sampling = Sampling(tokens, 1.0, 0.95, 20, n=samples, seed=0)
            rates = run_engine(engine, prompts, sampling, args.repeats)
            results[bname][name] = rates
            print(f"{bname:>5} ({n_prompts} prompts × {samples} samples × ≤{tokens} tokens) {name:>4}: "
                  + ", ".join(f"{r:8.1f}" for r in rates) + " generated tokens/s")
        if name == "vllm":
            engine.close()
        del engine
    if set(engines) >= {"hf", "vllm"}:
        for bname, by in results.items():
            ratio = (sum(by["vllm"]) / len(by["vllm"])) / (sum(by["hf"]) / len(by["hf"]))
            print(f"{bname:>5}: vLLM / HF = {ratio:.2f}x (mean of {args.repeats} runs each)")


if __name__ == "__main__":
    main()
