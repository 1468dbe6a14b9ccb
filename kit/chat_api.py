"""The OpenAI chat request as both ends of `kit serve` read it: its sampling (the recipe's presets by mode or
by name), its `chat_template_kwargs` (checked the same way on both ends), its tools and its content parts
(text joined, images read and checked, video left to the vLLM end), and the 400 that names what is wrong."""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import uuid

from . import images
from .errors import KitError
from .recipe import SAMPLING_KEYS, Recipe, RecipeError


class BadRequest(KitError, ValueError):
    """A request the server answers with an OpenAI-shaped 400 naming the problem."""


class KeyRequired(KitError):
    """A server asked to listen beyond this machine with no API key."""


API_KEY_ENV = "KIT_API_KEY"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host`.

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "192.168.1.5")]
    [True, True, True, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def served_key(host: str, api_key: str | None = None, no_api_key: bool = False, command: str = "kit serve") -> str | None:
    """The key a server checks: `--api-key`, else $KIT_API_KEY. Listening beyond loopback without one is refused
    unless `--no-api-key` says an open endpoint is meant."""
    key = api_key or os.environ.get(API_KEY_ENV) or None
    if key is None and not no_api_key and not is_loopback(host):
        raise KeyRequired(f"{command} --host {host} would let anyone who can reach this machine use it, with no key: "
                          f"pass --api-key KEY (or set {API_KEY_ENV}), and clients send it as their api_key; or pass "
                          f"--no-api-key if an open endpoint is meant")
    if key is None and no_api_key and not is_loopback(host):
        print(f"[kit] warning: {command} on {host} with no API key (--no-api-key): anyone who can reach this machine "
              f"can use it", flush=True)
    return key


async def send_error(send, status: int, message: str, headers: list | None = None) -> None:
    """An OpenAI-shaped error sent from ASGI middleware, before any route sees the request."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": json.dumps(error_body(message, status)).encode()})


MAX_BODY_BYTES = 32 * 2**20  # a request's body: room for a few images as base64


class LimitBody:
    """ASGI middleware: a body over `max_bytes` (by its Content-Length, or as it arrives) is an OpenAI-shaped 413
    before anything reads it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send):
        await send_error(send, 413, f"the request body is over {self.max_bytes // 2**20} MiB")


class _TooLarge(Exception):
    pass


class RequireKey:
    """ASGI middleware: every route but /health wants `Authorization: Bearer <key>` (what the openai client sends
    as its api_key); anything else gets an OpenAI-shaped 401, which the client raises as AuthenticationError.
    A pure ASGI layer, so streamed replies and client disconnects pass through it untouched."""

    def __init__(self, app, key: str, open_paths: tuple[str, ...] = ("/health",)):
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
            if not hmac.compare_digest(token, self.key):
                return await send_error(send, 401, "missing or wrong API key: send it as `Authorization: Bearer <key>` "
                                                   "(the openai client's api_key)", [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


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
    kwargs = template_kwargs(body)
    if body.get("preset") is not None and not isinstance(body["preset"], str):
        raise BadRequest(f"preset must be a name (thinking, thinking-precise, instruct), not {body['preset']!r}")
    for k in SAMPLING_KEYS:
        if body.get(k) is not None and (isinstance(body[k], bool) or not isinstance(body[k], (int, float))):
            raise BadRequest(f"{k} must be a number, not {body[k]!r}")
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
    kit.chat_api.BadRequest: chat_template_kwargs.enable_thinking must be true or false, got "no"
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
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a 'role'")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(f"messages[{i}].content must be a string or a list of parts")
        if isinstance(content, list) and not all(isinstance(p, dict) for p in content):
            raise BadRequest(f"messages[{i}].content's parts must be objects with a 'type'")
        calls = m.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(
                isinstance(c, dict) and isinstance(c.get("function") or {}, dict) for c in calls)):
            raise BadRequest(f"messages[{i}].tool_calls must be a list of objects, each with a 'function' object")
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
                m = {**m, "content": "".join(str(p.get("text") or "") for p in m["content"])}
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
