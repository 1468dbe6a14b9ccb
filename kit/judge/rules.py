"""The offline rule judge: grades a conclusion against the reference by its words, with the same screen."""

from __future__ import annotations

import re

from ..formatting import LETTERS, extract_choice
from ..screen import SCREENS, hedges, norm, screen, tokens


# Words that open a clause adding detail to the answer (a dose, a side, a qualifier, a next step), not a rival
DETAIL_WORDS = set(
    "likely probably possibly most mostly usually typically often with without due secondary from in on of at to by "
    "if until then followed repeat repeated recheck monitor give start stop hold continue admit maximum max minimum "
    "min daily twice once every over for left right bilateral upper lower proximal distal side mild moderate severe "
    "acute chronic early late grade stage type class which who that".split())


def rivals(answer: str, reference: str) -> list[str]:
    """The items of a list-shaped conclusion that name another candidate, not a detail of the answer: items that
    share no word with the reference, hold no number, and do not open with a detail word.

    >>> rivals("Naloxone, flumazenil, atropine", "Naloxone"), rivals("Acute appendicitis, likely retrocecal", "Acute appendicitis")
    (['flumazenil', 'atropine'], [])
    >>> rivals("Naloxone, 0.4 mg IV", "Naloxone"), rivals("纳洛酮、氟马西尼", "纳洛酮")
    ([], ['氟马西尼'])
    """
    items = [norm(i) for i in re.split(r"[,;，；、\n]|(?:^|\s)(?:[-*•]|\d+[.)])\s", answer) if i and norm(i)]
    if len(items) < 2:
        return []
    ref = set(tokens(reference))
    out = []
    for item in items:
        words = tokens(item)
        if set(words) & ref or re.search(r"\d", item) or not words or words[0] in DETAIL_WORDS \
                or len(words) > 4 and not re.search(r"[\u4e00-\u9fff]", item):
            continue
        out.append(item)
    return out


def rule_grade(answer: str, reference: str, question: str = "", checks=SCREENS) -> tuple[str, float, str]:
    """The screen, then a normalised exact / option-letter / containment / token-overlap match. A list that
    names the reference among rival candidates is a hedge (`rivals`), so containment never pays for a list;
    a list that adds detail to the answer is graded as the answer.

    >>> rule_grade("Naloxone.", "naloxone")[:2]
    ('correct', 1.0)
    >>> rule_grade("The answer is B", "B")[:2]
    ('correct', 1.0)
    >>> rule_grade("Give IV naloxone now", "Naloxone")[:2]
    ('correct', 1.0)
    >>> rule_grade("Flumazenil", "Naloxone")[:2]
    ('incorrect', 0.0)
    >>> rule_grade("Flumazenil, naloxone, atropine", "Naloxone")
    ('incorrect', 0.0, 'a list of candidates: flumazenil, atropine beside the reference')
    >>> rule_grade("Naloxone, 0.4 mg IV, repeated as needed", "Naloxone")[:2]
    ('correct', 1.0)
    """
    if reason := screen(answer, question, reference, checks=checks, max_tokens=None):
        return "incorrect", 0.0, f"screened: {reason}"
    if hedges(answer, reference):  # its own grading, whichever screen checks are on
        return "incorrect", 0.0, "alternatives offered"
    if others := rivals(answer, reference):
        return "incorrect", 0.0, f"a list of candidates: {', '.join(others)} beside the reference"
    a, r = norm(answer), norm(reference)
    if not a:
        return "incorrect", 0.0, "empty answer"
    if a == r:
        return "correct", 1.0, "exact match"
    if re.fullmatch(r"[A-Ja-j]", reference.strip()):
        letter = extract_choice(answer, LETTERS, thinking=False)  # the conclusion alone
        ok = letter == reference.strip().upper()
        return ("correct", 1.0, "option letter matches") if ok else ("incorrect", 0.0, f"option {letter}")
    cjk = re.search(r"[\u4e00-\u9fff]", r) is not None  # no spaces between words: plain containment
    if r and (r in a if cjk else f" {r} " in f" {a} "):
        return "correct", 1.0, "reference contained in answer"
    ta, tr = tokens(answer), tokens(reference)
    common = sum(min(ta.count(t), tr.count(t)) for t in set(tr))
    if not common:
        return "incorrect", 0.0, "no overlap"
    precision, recall = common / len(ta), common / len(tr)
    f1 = 2 * precision * recall / (precision + recall)
    if f1 >= 0.5:
        return "partially_correct", round(f1, 3), f"token overlap F1 {f1:.2f}"
    return "incorrect", 0.0, f"token overlap F1 {f1:.2f}"


