"""Rubrics: a prompt graded against weighted criteria instead of one reference answer (Rubrics as Rewards,
Gunjal et al., arXiv 2507.17746; HealthBench, Arora et al., arXiv 2505.08775).

A rubric row is read in either dataset's own schema:

- ScaleAI/RaR-Medicine: `question`, `reference_answer`, `rubric: [{title, description, weight}]` (a "Pitfall"
  criterion carries a negative weight);
- HealthBench (openai/simple-evals): `prompt: [{role, content}]`, `rubrics: [{criterion, points, tags}]`,
  `example_tags`, `prompt_id`.

The kit's bundled samples add `terms` to a criterion (the words that satisfy it, a field of our own), so that the
offline rule grader can grade them on a CPU; real data are graded by an LLM judge. The score is HealthBench's:
the points of the criteria met over the sum of the positive points, clipped to [0, 1] for a reward (a met
pitfall subtracts).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass

from ..errors import KitError
from ..screen import norm
from .prompts import RUBRIC_PROMPT_VERSION


CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


class RubricError(KitError, ValueError):
    """A rubric that cannot be graded: no positive criterion, a point that is not a number, an empty criterion."""


@dataclass(frozen=True)
class Criterion:
    text: str
    points: float
    tags: tuple[str, ...] = ()
    terms: tuple[str, ...] = ()  # the kit's bundled samples only: words that satisfy it (the rule grader's)

    @property
    def pitfall(self) -> bool:
        return self.points < 0


def is_rubric_row(row: dict) -> bool:
    """A row in RaR-Medicine's or HealthBench's schema."""
    return isinstance(row.get("rubric"), list) or isinstance(row.get("rubrics"), list)


def conversation_text(prompt) -> str:
    """A HealthBench prompt (a conversation) as the question the policy and the judge read: the turns as
    `role: content`, the last user turn last."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)


def read_rubric(row: dict, where: str) -> tuple[str, list[Criterion], dict]:
    """(question, criteria, tags) of a rubric row in either schema; a RubricError naming `where` (file and row)
    and the field otherwise."""
    if isinstance(row.get("rubric"), list):  # RaR-Medicine
        question, raw = row.get("question"), row["rubric"]
        items = [(c.get("description"), c.get("weight"), (c.get("title"),) if c.get("title") else (), c.get("terms"))
                 for c in raw if isinstance(c, dict)]
        tags = {"question_source": row["question_source"]} if row.get("question_source") else {}
    elif isinstance(row.get("rubrics"), list):  # HealthBench
        question, raw = conversation_text(row.get("prompt") or ""), row["rubrics"]
        items = [(c.get("criterion"), c.get("points"), tuple(c.get("tags") or ()), c.get("terms"))
                 for c in raw if isinstance(c, dict)]
        tags = {"example_tags": list(row.get("example_tags") or []), "prompt_id": row.get("prompt_id")}
    else:
        raise RubricError(f"{where}: no 'rubric' (RaR-Medicine) or 'rubrics' (HealthBench) list")
    if not isinstance(question, str) or not question.strip():
        raise RubricError(f"{where}: the question ('question', or HealthBench's 'prompt') is empty")
    if len(items) != len(raw):
        raise RubricError(f"{where}: every criterion must be an object")
    criteria = []
    for i, (text, points, ctags, terms) in enumerate(items):
        if not isinstance(text, str) or not text.strip():
            raise RubricError(f"{where}: criterion {i} has no text")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points):
            raise RubricError(f"{where}: criterion {i} ({text[:40]!r}) has points {points!r}, not a number")
        criteria.append(Criterion(text.strip(), float(points), tuple(str(t) for t in ctags),
                                  tuple(str(t) for t in terms or ())))
    if not any(c.points > 0 for c in criteria):
        raise RubricError(f"{where}: no criterion with positive points, so no score can be given")
    return question.strip(), criteria, tags


def score(criteria: list[Criterion], met: list[bool], clip: bool = True) -> float:
    """Points of the criteria met over the positive points (HealthBench's `calculate_score`), clipped to [0, 1]
    unless `clip` is False (HealthBench clips the mean over examples instead).

    >>> cs = [Criterion("names naloxone", 5), Criterion("gives a dose", 3), Criterion("recommends flumazenil", -4)]
    >>> score(cs, [True, True, False]), score(cs, [True, False, False]), score(cs, [True, False, True])
    (1.0, 0.625, 0.125)
    >>> score(cs, [False, False, True]), score(cs, [False, False, True], clip=False)
    (0.0, -0.5)
    """
    possible = sum(c.points for c in criteria if c.points > 0)
    achieved = sum(c.points for c, m in zip(criteria, met, strict=True) if m)
    value = achieved / possible
    return min(1.0, max(0.0, value)) if clip else value


def met_by_kind(graded) -> dict[str, float]:
    """The share of positive criteria met and of pitfalls met, over (criteria, met flags) pairs; a kind that was
    never graded is left out.

    >>> cs = [Criterion("names naloxone", 5), Criterion("gives a dose", 3), Criterion("recommends flumazenil", -4)]
    >>> met_by_kind([(cs, [True, False, False]), (cs, [True, True, True])])
    {'positive': 0.75, 'pitfall': 0.5}
    """
    tally = {"positive": [0, 0], "pitfall": [0, 0]}
    for criteria, met in graded:
        for c, m in zip(criteria, met, strict=True):
            tally["pitfall" if c.pitfall else "positive"][0] += bool(m)
            tally["pitfall" if c.pitfall else "positive"][1] += 1
    return {kind: hit / n for kind, (hit, n) in tally.items() if n}


def rule_met(answer: str, criteria: list[Criterion]) -> list[bool]:
    """The offline rule grader: a criterion is met when one of its `terms` is in the conclusion (as words, case
    and punctuation aside). A criterion without terms (real data) cannot be graded by rule: RubricError.

    >>> rule_met("Naloxone 0.4 mg IV", [Criterion("names naloxone", 5, terms=("naloxone",)),
    ...                                 Criterion("recommends flumazenil", -4, terms=("flumazenil",))])
    [True, False]
    >>> rule_met("急性阑尾炎，建议手术。", [Criterion("指出急性阑尾炎", 5, terms=("阑尾炎",))])
    [True]
    """
    text = f" {norm(answer)} "
    out = []
    for c in criteria:
        if not c.terms:
            raise RubricError(f"the rule grader needs the words that satisfy criterion {c.text[:50]!r} ('terms', a field of "
                              f"the kit's bundled samples); grade real rubrics with an LLM judge (rl.judge.preset)")
        # words in alphabetic scripts, as words; Chinese and Japanese terms, as written (no spaces to bound them)
        out.append(any((norm(t) in text) if CJK.search(t) else (f" {norm(t)} " in text) for t in c.terms))
    return out


def key(criteria: list[Criterion], batched: bool) -> str:
    """What a cached rubric verdict is keyed by, beside the conclusion and the question: the criteria (text and
    points) and how they were sent."""
    return json.dumps({"prompt": RUBRIC_PROMPT_VERSION, "rubric": [[c.text, c.points] for c in criteria],
                       "batched": batched}, ensure_ascii=False)


def as_rows(criteria: list[Criterion]) -> list[dict]:
    """Criteria as plain rows (what a dataset column holds)."""
    return [asdict(c) | {"tags": list(c.tags), "terms": list(c.terms)} for c in criteria]


def from_rows(rows: list[dict]) -> list[Criterion]:
    return [Criterion(r["text"], float(r["points"]), tuple(r.get("tags") or ()), tuple(r.get("terms") or ())) for r in rows]
