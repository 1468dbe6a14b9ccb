"""Qwen-Agent, the client the Reasoning-Medical-27B card recommends, configured as the card shows it, against
`kit serve`'s llama.cpp end: the real app on a real port, its chat template real, the model scripted (it
calls the tool whenever tools are offered, which the toy would not do unforced). The vLLM end runs the same
client in tests/test_vllm.py."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import json5
import pytest
from qwen_agent.agents import Assistant
from qwen_agent.tools.base import BaseTool, register_tool

from kit.recipe import load_recipe
from kit.serve import create_app
from kit.children import free_port
from test_serve_features import ScriptedLlama


def card_llm(url: str, model: str) -> dict:
    """The card's Qwen-Agent configuration: an OpenAI-compatible server, the raw API, thinking and
    preserved thinking on every request."""
    return {"model": model, "model_type": "qwenvl_oai", "model_server": url, "api_key": "EMPTY",
            "generate_cfg": {"use_raw_api": True, "extra_body": {
                "chat_template_kwargs": {"enable_thinking": True, "preserve_thinking": True}}}}


@register_tool("lookup_drug", allow_overwrite=True)
class LookupDrug(BaseTool):
    description = "Look up a drug's maximum daily dose"
    parameters = {"type": "object", "properties": {"name": {"type": "string"}, "units": {"type": "integer"}},
                  "required": ["name"]}
    calls: list[dict] = []

    def call(self, params, **kwargs) -> str:
        LookupDrug.calls.append(json5.loads(params))
        return "4 g per day"


@contextmanager
def serving(template: str | None = None):
    """`kit serve`'s llama.cpp app on a free port (Qwen3.5's template, or `template`'s), with its scripted model."""
    import uvicorn
    from transformers import AutoTokenizer

    from kit.base_model import ensure_tiny as ensure
    from kit.base_model import chat_template

    recipe = load_recipe("tiny")
    tokenizer = AutoTokenizer.from_pretrained(ensure(recipe.model.tiny))
    if template:
        tokenizer.chat_template = chat_template(template)
    llm = ScriptedLlama()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(recipe, llm, tokenizer, 4096, "scripted"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1", llm
    finally:
        server.should_exit = True
        thread.join(10)


def last_reply(bot: Assistant, messages: list[dict]) -> list[dict]:
    """The messages of the agent's turn, as the stream ends (Qwen-Agent streams with `use_raw_api`)."""
    reply = []
    for reply in bot.run(messages=messages):
        pass
    return reply


@pytest.mark.parametrize("template", [None, "qwen3_6"])
def test_the_cards_client_asks_and_keeps_a_multi_turn_conversation(template):
    """A plain question, then a second turn with the first turn's reasoning sent back: Qwen3.6's template keeps
    it in the prompt, Qwen3.5's drops it (and the request is served either way, not refused)."""
    with serving(template) as (url, llm):
        bot = Assistant(llm=card_llm(url, "tiny"))
        messages = [{"role": "user", "content": "What is the maximum daily dose of paracetamol?"}]
        reply = last_reply(bot, messages)
        assert [m.get("reasoning_content") for m in reply if m.get("reasoning_content")] == ["The tool says 4 g."]
        assert reply[-1]["content"] == "The maximum is 4 g per day."
        messages += reply + [{"role": "user", "content": "And for a child?"}]
        second = last_reply(bot, messages)
        assert second[-1]["content"] == "The maximum is 4 g per day."
    prompt = llm.seen[-1]["prompt"]
    assert prompt.count("What is the maximum daily dose") == 1 and "And for a child?" in prompt
    assert ("The tool says 4 g." in prompt) == (template == "qwen3_6")  # preserved thinking where the template has it


def test_the_cards_client_registers_a_tool_and_runs_the_call_it_gets_back():
    LookupDrug.calls.clear()
    with serving() as (url, llm):
        bot = Assistant(llm=card_llm(url, "tiny"), function_list=["lookup_drug"])
        reply = last_reply(bot, [{"role": "user", "content": "Maximum daily dose of paracetamol?"}])
    call = next(m for m in reply if m.get("function_call"))
    assert call["function_call"]["name"] == "lookup_drug"
    assert LookupDrug.calls == [{"name": "paracetamol", "units": 1000}]  # the arguments the server parsed
    assert any(m["role"] == "function" and m["content"] == "4 g per day" for m in reply)
    assert reply[-1]["content"] == "The maximum is 4 g per day."
    first, after = llm.seen[0]["prompt"], llm.seen[-1]["prompt"]
    assert "<tools>" in first and '"name": "lookup_drug"' in first  # the tool reached the template
    assert "<tool_response>\n4 g per day" in after  # and its result came back as the tool's turn
