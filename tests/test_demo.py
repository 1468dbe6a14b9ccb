import base64

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
    from kit.base_model import ensure_tiny as ensure
    from kit.base_model import chat_template

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


def png_file(tmp_path, size=64, name="scan.png"):
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", (size, size), (200, 30, 30)).save(path)
    return str(path)


def test_an_uploaded_image_travels_as_an_openai_image_part_in_every_shape_gradio_gives(tmp_path):
    from kit.demo import images_in, user_content

    png = png_file(tmp_path)
    sent = user_content([{"path": png}, "What is shown?"])  # as respond() appends it
    back = user_content([{"type": "file", "file": {"path": png}}, {"type": "text", "text": "What is shown?"}])
    assert sent == back and sent[1] == {"type": "text", "text": "What is shown?"}
    assert sent[0]["type"] == "image_url" and sent[0]["image_url"]["url"].startswith("data:image/png;base64,")
    (img,) = images_in([{"role": "user", "content": sent}, {"role": "assistant", "content": "red"}])
    assert img.size == (64, 64) and img.getpixel((3, 3)) == (200, 30, 30)
    assert user_content("plain") == "plain"


def test_respond_sends_the_image_with_the_question_and_keeps_it_in_the_conversation(tmp_path):
    from kit.demo import Sampling

    s, png = Sampling(64, 1.0, 0.95, 20), png_file(tmp_path)
    backend = Scripted("A red square.")
    frames = list(respond(backend, "What is shown?", [], False, False, s, png))
    assert frames[-1][0] == {"role": "user", "content": [{"path": png}, "What is shown?"]}
    assert frames[-1][-1]["content"] == "A red square."
    (messages, _), = backend.seen
    assert [p["type"] for p in messages[0]["content"]] == ["image_url", "text"]
    # the next turn sends the earlier image again, with the history Gradio gives back
    list(respond(backend, "And now?", frames[-1], False, False, s))
    assert [p["type"] for p in backend.seen[-1][0][0]["content"]] == ["image_url", "text"]
    assert backend.seen[-1][0][-1] == {"role": "user", "content": "And now?"}


def test_an_image_to_a_text_only_model_or_a_file_that_is_no_image_is_said_in_the_chat(tmp_path):
    from transformers import AutoTokenizer

    from kit.demo import Sampling, TemplateBackend
    from kit.generation import HFEngine
    from kit.recipe import load_recipe
    from kit.base_model import ensure_tiny as ensure

    s = Sampling(8, 1.0, 0.95, 20)
    tokenizer = AutoTokenizer.from_pretrained(ensure(load_recipe("tiny").model.tiny))
    text_only = TemplateBackend(HFEngine(None, tokenizer), tokenizer, "tiny")
    assert not text_only.vision
    frames = list(respond(text_only, "What is shown?", [], False, False, s, png_file(tmp_path)))
    assert "takes text only" in frames[-1][-1]["content"]
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    frames = list(respond(Scripted("x"), "What is shown?", [], False, False, s, str(notes)))
    assert "notes.png is not an image" in frames[-1][-1]["content"]


def test_the_image_and_clip_uploads_show_only_for_backends_that_take_them():
    from kit.demo import build_app, openai_backend
    from kit.recipe import load_recipe

    recipe = load_recipe("tiny")
    for vision, video in ((False, False), (True, False), (True, True)):
        backend = Scripted("x")
        backend.vision, backend.video = vision, video
        app = build_app(recipe, backend)
        (image,) = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "image"]
        (clip,) = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "video"]
        assert image.visible is vision and clip.visible is video
    assert openai_backend("http://127.0.0.1:1/v1", "tiny").video  # the server decides (vLLM takes clips)


def test_an_uploaded_clip_travels_as_a_video_url_part_and_a_backend_without_video_says_so(tmp_path):
    from transformers import AutoTokenizer

    from kit.demo import Sampling, TemplateBackend, user_content
    from kit.generation import HFEngine
    from kit.images import MAX_CLIP_MB
    from kit.recipe import load_recipe
    from kit.base_model import ensure_tiny as ensure

    clip = tmp_path / "gait.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    s, png = Sampling(8, 1.0, 0.95, 20), png_file(tmp_path)
    backend = Scripted("A person walking.")
    frames = list(respond(backend, "Describe the gait.", [], False, False, s, png, str(clip)))
    assert frames[-1][0] == {"role": "user", "content": [{"path": png}, {"path": str(clip)}, "Describe the gait."]}
    (messages, _), = backend.seen
    assert [p["type"] for p in messages[0]["content"]] == ["image_url", "video_url", "text"]
    assert messages[0]["content"][1]["video_url"]["url"] == "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    tokenizer = AutoTokenizer.from_pretrained(ensure(load_recipe("tiny").model.tiny))
    frames = list(respond(TemplateBackend(HFEngine(None, tokenizer), tokenizer, "tiny"), "Describe the gait.", [], False,
                          False, s, None, str(clip)))
    assert "a video clip needs a server that takes video" in frames[-1][-1]["content"]
    big = tmp_path / "long.webm"
    with open(big, "wb") as f:
        f.truncate(MAX_CLIP_MB * 2**20 + 1)
    with pytest.raises(ValueError, match="long.webm is 16.0 MB; send a clip of at most 16 MB"):
        user_content([{"path": str(big)}, "x"])


def test_a_demo_with_a_login_refuses_requests_until_logged_in_and_share_makes_a_password(capsys, monkeypatch):
    import httpx

    from kit.demo import demo_login, launch
    from kit.recipe import load_recipe

    monkeypatch.delenv("KIT_DEMO_AUTH", raising=False)
    user, password = demo_login(share=True)
    assert user == "kit" and len(password) >= 12 and password in capsys.readouterr().out  # shown once
    assert demo_login(share=True, no_auth=True) is None and "no login" in capsys.readouterr().out
    with pytest.raises(ValueError, match="user:password"):
        demo_login(False, "nopassword")
    app = launch(load_recipe("tiny"), "openai", base_url="http://127.0.0.1:9/v1", block=False, port=None,
                 auth="ward:s3cret-pass")
    try:
        url = app.local_url.rstrip("/")
        assert httpx.get(f"{url}/config").status_code == 401
        with httpx.Client() as client:
            assert client.post(f"{url}/login", data={"username": "ward", "password": "wrong"}).status_code >= 400
            assert client.post(f"{url}/login", data={"username": "ward", "password": "s3cret-pass"}).status_code == 200
            assert client.get(f"{url}/config").status_code == 200
    finally:
        app.close()
