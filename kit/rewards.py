"""Rewards for GRPOTrainer: `f(completions, **kwargs) -> list[float | None]`.

Dataset columns arrive as keyword arguments (`reference`, `question`); completions are either
strings or conversational (`[{"role": "assistant", "content": ...}]`). With thinking on, a
completion starts inside the reasoning block, so it holds `</think>` but not `<think>`.
"""

from __future__ import annotations

import threading

from .formatting import parse
from .judge import Judge, rule_grade


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 for one well-formed reasoning block closed by `</think>` and a non-empty conclusion, else 0.0.

    >>> format_reward(["ST elevation in II, III, aVF.\\n</think>\\n\\nInferior STEMI."])
    [1.0]
    >>> format_reward([[{"role": "assistant", "content": "推理。\\n</think>\\n\\n"}], "no tags"])
    [0.0, 0.0]
    """
    return [1.0 if parse(completion_text(c)).well_formed else 0.0 for c in completions]


def _question(kwargs: dict, i: int) -> str:
    if kwargs.get("question") is not None:
        return kwargs["question"][i]
    prompt = (kwargs.get("prompts") or [None] * (i + 1))[i]
    if isinstance(prompt, list):
        return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    return prompt or ""


class JudgeReward:
    """Judge reward: broken format → 0.0; correct → 1.0; partially correct → its score;
    incorrect → `incorrect_floor` (a well-formed wrong answer beats a broken one); judge error →
    the rule judge's score (`error_fallback="rule"`) or None, which TRL skips (`"skip"`). Counts kept.

    >>> reward = JudgeReward(Judge("rule"))
    >>> reward(["Opioids.\\n</think>\\n\\nNaloxone", "x\\n</think>\\n\\nFlumazenil", "no tag"],
    ...        reference=["Naloxone"] * 3)
    [1.0, 0.1, 0.0]
    """

    __name__ = "judge"

    def __init__(self, judge: Judge, *, incorrect_floor: float = 0.1, error_fallback: str = "rule"):
        if error_fallback not in ("rule", "skip"):
            raise ValueError(f"error_fallback must be 'rule' or 'skip', got {error_fallback!r}")
        self.judge, self.floor, self.fallback = judge, incorrect_floor, error_fallback
        self.counts = {"graded": 0, "broken_format": 0, "judge_errors": 0, "fallbacks": 0, "skipped": 0}
        self._lock = threading.Lock()

    def _count(self, **kw):
        with self._lock:
            for k, v in kw.items():
                self.counts[k] += v

    def __call__(self, completions, reference, **kwargs) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        ok = [parse(t).well_formed for t in texts]
        idx = [i for i, good in enumerate(ok) if good]
        rewards: list[float | None] = [0.0] * len(texts)
        self._count(broken_format=len(texts) - len(idx), graded=len(idx))
        verdicts = self.judge.grade([_question(kwargs, i) for i in idx], [texts[i] for i in idx],
                                    [reference[i] for i in idx])
        for i, v in zip(idx, verdicts):
            if v.error is not None:
                self._count(judge_errors=1)
                if self.fallback == "rule":
                    self._count(fallbacks=1)
                    verdict, score, _ = rule_grade(v.final_answer, reference[i])
                    rewards[i] = self._shape(verdict, score)
                else:
                    self._count(skipped=1)
                    rewards[i] = None
            else:
                rewards[i] = self._shape(v.verdict, v.score)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("judge/errors", float(sum(1 for i, v in zip(idx, verdicts) if v.error)))
        return rewards

    def _shape(self, verdict: str, score: float) -> float:
        if verdict == "correct":
            return 1.0
        if verdict == "partially_correct":
            return max(self.floor, float(score))
        return self.floor
