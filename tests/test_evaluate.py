import json
import subprocess
import sys

import pytest

from kit.evaluate import extract_choice, proportion, score_mcq, wilson


def c(answer, reasoning="Option A looks wrong; B and D are distractors."):
    return f"{reasoning}\n</think>\n\n{answer}<|im_end|>"


@pytest.mark.parametrize("completion, expected", [
    (c("The answer is C."), "C"),
    (c("the answer is (b)"), "B"),
    (c("Answer: D"), "D"),
    (c("So the final answer is \\boxed{A}."), "A"),
    (c("答案是B。"), "B"),
    (c("正确答案：C"), "C"),
    (c("故选D"), "D"),
    (c("After weighing everything:\nC"), "C"),                 # a lone letter on the last line
    (c("(A)"), "A"),
    (c("The answer is A. On reflection, the answer is B."), "B"),  # the last statement wins
    (c("The answer is A or B."), None),                        # several letters: not a commitment
    (c("I am not sure."), None),                               # none
    (c("Nephrotic syndrome."), None),                          # no letter at all
    (c("The answer is E."), None),                             # not an option of this item
    ("The answer is A, clearly.\n</think>\n\n", None),         # a letter inside the reasoning is ignored
    ("still reasoning, the answer is C", "C"),                 # no think block at all (thinking off)
])
def test_extract_choice_table(completion, expected):
    assert extract_choice(completion, "ABCD") == expected


def test_ten_option_letters():
    assert extract_choice(c("The answer is J"), "ABCDEFGHIJ") == "J"


def test_accuracy_and_intervals_on_hand_made_predictions():
    items = [{"options": {"A": "x", "B": "y", "C": "z", "D": "w"}, "gold": g} for g in "ABCDABCDAB"]
    outs = [c(f"The answer is {g}") for g in "ABCDABCD"] + [c("The answer is C"), c("no idea")]
    s = score_mcq(items, [[o] for o in outs])
    assert s["accuracy"]["value"] == 0.8 and s["accuracy"]["n"] == 10 and s["accuracy"]["samples"] == 1
    assert s["unparseable"]["value"] == 0.1
    assert s["accuracy"]["ci95"] == [0.4902, 0.9433]
    low, high = wilson(0, 40)
    assert low == 0.0 and 0.08 < high < 0.09
    assert proportion(0, 0)["value"] is None


def test_accuracy_over_several_samples_per_item_is_the_mean_of_item_means():
    items = [{"options": {"A": "x", "B": "y"}, "gold": g} for g in "AB"]
    outs = [[c("The answer is A"), c("The answer is B"), c("The answer is A"), c("?")],  # 2 of 4 right
            [c("The answer is B")] * 4]                                                  # 4 of 4 right
    s = score_mcq(items, outs)
    assert s["accuracy"]["value"] == 0.75 and s["accuracy"]["n"] == 2 and s["accuracy"]["samples"] == 4
    assert s["unparseable"]["value"] == 0.125
    lo, hi = s["accuracy"]["ci95"]
    assert lo < 0.75 < hi  # the interval is over the 2 items, not the 8 completions


@pytest.mark.slow
def test_eval_of_the_tiny_recipe_writes_table_and_plot(export_metrics, shared_runs):
    proc = subprocess.run([sys.executable, "-m", "kit", "eval", "--recipe", "tiny", "--set", "eval.max_items=8",
                           "--set", "eval.max_new_tokens=48"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = shared_runs / "tiny" / "eval"
    results = json.loads((out / "results.json").read_text())
    systems = set(results["results"])
    assert {"base", "sft", "gguf-q4_k_m"} <= systems
    for r in results["results"].values():
        assert r["mcq_accuracy"]["n"] == 8 and 0 <= r["mcq_accuracy"]["value"] <= 1
        lo, hi = r["mcq_accuracy"]["ci95"]
        assert lo <= r["mcq_accuracy"]["value"] <= hi
        assert r["judged_accuracy"]["n"] + r["judge_errors"] == 8
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in systems) and "Wilson" in table
    assert (out / "accuracy.png").stat().st_size > 5000
    assert len((out / "outputs.jsonl").read_text().splitlines()) == 8 * len(systems)
