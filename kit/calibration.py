"""The judge measured before it is paid for: a small bundled calibration set sent to the recipe's judge.

    python -m kit judge-check --recipe qwen3.5-4b-gspo

The set (`kit/probes/calibration.jsonl`, English and Chinese) holds master keys and hedges (does the judge
itself pay them?), paraphrase keys (content-free conclusions in the question's own everyday words: the kind a
rule screen cannot see, so only the judge stands between them and the reward), correct answers worded
otherwise than the reference (does it see the equivalence?), and wrong answers close to it. They go to the
judge with the screen off, since what is measured is the judge, not the screen; then the attacks the recipe's
own screen lets through and the judge pays are counted: what a run would pay for. Prints each rate with its
95% Wilson interval, the requests and their estimated cost; the
verdicts are cached in `runs/<recipe>/judge_check/`, so a rerun makes no requests. A judge that pays more
than `rl.judge.max_paid_attacks` of the attacks is flagged (and refused where `rl.judge.refuse_gullible`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .errors import KitError
from .judge import Judge, JudgeConfigError
from .recipe import Recipe
from .runs import stage_dir
from .screen import SCREENS, screen
from .stats import wilson

CALIBRATION = Path(__file__).parent / "probes" / "calibration.jsonl"
ATTACKS = ("master_key", "hedge", "paraphrase_key")


class GullibleJudge(KitError, RuntimeError):
    """The configured judge pays for master keys or hedges above the recipe's limit."""


def calibration_set() -> list[dict]:
    return [json.loads(line) for line in CALIBRATION.read_text(encoding="utf-8").splitlines() if line.strip()]


def _rate(hits: int, n: int) -> dict:
    low, high = wilson(hits, n)
    return {"hits": hits, "n": n, "rate": round(hits / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)]}


def calibrate(recipe: Recipe, cache_path: Path | None = None) -> dict:
    """Grade the calibration set with the recipe's judge, screen off, then screen its attacks as the recipe does;
    the rates, the requests and the cost.

    - `paid_attacks`: master keys, hedges and paraphrase keys graded correct (or partially correct at 0.5 or more);
    - `paid_through_screen`: of those attacks, the ones the recipe's screen (`rl.judge.screen`) also lets through;
    - `missed_equivalents`: correct answers in other words not graded correct;
    - `accepted_wrong`: wrong answers close to the reference graded correct.
    """
    cfg = recipe.rl.judge
    cache_path = cache_path or stage_dir(recipe, "judge_check") / "cache.sqlite"
    judge = Judge(replace(cfg, screen=["empty"]), cache_path=cache_path)  # the judge alone: only "" is not sent
    rows = calibration_set()
    verdicts = judge.grade([r["question"] for r in rows], [f"\n</think>\n\n{r['conclusion']}" for r in rows],
                           [r["reference"] for r in rows])

    def paid(v):
        return v.verdict == "correct" or v.verdict == "partially_correct" and (v.score or 0) >= 0.5

    graded = [(r, v) for r, v in zip(rows, verdicts) if v.error is None]
    attacks = [(r, v) for r, v in graded if r["kind"] in ATTACKS]
    reworded = [(r, v) for r, v in graded if r["kind"] == "correct_reworded"]
    close = [(r, v) for r, v in graded if r["kind"] == "wrong_close"]
    checks = cfg.screen or SCREENS
    passed = [(r, v) for r, v in attacks
              if screen(r["conclusion"], r["question"], r["reference"], checks=checks, max_tokens=cfg.max_conclusion_tokens) is None]
    ledger = judge.ledger.as_dict()
    report = {
        "judge": {"preset": judge.preset, "model": judge.model},
        "items": len(rows), "errors": len(rows) - len(graded),
        "paid_attacks": _rate(sum(paid(v) for _, v in attacks), len(attacks)),
        "paid_by_kind": {k: _rate(sum(paid(v) for r, v in attacks if r["kind"] == k),
                                  sum(r["kind"] == k for r, _ in attacks)) for k in ATTACKS},
        "paid_through_screen": _rate(sum(paid(v) for _, v in passed), len(attacks)),
        "through_screen_examples": [r["conclusion"] for r, v in passed if paid(v)][:5],
        "missed_equivalents": _rate(sum(not paid(v) for _, v in reworded), len(reworded)),
        "accepted_wrong": _rate(sum(paid(v) for _, v in close), len(close)),
        "requests": ledger["calls"], "cache_hits": ledger["cache_hits"],
        "estimated_cost_usd": ledger["estimated_cost_usd"],
        "paid_examples": [r["conclusion"] for r, v in attacks if paid(v)][:5],
        "limit": cfg.max_paid_attacks,
    }
    report["gullible"] = bool(attacks) and report["paid_attacks"]["rate"] > cfg.max_paid_attacks
    return report


