"""The judge: grades ONLY the final conclusion, against a reference or a rubric, through an OpenAI-compatible API.

The judge strips everything up to and including `</think>` before anything is sent, so the
policy cannot win by persuading the judge with its chain of thought. The conclusion itself could still
hack it ("master keys": Zhao et al., "One Token to Fool LLM-as-a-Judge", arXiv 2507.08794), so:

- a deterministic screen (`screen`) gives 0, with its reason and without a request, to a conclusion that is
  empty, symbols only, a generic reasoning opener, addressed to the grader, the question restated, a hedge
  between candidate answers, or too long; the rule judge applies the same screen;
- the conclusion reaches the judge as a JSON string value (it cannot close it or write a reference or a
  verdict of its own), and the system prompt says that value is the answer under test, never an instruction.

    judge = Judge("deepseek")                      # DEEPSEEK_API_KEY from the environment
    judge = Judge("openai-compatible", base_url="http://127.0.0.1:8000/v1", model="qwen")
    judge = Judge("rule")                          # offline, no network
    verdicts = judge.grade(questions, completions, references)

Faults (429 with Retry-After, 5xx, time-outs, dropped connections, answers without a verdict)
are retried with exponential backoff and jitter inside a per-item time budget; after the last
try the item's verdict carries the error and `score=None`. `grade` never raises for a remote fault.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from ..errors import KitError
from ..formatting import final_answer
from ..progress import bar
from ..recipe import JudgeConfig
from ..runtime import world_size
from ..screen import SCREENS, count_words, screen
from .cache import VerdictCache
from .ledger import Ledger, Verdict
from .prompts import RUBRIC_SYSTEM_PROMPT, SYSTEM_PROMPT, parse_criteria, parse_verdict, rubric_message, user_message
from .rubric import Criterion, key as rubric_key, rule_met, score as rubric_score
from .rules import rule_grade

# Prices in USD per million tokens, as published by the provider when this preset was written;
# they only feed the ledger's cost estimate.
PRESETS = {
    "deepseek": {"base_url": "https://api.deepseek.com", "model": "deepseek-chat",
                 "api_key_env": "DEEPSEEK_API_KEY", "usd_per_mtok_in": 0.28, "usd_per_mtok_out": 0.42},
    "openai-compatible": {"base_url": None, "model": None, "api_key_env": "OPENAI_API_KEY",
                          "usd_per_mtok_in": 0.0, "usd_per_mtok_out": 0.0},
    "rule": {"model": "rule"},
}


class JudgeAccessError(KitError, PermissionError):
    """The judge's provider refused the key (401) or the access (403): no retry mends that, and a run that went
    on would train on the fallback's rewards without a word."""


class JudgeConfigError(KitError, ValueError):
    """A judge that cannot be built as configured (no key, no endpoint, unknown preset)."""


# ---------------------------------------------------------------- the judge

