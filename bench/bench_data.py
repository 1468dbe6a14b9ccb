"""Tokenising throughput of the data stage: the bundled SFT samples replicated to 20k rows.

    .venv/bin/python bench/bench_data.py [--rows 20000]

Prints rows/s for the data stage's length measurement (chat template + batched tokeniser) with
1 and 2 processes.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    os.environ.setdefault("KIT_RUNS_DIR", tempfile.mkdtemp())
    from kit import data
    from kit.modeling import load_tokenizer
    from kit.recipe import load_recipe

    tokenizer = load_tokenizer(load_recipe("tiny"))
    base = [data.format_sft(r) for name in ("medical_o1_sft_en", "medical_o1_sft_zh")
            for r in data.read_jsonl(data.SAMPLES_DIR / f"{name}.jsonl")]
    rows = (base * (args.rows // len(base) + 1))[: args.rows]
    print(f"rows: {len(rows)} (bundled SFT samples replicated), cores: {os.cpu_count()}")
    for num_proc in (1, 2):
        t = time.perf_counter()
        lengths = data.token_lengths(tokenizer, rows, num_proc=num_proc)
        dt = time.perf_counter() - t
        assert len(lengths) == len(rows)
        print(f"num_proc={num_proc}: {dt:.2f} s, {len(rows) / dt:,.0f} rows/s")


if __name__ == "__main__":
    main()
