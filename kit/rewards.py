"""Rewards for GRPOTrainer: `f(completions, **kwargs) -> list[float | None]`.

Dataset columns arrive as keyword arguments (`reference`, `question`); completions are either
strings or conversational (`[{"role": "assistant", "content": ...}]`). With thinking on, a
completion starts inside the reasoning block, so it holds `</think>` but not `<think>`.
"""

from __future__ import annotations

import threading

from .formatting import THINK_CLOSE, parse
from .judge import Judge, rule_grade


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
        parts.append(f"{reasoning.strip()}\n{THINK_CLOSE}\n\n{m.get('content') or ''}" if reasoning else m.get("content") or "")
    return "".join(parts)


def finished(texts: list[str], completion_ids=None, stop_ids=()) -> list[bool]:
    """Did the model end each completion itself (not the token limit)? With token ids, TRL's own test:
    the last id is an end-of-turn token (TRL decodes completions without their special tokens); for
    text alone, it ends with `<|im_end|>`."""
    if completion_ids is not None and stop_ids:
        return [bool(ids) and ids[-1] in stop_ids for ids in completion_ids]
    return [parse(t).finished for t in texts]


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

    reward.__name__ = "format_reward"
    return reward


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