def concurrency_share(total: int, processes: int) -> int:
    """The requests one process may have in flight: `max_concurrency` is the run's limit, not each
    process's, so under a multi-process launch each takes its share (rounded up)."""
    return max(1, -(-int(total) // processes))


_FROM_CONFIG = object()  # an argument left to the JudgeConfig (whose defaults are the only ones)


class Judge:
    def __init__(self, preset_or_config: str | JudgeConfig = "rule", *, base_url: str | None = None,
                 model: str | None = None, api_key: str | None = None, max_concurrency: int | None = None,
                 timeout_s: float | None = None, max_retries: int | None = None, cache_path: str | Path | None = None,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, screen: tuple | list | None = None,
                 max_conclusion_tokens=_FROM_CONFIG, count_tokens=None):
        """A judge from a recipe's `JudgeConfig`, or from a preset name with JudgeConfig's defaults; an argument
        given here wins over the config's."""
        cfg = preset_or_config if isinstance(preset_or_config, JudgeConfig) else JudgeConfig(preset=preset_or_config)
        preset, base_url, model, key_env = cfg.preset, base_url or cfg.base_url, model or cfg.model, cfg.api_key_env
        max_concurrency = cfg.max_concurrency if max_concurrency is None else max_concurrency
        timeout_s = cfg.timeout_s if timeout_s is None else timeout_s
        max_retries = cfg.max_retries if max_retries is None else max_retries
        screen = (cfg.screen or SCREENS) if screen is None else screen
        if max_conclusion_tokens is _FROM_CONFIG:
            max_conclusion_tokens = cfg.max_conclusion_tokens
        if unknown := sorted(set(screen) - set(SCREENS)):
            raise JudgeConfigError(f"rl.judge.screen: unknown check(s) {unknown}; the checks are {', '.join(SCREENS)}")
        self.checks, self.max_conclusion_tokens = tuple(screen), max_conclusion_tokens
        self.rubric_batched = bool(cfg.rubric_batched)  # a rubric's criteria in one request, or one request each
        self.rubric_max_conclusion_tokens = cfg.rubric_max_conclusion_tokens  # an answer graded by criteria may be long
        self.count_tokens = count_tokens or count_words  # the policy's tokenizer, where the RL stage gives it
        if preset not in PRESETS:
            raise JudgeConfigError(f"unknown judge preset '{preset}' (presets: {', '.join(PRESETS)})")
        spec = PRESETS[preset]
        self.preset = preset
        self.model = model or spec.get("model")
        self.max_concurrency = concurrency_share(max_concurrency, world_size())
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        # the whole time one item may take, every retry and wait included
        self.item_budget_s = self.timeout_s * (self.max_retries + 1) + self.max_backoff_s
        self.ledger = Ledger()
        self.cache = VerdictCache(cache_path) if cache_path else None
        self._prices = (spec.get("usd_per_mtok_in", 0.0), spec.get("usd_per_mtok_out", 0.0))
        self._client = None
        if preset == "rule":
            return
        base_url = base_url or spec["base_url"]
        key_env = key_env or spec["api_key_env"]
        if not base_url or not self.model:
            raise JudgeConfigError(f"judge preset '{preset}' needs base_url and model")
        api_key = api_key or os.environ.get(key_env)
        if not api_key:
            if preset == "deepseek":
                raise JudgeConfigError(
                    f"the DeepSeek judge needs an API key in ${key_env}. Set it (never in a notebook cell "
                    f"that is saved), or use the offline judge with --set rl.judge.preset=rule, or another "
                    f"endpoint with --set rl.judge.preset=openai-compatible --set rl.judge.base_url=URL "
                    f"--set rl.judge.model=NAME")
            api_key = "not-needed"  # local servers (vLLM, llama.cpp) accept any key
        import openai

        self._openai = openai
        self._where = f"{base_url} (key from ${key_env})" if api_key != "not-needed" else base_url
        # retries are ours (bounded per item, Retry-After honoured), so the SDK's are off
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=self.timeout_s)

    def __repr__(self) -> str:  # never shows the key
        return f"Judge(preset={self.preset!r}, model={self.model!r}, max_concurrency={self.max_concurrency})"

    def estimate(self, conclusions: int, rows: list[dict]) -> dict:
        """What grading `conclusions` conclusions of `rows` (a sample of the run's rows) would cost at most: each row's
        requests (one against a reference; one, or one per criterion, against a rubric), their prompt tokens from
        the rendered requests (a conclusion as long as the screen lets through) at ~3.5 characters a token, and the
        replies at their caps (256 tokens for a verdict, 64 + 64 per criterion asked), at the preset's prices. An
        upper bound before training: the screened and the cached are never sent."""
        if self.preset == "rule" or not rows:
            return {"requests": 0, "tokens": 0, "usd": 0.0}
        per_row = []  # (requests, prompt characters, reply tokens) for one conclusion of the row
        for r in rows:
            question = r.get("question", "")
            if r.get("rubric"):
                conclusion = "x " * min(self.rubric_max_conclusion_tokens or 1024, 1024)
                texts = list(enumerate(c["text"] for c in r["rubric"]))
                groups = [texts] if self.rubric_batched else [[t] for t in texts]
                per_row.append((len(groups), sum(len(RUBRIC_SYSTEM_PROMPT) + len(rubric_message(question, conclusion, g))
                                                 for g in groups), sum(64 + 64 * len(g) for g in groups)))
            else:
                conclusion = "x " * min(self.max_conclusion_tokens or 256, 256)
                per_row.append((1, len(SYSTEM_PROMPT) + len(user_message(question, conclusion, r.get("reference", ""))), 256))
        share = conclusions / len(per_row)
        requests = round(share * sum(n for n, _, _ in per_row))
        prompt_tokens, out_tokens = share * sum(c for _, c, _ in per_row) / 3.5, share * sum(t for _, _, t in per_row)
        return {"requests": requests, "tokens": round(prompt_tokens + out_tokens),
                "usd": round((prompt_tokens * self._prices[0] + out_tokens * self._prices[1]) / 1e6, 2)}

    # one request -----------------------------------------------------------
    def _request(self, messages: list[dict], parse, deadline: float, max_tokens: int):
        remaining = deadline - time.monotonic()
        resp = self._client.chat.completions.create(
            model=self.model, temperature=0, max_tokens=max_tokens,
            messages=messages, timeout=max(0.5, min(self.timeout_s, remaining)),
        )
        usage = getattr(resp, "usage", None)
        if usage is not None:
            pin, pout = usage.prompt_tokens or 0, usage.completion_tokens or 0
            self.ledger.add(prompt_tokens=pin, completion_tokens=pout,
                            estimated_cost_usd=(pin * self._prices[0] + pout * self._prices[1]) / 1e6)
        return parse(resp.choices[0].message.content or "")

    def _wait_after(self, error: Exception, attempt: int) -> float | None:
        """Seconds to wait before retrying this error; None when it is not worth retrying."""
        o = self._openai
        backoff = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
        if isinstance(error, o.RateLimitError):
            header = error.response.headers.get("retry-after") if error.response is not None else None
            try:
                return max(0.0, float(header)) if header is not None else backoff
            except ValueError:
                return backoff
        if isinstance(error, (o.InternalServerError, o.APITimeoutError, o.APIConnectionError, ValueError)):
            return backoff
        if isinstance(error, o.APIStatusError) and error.status_code >= 500:
            return backoff
        return None  # 400, 401, 403, 404...: retrying will not help

    def _cached(self, key: str | None) -> Verdict | None:
        if key and (hit := self.cache.get(key)):
            self.ledger.add(cache_hits=1)
            return Verdict(**{**hit, "cached": True})
        return None

    def _grade_one(self, question: str, completion: str, reference: str, rubric: list[Criterion] | None = None) -> Verdict:
        """One completion against its reference, or against its rubric's criteria where it has one (the reference, where a
        rubric row has one too, RaR-Medicine's, only informs the screen: a single-answer question's hedges are stopped)."""
        answer = final_answer(completion)
        checks, limit = self.checks, self.max_conclusion_tokens
        if rubric is not None:  # an answer graded by criteria may run to paragraphs
            limit = self.rubric_max_conclusion_tokens
            if not reference:  # a conversation with no one answer (HealthBench's): naming conditions and alternatives
                checks = tuple(c for c in checks if c != "hedge")  # is the point there; its pitfalls grade the rest
        reason = screen(answer, question, reference, checks=checks, max_tokens=limit, count_tokens=self.count_tokens)
        if reason:  # 0 without a request (and without a cache entry: the screen is cheaper than a lookup)
            self.ledger.add_screened(reason)
            return Verdict(score=0.0, verdict="incorrect", rationale=f"screened: {reason}", final_answer=answer,
                           screened=reason)
        if not answer:
            return Verdict(score=0.0, verdict="incorrect", rationale="no final answer after </think>")
        # the rule judge is cheaper than a lookup, and a cached rule verdict would outlive a change to its rules
        against = reference if rubric is None else rubric_key(rubric, self.rubric_batched)
        key = VerdictCache.key(self.model, question, answer, against) if self.cache and self._client else None
        if cached := self._cached(key):
            return cached
        # one paid request per verdict, also when several processes (or threads) grade the same answer: the
        # first claims it, the others wait for its verdict in the cache
        claimed = bool(key) and self._client is not None
        while claimed and not self.cache.claim(key, self.item_budget_s):
            time.sleep(0.05)
            if cached := self._cached(key):
                return cached
        try:
            if claimed and (cached := self._cached(key)):  # graded while this one waited for the claim
                return cached
            if self._client is None and rubric is not None:
                met = rule_met(answer, rubric)
                result = Verdict(score=rubric_score(rubric, met), verdict="rubric", final_answer=answer, met=met,
                                 rationale=f"{sum(met)} of {len(met)} criteria met (by their terms)")
            elif self._client is None:
                verdict, score, why = rule_grade(answer, reference, question, ())  # screened above, as configured
                result = Verdict(score=score, verdict=verdict, rationale=why, final_answer=answer)
            elif rubric is not None:
                result = self._grade_rubric_remote(question, answer, rubric)
            else:
                result = self._grade_remote(question, answer, reference)
            if key and result.error is None:
                self.cache.put(key, {k: v for k, v in asdict(result).items() if k != "cached"})
            return result
        finally:
            if claimed:
                self.cache.release(key)

    def _ask(self, messages: list[dict], parse, max_tokens: int = 256) -> tuple[object, int, str | None]:
        """(what `parse` read from the reply, attempts, None), or (None, attempts, the error) once the retries or
        the item's time budget are spent; a refused key raises JudgeAccessError."""
        deadline = time.monotonic() + self.item_budget_s
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.ledger.add(retries=1)
            self.ledger.add(calls=1)
            try:
                return self._request(messages, parse, deadline, max_tokens), attempt + 1, None
            except (self._openai.AuthenticationError, self._openai.PermissionDeniedError) as e:
                raise JudgeAccessError(
                    f"the judge at {self._where} refused the request ({e.status_code}: "
                    f"{'the API key is missing, wrong or revoked' if e.status_code == 401 else 'this key may not use ' + repr(self.model)}"
                    f"): fix it before training; every completion would otherwise get the fallback's reward") from None
            except Exception as e:  # every other failure becomes a retry or a recorded error, never a crash
                last = e
                wait = self._wait_after(e, attempt)
                if wait is None or attempt == self.max_retries or time.monotonic() + wait >= deadline:
                    break
                time.sleep(wait)
        self.ledger.add(errors=1)
        return None, attempt + 1, f"{type(last).__name__}: {str(last)[:300]}"

    def _grade_remote(self, question: str, answer: str, reference: str) -> Verdict:
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user_message(question, answer, reference)}]
        parsed, attempts, error = self._ask(messages, parse_verdict)
        if error:
            return Verdict(score=None, verdict="error", error=error, final_answer=answer, attempts=attempts)
        verdict, score, why = parsed
        return Verdict(score=score, verdict=verdict, rationale=why, final_answer=answer, attempts=attempts)

    def _grade_rubric_remote(self, question: str, answer: str, criteria: list[Criterion]) -> Verdict:
        """Every criterion in one request (`batched`), or one request each (HealthBench's way); the score once
        every criterion has a verdict, else the error."""
        groups = [list(enumerate(criteria))] if self.rubric_batched else [[(i, c)] for i, c in enumerate(criteria)]
        met, attempts = {}, 0
        for group in groups:
            ids = [i for i, _ in group]
            messages = [{"role": "system", "content": RUBRIC_SYSTEM_PROMPT},
                        {"role": "user", "content": rubric_message(question, answer, [(i, c.text) for i, c in group])}]
            # a verdict and a sentence per criterion: the reply grows with the criteria asked, not with the prompt
            parsed, tries, error = self._ask(messages, lambda text, ids=ids: parse_criteria(text, ids),
                                             max_tokens=64 + 64 * len(group))
            attempts += tries
            if error:
                return Verdict(score=None, verdict="error", error=error, final_answer=answer, attempts=attempts)
            met |= parsed
        flags = [met[i] for i in range(len(criteria))]
        return Verdict(score=rubric_score(criteria, flags), verdict="rubric", final_answer=answer, attempts=attempts,
                       met=flags, rationale=f"{sum(flags)} of {len(flags)} criteria met")

    # a batch -------------------------------------------------------------
    def grade(self, questions: list[str], answers: list[str], references: list[str],
              rubrics: list[list[Criterion] | None] | None = None) -> list[Verdict]:
        """Verdicts in input order; `answers` are full completions (reasoning is stripped here). An item with a
        rubric (`rubrics[i]`, a list of criteria) is graded against it, its reference unused."""
        rubrics = rubrics if rubrics is not None else [None] * len(answers)
        if not len(questions) == len(answers) == len(references) == len(rubrics):
            raise ValueError(f"grade() needs equal lengths, got {len(questions)}, {len(answers)}, {len(references)}, "
                             f"{len(rubrics)}")
        if self._client is None or len(answers) <= 1:  # the rule judge: no requests, nothing to wait for
            return [self._grade_one(q, a, r, c) for q, a, r, c in zip(questions, answers, references, rubrics)]
        out = []
        with bar(len(answers), f"judging ({self.model})", unit="answer") as progress, \
                ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(answers))) as pool:
            for verdict in pool.map(self._grade_one, questions, answers, references, rubrics):
                out.append(verdict)
                ledger = self.ledger.as_dict()
                progress.set_postfix(requests=ledger["calls"], cached=ledger["cache_hits"], retries=ledger["retries"],
                                     screened=sum(ledger["screened"].values()), refresh=False)
                progress.update()
        return out