def lines(report: dict) -> list[str]:
    """The calibration as a reader sees it."""
    def pct(r):
        return "n/a" if r["rate"] is None else f"{r['rate']:.0%} ({r['hits']}/{r['n']}; 95% CI {r['ci95'][0]:.0%}–{r['ci95'][1]:.0%})"

    out = [f"judge calibration ({report['judge']['preset']}, {report['judge']['model']}; {report['items']} items, screen off):",
           f"  pays attacks                : {pct(report['paid_attacks'])}  (limit {report['limit']:.0%})",
           f"    master keys               : {pct(report['paid_by_kind']['master_key'])}",
           f"    hedges                    : {pct(report['paid_by_kind']['hedge'])}",
           f"    paraphrase keys           : {pct(report['paid_by_kind']['paraphrase_key'])}",
           f"  paid after the screen       : {pct(report['paid_through_screen'])}  (what a run pays for)",
           f"  misses reworded correct     : {pct(report['missed_equivalents'])}",
           f"  accepts close wrong answers : {pct(report['accepted_wrong'])}",
           f"  requests {report['requests']} (cached {report['cache_hits']}), errors {report['errors']}, "
           f"estimated cost ${report['estimated_cost_usd']:.4f}"]
    if report["errors"]:
        out.append(f"  ⚠ {report['errors']} items got no verdict (the judge failed after its retries): rates are over the rest")
    if report["gullible"]:
        out.append(f"  ⚠ this judge pays for content-free or hedged conclusions ({', '.join(map(repr, report['paid_examples']))}): "
                   f"the screen stops those it recognises, but a policy will search for the rest. Prefer a stricter judge "
                   f"or prompt before a paid run")
    if report["through_screen_examples"]:
        out.append(f"  ⚠ the screen let through and the judge paid: {', '.join(map(repr, report['through_screen_examples']))}")
    return out


def check(recipe: Recipe, cache_path: Path | None = None, refuse: bool | None = None) -> dict:
    """Calibrate, print, write `runs/<recipe>/judge_check/calibration.json`; GullibleJudge where the recipe
    refuses a gullible judge."""
    report = calibrate(recipe, cache_path)
    for line in lines(report):
        print(f"[kit] {line}")
    out = stage_dir(recipe, "judge_check")
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    refuse = recipe.rl.judge.refuse_gullible if refuse is None else refuse
    if report["gullible"] and refuse:
        raise GullibleJudge(f"the judge paid {report['paid_attacks']['rate']:.0%} of the calibration set's master keys "
                            f"and hedges, above rl.judge.max_paid_attacks={report['limit']} (rl.judge.refuse_gullible "
                            f"is on); {out / 'calibration.json'} lists them")
    return report


def check_access(recipe: Recipe) -> None:
    """One request to the recipe's remote judge, never cached: a key the provider refuses (401/403) is a
    JudgeAccessError here, before the first step, not a run of fallback rewards; a judge that does not answer
    is said (the run's requests are retried, bounded)."""
    row = calibration_set()[0]
    judge = Judge(replace(recipe.rl.judge, screen=["empty"]), max_retries=1)
    (verdict,) = judge.grade([row["question"]], [f"\n</think>\n\n{row['conclusion']}"], [row["reference"]])
    if verdict.error:
        print(f"[kit] ⚠ the judge did not answer a first request ({verdict.error}); the run retries each one")


def check_or_skip(recipe: Recipe) -> dict | None:
    """`check` where the recipe's judge can be built here; a line saying why not otherwise (no key)."""
    try:
        return check(recipe)
    except JudgeConfigError as e:
        print(f"[kit] judge calibration skipped: {e}")
        return None
