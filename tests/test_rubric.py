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
        verdicts = judge.grade(["Antidote?"] * 4, completions, [""] * 4, [RUBRIC] * 4)
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
        assert [v.score for v in again.grade(["Antidote?"] * 4, completions, [""] * 4, [RUBRIC] * 4)] == [1.0, 0.0, 0.0, 0.0]
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
    assert sum(bool(r.get("rubric")) for r in written) == 10 and sum(not r.get("rubric") for r in written) == 6
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
