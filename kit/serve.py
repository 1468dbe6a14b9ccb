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

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path

from . import gguf
from .chat_api import (API_KEY_ENV, IGNORED_HEADER, MAX_BODY_BYTES, BadRequest, LimitBody, RequireKey, announce_template, check_tools, error_body,
                       ignored_kwargs, openai_tool_calls, request_sampling, served_key, template_messages,
                       template_variables)
from .children import ChildServer, die_with_parent, free_port, stop_group
from .formatting import THINK_CLOSE, THINK_OPEN, parse as parse_completion
from .generation import STOP_TOKENS, GenerationError, choose
from .gguf import complete
from .modeling import load_tokenizer
from .recipe import Recipe
from .runs import finished, gguf_file, stage_dir
from .vllm_end import preset_proxy, vllm_command


def find_gguf(recipe: Recipe, prefer: str | None = None) -> Path:
    path = gguf_file(recipe, prefer)
    if path is None:
        raise FileNotFoundError(f"no GGUF in {stage_dir(recipe, 'export') / 'gguf'} from a finished export: run "
                                f"`python -m kit export --recipe {recipe.name}`")
    return path


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


class Slots:
    """One llama.cpp context: one generation at a time, and a bounded line for it. A request takes its place in
    the line when it arrives (`reserve`: None when `max_waiting` are already waiting, so it is turned away with
    a 429 at once instead of piling up) and leaves it when the model is its (`held`)."""

    def __init__(self, max_waiting: int):
        self.max_waiting, self.waiting = max_waiting, 0
        self._lock, self._count = threading.Lock(), threading.Lock()

    def reserve(self):
        with self._count:
            if self.waiting >= self.max_waiting:
                return None
            self.waiting += 1
        return _Place(self)

    @contextlib.contextmanager
    def held(self, place: "_Place"):
        try:
            self._lock.acquire()
        finally:
            place.leave()
        try:
            yield
        finally:
            self._lock.release()


class _Place:
    """A place in the line; leaving it twice is leaving it once (a stream that never started leaves it when
    its generator is collected)."""

    def __init__(self, slots: Slots):
        self.slots, self.here = slots, True

    def leave(self) -> None:
        with self.slots._count:
            if self.here:
                self.here = False
                self.slots.waiting -= 1


# What the endpoint reads of an OpenAI chat request, for its OpenAPI schema (what clients and fuzzers see); the
# handler itself takes any JSON object and answers what it cannot use with a 400 naming it
CHAT_REQUEST_SCHEMA = {
    "type": "object", "required": ["messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}, {"type": "null"}]},
            "reasoning_content": {"type": "string"}, "tool_calls": {"type": "array"}, "tool_call_id": {"type": "string"}}}},
        "max_tokens": {"type": "integer"}, "max_completion_tokens": {"type": "integer"},
        "temperature": {"type": "number"}, "top_p": {"type": "number"}, "top_k": {"type": "integer"},
        "min_p": {"type": "number"}, "presence_penalty": {"type": "number"}, "repetition_penalty": {"type": "number"},
        "seed": {"type": "integer"}, "stream": {"type": "boolean"}, "preset": {"type": "string"},
        "chat_template_kwargs": {"type": "object"}, "tools": {"type": "array"}, "tool_choice": {},
    },
}
MAX_IMAGES = 8  # images in one request


