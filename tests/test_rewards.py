import pytest

from fake_openai import FakeOpenAI
from kit.judge import Judge
from kit.rewards import JudgeReward, format_reward


def conv(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize("completion, expected", [
    ("reasoning\n</think>\n\nanswer", 1.0),                       # Qwen3.5: completion starts inside <think>
    ("<think>\nreasoning\n</think>\n\nanswer", 1.0),              # an opening tag repeated is fine
    (conv("推理过程。\n</think>\n\n格雷夫斯病。"), 1.0),             # Chinese, conversational
    ("reasoning\n</think>\n\n", 0.0),                             # no conclusion
    ("\n</think>\n\nanswer", 0.0),                                # no reasoning
    ("reasoning then answer with no tags", 0.0),                  # missing tags
    ("a\n</think>\nb\n</think>\nc", 0.0),                         # two closing tags
    ("a\n</think>\n\nanswer <think> again", 0.0),                 # reasoning reopened in the answer
    (conv("无标签的回答"), 0.0),
])
def test_format_reward_table(completion, expected):
    assert format_reward([completion]) == [expected]


@pytest.mark.parametrize("completion, reference, expected", [
    ("Opioid toxidrome.\n</think>\n\nNaloxone", "Naloxone", 1.0),
    ("阿片类中毒。\n</think>\n\n纳洛酮", "纳洛酮", 1.0),
    ("x\n</think>\n\nFlumazenil", "Naloxone", 0.1),              # well-formed but wrong: the floor
    ("Right coronary\n</think>\n\nRight coronary", "Right coronary artery", 0.8),  # partial: its score
    ("Naloxone, no tags", "Naloxone", 0.0),                      # broken format: zero, judge not asked
    ("\n</think>\n\nNaloxone", "Naloxone", 0.0),
])
def test_judge_reward_table_with_rule_judge(completion, reference, expected):
    reward = JudgeReward(Judge("rule"), incorrect_floor=0.1)
    assert reward([conv(completion)], reference=[reference]) == [pytest.approx(expected, abs=1e-3)]


def test_judge_reward_error_fallbacks_and_counts():
    with FakeOpenAI() as server:
        judge = Judge("openai-compatible", base_url=server.url, model="m", max_retries=0)
        completions = ["q\n</think>\n\nNaloxone", "q\n</think>\n\nAspirin", "broken"]
        kwargs = dict(reference=["Naloxone"] * 3, question=["[[down]] antidote?"] * 3)
        rule = JudgeReward(judge, error_fallback="rule")
        assert rule(completions, **kwargs) == [1.0, 0.1, 0.0]
        assert rule.counts == {"graded": 2, "broken_format": 1, "judge_errors": 2, "fallbacks": 2, "skipped": 0}
        skip = JudgeReward(judge, error_fallback="skip")
        assert skip(completions, **kwargs) == [None, None, 0.0]
        assert skip.counts["skipped"] == 2
        assert server.seen["down"] == 4  # broken-format completions never reach the judge


def test_judge_reward_reads_question_from_prompts_when_no_column():
    with FakeOpenAI() as server:
        reward = JudgeReward(Judge("openai-compatible", base_url=server.url, model="m"))
        prompts = [[{"role": "user", "content": "Which antidote? [[incorrect]]"}]]
        assert reward(["r\n</think>\n\nx"], reference=["y"], prompts=prompts) == [0.1]
        assert "Which antidote?" in server.bodies[0]["messages"][-1]["content"]


def test_bad_fallback_name():
    with pytest.raises(ValueError, match="error_fallback"):
        JudgeReward(Judge("rule"), error_fallback="zero")
