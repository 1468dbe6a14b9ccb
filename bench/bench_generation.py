"""Generation throughput: the same prompts and sampling settings through HF `model.generate` and
through vLLM (`kit.generation`'s two engines), side by side in one run, and their ratio.

    # CPU: vLLM's CPU build lives in .venv-vllm, which has transformers too, so both engines run there
    .venv-vllm/bin/python bench/bench_generation.py
    # GPU with vLLM installed, on any model folder or hub id:
    python bench/bench_generation.py --model Qwen/Qwen3.5-0.8B --batches gspo=2x8x2048 eval=64x1x4096

`--bound` measures the machine (memory bandwidth, fp32 matmul throughput) and prints each rate as a share of the
decode bound: every step reads every weight once and costs 2 FLOPs a parameter per token (issue: the laptop
workshop's speed; KV cache and prefill left out, so a ceiling). `--engines hf,llama.cpp --gguf FILE` adds llama.cpp on the exported GGUF of the same model (llama-cpp-python
lives in the main environment, vLLM's CPU build in .venv-vllm: `--json` collects both runs in one file).
`--engines hf,vllm,server` adds RL's server mode: `trl vllm-serve` started by the kit
(`kit.launch.RolloutServer`), asked through TRL's own `VLLMClient`, as a GRPO trainer asks it (HTTP
and token ids both ways; on a GPU it would hold GPUs of its own).

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


def machine_bounds() -> dict:
    """What this machine allows, measured with torch as the engines use it: memory bandwidth (GB/s, a 1 GiB fp32
    tensor copied five times, its read and its write counted) and fp32 matmul throughput (GFLOP/s, 2048 × 2048
    products)."""
    import torch

    x = torch.ones(256 * 1024 * 1024, dtype=torch.float32)
    y = torch.empty_like(x)
    y.copy_(x)
    t = time.perf_counter()
    for _ in range(5):
        y.copy_(x)
    bandwidth = 5 * 2 * x.numel() * 4 / (time.perf_counter() - t) / 1e9
    del x, y
    out = {"bandwidth_gbs": bandwidth}
    for dtype in (torch.float32, torch.bfloat16):  # bf16: what vLLM's CPU build computes in (AMX where the CPU has it)
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        out[f"matmul_gflops_{str(dtype).split('.')[-1]}"] = 10 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9
    return out


def decode_bound(params: int, weight_bytes: int, sequences: int, bounds: dict, gflops: float) -> tuple[float, str]:
    """(tokens/s that decoding `sequences` at once cannot beat, which limit it is): each decode step reads every
    weight once (bandwidth / weight bytes steps a second, `sequences` tokens each) and costs 2 · params FLOPs a
    token at the engine's matmul rate. The KV cache, attention and the prompts' prefill are left out: a ceiling,
    not a forecast."""
    memory = bounds["bandwidth_gbs"] * 1e9 / weight_bytes * sequences
    compute = gflops * 1e9 / (2 * params)
    return (memory, "memory") if memory < compute else (compute, "compute")


def run_engine(engine, prompts, sampling, repeats: int) -> list[float]:
    engine.generate(prompts[:1], sampling)  # warm-up: first-call compilation and allocation
    rates = []
    for r in range(repeats):
        t = time.perf_counter()
        out = engine.generate(prompts, sampling)
        dt = time.perf_counter() - t
        rates.append(sum(c.tokens for cs in out for c in cs) / dt)
    return rates


class ServerEngine:
    """The rollout server behind TRL's client, with the `generate(prompts, sampling)` of the kit's engines."""

    def __init__(self, model: str | None):
        from trl.generation.vllm_client import VLLMClient

        from kit.launch import RolloutServer
        from kit.runtime import visible_gpus
        from kit.recipe import load_recipe
        from kit.children import free_port

        recipe = load_recipe("tiny", [f"model.name_or_path={model}"] if model else [])
        self.server = RolloutServer(recipe, free_port(), visible_gpus()[:1])
        self.client = VLLMClient(base_url=self.server.__enter__(), connection_timeout=60)

    def generate(self, prompts, sampling):
        from types import SimpleNamespace

        out = self.client.generate(prompts=prompts, n=sampling.n, max_tokens=sampling.max_new_tokens,
                                   temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        ids = out["completion_ids"]
        return [[SimpleNamespace(tokens=len(c)) for c in ids[i * sampling.n:(i + 1) * sampling.n]]
                for i in range(len(prompts))]

    def close(self):
        self.server.__exit__()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the kit's tiny model)")
    parser.add_argument("--batches", nargs="+", default=["gspo=2x4x192", "eval=32x1x128"])
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--dtype", default=None, help="HF dtype (default: bf16 on a GPU, fp32 on a CPU, as the kit loads)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gguf", default=None, help="GGUF file for the llama.cpp engine (the export of --model)")
    parser.add_argument("--json", default=None, help="add the mean tokens/s per batch and engine to this JSON file "
                                                     "(runs in two environments compared in one file)")
    parser.add_argument("--bound", action="store_true", help="measure the machine's bandwidth and matmul throughput "
                                                             "and print each rate as a share of the decode bound")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.generation import HFEngine, LlamaCppEngine, Sampling, VLLMEngine, prompt_texts
    from kit.recipe import TinyModelConfig
    from kit.base_model import ensure_tiny as ensure

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
    bounds = machine_bounds() if args.bound else None
    if bounds:
        from transformers import AutoConfig

        hf_for_size = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        params = sum(p.numel() for p in hf_for_size.parameters())
        del hf_for_size
        print(f"machine: memory bandwidth {bounds['bandwidth_gbs']:.1f} GB/s, matmul {bounds['matmul_gflops_float32']:.0f} "
              f"GFLOP/s fp32, {bounds['matmul_gflops_bfloat16']:.0f} bf16; model {params / 1e6:.1f}M parameters "
              f"({AutoConfig.from_pretrained(model).model_type})")
    for name in engines:
        if name == "hf":
            hf = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device)
            engine = HFEngine(hf, tokenizer, batch_size=64)
        elif name == "server":
            engine = ServerEngine(args.model)
        elif name == "llama.cpp":
            if not args.gguf:
                sys.exit("--engines llama.cpp needs --gguf FILE")
            engine = LlamaCppEngine(Path(args.gguf), n_ctx=max_len + max(b[3] for b in batches))
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
            if bounds:  # the weights as this engine holds them: HF's dtype, bf16 for vLLM's CPU build, q8_0 ≈ 1 byte
                per_param = {"hf": dtype.itemsize, "llama.cpp": 1.0625}.get(name, 2)  # (q8_0 computed at fp32's rate)
                bf16 = (name == "hf" and dtype == torch.bfloat16) or name in ("vllm", "server")
                gflops = bounds["matmul_gflops_bfloat16" if bf16 else "matmul_gflops_float32"]
                ceiling, limit = decode_bound(params, int(params * per_param), n_prompts * samples, bounds, gflops)
                mean = sum(rates) / len(rates)
                print(f"{bname:>5} {name:>4}: bound {ceiling:,.0f} tokens/s ({limit}-bound at {per_param:g} bytes a "
                      f"weight); measured {mean:,.1f} = {mean / ceiling:.1%} of it")
        if name in ("vllm", "server", "llama.cpp"):
            engine.close()
        del engine
    if args.json:
        path = Path(args.json)
        kept = json.loads(path.read_text()) if path.exists() else {}
        for bname, by in results.items():
            kept.setdefault(bname, {}).update({k: sum(v) / len(v) for k, v in by.items()})
        path.write_text(json.dumps(kept, indent=2))
    for bname, by in results.items():
        mean = {k: sum(v) / len(v) for k, v in by.items()}
        for a, b, label in (("vllm", "hf", "vLLM / HF"), ("server", "vllm", "server / in-process vLLM")):
            if a in mean and b in mean:
                print(f"{bname:>5}: {label} = {mean[a] / mean[b]:.2f}x (mean of {args.repeats} runs each)")


if __name__ == "__main__":
    main()
