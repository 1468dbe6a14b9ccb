import pytest

from kit.demo import history_messages, respond, shown_turn


class Scripted:
    """A backend that streams a fixed completion, or fails."""

    name = "scripted"

    def __init__(self, text=None, error=None):
        self.text, self.error, self.seen = text, error, []

    def stream(self, messages, thinking, s):
        self.seen.append((messages, thinking))
        if self.error:
            raise self.error
        for i in range(1, len(self.text) + 1, 7):
            yield self.text[:i]
        yield self.text


def test_shown_turn_separates_reasoning_and_answer():
    turn = shown_turn("ST elevation inferior.\n</think>\n\nRight coronary artery.", True, finished=True)
    assert turn[0]["metadata"]["title"] == "Thinking" and turn[0]["content"] == "ST elevation inferior."
    assert turn[1] == {"role": "assistant", "content": "Right coronary artery."}
    assert shown_turn("Naloxone.", False, finished=True) == [{"role": "assistant", "content": "Naloxone."}]
    cut = shown_turn("still thinking", True, finished=True)
    assert cut[0]["metadata"]["status"] == "done" and "token limit" in cut[1]["content"]
    assert shown_turn("still thinking", True, finished=False)[0]["metadata"]["status"] == "pending"


def test_earlier_reasoning_is_dropped_unless_kept():
    history = [{"role": "user", "content": "q1"},
               {"role": "assistant", "content": "why", "metadata": {"title": "Thinking"}},
               {"role": "assistant", "content": "a1"},
               {"role": "user", "content": "q2"}]
    assert history_messages(history, False) == [{"role": "user", "content": "q1"},
                                                 {"role": "assistant", "content": "a1"},
                                                 {"role": "user", "content": "q2"}]
    assert history_messages(history, True)[1] == {"role": "assistant", "content": "a1", "reasoning_content": "why"}


def test_kept_reasoning_reaches_the_prompt_where_the_template_preserves_it():
    from transformers import AutoTokenizer

    from kit.demo import TemplateBackend
    from kit.recipe import load_recipe
    from kit.tiny_model import chat_template, ensure

    class Engine:
        def stream(self, prompt, s):
            self.prompt = prompt
            yield "x"

    tokenizer = AutoTokenizer.from_pretrained(ensure(load_recipe("tiny").model.tiny))
    tokenizer.chat_template = chat_template("qwen3_6")
    history = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "EARLIER", "metadata": {"title": "Thinking"}},
               {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    for keep in (False, True):
        backend = TemplateBackend(Engine(), tokenizer, "t")
        list(backend.stream(history_messages(history, keep), True, None))
        assert ("EARLIER" in backend.engine.prompt) == keep


def test_respond_streams_and_shows_backend_errors_in_the_chat():
    from kit.demo import Sampling

    s = Sampling(64, 1.0, 0.95, 20)
    frames = list(respond(Scripted("because\n</think>\n\nNaloxone"), "antidote?", [], True, False, s))
    assert len(frames) > 2 and frames[-1][-1]["content"] == "Naloxone"
    broken = list(respond(Scripted(error=ConnectionError("refused")), "antidote?", [], True, False, s))
    assert "backend failed: ConnectionError: refused" in broken[-1][-1]["content"]
    long = list(respond(Scripted("x"), "y" * 5000, [], True, False, s))
    assert "limit is 4,000" in long[-1][-1]["content"]


@pytest.mark.slow
def test_demo_through_gradio_client(demo_url, shared_runs):
    from gradio_client import Client

    from kit.data import read_jsonl

    client = Client(demo_url, verbose=False)
    # a question the tiny model was trained on, answered greedily, so its format is reproducible
    question = read_jsonl(shared_runs / "tiny" / "data" / "sft_train.jsonl")[0]["messages"][0]["content"]
    on = client.predict(question, [], True, False, 0.0, 1.0, 1, 0.0, 256, api_name="/chat")
    thinking = [m for m in on if (m.get("metadata") or {}).get("title") == "Thinking"]
    answers = [m for m in on if m["role"] == "assistant" and not (m.get("metadata") or {}).get("title")]
    assert len(thinking) == 1 and thinking[0]["content"] and len(answers) == 1
    off = client.predict(question, [], False, False, 0.7, 0.8, 20, 1.5, 32, api_name="/chat")
    assert not any((m.get("metadata") or {}).get("title") for m in off)
    assert off[-1]["role"] == "assistant"
    long = client.predict("x" * 5000, [], True, False, 0.7, 0.8, 20, 1.5, 32, api_name="/chat")
    assert "limit is 4,000" in str(long[-1]["content"])
