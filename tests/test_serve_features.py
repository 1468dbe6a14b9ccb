"""The llama.cpp end of `kit serve` as an OpenAI client sees it: tool calls (plain and streamed) parsed
by TRL's Qwen3.5/3.6 response parser, the three sampling presets reaching the sampler, preserved
thinking, and bad requests answered with a 400 while the server keeps serving. The model behind the app
is scripted (the toy does not call tools); the chat template, the parser and the wire format are real."""

from __future__ import annotations

import json

import pytest
from openai import BadRequestError, OpenAI

from kit.recipe import load_recipe
from kit.serve import create_app

TOOLS = [{"type": "function", "function": {
    "name": "lookup_drug", "description": "Look up a drug's maximum daily dose",
    "parameters": {"type": "object", "properties": {"name": {"type": "string"}, "units": {"type": "integer"}},
                   "required": ["name"]}}}]
CALL = ("Check the label.\n</think>\n\n<tool_call>\n<function=lookup_drug>\n<parameter=name>\nparacetamol\n"
        "</parameter>\n<parameter=units>\n1000\n</parameter>\n</function>\n</tool_call>")
ANSWER = "The tool says 4 g.\n</think>\n\nThe maximum is 4 g per day."


class ScriptedLlama:
    """Stands in for llama_cpp.Llama: calls the tool when tools are offered and no result came back yet."""

    def __init__(self):
        self.seen = []

    def create_completion(self, prompt, stream=False, **params):
        self.seen.append({"prompt": prompt, **params})
        text = CALL if "<tools>" in prompt and "<tool_response>" not in prompt else ANSWER
        if not stream:
            return {"choices": [{"text": text, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        pieces = [text[i:i + 5] for i in range(0, len(text), 5)]
        return ({"choices": [{"text": p, "finish_reason": "stop" if i == len(pieces) - 1 else None}]}
                for i, p in enumerate(pieces))


@pytest.fixture
def served():
    from fastapi.testclient import TestClient
    from transformers import AutoTokenizer

    from kit.base_model import ensure_tiny as ensure

    recipe = load_recipe("tiny")
    llm = ScriptedLlama()
    app = create_app(recipe, llm, AutoTokenizer.from_pretrained(ensure(recipe.model.tiny)), 4096, "scripted")
    client = OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=TestClient(app))
    return client, llm, recipe


def test_a_tool_call_round_trip(served):
    client, llm, _ = served
    messages = [{"role": "user", "content": "What is the maximum daily dose of paracetamol?"}]
    first = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.model_extra["reasoning_content"] == "Check the label."
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup_drug"
    assert json.loads(call.function.arguments) == {"name": "paracetamol", "units": 1000}  # typed by the tool's schema
    assert "<tools>" in llm.seen[0]["prompt"] and '"name": "lookup_drug"' in llm.seen[0]["prompt"]
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "4 g per day"}]
    second = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content == "The maximum is 4 g per day."
    assert "<tool_response>\n4 g per day\n</tool_response>" in llm.seen[1]["prompt"]
    assert "<function=lookup_drug>" in llm.seen[1]["prompt"]  # the earlier call, rendered back by the template


def test_a_streamed_tool_call(served):
    client, _, _ = served
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Dose?"}],
                                            tools=TOOLS, stream=True)
    reasoning, content, calls, finish = "", "", [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        content += delta.content or ""
        calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert reasoning == "Check the label." and content == "" and finish == "tool_calls"
    assert [c.function.name for c in calls] == ["lookup_drug"] and calls[0].index == 0
    assert json.loads(calls[0].function.arguments)["name"] == "paracetamol"


@pytest.mark.parametrize("preset", ["thinking", "thinking-precise", "instruct"])
def test_each_preset_reaches_the_sampler_and_an_explicit_value_wins(served, preset):
    client, llm, recipe = served
    values = recipe.sampling.named(preset)
    reply = client.chat.completions.with_raw_response.create(model="tiny", messages=[{"role": "user", "content": "q"}],
                                                             extra_body={"preset": preset})
    assert reply.headers["x-kit-preset"] == preset
    seen = llm.seen[-1]
    assert (seen["temperature"], seen["top_p"], seen["top_k"], seen["min_p"], seen["presence_penalty"],
            seen["repeat_penalty"]) == (values.temperature, values.top_p, values.top_k, values.min_p,
                                        values.presence_penalty, values.repetition_penalty)
    assert seen["prompt"].endswith("<think>\n\n</think>\n\n") == (preset == "instruct")  # instruct: thinking off
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q"}], temperature=0.1,
                                   extra_body={"preset": preset})
    assert llm.seen[-1]["temperature"] == 0.1 and llm.seen[-1]["top_p"] == values.top_p


