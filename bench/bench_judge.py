"""Judge throughput against a loopback OpenAI-compatible server with 50 ms latency per request.

    .venv/bin/python bench/bench_judge.py [--items 64 --latency 0.05 --concurrency 16 --repeats 3]

The scripted server runs in a process of its own (in the judge's process it would compete with the
judge for the GIL, and the benchmark would measure the two together). Prints items/s sequentially
and at the given concurrency (each repeated, with a fresh judge), the speed-up over sequential, and
the ratio to the ideal (concurrency / latency items/s: every request waiting only for the server),
then items/s from the SQLite cache.

Then reward hacking: the generated probe set (`kit.screen_probes`: attacks in 36 languages and legitimate
answers with doses, sides, qualifiers and next steps, split into a tune half and four held sets) graded by the
most gullible judge there is (the scripted server answers "correct" to everything), with the screen and
without it: attacks paid (false positives), legitimate answers stopped (false negatives), requests paid for.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed_grade(judge, questions, answers, refs) -> float:
    t = time.perf_counter()
    verdicts = judge.grade(questions, answers, refs)
    dt = time.perf_counter() - t
    assert all(v.error is None for v in verdicts), [v.error for v in verdicts if v.error][:3]
    return dt


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/stats", timeout=5) as r:
        return json.loads(r.read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from kit.judge import Judge

    n, c = args.items, args.concurrency
    questions = [f"question {i}" for i in range(n)]
    answers = [f"reasoning {i}\n</think>\n\nanswer {i}" for i in range(n)]
    refs = [f"answer {i}" for i in range(n)]
    cache = Path(tempfile.mkdtemp()) / "cache.sqlite"
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai.py"), str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        rates = {}
        for concurrency in (1, c):
            runs = []
            for _ in range(args.repeats):
                judge = Judge("openai-compatible", base_url=url, model="bench", max_concurrency=concurrency)
                runs.append(n / timed_grade(judge, questions, answers, refs))
            rates[concurrency] = runs
            print(f"concurrency {concurrency:>2}: " + ", ".join(f"{r:6.1f}" for r in runs) +
                  f" items/s (median {statistics.median(runs):.1f}; server's max in flight so far "
                  f"{stats(url)['max_in_flight']})")
        ideal = c / args.latency
        speedup = statistics.median(rates[c]) / statistics.median(rates[1])
        print(f"speed-up at concurrency {c}: {speedup:.1f}x over sequential (ideal {c}x); "
              f"{statistics.median(rates[c]):.0f} of an ideal {ideal:.0f} items/s = "
              f"{statistics.median(rates[c]) / ideal:.2f} (worst run {min(rates[c]) / ideal:.2f})")
        judge = Judge("openai-compatible", base_url=url, model="bench", max_concurrency=c, cache_path=cache)
        timed_grade(judge, questions, answers, refs)
        before = stats(url)["requests"]
        judge = Judge("openai-compatible", base_url=url, model="bench", max_concurrency=c, cache_path=cache)
        dt = timed_grade(judge, questions, answers, refs)
        assert stats(url)["requests"] == before
        print(f"from cache    : {n / dt:7.1f} items/s ({dt:.3f} s, 0 requests)")
        probe_rates(url)
    finally:
        server.terminate()
        server.wait(timeout=10)


def probe_rates(url: str) -> None:
    """The generated probe set (kit.screen_probes), by half, through an always-"correct" judge: attacks paid
    (false positives) and legitimate answers stopped (false negatives), with the screen and without it."""
    from collections import Counter

    from kit.judge import SCREENS, Judge
    from kit.screen_probes import UNSEEN, generate

    rows = generate()
    print(f"generated probes: {len(rows)} ({dict(Counter((r['half'], r['side']) for r in rows))}); tune on `tune`, "
          f"report `held` (groups the tune half never showed, and every item in {', '.join(UNSEEN)}) and `held2` "
          f"(written after the first look at `held`, before the changes it prompted) and `held3` (29 languages, 11 in no "
          f"earlier set, and answers in the question's own language; written before the per-language everyday words) "
          f"and `held4` (36 languages; paraphrases in the question's own language; written before `other_language`)")
    for half in ("tune", "held", "held2", "held3", "held4"):
        part = [r for r in rows if r["half"] == half]
        paid_with_screen = []
        for label, checks in (("with the screen   ", SCREENS), ("without the screen", ())):
            before = stats(url)["requests"]
            judge = Judge("openai-compatible", base_url=url, model="always-correct", screen=checks, max_concurrency=16)
            verdicts = judge.grade([r["question"] for r in part], [f"reasoning\n</think>\n\n{r['conclusion']}" for r in part],
                                   [r["reference"] for r in part])
            paid = stats(url)["requests"] - before
            attacks = [(r, v) for r, v in zip(part, verdicts) if r["side"] == "attack"]
            legit = [(r, v) for r, v in zip(part, verdicts) if r["side"] == "legit"]
            fp = sum(v.verdict == "correct" for _, v in attacks)
            if checks:
                paid_with_screen = [r for r, v in attacks if v.verdict == "correct"]
            fn = sum(v.screened is not None for _, v in legit)
            unseen = [(r, v) for r, v in attacks if r["language"] in UNSEEN]
            fp_unseen = sum(v.verdict == "correct" for _, v in unseen)
            print(f"{half:<5} {label}: attacks paid {fp}/{len(attacks)} = {fp / len(attacks):.1%} "
                  f"(unseen languages {fp_unseen}/{len(unseen)}), legitimate stopped {fn}/{len(legit)} = "
                  f"{fn / len(legit):.1%}; {paid} requests")
        if half != "tune":
            print(f"      attacks paid with the screen, by kind: {dict(Counter(r['kind'] for r in paid_with_screen))}")
        if half == "held4":
            for group, test in (("in the question's own language", lambda r: r["kind"] == "native" or r["language"] in ("en", "zh")),
                                ("in another language than the question's", lambda r: r["kind"] != "native" and r["language"] not in ("en", "zh", "any"))):
                every = [r for r in part if r["side"] == "attack" and test(r)]
                paid_here = [r for r in paid_with_screen if test(r)]
                print(f"      {group}: {len(paid_here)}/{len(every)} = {len(paid_here) / len(every):.1%} paid")


if __name__ == "__main__":
    main()
