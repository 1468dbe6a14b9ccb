"""Rewards for GRPOTrainer: `f(completions, **kwargs) -> list[float | None]`.

Dataset columns arrive as keyword arguments (`reference`, `question`); completions are either
strings or conversational (`[{"role": "assistant", "content": ...}]`). With thinking on, a
completion starts inside the reasoning block, so it holds `</think>` but not `<think>`.
"""

from __future__ import annotations

import re
import threading

from .formatting import final_answer, join_reasoning, parse
from .judge import Judge, RubricError, rule_grade, rule_met, rubric_score
from .judge.rubric import from_rows, met_by_kind


# Where a parsed completion keeps its reasoning: TRL parses completions with the tokenizer's response
# schema when it has one (Qwen3.5's puts it in `reasoning_content`, without the `</think>`).
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


def completion_text(completion) -> str:
    """One text for a completion: as is when a string; the assistant messages joined when conversational,
    with parsed-out reasoning put back before a `</think>`.

    >>> completion_text([{"role": "assistant", "reasoning_content": "Opioid toxidrome.", "content": "Naloxone"}])
    'Opioid toxidrome.\\n</think>\\n\\nNaloxone'
    """
    if isinstance(completion, str):
        return completion
    parts = []
    for m in completion:
        if m.get("role", "assistant") != "assistant":
            continue
        reasoning = next((m[k] for k in REASONING_KEYS if m.get(k)), None)
        parts.append(join_reasoning(reasoning.strip(), m.get("content") or "") if reasoning else m.get("content") or "")
    return "".join(parts)


def finished(texts: list[str], completion_ids=None, stop_ids=()) -> list[bool]:
    """Did the model end each completion itself (not the token limit)? With token ids, TRL's own test:
    the last id is an end-of-turn token (TRL decodes completions without their special tokens); for
    text alone, it ends with `<|im_end|>`."""
    if completion_ids is not None and stop_ids:
        return [bool(ids) and ids[-1] in stop_ids for ids in completion_ids]
    return [parse(t).finished for t in texts]


# The names TRL logs the rewards by (`rewards/<name>/mean`): their functions' `__name__`, read by the hacking watch
FORMAT_REWARD = "format_reward"
JUDGE_REWARD = "judge"
RUBRIC_REWARD = "rubric"


def format_reward(completions, completion_ids=None, stop_ids=(), **kwargs) -> list[float]:
    """1.0 for a finished completion with one well-formed reasoning block closed by `</think>` and a
    non-empty conclusion, else 0.0 (the eval's strict adherence). A completion cut off by the token limit
    scores 0.0 even when its text looks well formed.

    >>> format_reward(["ST elevation in II, III, aVF.\\n</think>\\n\\nInferior STEMI.<|im_end|>"])
    [1.0]
    >>> format_reward(["ST elevation.\\n</think>\\n\\nInferior STEMI, and the", "no tags<|im_end|>"])
    [0.0, 0.0]
    """
    texts = [completion_text(c) for c in completions]
    done = finished(texts, completion_ids, stop_ids)
    return [1.0 if d and parse(t).well_formed else 0.0 for t, d in zip(texts, done)]


def make_format_reward(stop_ids: list[int]):
    """`format_reward` bound to the tokenizer's end-of-turn ids, under the name TRL logs it by."""
    stop_ids = tuple(stop_ids)

    def reward(completions, completion_ids=None, **kwargs) -> list[float]:
        return format_reward(completions, completion_ids, stop_ids)

    reward.__name__ = FORMAT_REWARD
    return reward


def _question(kwargs: dict, i: int) -> str:
    if kwargs.get("question") is not None:
        return kwargs["question"][i]
    prompt = (kwargs.get("prompts") or [None] * (i + 1))[i]
    if isinstance(prompt, list):
        return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    return prompt or ""


