"""The output format: a reasoning block closed by `</think>`, then a concise final answer.

With thinking on, Qwen3.5's generation prompt ends in `<think>\\n`, so a completion starts INSIDE
the reasoning block and holds only the closing tag; a completion that repeats the opening tag is
accepted too. Everything here handles both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
END_TOKENS = ("<|im_end|>", "<|endoftext|>")
LETTERS = "ABCDEFGHIJ"  # multiple-choice options, in order (MMLU-Pro has up to ten)


@dataclass
class Parsed:
    reasoning: str
    answer: str
    closed: bool  # exactly one </think> was found
    finished: bool  # the completion ended with an end-of-turn token (not cut off)

    @property
    def well_formed(self) -> bool:
        """Strict: one `</think>`, non-empty reasoning before it, non-empty answer after it."""
        return self.closed and bool(self.reasoning) and bool(self.answer) and THINK_OPEN not in self.answer


def parse(text: str) -> Parsed:
    """Split a completion into reasoning and final answer.

    >>> p = parse("Chest pain, ST elevation.\\n</think>\\n\\nInferior STEMI.<|im_end|>")
    >>> (p.reasoning, p.answer, p.well_formed, p.finished)
    ('Chest pain, ST elevation.', 'Inferior STEMI.', True, True)
    >>> parse("<think>\\n推理\\n</think>\\n\\n格雷夫斯病。").answer
    '格雷夫斯病。'
    >>> parse("no tags at all").well_formed
    False
    """
    finished = text.rstrip().endswith(END_TOKENS)
    for tok in END_TOKENS:
        text = text.replace(tok, "")
    closed = text.count(THINK_CLOSE) == 1
    if THINK_CLOSE in text:
        reasoning, answer = text.rsplit(THINK_CLOSE, 1)
    else:
        reasoning, answer = text, ""
    reasoning = reasoning.split(THINK_OPEN, 1)[-1] if reasoning.lstrip().startswith(THINK_OPEN) else reasoning
    return Parsed(reasoning.strip(), answer.strip(), closed, finished)


def opens_thinking(tokenizer) -> bool:
    """Whether the chat template's generation prompt opens the reasoning block (`<think>`), as Qwen3.5/3.6's
    do with thinking on; a template without a thinking switch (SmolLM2's) leaves `<think>` to the model."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "?"}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=True)
    return prompt.rstrip().endswith(THINK_OPEN)


def split_reasoning(text: str, thinking: bool) -> tuple[str | None, str]:
    """(reasoning, answer) of a completion whose prompt opened the thinking block, split where `parse` splits
    it (at the last `</think>`), so that the demo shows the answer the eval reads; with thinking off, the
    whole text is the answer.

    >>> split_reasoning("a </think> b </think> c", thinking=True)
    ('a </think> b', 'c')
    >>> split_reasoning("<think>still thinking", thinking=True)
    ('still thinking', '')
    """
    if not thinking:
        return None, text.strip()
    p = parse(text)
    return p.reasoning.replace(THINK_OPEN, "").strip(), p.answer


def join_reasoning(reasoning: str, answer: str, opened: bool = True) -> str:
    """A completion from its reasoning and its answer, as the model writes it: after a prompt that opened the
    block (`opened`), the reasoning, `</think>`, the answer; otherwise with `<think>` first (an SFT target).

    >>> join_reasoning("Opioid toxidrome.", "Naloxone.", opened=False)
    '<think>\\nOpioid toxidrome.\\n</think>\\n\\nNaloxone.'
    """
    text = f"{reasoning}\n{THINK_CLOSE}\n\n{answer}"
    return text if opened else f"{THINK_OPEN}\n{text}"


def final_answer(text: str) -> str:
    """The text after the last `</think>` (the whole text when there is none), end tokens removed.

    >>> final_answer("long reasoning </think>\\n\\nThe answer is B.<|im_end|>")
    'The answer is B.'
    """
    p = parse(text)
    return p.answer if THINK_CLOSE in text else p.reasoning  # with no `</think>`, `parse` calls it all reasoning


# Explicit answer statements, in English and Chinese. Only the text after </think> is searched.
# A letter ends where no other Latin letter follows: `\b` would miss "答案是C项" (项 is a word character).
_END = r"(?![A-Za-z])"
_EXPLICIT = [
    r"answer\s*(?:is|:)\s*(?:option\s*)?\(?\**([A-J])\b\)?",
    r"\\boxed\{\s*\(?([A-J])\)?\s*\}",
    r"[\"']answer[\"']\s*:\s*[\"']\(?([A-J])\)?[\"']",  # the JSON form: {"answer": "C"}
    r"(?:答案|正确答案|正确选项|选项)\s*(?:应该|应)?\s*(?:(?:是|为)\s*[：:]?|[：:])\s*[\(（]?\s*([A-J])" + _END,
    r"(?:答案|故选|应选|选择|选)\s*[\(（]?([A-J])" + _END,
]
_AMBIGUOUS = re.compile(r"answer\s*(?:is|:)\s*\(?[A-J]\)?\s*(?:or|and|/|,)\s*\(?[A-J]\b", re.I)
_LONE = re.compile(r"^\s*\(?\**([A-J])\**\)?[.:)]?\s*$")


def extract_choice(completion: str, letters: str = "ABCD", thinking: bool = True) -> str | None:
    """The option letter a completion commits to, or None when it commits to none or to several. With
    thinking on, only a conclusion counts: a completion cut off before `</think>` has none.

    >>> extract_choice("A is tempting but...\\n</think>\\n\\nThe answer is C.")
    'C'
    >>> extract_choice("I think B\\n</think>\\n\\nNot sure.") is None
    True
    >>> extract_choice("So the answer is B, but let me check A") is None
    True
    >>> extract_choice("<think>\\nB fits, so the answer is B", thinking=False) is None  # opened, never closed
    True
    >>> [extract_choice("…</think>\\n\\n" + t) for t in ("答案是 (C)", "故选D。", "正确答案为：（B）", "答案：A项", '{"answer": "C"}')]
    ['C', 'D', 'B', 'A', 'C']
    """
    if (thinking or THINK_OPEN in completion) and THINK_CLOSE not in completion:
        return None
    text = final_answer(completion)
    if _AMBIGUOUS.search(text):
        return None
    found = []
    for pattern in _EXPLICIT:
        found += [(m.start(), m.group(1).upper()) for m in re.finditer(pattern, text, flags=re.I)]
    found = [(pos, letter) for pos, letter in found if letter in letters]
    if found:
        return max(found)[1]  # the last statement wins ("…, so the answer is B")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and (m := _LONE.match(lines[-1])) and m.group(1).upper() in letters:
        return m.group(1).upper()
    return None


def strictly_well_formed(text: str) -> bool:
    """Well formed AND ended by the model (an end-of-turn token), not cut off by a token limit."""
    p = parse(text)
    return p.well_formed and p.finished


def adherence(completions: list[str]) -> float:
    return sum(map(strictly_well_formed, completions)) / max(1, len(completions))




MCQ_INSTRUCTION = "Answer with the letter of the correct option, in the form \"The answer is X\"."


# Text the output format or the chat template gives a meaning to. Inside a question, a reasoning or an
# answer it would teach a broken format (two `</think>`), or end a turn early (the data stage drops such rows).
CONTROL_STRINGS = (THINK_OPEN, THINK_CLOSE, "<|im_start|>", *END_TOKENS)
