"""The kit's vLLM paths, run for real on a CPU through vLLM's CPU build (`make setup` puts it in
.venv-vllm: it needs other pins than the main environment). The stages that train run in the main
environment, as on a GPU; evaluation and serving run in the vLLM one, through the kit's CLI.

vLLM refuses LoRA adapters that train whole modules (`modules_to_save`), which the tiny recipe does
for its random embeddings and head, so this lane trains LoRA-only adapters (`LORA_ONLY`); the real
recipes are LoRA-only.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from child import failure

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
LORA_ONLY = ["lora.modules_to_save=[]", "lora.dropout=0"]
SHORT = ["sft.trainer.max_steps=30", "sft.format_check_questions=4", "rl.trainer.max_steps=2",
         "export.quantizations=[q8_0]"]


def sets(*items):
    return [a for s in items for a in ("--set", s)]


def kit(python, *args, env=None, timeout=900):
    proc = subprocess.run([str(python), "-m", "kit", *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], failure(proc))
    return proc


@pytest.fixture(scope="module")
def vllm_python():
    assert VLLM_PYTHON.exists(), "the CPU lane's vLLM environment is missing: run `make setup`"
    return VLLM_PYTHON


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, vllm_python):
    """Data, SFT and a short GSPO run of the tiny recipe with LoRA-only adapters, and its export."""
    import os

    runs = tmp_path_factory.mktemp("vllm") / "runs"
    env = {**os.environ, "KIT_RUNS_DIR": str(runs)}
    for stage in ("data", "sft", "rl", "export"):
        kit(sys.executable, stage, "--recipe", "tiny", *sets(*LORA_ONLY, *SHORT), env=env)
    return runs, env


@pytest.mark.slow
def test_eval_serves_every_system_from_one_vllm_engine_with_lora_requests(lora_run, vllm_python):
    runs, env = lora_run
    proc = kit(vllm_python, "eval", "--recipe", "tiny", *sets(
        *LORA_ONLY, *SHORT, "eval.generation=vllm", "eval.max_items=6", "eval.max_new_tokens=40",
        "eval.decoding=sampled", "eval.samples=2"), env=env)
    results = json.loads((runs / "tiny" / "eval" / "metrics.json").read_text())
    assert results["engine"] == "vllm"
    systems = results["results"]
    assert systems["base"]["engine"] == "vllm (base on one engine)"
    assert systems["sft"]["engine"] == systems["rl"]["engine"] == "vllm (LoRA request on one engine)"
    assert "gguf-q8_0" not in systems and "llama-cpp-python is not installed" in proc.stdout  # not in this venv
    for name in ("base", "sft", "rl"):
        r = systems[name]
        assert r["tasks"]["medqa"]["accuracy"]["n"] == 6 and r["tasks"]["medqa"]["accuracy"]["samples"] == 2
        items = sum(results["items"].values())  # medqa, the harness tasks and open, up to 6 each
        assert r["truncated"]["n"] == 2 * items and 0 <= r["truncated"]["value"] <= 1
        assert r["generated_tokens_per_second"] > 0
    assert "sampled (temperature 1.0, top_p 0.95, top_k 20), 2 samples per item" in results["decoding"]
    outputs = [json.loads(line) for line in (runs / "tiny" / "eval" / "outputs.jsonl").read_text().splitlines()]
    by_system = {name: [o["completion"] for o in outputs if o["system"] == name] for name in ("base", "sft")}
    assert len(by_system["base"]) == 2 * sum(results["items"].values()) and by_system["base"] != by_system["sft"]
    assert "| engine |" in (runs / "tiny" / "eval" / "results.md").read_text()
    # the thinking budgets went to the same engine, as requests of their own
    assert [b["budget"] for b in results["budgets"]["curve"]] == [16, 48, 128] and results["budgets"]["system"] == "rl"
    assert "lm-evaluation-harness is not installed in this environment" in proc.stdout  # not in this venv
    assert proc.stdout.count("loading builtin:tiny") == 0  # no system fell back to loading its own model


def test_vllm_refuses_adapters_that_train_whole_modules(tmp_path):
    from kit.generation import vllm_adapter_problem

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16, "modules_to_save": ["embed_tokens", "lm_head"]}))
    assert "modules_to_save: embed_tokens, lm_head" in vllm_adapter_problem(tmp_path, 16)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32, "modules_to_save": None}))
    assert "rank 32" in vllm_adapter_problem(tmp_path, 16)
    assert vllm_adapter_problem(tmp_path, 32) is None and vllm_adapter_problem(None, 16) is None


TOOLS = [{"type": "function", "function": {"name": "lookup_drug", "description": "Look up an antidote",
                                           "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                                                          "required": ["name"]}}}]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["merged", "lora"])
def test_kit_serve_through_vllms_own_server(lora_run, vllm_python, mode):
    """`kit serve` starts `vllm serve` (qwen3 reasoning parser) behind the preset proxy; the openai client
    gets reasoning apart from the answer with thinking on, none with it off, and a stream."""
    import os

    from openai import BadRequestError, OpenAI

    from kit.serve import Server

    runs, env = lora_run
    old = os.environ.get("KIT_RUNS_DIR")
    os.environ["KIT_RUNS_DIR"] = env["KIT_RUNS_DIR"]
    args = ["--engine", "vllm", "--max-model-len", "2048"] + (["--lora"] if mode == "lora" else [])
    if mode == "lora":  # served with Qwen3.6's template (which honours preserve_thinking), given as a file
        from kit.base_model import chat_template

        template = Path(env["KIT_RUNS_DIR"]) / "qwen3_6.jinja"
        template.write_text(chat_template("qwen3_6"))
        args += ["--chat-template", str(template)]
    try:
        key = "kit-test-key" if mode == "merged" else None  # the merged start is keyed: vLLM's own check, beside the proxy's
        server = Server("tiny", overrides=[*LORA_ONLY, *SHORT], args=args, python=str(vllm_python), timeout_s=400, api_key=key)
        with server as url:
            client = OpenAI(base_url=url, api_key=key or "unused")
            served = {m.id for m in client.models.list().data}
            model = "tiny-rl" if mode == "lora" else "tiny"
            assert model in served and (mode == "merged" or "tiny-sft" in served), served
            question = [{"role": "user", "content": "What is the antidote for opioid overdose?"}]
            on = client.chat.completions.with_raw_response.create(model=model, messages=question, max_tokens=32)
            assert on.headers["x-kit-preset"] == "thinking"
            msg = on.parse().choices[0].message
            reasoning = (msg.model_extra or {}).get("reasoning") or (msg.model_extra or {}).get("reasoning_content")
            assert reasoning or msg.content  # the tiny model may not close its reasoning within 32 tokens
            off = client.chat.completions.with_raw_response.create(
                model=model, messages=question, max_tokens=16, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
            assert off.headers["x-kit-preset"] == "instruct"
            off_msg = off.parse().choices[0].message
            assert not ((off_msg.model_extra or {}).get("reasoning") or (off_msg.model_extra or {}).get("reasoning_content"))
            chunks = list(client.chat.completions.create(model=model, messages=question, max_tokens=16, stream=True))
            assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason in ("length", "stop")
            if mode == "merged":  # streams their clients close after a few chunks leave the next request as it was
                import time

                import httpx

                def plain_s():
                    t = time.perf_counter()
                    client.chat.completions.create(model=model, messages=question, max_tokens=8)
                    return time.perf_counter() - t

                before = min(plain_s() for _ in range(2))
                for _ in range(3):
                    with httpx.stream("POST", f"{url}/chat/completions", timeout=60, headers={"authorization": f"Bearer {key}"}, json={
                            "model": model, "messages": question, "max_tokens": 512, "stream": True}) as r:
                        lines = r.iter_lines()
                        assert [next(lines) for _ in range(4)]
                after = [plain_s() for _ in range(2)]
                assert max(after) < before + 5, (before, after)
                # the key, against vLLM itself: the proxy refuses a wrong one, and vLLM behind it (its port is in the
                # start line; the key reached it through VLLM_API_KEY) refuses a request without it
                from openai import AuthenticationError

                with pytest.raises(AuthenticationError):
                    OpenAI(base_url=url, api_key="wrong").models.list()
                log = Path(server.log).read_text()
                inner = int(re.search(r"--port (\d+)", log).group(1))
                assert httpx.get(f"http://127.0.0.1:{inner}/v1/models").status_code == 401
                assert httpx.get(f"http://127.0.0.1:{inner}/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
                assert key not in log  # never in its command line or its log
            # a named preset reaches vLLM's sampler (the proxy says which values it sent); a bad one is a 400
            precise = client.chat.completions.with_raw_response.create(
                model=model, messages=question, max_tokens=8, extra_body={"preset": "thinking-precise"})
            assert precise.headers["x-kit-preset"] == "thinking-precise"
            assert json.loads(precise.headers["x-kit-sampling"])["temperature"] == 0.6
            with pytest.raises(BadRequestError, match="unknown sampling preset"):
                client.chat.completions.create(model=model, messages=question, extra_body={"preset": "creative"})
            # template kwargs: the same statuses and headers as the llama.cpp end (tests/template_kwargs.py)
            import httpx
            from template_kwargs import TABLE, check_table, qwen36

            with httpx.Client(timeout=120, headers={"authorization": f"Bearer {key}"} if key else None) as http:
                check_table(http, f"{url}/chat/completions", model, qwen36() if mode == "lora" else TABLE)
            if mode == "lora":  # Qwen3.6's template keeps an earlier turn's reasoning when asked: a longer prompt
                turns = [*question, {"role": "assistant", "content": "Naloxone.", "reasoning_content": "EARLIER " * 20},
                         {"role": "user", "content": "And its dose?"}]
                sizes = [client.chat.completions.create(model=model, messages=turns, max_tokens=2, extra_body={
                    "chat_template_kwargs": {"preserve_thinking": keep}}).usage.prompt_tokens for keep in (False, True)]
                assert sizes[1] > sizes[0] + 20, sizes
            # the card's client, Qwen-Agent, configured as the card shows (it reads `reasoning_content`, which
            # the proxy adds beside vLLM's `reasoning`): a question, a second turn, a registered tool
            from qwen_agent.agents import Assistant
            from test_qwen_agent import card_llm, last_reply

            # Qwen-Agent seeds every request; vLLM's CPU build dies on a seeded one, so the proxy drops the seed
            seeded = client.chat.completions.with_raw_response.create(model=model, messages=question, max_tokens=8, seed=7)
            assert seeded.headers.get("x-kit-dropped") == "seed"

            cfg = card_llm(url, model) | ({"api_key": key} if key else {})
            cfg["generate_cfg"]["max_tokens"] = 24
            turns = [{"role": "user", "content": "What is the antidote for opioid overdose?"}]
            reply = last_reply(Assistant(llm=cfg), turns)
            assert reply and reply[-1]["role"] == "assistant" and any(m.get("reasoning_content") for m in reply)
            turns += reply + [{"role": "user", "content": "And its dose?"}]
            assert last_reply(Assistant(llm=cfg), turns)[-1]["role"] == "assistant"
            with_tool = last_reply(Assistant(llm=cfg, function_list=["lookup_drug"]), turns[:1])
            assert with_tool and with_tool[-1]["role"] == "assistant"  # the toy answers without calling it
            # tools through the model's template and vLLM's tool parsing; "required" makes vLLM constrain the
            # output to a call (after the reasoning, so thinking is off here), so even the toy calls the tool
            called = client.chat.completions.create(model=model, messages=question, max_tokens=200, tools=TOOLS,
                                                    tool_choice="required", extra_body={"preset": "instruct"})
            call = called.choices[0].message.tool_calls[0]
            assert call.function.name == "lookup_drug" and isinstance(json.loads(call.function.arguments), dict)
            answered = client.chat.completions.create(model=model, max_tokens=8, tools=TOOLS, messages=[
                *question, called.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "naloxone"}])
            assert answered.choices[0].finish_reason in ("length", "stop", "tool_calls")
    finally:
        if old is None:
            os.environ.pop("KIT_RUNS_DIR", None)
        else:
            os.environ["KIT_RUNS_DIR"] = old
