"""The judge of the final conclusion, one file a job:

- `client`: the Judge (presets, the OpenAI-compatible client, retries inside a per-item budget, the grading of a
  batch), against a reference or a rubric;
- `prompts`: what the judge is told and how its reply is read (verdicts, rubric criteria), the probe set;
- `rubric`: rubric rows in RaR-Medicine's and HealthBench's schemas, the score, the offline rule grader;
- `rules`: the offline rule judge against a reference;
- `cache`: the SQLite verdict cache; `ledger`: what a grading returned and what the judge has spent.

The screen in front of it is kit/screen.py. Everything a stage uses is importable from `kit.judge`.

    judge = Judge("deepseek")                      # DEEPSEEK_API_KEY from the environment
    verdicts = judge.grade(questions, completions, references)            # against references
    verdicts = judge.grade(questions, completions, references, rubrics)   # rows with a rubric against it
"""

from ..screen import SCREENS
from .cache import VerdictCache
from .client import PRESETS, Judge, JudgeAccessError, JudgeConfigError, concurrency_share
from .ledger import Ledger, Verdict
from .prompts import (DEFAULT_SCORE, PROMPT_VERSION, RUBRIC_SYSTEM_PROMPT, SYSTEM_PROMPT, VERDICTS, parse_criteria,
                      parse_verdict, probes, rubric_message, user_message)
from .rubric import Criterion, RubricError, is_rubric_row, read_rubric, rule_met, score as rubric_score
from .rules import DETAIL_WORDS, rivals, rule_grade

__all__ = ["SCREENS", "VerdictCache", "PRESETS", "Judge", "JudgeAccessError", "JudgeConfigError", "concurrency_share",
           "Ledger", "Verdict", "DEFAULT_SCORE", "PROMPT_VERSION", "RUBRIC_SYSTEM_PROMPT", "SYSTEM_PROMPT", "VERDICTS",
           "parse_criteria", "parse_verdict", "probes", "rubric_message", "user_message", "Criterion", "RubricError",
           "is_rubric_row", "read_rubric", "rule_met", "rubric_score", "DETAIL_WORDS", "rivals", "rule_grade"]
