import json
import subprocess
import sys

import pytest

from kit.evaluate import score_mcq
from kit.formatting import extract_choice
from kit.stats import proportion, wilson
from kit.runs import stage_dir
from child import failure


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
    (c("所以答案是 (C)。"), "C"),                                # MMLU-ProX zh's own form
    (c("正确答案为：（B）"), "B"),                               # full-width parenthesis
    (c("答案：A项"), "A"),                                      # a Chinese character right after the letter
    (c('{"answer": "C"}'), "C"),                               # the card's JSON form
    (c("After weighing everything:\nC"), "C"),                 # a lone letter on the last line
    (c("(A)"), "A"),
    (c("The answer is A. On reflection, the answer is B."), "B"),  # the last statement wins
    (c("The answer is A or B."), None),                        # several letters: not a commitment
    (c("I am not sure."), None),                               # none
    (c("Nephrotic syndrome."), None),                          # no letter at all
    (c("The answer is E."), None),                             # not an option of this item
    ("The answer is A, clearly.\n</think>\n\n", None),         # a letter inside the reasoning is ignored
    ("still reasoning, the answer is C", None),                # cut off before </think>: no conclusion yet
    ("<think>\nThe answer is D.", None),                       # an unclosed reasoning block
])
def test_extract_choice_table(completion, expected):
    assert extract_choice(completion, "ABCD") == expected


def test_with_thinking_off_the_whole_completion_is_the_answer():
    assert extract_choice("the answer is C", "ABCD", thinking=False) == "C"


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


# ---------------------------------------------------------------- known answers through the whole stage

def _stub_generators(answer):
    """A backend that answers every prompt with `answer(gold, options)` after a closed reasoning block."""
    from kit import evaluate
    from kit.generation import Completion

    class Stub:
        engine, why = "stub", "a test backend"

        def __init__(self, recipe):
            from kit.generation import prompt_texts
            from kit.modeling import load_tokenizer

            items = [it for its in evaluate.load_items(recipe).values() for it in its]
            texts = prompt_texts(load_tokenizer(recipe), [it["prompt"] for it in items])
            self.gold = {t: it for t, it in zip(texts, items)}
            self.batch = recipe.eval.batch_size

        def request_size(self, name, path):
            return self.batch  # as on the hf engine

        def __call__(self, name, path, prompts, sampling):
            outs = []
            for p in prompts:
                it = self.gold[p]
                # a rubric item's "reference": the first words that satisfy each positive criterion (the rule grader's)
                said = answer(it.get("gold"), it.get("options"), it.get("reference") or " ".join(
                    c["terms"][0] for c in it.get("rubric") or [] if c["points"] > 0))
                outs.append([Completion(f"Reasoning.\n</think>\n\n{said}<|im_end|>", 12, False)] * sampling.n)
            return outs, "stub"

        def close(self):
            pass

    return Stub


@pytest.fixture
def data_only(runs_dir):
    from kit import data
    from kit.recipe import load_recipe

    recipe = load_recipe("tiny", ["eval.max_items=6", "eval.budgets=[]"])
    data.run(recipe)
    return recipe


# the tiny recipe's tasks and their bundled items
TINY_TASKS = {"medqa": 40, "mmlu_pro_biology": 6, "mmlu_pro_health": 6, "mmlu_prox_en_biology": 4,
              "mmlu_prox_en_health": 4, "medmcqa": 5, "pubmedqa": 4, "mmlu_prox_zh_biology": 4, "mmlu_prox_zh_health": 4,
              "cmmlu_clinical_knowledge": 4, "cmmlu_traditional_chinese_medicine": 4, "cmmlu_professional_medicine": 4,
              "ceval-valid_physician": 4, "ceval-valid_basic_medicine": 4, "ceval-valid_clinical_medicine": 4}
RUBRIC_TASKS = {"healthbench": 12, "healthbench_zh": 4}  # the bundled HealthBench sample, scored its way


def _eval_with(monkeypatch, recipe, answer):
    from kit import evaluate

    monkeypatch.setattr(evaluate, "Generators", _stub_generators(answer))
    return evaluate.run(recipe)


def test_a_backend_that_answers_the_gold_letter_scores_one(data_only, monkeypatch):
    m = _eval_with(monkeypatch, data_only, lambda gold, options, ref: f"The answer is {gold}." if gold else ref)
    tasks = m["results"]["base"]["tasks"]
    assert set(tasks) == set(TINY_TASKS) | set(RUBRIC_TASKS) | {"open"}
    for task, f in tasks.items():
        assert f["accuracy"]["value"] == 1.0 and f["accuracy"]["n"] == min(6, {**TINY_TASKS, **RUBRIC_TASKS}.get(task, 40)), task
        if task in TINY_TASKS:
            assert f["unparseable"]["value"] == 0.0
    # lm-eval's filter reads the same conclusions ("The answer is X" is what custom-extract looks for in English)
    assert tasks["mmlu_prox_en_health"]["harness"]["agreement"]["value"] == 1.0
    # its log-likelihood protocol scores the random-weight model itself: a letter for every item
    loglik = tasks["cmmlu_clinical_knowledge"]["harness"]
    assert loglik["protocol"].startswith("log-likelihood") and loglik["accuracy"]["n"] == 4
    table = (stage_dir(data_only, "eval") / "results.md").read_text()
    assert "|medqa|kit-1|after-think-extract|0|exact_match|↑|1.0000|±|0.0000|" in table
    assert "| - medmcqa|lm-eval|loglikelihood|0|acc|" in table
    assert table.index("## English tasks") < table.index("HuatuoGPT-o1-8B (SFT + RL) | pubmedqa") < table.index("## Chinese tasks")
    assert "Reasoning-Medical-27B" in table


