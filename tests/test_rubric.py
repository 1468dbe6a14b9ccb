"""Rubric rewards: rows read in RaR-Medicine's and HealthBench's schemas, HealthBench's score, the rubric judge's
requests (batched or one criterion at a time) against a scripted server, its cache and ledger, and RL mixing
reference-graded and rubric-graded rows offline."""

import json
import subprocess
import sys

import pytest

from child import failure
from fake_openai import FakeOpenAI
from kit.judge import Criterion, Judge, RubricError, read_rubric, rubric_score
from kit.runs import SAMPLES_DIR


def rows(name):
    return [json.loads(line) for line in (SAMPLES_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_both_schemas_are_read_with_their_own_field_names():
    question, criteria, tags = read_rubric(rows("rar_medicine")[0], "rar_medicine.jsonl row 1")
    assert question.startswith("A 30-year-old") and criteria[0].text == "Names naloxone as the treatment."
    assert [c.points for c in criteria] == [5, 3, 1, -4] and criteria[-1].pitfall and criteria[0].tags == ("Essential Criteria",)
    question, criteria, tags = read_rubric(rows("healthbench")[0], "healthbench.jsonl row 1")
    assert question.startswith("user: My father") and "axis:completeness" in criteria[0].tags
    assert tags["example_tags"][0] == "theme:emergency_referrals" and tags["prompt_id"] == "kit-hb-001"
    assert any("右下腹痛" in read_rubric(r, "x")[0] for r in rows("rar_medicine"))  # Chinese rows too


@pytest.mark.parametrize("change, message", [
    (lambda r: r["rubric"].__setitem__(slice(None), [c | {"weight": -1} for c in r["rubric"]]), "no criterion with positive points"),
    (lambda r: r["rubric"][1].__setitem__("weight", "three"), "criterion 1 .* has points 'three', not a number"),
    (lambda r: r["rubric"][0].__setitem__("description", "  "), "criterion 0 has no text"),
])
def test_a_rubric_that_cannot_be_graded_is_an_error_naming_its_file_and_row(tmp_path, runs_dir, change, message):
    from kit import data
    from kit.recipe import load_recipe

    bad = rows("rar_medicine")
    change(bad[1])
    path = tmp_path / "rubrics.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bad), encoding="utf-8")
    recipe = load_recipe("tiny", [f"data.rl=[{{path: '{path}', schema: rubric}}]", "data.sft=[]"])
    with pytest.raises(RubricError, match=rf"rubrics.jsonl row 2: {message}"):
        data.run(recipe)


def test_the_score_is_healthbench_s_met_points_over_positive_points_clipped():
    cs = [Criterion("a", 5), Criterion("b", 3), Criterion("pitfall", -4)]
    assert rubric_score(cs, [True, True, False]) == 1.0
    assert rubric_score(cs, [False, True, True]) == 0.0  # (3 - 4) / 8, clipped
    assert rubric_score(cs, [False, True, True], clip=False) == -0.125
    assert rubric_score(cs, [True, False, True]) == 0.125


RUBRIC = [Criterion("Names naloxone as the antidote", 5), Criterion("Gives an intravenous route", 3),
          Criterion("Recommends flumazenil", -4)]


@pytest.mark.parametrize("batched", [True, False])
def test_the_rubric_judge_s_requests_cache_and_ledger(tmp_path, batched):
    completions = ["x\n</think>\n\nNaloxone, intravenous.", "x\n</think>\n\nNaloxone or flumazenil.",
                   "x\n</think>\n\nFlumazenil.", "x\n</think>\n\nThought process:"]
    with FakeOpenAI() as server:
        judge = Judge("openai-compatible", base_url=server.url, model="m", cache_path=tmp_path / "c.sqlite")
        judge.rubric_batched = batched
        verdicts = judge.grade(["Antidote?"] * 4, completions, ["Naloxone"] * 4, [RUBRIC] * 4)
        assert [v.score for v in verdicts] == [1.0, 0.0, 0.0, 0.0]
        assert verdicts[0].met == [True, True, False] and verdicts[2].met == [False, False, True]
        assert [v.screened for v in verdicts] == [None, "hedge", None, "no_content"]  # the screen first, as ever
        assert server.requests == (2 if batched else 6)  # 2 conclusions sent: 1 request each, or 1 per criterion
        body = server.bodies[0]
        assert body["temperature"] == 0 and body["messages"][0]["content"].startswith("You are a meticulous")
        case = json.loads(body["messages"][1]["content"].split("\n", 1)[1].rsplit("\n\nReply", 1)[0])
        assert case["candidate_answer"] in ("Naloxone, intravenous.", "Flumazenil.")  # the conclusion only, as data
        assert len(case["criteria"]) == (3 if batched else 1) and "reasoning" not in json.dumps(case)
        ledger = judge.ledger.as_dict()
        assert ledger["calls"] == server.requests and ledger["screened"] == {"hedge": 1, "no_content": 1}
        assert ledger["prompt_tokens"] > 0
        again = Judge("openai-compatible", base_url=server.url, model="m", cache_path=tmp_path / "c.sqlite")
        again.rubric_batched = batched
        assert [v.score for v in again.grade(["Antidote?"] * 4, completions, ["Naloxone"] * 4, [RUBRIC] * 4)] == [1.0, 0.0, 0.0, 0.0]
        assert server.requests == (2 if batched else 6) and again.ledger.as_dict()["cache_hits"] == 2
        changed = [RUBRIC[0], Criterion("Gives an intravenous route", 2), RUBRIC[2]]  # other points: a new key
        again.grade(["Antidote?"], completions[:1], [""], [changed])
        assert server.requests == (3 if batched else 9)


def test_a_flaky_rubric_judge_is_retried_and_a_reply_missing_a_criterion_is_an_error(tmp_path):
    with FakeOpenAI() as server:
        judge = Judge("openai-compatible", base_url=server.url, model="m", backoff_s=0.01)
        v = judge.grade(["Antidote? [[flaky]]"], ["x\n</think>\n\nNaloxone"], [""], [RUBRIC])[0]
        assert v.score == 0.625 and v.attempts == 2  # met: naloxone (5); not: route (3), flumazenil
    from kit.judge import parse_criteria

    with pytest.raises(ValueError, match="every criterion"):
        parse_criteria('{"criteria": [{"id": 0, "criteria_met": true}]}', [0, 1])


def test_rl_mixes_reference_and_rubric_rows_offline(runs_dir):
    """The tiny recipe's RL on medical-o1-verifiable rows and the bundled RaR-Medicine and HealthBench rows, each
    graded by what it carries: the rule judge against a reference, the rule grader against a rubric's terms."""
    weights = "rl.reward_weights={format: 0.2, judge: 1.0, rubric: 1.0}"
    sets = ["data.rl=[{path: 'bundled:medical_o1_verifiable', max_rows: 6}, {path: 'bundled:rar_medicine', schema: rubric}, "
            "{path: 'bundled:healthbench', schema: rubric}]", "rl.trainer.max_steps=2", "rl.trainer.max_completion_length=32",
            "data.sft=[]"]  # RL from the base model: the rows' grading is the point here
    for stage in ("data", "rl"):
        proc = subprocess.run([sys.executable, "-m", "kit", stage, "--recipe", "tiny",
                               *sum((["--set", s] for s in [*sets, weights]), [])],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, failure(proc)
    written = [json.loads(line) for line in (runs_dir / "tiny" / "data" / "rl.jsonl").read_text().splitlines()]
    rubric_rows = len(rows("rar_medicine")) + len(rows("healthbench"))
    assert sum(bool(r.get("rubric")) for r in written) == rubric_rows and sum(not r.get("rubric") for r in written) == 6
    m = json.loads((runs_dir / "tiny" / "rl" / "metrics.json").read_text())
    assert m["rewards_finite"] and m["steps"] == 2
    keys = set().union(*m["reward_history"])
    assert {"rewards/judge/mean", "rewards/rubric/mean", "rubric/graded"} <= keys, sorted(keys)
    graded = [h["rewards/rubric/mean"] for h in m["reward_history"] if h.get("rewards/rubric/mean") is not None]
    assert graded and all(0.0 <= g <= 1.0 for g in graded if g == g), m["reward_history"]  # rubric rows were graded
    # without a rubric weight the rows could not be graded: refused before training, with the fix named
    proc = subprocess.run([sys.executable, "-m", "kit", "rl", "--recipe", "tiny", *sum((["--set", s] for s in sets), [])],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "rl.reward_weights.rubric" in proc.stderr


def _completion(text):
    from kit.generation import Completion

    return Completion(text=text, tokens=len(text.split()), truncated=False)


def test_a_rubric_task_is_scored_healthbench_s_way():
    """Per answer the unclipped score, the task's mean clipped with a bootstrap interval, per theme and per axis (an
    item scored on that axis's criteria alone); an answer cut off while thinking meets nothing, whatever it says."""
    from kit.data import format_rubric_eval
    from kit.evaluate import judge_rubric

    items = [format_rubric_eval(r) for r in rows("healthbench")[:2]]  # stroke (10, 5, -6); a cold (8, 4, -8)
    assert [it["task"] for it in items] == ["healthbench"] * 2 and items[0]["tags"][0] == "theme:emergency_referrals"
    assert format_rubric_eval(rows("healthbench")[2])["task"] == "healthbench_zh"  # a Chinese row: its own table
    answers = [["x</think>\n\nA stroke: call emergency services now.",             # 10 + 5        → 1.0
                "x</think>\n\nA stroke. Rest at home and give aspirin.",            # 5 - 6         → -1/15
                "a stroke, so call emergency services now"],                        # never concluded → 0
               ["x</think>\n\nNo antibiotics: a viral cold. See a doctor with a fever or trouble breathing, "
                "or if it is worse after ten days."]]                                # 8 + 4         → 1.0
    f = judge_rubric(Judge("rule"), items, [[_completion(a) for a in cs] for cs in answers])
    assert [[round(x, 4) for x in xs] for xs in f["correct"]] == [[1.0, round(-1 / 15, 4), 0.0], [1.0]]
    mean = ((1.0 - 1 / 15 + 0.0) / 3 + 1.0) / 2
    assert f["accuracy"]["value"] == round(mean, 4) and f["accuracy"]["n"] == 2 and f["accuracy"]["samples"] == 3
    assert f["by_tag"]["theme:emergency_referrals"]["value"] == round((1.0 - 1 / 15) / 3, 4)
    # the stroke item on its accuracy axis alone: stroke named (5) of 5, then 5 - 6 (aspirin) of 5, then nothing
    assert f["by_tag"]["axis:accuracy"]["value"] == round(((1.0 - 0.2 + 0.0) / 3 + 1.0) / 2, 4)
    assert f["met"]["pitfall"] == 0.25 and f["judge_errors"] == 0  # each item has one pitfall: met once in 4 answers


def test_an_answer_to_a_conversation_may_weigh_alternatives_a_single_answer_may_not():
    """HealthBench's answers list conditions and options by design: with no reference the hedge check is off for a
    rubric (its pitfalls grade that); a RaR-Medicine row's reference keeps it on; a length limit of its own."""
    good = ("Usually yes, at the lowest dose that works (200 to 400 mg up to three times a day with food). Avoid it if "
            "you have had stomach ulcers, kidney problems or heart failure, or are pregnant, or ask a pharmacist.")
    criteria = [Criterion("Mentions conditions that make ibuprofen unsafe", 6, terms=("ulcers", "kidney"))]
    judge = Judge("rule")
    [conversation] = judge.grade(["user: Can I take ibuprofen for my back pain?"], [good], [""], [criteria])
    assert conversation.screened is None and conversation.score == 1.0
    [single] = judge.grade(["Antidote?"], ["Naloxone or flumazenil or atropine"], ["Naloxone"], [RUBRIC])
    assert single.screened == "hedge"
    padded = Judge("rule", max_conclusion_tokens=20)  # the reference answers' limit does not cut a rubric answer short
    assert padded.grade(["q"], [good], [""], [criteria])[0].screened is None
    padded.rubric_max_conclusion_tokens = 20
    assert padded.grade(["q"], [good], [""], [criteria])[0].screened == "too_long"


def test_the_judge_s_agreement_with_physicians_is_healthbench_s_macro_f1(tmp_path, runs_dir):
    """Each verdict against each physician's label, pooled: the F1 of "met" and of "not met", counted here by hand,
    and their mean; the physicians' own beside it; a malformed row is an error naming its file and row."""
    from kit.evaluate import judge_agreement
    from kit.recipe import load_recipe
    from kit.sources import DataError

    meta = rows("healthbench_meta")
    a = judge_agreement(load_recipe("tiny"), Judge("rule"))
    assert a["rows"] == len(meta) and a["judge_errors"] == 0
    predicted = [Judge("rule").grade([""], [r["completion"]], [""], [[Criterion(r["rubric"], 1, terms=tuple(r["terms"]))]])[0].met[0]
                 for r in meta]
    pairs = [(p, label) for p, r in zip(predicted, meta) for label in r["binary_labels"]]

    def f1(cls):
        tp = sum(p == cls and t == cls for p, t in pairs)
        return 2 * tp / (sum(p == cls for p, _ in pairs) + sum(t == cls for _, t in pairs))

    assert a["judge"]["n"] == len(pairs) == sum(len(r["binary_labels"]) for r in meta)
    assert a["judge"]["macro_f1"] == round((f1(True) + f1(False)) / 2, 4)
    assert 0.5 < a["judge"]["macro_f1"] < a["physicians"]["macro_f1"] <= 1.0  # terms miss negations; physicians do not
    assert set(a["by_category"]) == {r["category"] for r in meta}
    few = judge_agreement(load_recipe("tiny", ["eval.judge_agreement_max_rows=10"]), Judge("rule"))
    assert few["rows"] == 10 and "10 rows sampled" in few["source"]
    bad = [dict(r) for r in meta[:3]]
    bad[2]["binary_labels"] = "yes"
    path = tmp_path / "meta.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bad), encoding="utf-8")
    with pytest.raises(DataError, match=r"meta.jsonl row 3: field 'binary_labels'"):
        judge_agreement(load_recipe("tiny", [f"eval.judge_agreement={path}"]), Judge("rule"))
