"""Rubric RL on the real model offline: the `smollm2` recipe (SmolLM2-135M-Instruct) trained by the `rubric` reward
on the bundled RaR-Medicine rows, and what the reward did over the run, first quarter against last.

    .venv/bin/python bench/bench_rubric_rl.py                 # data, SFT, RL in a fresh runs folder (~15 min, 2 cores)
    .venv/bin/python bench/bench_rubric_rl.py --runs DIR      # read a finished run instead (DIR/smollm2/rl/metrics.json)

The RL rows are the first four bundled RaR-Medicine rows (English: the model is), graded offline by the rule
grader on the criteria's `terms`; the reward is `format: 1.0, rubric: 1.0`. Printed per quarter of the steps: the
rubric reward, the share of positive criteria met, of pitfalls met, criteria met per 100 conclusion tokens (which
falls when answers are padded) and the completion length. Four prompts and 16 steps: a direction, not a
measurement of medicine.
"""

import argparse
import json
import tempfile
from pathlib import Path

SETS = ["data.rl=[{path: 'bundled:rar_medicine', schema: rubric, max_rows: 4}]",
        "rl.reward_weights={format: 1.0, rubric: 1.0}"]
KEYS = {"rubric reward": "rewards/rubric/mean", "positive met": "rubric/positive_met", "pitfalls met": "rubric/pitfall_met",
        "met / 100 tokens": "rubric/met_per_100_tokens", "completion tokens": "completions/mean_length"}


def train(runs: Path) -> None:
    from real_model import kit  # the real-model lane's runner: its own runs folder, output shown, time printed

    for stage in ("data", "sft", "rl"):
        kit(runs, stage, "--recipe", "smollm2", *sum((["--set", s] for s in SETS), []))


def quarters(history: list[dict]) -> list[dict]:
    steps = [h for h in history if h.get(KEYS["rubric reward"]) is not None]
    size = max(1, len(steps) // 4)
    out = []
    for q, part in enumerate([steps[:size], steps[size:2 * size], steps[2 * size:3 * size], steps[3 * size:]], 1):
        row = {"quarter": q, "steps": f"{part[0]['step']}-{part[-1]['step']}" if part else "-"}
        for name, key in KEYS.items():
            values = [h[key] for h in part if h.get(key) is not None]
            row[name] = round(sum(values) / len(values), 3) if values else None
        out.append(row)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, help="a runs folder whose smollm2 RL has finished")
    args = parser.parse_args()
    runs = args.runs or Path(tempfile.mkdtemp(prefix="bench-rubric-rl-"))
    if args.runs is None:
        train(runs)
    metrics = json.loads((runs / "smollm2" / "rl" / "metrics.json").read_text())
    rows = quarters(metrics["reward_history"])
    print(f"smollm2, rubric RL on 4 RaR-Medicine rows, {metrics['steps']} steps ({runs})")
    print("| quarter | steps | " + " | ".join(KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for r in rows:
        print(f"| {r['quarter']} | {r['steps']} | " + " | ".join(str(r[k]) for k in KEYS) + " |")
    first, last = rows[0], rows[-1]
    print(f"first → last quarter: rubric reward {first['rubric reward']} → {last['rubric reward']}, positive criteria met "
          f"{first['positive met']} → {last['positive met']}, pitfalls met {first['pitfalls met']} → {last['pitfalls met']}")


if __name__ == "__main__":
    main()
