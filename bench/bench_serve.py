"""Both ends of `kit serve` under many clients: throughput, latency, 429s, errors and the server's peak memory.

    .venv/bin/python bench/bench_serve.py [--clients 48] [--seconds 30] [--ends llama.cpp,vllm] [--runs DIR]

Trains the tiny recipe once into `--runs` (data, a short SFT with LoRA-only adapters as vLLM's CPU build needs,
export: a merged model and its GGUFs), then serves it on each end (`kit serve`, vLLM's end from `.venv-vllm`) and
runs `--clients` concurrent clients for `--seconds` with the openai SDK's async client: a third stream their
answer and half of those close the stream after three chunks (a Stop button), the rest ask plainly. No client
retries (`max_retries=0`), so a busy server's 429s are counted, not hidden. After the load a plain request must
still be answered. Prints per end: requests completed, streams closed early, 429s, errors (anything else),
p50/p95 latency of the completed requests, requests/s, and the peak resident memory of the server's process
tree (sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LORA_ONLY = ["lora.modules_to_save=[]", "lora.dropout=0"]  # vLLM's CPU build loads LoRA-only adapters (tests/test_vllm.py)
SHORT = ["sft.trainer.max_steps=30", "sft.format_check_questions=4"]
QUESTIONS = ["What is the antidote for opioid overdose?", "Which organism causes most community-acquired pneumonia?",
             "What is the first-line treatment for anaphylaxis?", "Which vitamin deficiency causes Wernicke encephalopathy?"]


async def load(url: str, clients: int, seconds: float, model: str, max_tokens: int = 32, api_key: str = "unused",
               seed: int = 0) -> dict:
    """`clients` concurrent clients against `url` (…/v1) for `seconds`; the figures as a dict."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=120)
    rng = random.Random(seed)
    deadline = time.perf_counter() + seconds
    out = {"completed": 0, "closed_early": 0, "rejected_429": 0, "errors": 0, "latencies": [], "error_examples": []}

    async def one(kind: str):
        messages = [{"role": "user", "content": rng.choice(QUESTIONS)}]
        start = time.perf_counter()
        try:
            if kind == "plain":
                await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
            else:
                stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                              stream=True)
                n = 0
                async for _ in stream:
                    n += 1
                    if kind == "cancel" and n == 3:
                        await stream.close()  # the client goes away mid-answer
                        out["closed_early"] += 1
                        return
            out["completed"] += 1
            out["latencies"].append(time.perf_counter() - start)
        except openai.RateLimitError:
            out["rejected_429"] += 1
            await asyncio.sleep(1)
        except Exception as e:  # noqa: BLE001 - every other failure is what the benchmark counts
            out["errors"] += 1
            if len(out["error_examples"]) < 3:
                out["error_examples"].append(f"{type(e).__name__}: {str(e)[:200]}")

    async def worker():
        while time.perf_counter() < deadline:  # a third stream, half of those close early
            await one(rng.choices(("plain", "stream", "cancel"), weights=(4, 1, 1))[0])

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    out["seconds"] = time.perf_counter() - t
    lat = sorted(out.pop("latencies"))
    out["p50_s"] = statistics.median(lat) if lat else None
    out["p95_s"] = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None
    out["requests_per_s"] = out["completed"] / out["seconds"]
    await client.close()
    return out


class PeakMemory:
    """The peak resident memory (MB) of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.2):
        import psutil

        self.process, self.every_s, self.peak_mb, self._stop = psutil.Process(pid), every_s, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
                self.peak_mb = max(self.peak_mb, rss / 2**20)
            except psutil.Error:
                pass
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def answers(url: str, model: str = "tiny", api_key: str = "unused") -> bool:
    """Whether a plain request is answered, within 60 s."""
    import openai

    try:
        openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=60).chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTIONS[0]}], max_tokens=8)
        return True
    except openai.OpenAIError:
        return False


def processor() -> str:
    """The CPU's model name, and whether it has AMX (timings differ twofold between such machines)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"{name}{' with AMX' if ' amx_tile' in info else ''}"


def kit(python: str, *args: str, env: dict) -> None:
    subprocess.run([python, "-m", "kit", *args], cwd=ROOT, env=env, check=True)


def prepare(runs: Path) -> dict:
    env = {**os.environ, "KIT_RUNS_DIR": str(runs)}
    sets = [x for o in (*LORA_ONLY, *SHORT) for x in ("--set", o)]
    for stage in ("data", "sft", "export"):
        if not (runs / "tiny" / stage / "metrics.json").exists():
            print(f"[bench] {stage} (tiny, into {runs})", flush=True)
            kit(sys.executable, stage, "--recipe", "tiny", *sets, env=env)
    return env


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--ends", default="llama.cpp,vllm")
    parser.add_argument("--runs", default=None, help="where the tiny run is trained (default: a temporary folder)")
    args = parser.parse_args()
    from kit.serve import Server

    runs = Path(args.runs or tempfile.mkdtemp(prefix="bench-serve-"))
    env = prepare(runs)
    os.environ["KIT_RUNS_DIR"] = env["KIT_RUNS_DIR"]
    print(f"[bench] {args.clients} clients for {args.seconds:.0f} s per end; processor: {processor()}, {os.cpu_count()} cores")
    for end in args.ends.split(","):
        python = str(ROOT / ".venv-vllm" / "bin" / "python") if end == "vllm" else sys.executable
        server = Server("tiny", overrides=[*LORA_ONLY, *SHORT], args=["--engine", end, "--max-model-len", "2048"],
                        python=python, timeout_s=600)
        with server as url, PeakMemory(server.proc.pid) as memory:
            figures = asyncio.run(load(url, args.clients, args.seconds, "tiny"))
            alive = answers(url)
        print(f"{end:>9}: {figures['completed']} completed, {figures['closed_early']} streams closed early, "
              f"{figures['rejected_429']} 429s, {figures['errors']} errors; latency p50 {figures['p50_s']:.2f} s, "
              f"p95 {figures['p95_s']:.2f} s; {figures['requests_per_s']:.1f} requests/s; peak memory "
              f"{memory.peak_mb:.0f} MB; answering after the load: {alive}"
              + (f"; errors e.g. {figures['error_examples']}" if figures["error_examples"] else ""), flush=True)


if __name__ == "__main__":
    main()