def create_app(recipe: Recipe, llm, tokenizer, n_ctx: int = 2048, label: str = "", vision=None,
               api_key: str | None = None, max_waiting: int = 16, max_body_bytes: int = MAX_BODY_BYTES,
               max_images: int = MAX_IMAGES):
    """FastAPI app: /v1/models and /v1/chat/completions (plain and streamed) over a llama.cpp model, with the
    model's own chat template rendering the conversation, the tools and `chat_template_kwargs`, and TRL's
    response parser for Qwen3.5/3.6 (`trl.chat_template_utils`) reading reasoning, answer and tool calls
    back out of the completion. With `vision` (`gguf.vision`: the GGUF's projector) images are read too. With
    `api_key`, every route but /health wants it (`chat_api.RequireKey`). Limits: one generation at a time and at
    most `max_waiting` requests waiting (then a 429 with Retry-After), a body of `max_body_bytes` (413),
    `max_images` per request (400); `max_tokens` past the context is cut to what fits, and the reply says so
    (`x-kit-max-tokens`); a prompt that leaves no room is a 400 naming the lengths."""
    from fastapi import FastAPI, HTTPException
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from fastapi.responses import JSONResponse, StreamingResponse
    from trl.chat_template_utils import add_response_schema, parse_response

    try:  # TRL's parser knows Qwen's templates (reasoning, tool calls); another model's is read by the kit's split
        add_response_schema(tokenizer)
        trl_parser = True
    except ValueError:
        trl_parser = False
        print("[kit] TRL has no response parser for this chat template: reasoning is split at </think>, and tool "
              "calls cannot be read (requests with tools get a 400)")
    variables = template_variables(tokenizer)
    announce_template(variables)
    slots = Slots(max_waiting)
    model_id = recipe.name
    app = FastAPI(title=f"medreason-kit · {recipe.name} (not medical advice)")
    app.add_middleware(LimitBody, max_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(RequireKey, key=api_key)  # added last, so checked first

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and the router's own (404, 405)
    def openai_error(request, exc: StarletteHTTPException):  # the shape the openai client reads its message from
        return JSONResponse(error_body(str(exc.detail), exc.status_code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)  # a body that is not a JSON object, say
    def invalid_request(request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:3])
        return JSONResponse(error_body(f"the request is not what this endpoint reads ({where})", 400), status_code=400)

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

    @app.post("/v1/chat/completions", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": CHAT_REQUEST_SCHEMA}}}})
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
            if len(images) > max_images:
                raise BadRequest(f"{len(images)} images in one request; this server takes at most {max_images}")
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
        asked = body.get("max_tokens") or body.get("max_completion_tokens")
        try:
            max_tokens = int(asked or 512)
        except (TypeError, ValueError):
            raise HTTPException(400, f"max_tokens must be an integer, not {asked!r}") from None
        if max_tokens < 1:
            raise HTTPException(400, f"max_tokens must be at least 1, not {max_tokens}")
        room = n_ctx - len(prompt_ids)
        if room < 1:
            raise HTTPException(400, f"the prompt ({len(prompt_ids)} tokens) fills the context of {n_ctx} tokens: "
                                     f"shorten the conversation, or serve with a longer --max-model-len")
        clamped = bool(asked) and max_tokens > room  # the reply says so; a default that does not fit just shrinks
        max_tokens = min(max_tokens, room)
        params = dict(prompt=prompt, max_tokens=max_tokens, stop=STOP_TOKENS, seed=body.get("seed"),
                      temperature=values["temperature"], top_p=values["top_p"], top_k=values["top_k"],
                      min_p=values["min_p"], presence_penalty=values["presence_penalty"],
                      repeat_penalty=values["repetition_penalty"])
        headers = {"x-kit-preset": preset, "x-kit-sampling": json.dumps(values)}
        if clamped:
            headers["x-kit-max-tokens"] = f"{max_tokens} (asked {asked}; the prompt's {len(prompt_ids)} tokens leave that of {n_ctx})"
        if ignored:
            headers[IGNORED_HEADER] = ", ".join(ignored)
        place = slots.reserve()
        if place is None:
            return JSONResponse(error_body(f"the server is busy ({slots.waiting} requests waiting for the model): "
                                           f"retry shortly", 429), status_code=429, headers={"retry-after": "5"})
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        generate = lambda stream: complete(llm, params, images, vision, stream=stream)  # noqa: E731
        if body.get("stream"):
            events = _closing(_stream(generate, slots, place, cid, created, model_id, thinking,
                                      lambda text: parse(prompt_ids, text, tools)))
            weakref.finalize(events, place.leave)  # a stream cancelled before it started still leaves the line
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        try:
            with slots.held(place):
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


async def _closing(events):
    """The stream's events, each made in a worker thread; when the client goes away (a Stop button, a closed
    tab) Starlette cancels this, and the generator is closed at once, which stops llama.cpp and frees the model
    for the next request. Starlette would leave a sync generator suspended, holding the model's lock."""
    import anyio
    from starlette.concurrency import run_in_threadpool

    done = object()
    try:
        while (event := await run_in_threadpool(next, events, done)) is not done:
            yield event
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(events.close)


def _stream(generate, slots, place, cid, created, model_id, thinking, parse):
    """Server-sent events: reasoning deltas go to `reasoning_content` until `</think>`, then `content`; from
    a `<tool_call>` on, the text is held back and sent as `tool_calls` once parsed at the end."""
    in_reasoning, buffer, full, calling, finish = thinking, "", "", False, "stop"

    def chunk(delta, finish=None):
        return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                      "model": model_id, "choices": [{"index": 0, "delta": delta,
                                                                      "finish_reason": finish}]}) + "\n\n"

    yield chunk({"role": "assistant", "content": ""})
    with slots.held(place):
        try:
            parts = generate(True)
        except ValueError as e:  # as the OpenAI API streams an error: the client raises it
            yield "data: " + json.dumps(error_body(str(e))) + "\n\n"
            return
        try:
            for part in parts:
                piece, finish = part["choices"][0]["text"], part["choices"][0]["finish_reason"]
                full += piece
                buffer += piece
                if in_reasoning:
                    if THINK_CLOSE in buffer:  # at the first `</think>`: a stream cannot wait for a later one
                        before, after = buffer.split(THINK_CLOSE, 1)  # (`parse` splits the whole text at the last)
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
        finally:  # the client has gone (or the answer is done): llama.cpp stops at once, the lock is freed
            close = getattr(parts, "close", None)
            if close:
                close()
    parsed = parse(full)
    if buffer and not calling:
        yield chunk({"reasoning_content" if in_reasoning else "content": buffer})
    if parsed.get("tool_calls"):
        calls = openai_tool_calls(parsed["tool_calls"])
        yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
        finish = "tool_calls"
    yield chunk({}, finish)
    yield "data: [DONE]\n\n"