@pytest.mark.parametrize("body, message", [
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "type object"),
    ({"tools": "lookup_drug"}, "'tools' must be a list"),
    ({"preset": "creative"}, "unknown sampling preset 'creative'"),
    ({"tool_choice": "required", "tools": TOOLS}, "tool_choice 'required' is not supported"),
])
def test_bad_requests_get_a_400_naming_the_problem_and_the_server_keeps_serving(served, body, message):
    client, _, _ = served
    with pytest.raises(BadRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q"}], extra_body=body)
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q"}]).choices[0].message.content


def test_template_kwargs_the_template_does_not_read_are_named_and_malformed_ones_are_a_400(served):
    from template_kwargs import check_table

    client, llm, _ = served
    check_table(client._client, "http://testserver/v1/chat/completions", "tiny")  # the TestClient under the client
    assert "preserve_thinking" not in llm.seen[-1]["prompt"]  # served as the template renders it


def test_preserved_thinking_keeps_earlier_reasoning_in_the_prompt_with_the_qwen36_template():
    from fastapi.testclient import TestClient
    from transformers import AutoTokenizer

    from kit.base_model import ensure_tiny as ensure
    from kit.base_model import chat_template

    recipe = load_recipe("tiny")
    tokenizer = AutoTokenizer.from_pretrained(ensure(recipe.model.tiny))
    tokenizer.chat_template = chat_template("qwen3_6")
    llm = ScriptedLlama()
    client = OpenAI(base_url="http://testserver/v1", api_key="unused",
                    http_client=TestClient(create_app(recipe, llm, tokenizer, 4096)))
    turns = [{"role": "user", "content": "First question?"},
             {"role": "assistant", "content": "First answer.", "reasoning_content": "EARLIER-REASONING"},
             {"role": "user", "content": "Second question?"}]
    client.chat.completions.create(model="tiny", messages=turns)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=turns, extra_body={"chat_template_kwargs": {"preserve_thinking": True}})
    dropped, kept = llm.seen[-2]["prompt"], llm.seen[-1]["prompt"]
    assert "EARLIER-REASONING" not in dropped and "EARLIER-REASONING" in kept
    assert "x-kit-ignored-template-kwargs" not in raw.headers  # Qwen3.6's template reads it


def test_an_agent_framework_runs_the_tool_loop_against_the_server(served):
    """LangChain's OpenAI chat model, as a user would bring it: bind a tool, let the model call it, run it,
    send the result back, get the answer."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    client, llm, _ = served

    @tool
    def lookup_drug(name: str, units: int = 1) -> str:
        """Look up a drug's maximum daily dose."""
        return {"paracetamol": "4 g per day"}[name]

    model = ChatOpenAI(model="tiny", base_url="http://testserver/v1", api_key="unused",
                       http_client=client._client).bind_tools([lookup_drug])
    history = [HumanMessage("What is the maximum daily dose of paracetamol?")]
    reply = model.invoke(history)
    assert [c["name"] for c in reply.tool_calls] == ["lookup_drug"]
    history += [reply, *[ToolMessage(lookup_drug.invoke(c["args"]), tool_call_id=c["id"]) for c in reply.tool_calls]]
    final = model.invoke(history)
    assert final.content == "The maximum is 4 g per day." and not final.tool_calls
    assert "<tool_response>\n4 g per day\n</tool_response>" in llm.seen[-1]["prompt"]


def test_text_parts_are_joined_and_an_image_or_a_clip_gets_a_400_that_says_why(served):
    client, llm, _ = served
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "the antidote?"}]
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": parts}])
    assert "What is the antidote?" in llm.seen[-1]["prompt"]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(BadRequestError, match="'image_url' content part: this server runs a text-only GGUF"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [image, *parts]}])
    clip = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAAGGZ0eXBtcDQy"}}
    with pytest.raises(BadRequestError, match=r"'video_url' content part: video needs the vLLM end \(`python -m kit serve --engine vllm`"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [clip, *parts]}])


def test_images_are_read_checked_and_kept_in_prompt_order_where_the_server_has_a_projector(tmp_path):
    """What the llama.cpp end with a vision projector takes: data URLs and http(s) URLs (fetched with a time
    limit), any format Pillow reads, passed on as PNG in the order the template places them."""
    import base64
    import functools
    import http.server
    import io
    import threading

    from PIL import Image

    from kit.chat_api import BadRequest, template_messages

    def encoded(color, fmt):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), color).save(buf, format=fmt)
        return buf.getvalue()

    (tmp_path / "blue.png").write_bytes(encoded((0, 0, 255), "PNG"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    jpeg = "data:image/jpeg;base64," + base64.b64encode(encoded((255, 0, 0), "JPEG")).decode()
    try:
        messages, images = template_messages([
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": jpeg}}, {"type": "text", "text": "and"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {
                "url": f"http://127.0.0.1:{server.server_port}/blue.png"}}]}], vision=True)
    finally:
        server.shutdown()
    assert [m["content"][0]["type"] for m in (messages[0], messages[2])] == ["image_url", "image_url"]
    colors = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).getpixel((4, 4)) for u in images]
    assert all(u.startswith("data:image/png;base64,") for u in images)
    assert colors[0][0] > 200 and colors[0][2] < 60 and colors[1] == (0, 0, 255)  # red (JPEG), then blue
    for url, says in [("file:///etc/hostname", "must be a data: or http"), ("data:image/png;base64,AAAA", "is not an image")]:
        with pytest.raises(BadRequest, match=r"messages\[0\]\.content\[0\].*" + says):
            template_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}], vision=True)
    with pytest.raises(BadRequest, match="'input_audio' content part: only text and image_url"):
        template_messages([{"role": "user", "content": [{"type": "input_audio"}]}], vision=True)
