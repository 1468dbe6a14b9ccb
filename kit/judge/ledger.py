"""What one grading returned (`Verdict`) and what a judge has spent (`Ledger`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class Verdict:
    score: float | None
    verdict: str  # correct | partially_correct | incorrect | error
    cached: bool = False
    error: str | None = None
    rationale: str = ""
    final_answer: str = ""
    attempts: int = 0
    screened: str | None = None  # why the screen gave 0 without asking the judge
    met: list[bool] | None = None  # a rubric's criteria, in order: met or not


@dataclass
class Ledger:
    calls: int = 0
    retries: int = 0
    errors: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost_usd: float = 0.0
    screened: dict = field(default_factory=dict)  # conclusions given 0 by the screen, by reason (no request)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def add_screened(self, reason: str) -> None:
        with self._lock:
            self.screened[reason] = self.screened.get(reason, 0) + 1

    def as_dict(self) -> dict:
        with self._lock:
            d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
            d["screened"] = dict(self.screened)
        d["estimated_cost_usd"] = round(d["estimated_cost_usd"], 6)
        return d


