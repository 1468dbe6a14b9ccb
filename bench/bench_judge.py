"""Judge throughput against a loopback OpenAI-compatible server with 50 ms latency per request.

    .venv/bin/python bench/bench_judge.py [--items 64 --latency 0.05]

Prints items/s at concurrency 1 and 16, and again from the SQLite cache.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    from fake_openai import FakeOpenAI
    from kit.judge import Judge

    n = args.items
    questions = [f"question {i}" for i in range(n)]
    answers = [f"reasoning {i}\n</think>\n\nanswer {i}" for i in range(n)]
    refs = [f"answer {i}" for i in range(n)]
    cache = Path(tempfile.mkdtemp()) / "cache.sqlite"
    with FakeOpenAI(latency_s=args.latency) as server:
        for concurrency in (1, 16):
            judge = Judge("openai-compatible", base_url=server.url, model="bench", max_concurrency=concurrency,
                          cache_path=cache if concurrency == 16 else None)
            t = time.perf_counter()
            verdicts = judge.grade(questions, answers, refs)
            dt = time.perf_counter() - t
            assert all(v.error is None for v in verdicts)
            print(f"concurrency {concurrency:>2}: {n / dt:7.1f} items/s ({dt:.2f} s, {judge.ledger.calls} requests, "
                  f"max in flight {server.max_in_flight})")
        before = server.requests
        judge = Judge("openai-compatible", base_url=server.url, model="bench", max_concurrency=16, cache_path=cache)
        t = time.perf_counter()
        verdicts = judge.grade(questions, answers, refs)
        dt = time.perf_counter() - t
        assert all(v.cached for v in verdicts) and server.requests == before
        print(f"from cache    : {n / dt:7.1f} items/s ({dt:.3f} s, 0 requests)")


if __name__ == "__main__":
    main()