def test_a_backend_that_always_answers_a_wrong_letter_scores_zero(data_only, monkeypatch):
    data_only.eval.loglikelihood = False

    def wrong(gold, options, ref):
        return f"The answer is {next(k for k in options if k != gold)}." if gold else "Something unrelated."
    m = _eval_with(monkeypatch, data_only, wrong)
    for task, f in m["results"]["base"]["tasks"].items():
        assert f["accuracy"]["value"] == 0.0, task


def test_a_backend_that_never_commits_is_all_unparseable(data_only, monkeypatch):
    data_only.eval.loglikelihood = False
    m = _eval_with(monkeypatch, data_only, lambda gold, options, ref: "It could be several things.")
    for task in TINY_TASKS:
        f = m["results"]["base"]["tasks"][task]
        assert f["accuracy"]["value"] == 0.0 and f["unparseable"]["value"] == 1.0


def test_budget_forcing_closes_the_thinking_where_the_model_did_not_and_reads_the_answer_after_it(data_only, monkeypatch):
    """A stub model that needs 40 tokens of thinking to be right. Cut off before, the kit closes its thinking
    and it answers wrong; with room, it closes the thinking itself and answers right."""
    from kit import evaluate
    from kit.generation import Completion

    need = 40
    stub = _stub_generators(lambda gold, options, ref: f"The answer is {gold}." if gold else ref)

    class Thinker(stub):
        def __call__(self, name, path, prompts, s):
            if all(p in self.gold for p in prompts) and s.max_new_tokens != data_only.eval.budget_answer_tokens:
                n = min(need, s.max_new_tokens)
                closed = "</think>\n\nThe answer is A." if s.max_new_tokens >= need else ""
                return [[Completion("step " * n + closed, n, not closed)] for _ in prompts], "stub"
            outs = []
            for p in prompts:  # the answer, after the thinking the kit closed or the model did
                it = self.gold[next(q for q in self.gold if p.startswith(q))]
                letter = it["gold"] if p.count("step") >= need else next(k for k in it["options"] if k != it["gold"])
                outs.append([Completion(f"The answer is {letter}.<|im_end|>", 6, False)])
            return outs, "stub"

    data_only.eval.loglikelihood = False
    data_only.eval.budgets, data_only.eval.budget_items = [48, 16], 2
    monkeypatch.setattr(evaluate, "Generators", Thinker)
    m = evaluate.run(data_only)
    short, long = m["budgets"]["curve"]
    assert (short["budget"], long["budget"]) == (16, 48) and m["budgets"]["items"] == 2 * len(TINY_TASKS)
    assert short["forced_close"]["value"] == 1.0 and short["accuracy"]["value"] == 0.0
    assert long["forced_close"]["value"] == 0.0 and long["accuracy"]["value"] == 1.0
    assert (stage_dir(data_only, "eval") / "budget.png").exists()


def test_an_eval_killed_halfway_and_rerun_makes_only_what_it_had_not_finished(data_only, monkeypatch):
    """The stub stands for the engine; "killed" is an exception out of its fifth request, as a timed-out session would
    leave it. A system's tasks go to the engine end to end in full batches (`eval.batch_size` prompts a request,
    whatever each task's size); a task is kept once its last prompt is made, and the rerun makes the prompts of the
    tasks that were not kept, and no others."""
    from kit import evaluate

    data_only.eval.loglikelihood = False
    stub = _stub_generators(lambda gold, options, ref: f"The answer is {gold}." if gold else ref)
    made, kill_at = [], [5]

    class Killed(stub):
        def __call__(self, name, path, prompts, sampling):
            if len(made) == kill_at[0]:
                raise KeyboardInterrupt("session timed out")
            made.append(len(prompts))
            return super().__call__(name, path, prompts, sampling)

    monkeypatch.setattr(evaluate, "Generators", Killed)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(data_only)
    batch = data_only.eval.batch_size
    assert made == [batch] * 5  # full batches, though most tasks here have 6 items or fewer
    partial = stage_dir(data_only, "eval") / "partial" / "base"
    kept = sum(len(f.read_text().splitlines()) - 1 for f in partial.glob("*.jsonl"))  # a stamp, then a line an item
    assert 5 * batch - 6 < kept <= 5 * batch  # every task whose last prompt was made, at most one task's part lost
    made[:], kill_at[0] = [], 10**6
    m = evaluate.run(data_only)
    counts = {**TINY_TASKS, **RUBRIC_TASKS}
    total = sum(min(6, counts.get(task, 40)) for task in [*counts, "open"])
    assert sum(made) == total - kept  # the tasks not kept, each prompt once
    assert all(n == batch for n in made[:-1]) and 0 < made[-1] <= batch
    assert all(f["accuracy"]["value"] == 1.0 for f in m["results"]["base"]["tasks"].values())
    assert not partial.exists()  # finished: nothing left to resume, so an eval run again makes everything again