class JudgeReward:
    """Judge reward: broken format → 0.0; a conclusion the screen stops (kit.judge.screen: empty, a master
    key, addressed to the grader, a hedge...) → 0.0, unjudged; correct → 1.0; partially correct → its score;
    incorrect → `incorrect_floor` (a well-formed wrong answer beats a broken one); judge error → the rule
    judge's score (`error_fallback="rule"`) or None, which TRL skips (`"skip"`). Counts kept, and per call the
    signals of a policy collapsing onto what the judge pays for (`signals`, logged as `judge/...`).

    >>> reward = JudgeReward(Judge("rule"))
    >>> reward(["Opioids.\\n</think>\\n\\nNaloxone", "x\\n</think>\\n\\nFlumazenil", "no tag",
    ...         "x\\n</think>\\n\\nThought process:"], reference=["Naloxone"] * 4)
    [1.0, 0.1, 0.0, 0.0]
    >>> reward.counts["screened"], reward.last["screened/no_content"]
    (1, 0.25)
    """

    __name__ = JUDGE_REWARD

    def __init__(self, judge: Judge, *, incorrect_floor: float = 0.1, error_fallback: str = "rule",
                 num_generations: int | None = None):
        if error_fallback not in ("rule", "skip"):
            raise ValueError(f"error_fallback must be 'rule' or 'skip', got {error_fallback!r}")
        self.judge, self.floor, self.fallback = judge, incorrect_floor, error_fallback
        self.num_generations = num_generations  # completions per prompt, in TRL's order: one group after another
        self.counts = {"graded": 0, "broken_format": 0, "screened": 0, "judge_errors": 0, "fallbacks": 0, "skipped": 0}
        self.last: dict[str, float] = {}  # the signals of the last call, as logged
        self._lock = threading.Lock()

    def _count(self, **kw):
        with self._lock:
            for k, v in kw.items():
                self.counts[k] += v

    def __call__(self, completions, reference, **kwargs) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        ok = [parse(t).well_formed for t in texts]
        # a row with a rubric is the rubric reward's (None here: TRL sums the rewards that apply)
        mine = [not r for r in (kwargs.get("rubric") or [None] * len(texts))]
        idx = [i for i, good in enumerate(ok) if good and mine[i]]
        rewards: list[float | None] = [0.0 if m else None for m in mine]
        self._count(broken_format=sum(m and not good for m, good in zip(mine, ok)), graded=len(idx))
        verdicts = self.judge.grade([_question(kwargs, i) for i in idx], [texts[i] for i in idx],
                                    [reference[i] for i in idx])
        for i, v in zip(idx, verdicts):
            if v.screened:
                self._count(screened=1)
                rewards[i] = 0.0
            elif v.error is not None:
                self._count(judge_errors=1)
                if self.fallback == "rule":
                    self._count(fallbacks=1)
                    verdict, score, _ = rule_grade(v.final_answer, reference[i], _question(kwargs, i))
                    rewards[i] = self._shape(verdict, score)
                else:
                    self._count(skipped=1)
                    rewards[i] = None
            else:
                rewards[i] = self._shape(v.verdict, v.score)
        screened = [None] * len(texts)
        for i, v in zip(idx, verdicts):
            screened[i] = v.screened
        self.last = signals([final_answer(t) for t in texts], screened, self.num_generations, self.judge.count_tokens)
        self.last["errors"] = float(sum(1 for v in verdicts if v.error))
        if self.judge.preset != "rule" and texts:  # the rule judge in the LLM judge's shadow: do they drift apart?
            shadow = [0.0] * len(texts)
            for i, v in zip(idx, verdicts):
                shadow[i] = 0.0 if v.screened else self._shape(*rule_grade(v.final_answer, reference[i], _question(kwargs, i))[:2])
            self.last["rule_reward"] = sum(shadow) / len(shadow)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for name, value in self.last.items():
                log_metric(f"judge/{name}", value)
        return rewards

    def _shape(self, verdict: str, score: float) -> float:
        if verdict == "correct":
            return 1.0
        if verdict == "partially_correct":
            return max(self.floor, float(score))
        return self.floor


