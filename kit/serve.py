"""An OpenAI-compatible endpoint for the exported model, on 127.0.0.1.

    python -m kit serve --recipe tiny [--port 8000]

- GPU with vLLM installed: `vllm serve` on the merged model with Qwen3's reasoning parser.
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
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from .formatting import THINK_CLOSE, THINK_OPEN
from .recipe import Recipe
from .runs import stage_dir

STOP = ["<|im_end|>", "<|endoftext|>"]


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
        params = dict(prompt=prompt, max_tokens=max_tokens, stop=STOP, seed=body.get("seed"),
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


def vllm_command(recipe: Recipe, host: str, port: int) -> list[str]:
    merged = stage_dir(recipe, "export") / "merged"
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(merged),
            "--served-model-name", recipe.name, "--host", host, "--port", str(port),
            "--reasoning-parser", "qwen3", "--max-model-len", str(recipe.model.max_seq_length),
            "--generation-config", "auto"]


def use_vllm() -> bool:
    import importlib.util

    from .modeling import has_cuda

    return has_cuda() and importlib.util.find_spec("vllm") is not None and shutil.which("nvidia-smi") is not None


def serve(recipe: Recipe, host: str = "127.0.0.1", port: int = 8000, quant: str | None = None) -> None:
    if use_vllm():
        print(f"[kit] serving {recipe.name} with vLLM on http://{host}:{port}/v1")
        subprocess.run(vllm_command(recipe, host, port), check=True)
        return
    import uvicorn

    path = find_gguf(recipe, quant)
    app = create_app(recipe, path, stage_dir(recipe, "export") / "merged")
    print(f"[kit] serving {path.name} with llama.cpp on http://{host}:{port}/v1 (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


class Server:
    """The kit's server in a child process, for notebooks and tests: `with Server(recipe) as url:`."""

    def __init__(self, recipe_name: str, port: int = 0, overrides: list[str] | None = None, timeout_s: float = 120):
        import socket

        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port, self.timeout_s = port, timeout_s
        self.cmd = [sys.executable, "-m", "kit", "serve", "--recipe", recipe_name, "--port", str(port)]
        for o in overrides or []:
            self.cmd += ["--set", o]
        self.url = f"http://127.0.0.1:{port}/v1"
        self.proc = None

    def __enter__(self) -> str:
        import urllib.request

        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stdout.read()[-2000:]}")
            try:
                urllib.request.urlopen(self.url.replace("/v1", "/health"), timeout=1)
                return self.url
            except OSError:
                time.sleep(0.3)
        self.__exit__()
        raise TimeoutError(f"the server did not answer within {self.timeout_s} s")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