# ---------------------------------------------------------------- paired comparisons

def test_mcnemar_on_discordant_items():
    from kit.stats import paired_test

    r = paired_test([[False]] * 20, [[True]] * 12 + [[False]] * 8)
    assert r["discordant"] == [0, 12] and r["p_value"] == round(2 * 0.5 ** 12, 4)
    same = paired_test([[True], [False]] * 10, [[True], [False]] * 10)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    balanced = paired_test([[True]] * 5 + [[False]] * 5, [[False]] * 5 + [[True]] * 5)
    assert balanced["difference"] == 0 and balanced["p_value"] == 1.0


def test_sampled_accuracy_is_compared_with_a_paired_permutation_test():
    from kit.stats import paired_test

    better = paired_test([[True, False, False, False]] * 30, [[True, True, True, False]] * 30)
    assert better["test"].startswith("paired permutation") and better["difference"] == 0.5
    assert better["p_value"] < 0.001 and better["ci95"] == [0.5, 0.5]
    noise = paired_test([[True, False]] * 15 + [[False, False]] * 15, [[False, False]] * 15 + [[True, False]] * 15)
    assert noise["difference"] == 0 and noise["p_value"] > 0.5


def test_the_summary_claims_a_difference_only_when_the_test_holds():
    from kit.reports import comparison_line

    assert comparison_line({"from": "sft", "to": "rl", "task": "medqa", "difference": 0.05, "p_value": 0.03,
                            "test": "McNemar exact"}) == "SFT → RL on medqa: +5.0 points (p = 0.03, McNemar exact)"
    assert "no significant difference" in comparison_line(
        {"from": "sft", "to": "rl", "task": "medqa", "difference": 0.05, "p_value": 0.2, "test": "McNemar exact"})


# ---------------------------------------------------------------- the tiny recipe, end to end

@pytest.mark.slow
def test_eval_of_the_tiny_recipe_reads_letters_after_sft(export_metrics, shared_runs):
    proc = subprocess.run([sys.executable, "-m", "kit", "eval", "--recipe", "tiny", "--set", "eval.max_items=8"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, failure(proc)
    out = shared_runs / "tiny" / "eval"
    results = json.loads((out / "metrics.json").read_text())
    systems = results["results"]
    assert {"base", "sft", "gguf-q4_k_m"} <= set(systems)  # rl too when the RL test ran first
    assert results["items"] == {t: min(8, n) for t, n in {**TINY_TASKS, **RUBRIC_TASKS}.items()} | {"open": 8}
    assert results["languages"]["ceval-valid_physician"] == "zh" and results["languages"]["pubmedqa"] == "en"
    # the toy, taught to end multiple-choice answers with "The answer is X", commits to letters
    assert systems["sft"]["tasks"]["medqa"]["unparseable"]["value"] <= 0.5, systems["sft"]["tasks"]["medqa"]
    assert systems["base"]["tasks"]["medqa"]["unparseable"]["value"] == 1.0  # random weights commit to nothing
    outputs = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert any(o["pick"] for o in outputs if o["system"] == "sft")
    assert len(outputs) == sum(results["items"].values()) * len(systems)
    pairs = {(c["from"], c["to"], c["task"]) for c in results["comparisons"]}
    names = list(systems)
    assert {(a, b, "medqa") for a, b in zip(names, names[1:])} <= pairs and ("base", "sft", "open") in pairs
    table = (out / "results.md").read_text()
    assert "|Tasks|Version|Filter|n-shot|Metric|" in table and "Published (theirs, not this run" in table
    assert (out / "accuracy.png").stat().st_size > 5000
    # HealthBench's sample scored its way, per theme and axis, compared by a paired test of the per-item scores; and
    # how far the judge agrees with physicians' labels
    hb = systems["sft"]["tasks"]["healthbench"]
    assert hb["accuracy"]["n"] == 8 and "theme:emergency_referrals" in hb["by_tag"] and "axis:accuracy" in hb["by_tag"]
    assert next(c for c in results["comparisons"] if c["task"] == "healthbench")["test"].startswith("paired permutation")
    assert "## Rubric tasks (HealthBench's score)" in table and "|healthbench|kit-1|judge|0|rubric_score|" in table
    assert results["judge_agreement"]["judge"]["macro_f1"] > 0.5 and "How far to trust the rubric judge" in table
    # the thinking budget: forced closes fall as the budget grows, and the plot is written
    curve = results["budgets"]["curve"]
    assert [b["budget"] for b in curve] == [16, 48, 128] and curve[0]["forced_close"]["value"] >= 0.9  # a rare early close
    assert curve[-1]["forced_close"]["value"] < curve[0]["forced_close"]["value"]
    assert "## Accuracy against the thinking budget" in table and (out / "budget.png").stat().st_size > 5000