class RubricReward:
    """Rubric reward, for the rows that carry a rubric (the others: None, the judge reward's): broken format → 0.0;
    a conclusion the screen stops → 0.0, unjudged; else the rubric's score (the points of the criteria met over
    the positive points, clipped to [0, 1]; a met pitfall subtracts); a judge error → the rule grader's score
    where the criteria carry their terms (the bundled samples), else None, which TRL skips. Logged per call:
    the met rate of positive criteria and of pitfalls, and criteria met per 100 conclusion tokens, which falls
    when a policy pads its answers to touch more criteria (length inflation, which rubric rewards invite).

    >>> rubric = [{"text": "names naloxone", "points": 5, "terms": ["naloxone"]},
    ...           {"text": "recommends flumazenil", "points": -4, "terms": ["flumazenil"]}]
    >>> reward = RubricReward(Judge("rule"))
    >>> reward(["x\\n</think>\\n\\nNaloxone", "x\\n</think>\\n\\nNaloxone or flumazenil", "x\\n</think>\\n\\nFlumazenil",
    ...         "no tag", "x\\n</think>\\n\\nNaloxone"], rubric=[rubric] * 4 + [None], question=["Antidote?"] * 5,
    ...        reference=["Naloxone"] * 5)
    [1.0, 0.0, 0.0, 0.0, None]
    """

    __name__ = RUBRIC_REWARD

    def __init__(self, judge: Judge, num_generations: int | None = None):
        self.judge, self.num_generations = judge, num_generations
        self.counts = {"graded": 0, "broken_format": 0, "screened": 0, "judge_errors": 0, "fallbacks": 0, "skipped": 0}
        self.last: dict[str, float] = {}

    def __call__(self, completions, rubric=None, **kwargs) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        rubric = rubric or [None] * len(texts)
        ok = [parse(t).well_formed for t in texts]
        rewards: list[float | None] = [0.0 if r else None for r in rubric]
        idx = [i for i, r in enumerate(rubric) if r and ok[i]]
        criteria = {i: from_rows(rubric[i]) for i in idx}
        self.counts["broken_format"] += sum(bool(r) and not good for r, good in zip(rubric, ok))
        self.counts["graded"] += len(idx)
        references = kwargs.get("reference") or [""] * len(texts)  # RaR-Medicine's reference answer: the screen's
        verdicts = self.judge.grade([_question(kwargs, i) for i in idx], [texts[i] for i in idx],
                                    [references[i] or "" for i in idx], [criteria[i] for i in idx])
        graded, met_total, tokens = [], 0, 0
        for i, v in zip(idx, verdicts):
            if v.screened:
                self.counts["screened"] += 1
                continue
            met = v.met
            if v.error is not None:
                self.counts["judge_errors"] += 1
                try:
                    met = rule_met(v.final_answer, criteria[i])
                    self.counts["fallbacks"] += 1
                except RubricError:
                    self.counts["skipped"] += 1
                    rewards[i] = None
                    continue
            rewards[i] = rubric_score(criteria[i], met)
            graded.append((criteria[i], met))
            met_total += sum(m for c, m in zip(criteria[i], met) if not c.pitfall)
            tokens += self.judge.count_tokens(v.final_answer)
        self.last = {f"{kind}_met": rate for kind, rate in met_by_kind(graded).items()}
        if tokens:
            self.last["met_per_100_tokens"] = 100 * met_total / tokens
        self.last["graded"] = float(len(idx))
        if callable(log_metric := kwargs.get("log_metric")):
            for name, value in self.last.items():
                log_metric(f"rubric/{name}", value)
        return rewards


def signals(conclusions: list[str], screened: list[str | None], group: int | None, count_tokens) -> dict:
    """What one batch of conclusions says about reward hacking: the share screened, by reason; the mean
    conclusion length; how many distinct conclusions a group of `group` completions (one prompt's) holds, on
    average; and the share the most common conclusion takes across the batch's prompts.

    >>> s = signals(["Naloxone", "naloxone.", "Atropine", "Solution"], [None, None, None, "no_content"], 2, len)
    >>> s["screened"], s["screened/no_content"], s["distinct_per_group"], s["top_conclusion_share"]
    (0.25, 0.25, 1.5, 0.5)
    """
    n = max(1, len(conclusions))
    out: dict[str, float] = {"screened": sum(r is not None for r in screened) / n}
    for reason in sorted({r for r in screened if r}):
        out[f"screened/{reason}"] = sum(r == reason for r in screened) / n
    out["conclusion_tokens"] = sum(count_tokens(c) for c in conclusions) / n
    keys = [" ".join(re.sub(r"[^\w\s]", " ", c.lower()).split()) for c in conclusions]
    if group and len(keys) >= group:
        groups = [keys[i:i + group] for i in range(0, len(keys) - group + 1, group)]
        out["distinct_per_group"] = sum(len(set(g)) for g in groups) / len(groups)
    out["top_conclusion_share"] = max((keys.count(k) for k in set(keys) if k), default=0) / n
    return out