def serve(recipe: Recipe, host: str = "127.0.0.1", port: int = 8000, quant: str | None = None,
          engine: str = "auto", lora: bool = False, max_model_len: int | None = None,
          speculative: str | None = None, chat_template: str | None = None, api_key: str | None = None,
          no_api_key: bool = False) -> None:
    """`chat_template`: a Jinja file served instead of the model's own template, on either end. `api_key` (else
    $KIT_API_KEY): what clients must send; a host beyond loopback without one is refused unless `no_api_key`."""
    import uvicorn

    key = served_key(host, api_key, no_api_key)
    guarded = " (API key required)" if key else ""
    if choose(engine, "kit serve", fallback="llama.cpp")[0] == "vllm":
        inner = free_port()
        cmd = vllm_command(recipe, "127.0.0.1", inner, lora, max_model_len, speculative, chat_template=chat_template)
        print(f"[kit] vLLM: {' '.join(cmd[1:])}")
        # vLLM in a process group of its own (its engine and workers with it), which dies with this process; the
        # key reaches it through its environment (VLLM_API_KEY), never its command line or the log
        env = {**os.environ, "VLLM_API_KEY": key} if key else {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_parent, env=env)

        def exit_with_vllm():  # the proxy must not outlive the engine it fronts
            code = proc.wait()
            print(f"[kit] vLLM exited with code {code}", flush=True)
            os._exit(code or 1)

        threading.Thread(target=exit_with_vllm, daemon=True).start()
        try:
            variables = template_variables(served_tokenizer(recipe, chat_template))
            announce_template(variables)
            print(f"[kit] serving {recipe.name} with vLLM on http://{host}:{port}/v1 (the recipe's presets per mode)"
                  f"{guarded}")
            import torch

            proxy = preset_proxy(recipe, f"http://127.0.0.1:{inner}", variables, drop_seed=not torch.cuda.is_available(),
                                 api_key=key)
            uvicorn.run(proxy, host=host, port=port, log_level="warning")
        finally:
            stop_group(proc)
        return
    if speculative:
        raise GenerationError("--speculative needs the vLLM end (`--engine vllm`): the llama.cpp end serves the GGUF, "
                              "which the export writes without the MTP layers")

    path = find_gguf(recipe, quant)
    n_ctx = max_model_len or 2048
    llm, mmproj = gguf.load(path, n_ctx=n_ctx), gguf.projector(path)
    app = create_app(recipe, llm, served_tokenizer(recipe, chat_template), n_ctx,
                     path.name, gguf.vision(llm, mmproj) if mmproj else None, api_key=key)
    print(f"[kit] serving {path.name}{f' with {mmproj.name} (images)' if mmproj else ''} with llama.cpp on "
          f"http://{host}:{port}/v1{guarded} (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def served_tokenizer(recipe: Recipe, chat_template: str | None = None):
    """The served model's tokenizer and chat template: the merged model's, else (adapters served on the base)
    the base's; with `chat_template`, that file's template instead of its own."""
    from transformers import AutoTokenizer

    merged = stage_dir(recipe, "export") / "merged"
    if finished(recipe, "export") and (merged / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(merged)
    else:
        tokenizer = load_tokenizer(recipe)
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text(encoding="utf-8")
    return tokenizer


class Server(ChildServer):
    """The kit's server in a child process, for notebooks and tests: `with Server(recipe) as url:`. Its output
    (vLLM's request and throughput lines among it) goes to `log`, by default runs/<recipe>/serve/server-<port>.log,
    and the start says where."""

    def __init__(self, recipe_name: str, port: int = 0, overrides: list[str] | None = None, timeout_s: float = 120,
                 args: list[str] | None = None, python: str | None = None, api_key: str | None = None,
                 log: Path | None = None):
        port = port or free_port()
        self.api_key = api_key
        log = log or stage_dir(recipe_name, "serve") / f"server-{port}.log"
        self.port, self.url = port, f"http://127.0.0.1:{port}/v1"
        cmd = [python or sys.executable, "-m", "kit", "serve", "--recipe", recipe_name, "--port", str(port), *(args or [])]
        for o in overrides or []:
            cmd += ["--set", o]
        env = {**os.environ, API_KEY_ENV: api_key} if api_key else None  # a key in the environment, not in `ps`
        # the server stops its vLLM group within its own grace
        super().__init__(cmd, f"http://127.0.0.1:{port}/health", timeout_s, env=env, log=log, grace_s=30)

    def __enter__(self) -> str:
        print(f"[kit] starting `kit serve` on {self.url}; its log: {self.log}", flush=True)
        super().__enter__()
        return self.url
