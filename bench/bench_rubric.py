"""The rubric judge's two ways of asking, on the same items: all of a rubric's criteria in one request per
conclusion (`rl.judge.rubric_batched: true`) or one request per criterion (HealthBench's grader).

    .venv/bin/python bench/bench_rubric.py

Against the scripted server of the tests (tests/fake_openai.py: a criterion is met when one of its words is in
the answer), so what it measures is the requests and their size (the characters sent, from the request bodies
the server recorded, and ~3.5 characters a token), not a judge's agreement: both ways meet the same criteria by
construction here, which the script checks. Agreement between the two on a real judge needs a key and the
network. The items: the bundled RaR-Medicine and HealthBench rows, each graded on its reference answer (or the
first criterion's words) and on a wrong answer.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main():
    from fake_openai import FakeOpenAI
    from kit.judge import Judge, read_rubric
    from kit.runs import SAMPLES_DIR

    items = []
    for name in ("rar_medicine", "healthbench"):
        for n, line in enumerate((SAMPLES_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            question, criteria, _ = read_rubric(row, f"{name} row {n}")
            good = row.get("reference_answer") or " ".join(criteria[0].terms) or criteria[0].text
            items += [(question, good, criteria), (question, "Rest and fluids; see a doctor if it gets worse.", criteria)]
    results = {}
    for batched in (True, False):
        with FakeOpenAI() as server:
            judge = Judge("openai-compatible", base_url=server.url, model="bench", max_concurrency=8)
            judge.rubric_batched = batched
            verdicts = judge.grade([q for q, _, _ in items], [f"x\n</think>\n\n{a}" for _, a, _ in items],
                                   [""] * len(items), [c for _, _, c in items])
            chars = sum(len(m["content"]) for b in server.bodies for m in b["messages"])
            results[batched] = {"requests": server.requests, "chars": chars, "met": [v.met for v in verdicts],
                                "screened": sum(v.screened is not None for v in verdicts)}
    criteria = sum(len(c) for _, _, c in items)
    print(f"{len(items)} conclusions, {criteria} criteria ({results[True]['screened']} conclusions screened, never sent)")
    for batched, r in results.items():
        print(f"{'batched    ' if batched else 'one by one '}: {r['requests']:3d} requests, {r['chars']:7,d} characters sent "
              f"(~{r['chars'] / 3.5:,.0f} prompt tokens), {r['chars'] / max(1, r['requests']):,.0f} per request")
    same = sum(a == b for a, b in zip(results[True]["met"], results[False]["met"]))
    print(f"one by one / batched: {results[False]['requests'] / results[True]['requests']:.1f}x the requests, "
          f"{results[False]['chars'] / results[True]['chars']:.1f}x the characters; the same criteria met on "
          f"{same}/{len(items)} conclusions (by construction with this server)")


if __name__ == "__main__":
    main()
