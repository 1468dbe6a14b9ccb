import pytest

from fake_openai import FakeOpenAI
from kit.judge import Judge
from kit.rewards import JudgeReward, format_reward, make_format_reward


def conv(text):
    return [{"role": "assistant", "content": text}]


END = "<|im_end|>"


@pytest.mark.parametrize("completion, expected", [
    ("reasoning\n</think>\n\nanswer" + END, 1.0),                 # Qwen3.5: completion starts inside <think>
    ("<think>\nreasoning\n</think>\n\nanswer" + END, 1.0),        # an opening tag repeated is fine
    (conv("推理过程。\n</think>\n\n格雷夫斯病。" + END), 1.0),       # Chinese, conversational
    ("reasoning\n</think>\n\nanswer", 0.0),                        # cut off by the token limit
    ("reasoning\n</think>\n\n" + END, 0.0),                        # no conclusion
    ("\n</think>\n\nanswer" + END, 0.0),                           # no reasoning
    ("reasoning then answer with no tags" + END, 0.0),              # missing tags
    ("a\n</think>\nb\n</think>\nc" + END, 0.0),                   # two closing tags
    ("a\n</think>\n\nanswer <think> again" + END, 0.0),           # reasoning reopened in the answer
    (conv("无标签的回答" + END), 0.0),
])
def test_format_reward_table(completion, expected):
    assert format_reward([completion]) == [expected]


def test_format_reward_reads_finished_from_token_ids_as_trl_passes_them():
    """TRL decodes completions without special tokens and passes their ids: the last id tells."""
    reward = make_format_reward([7, 8])
    text = "reasoning\n</think>\n\nanswer"
    assert reward([text, text, text], completion_ids=[[1, 2, 7], [1, 2, 3], [1, 8]]) == [1.0, 0.0, 1.0]
    assert reward.__name__ == "format_reward"


@pytest.mark.parametrize("message", [
    {"role": "assistant", "reasoning_content": "ST elevation in II, III, aVF.", "content": "Inferior STEMI."},
    {"role": "assistant", "reasoning": "ST elevation in II, III, aVF.", "content": "Inferior STEMI."},
    {"role": "assistant", "thinking": "ST elevation in II, III, aVF.", "content": "Inferior STEMI."},
])
def test_rewards_see_reasoning_that_trl_parsed_out_of_the_completion(message):
    """With a response schema on the tokenizer, TRL moves the reasoning out of `content` (and drops
    `</think>`): read as plain content, both rewards would silently be zero."""
    assert format_reward([[message]], completion_ids=[[5, 9]], stop_ids=(9,)) == [1.0]
    judged = JudgeReward(Judge("rule"))([[{**message, "content": "Inferior STEMI"}]], reference=["Inferior STEMI"])
    assert judged == [1.0]
    parsed_without_reasoning = {"role": "assistant", "content": "Inferior STEMI."}  # cut off before </think>
    assert format_reward([[parsed_without_reasoning]], completion_ids=[[5, 9]], stop_ids=(9,)) == [0.0]


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
        assert rule.counts == {"graded": 2, "broken_format": 1, "screened": 0, "judge_errors": 2, "fallbacks": 2, "skipped": 0}
        skip = JudgeReward(judge, error_fallback="skip")
        assert skip(completions, **kwargs) == [None, None, 0.0]
        assert skip.counts["skipped"] == 2
        assert server.seen["down"] == 4  # broken-format completions never reach the judge


def test_judge_reward_reads_question_from_prompts_when_no_column():
    with FakeOpenAI() as server:
        reward = JudgeReward(Judge("openai-compatible", base_url=server.url, model="m"))
        prompts = [[{"role": "user", "content": "Which antidote? [[incorrect]]"}]]
        assert reward(["r\n</think>\n\nAtropine"], reference=["Naloxone"], prompts=prompts) == [0.1]
        assert "Which antidote?" in server.bodies[0]["messages"][-1]["content"]


def test_bad_fallback_name():
    with pytest.raises(ValueError, match="error_fallback"):
        JudgeReward(Judge("rule"), error_fallback="zero")


def test_the_hacking_watch_follows_the_reward_names_and_says_when_a_series_is_missing(capsys):
    """The watch reads the series TRL logs by each reward function's name: renamed functions keep it working, and
    a series the logs do not carry is said once instead of silently turning the alarm off."""
    from types import SimpleNamespace

    from kit.rl import hacking_watch

    args, state = SimpleNamespace(per_device_train_batch_size=8, num_generations=4), SimpleNamespace(global_step=9)
    watch = hacking_watch("judge_v2", "well_formed", window=8)
    for step in range(8):  # the judged reward rises while the format reward falls
        watch.on_log(args, state, None, logs={"rewards/judge_v2/mean": 0.2 + 0.1 * step,
                                               "rewards/well_formed/mean": 1.0 - 0.1 * step})
    out = capsys.readouterr().out
    assert "reward hacking?" in out and "the format reward fell" in out and "finds no" not in out

    blind = hacking_watch()  # the kit's own names, against logs from renamed rewards
    for _ in range(3):
        blind.on_log(args, state, None, logs={"rewards/judge_v2/mean": 0.5, "rewards/well_formed/mean": 1.0})
    out = capsys.readouterr().out
    assert out.count("finds no rewards/judge/mean") == 1 and "rewards/judge_v2/mean" in out
    assert out.count("finds no rewards/format_reward/mean") == 1


def test_the_hacking_watch_says_when_answers_grow_while_the_rubric_criteria_met_per_token_fall(capsys):
    from types import SimpleNamespace

    from kit.rl import hacking_watch

    args, state = SimpleNamespace(per_device_train_batch_size=8, num_generations=4), SimpleNamespace(global_step=8)
    steady = hacking_watch(window=8)
    for step in range(8):  # longer answers that meet more criteria in proportion: no warning
        steady.on_log(args, state, None, logs={"completions/mean_length": 100 + 20 * step, "rubric/met_per_100_tokens": 3.0})
    assert "padding" not in capsys.readouterr().out
    padded = hacking_watch(window=8)
    for step in range(8):
        padded.on_log(args, state, None, logs={"completions/mean_length": 100 + 20 * step,
                                               "rubric/met_per_100_tokens": 3.0 - 0.25 * step})
    out = capsys.readouterr().out
    assert out.count("padding its answers") == 1 and "fell" in out

