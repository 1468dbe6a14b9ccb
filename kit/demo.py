"""Gradio demo: a streaming chat with the reasoning in a collapsible "Thinking" block.

    python -m kit demo --recipe tiny [--backend local|gguf|openai] [--base-url URL] [--share]

Backends: the run's own model (`local`: the RL or SFT adapter on its base, transformers), the
exported GGUF through llama.cpp (`gguf`), or any OpenAI-compatible endpoint (`openai`: the kit's
server, vLLM, DeepSeek). Thinking on/off applies the recipe's two sampling presets, editable under
"Advanced". Earlier turns are sent without their reasoning unless asked to keep it. Where the backend
can take images (a vision-language checkpoint on `local`; `openai`, whose server decides), the question
can carry an uploaded image, sent as an OpenAI `image_url` part; where it takes video (`openai`: vLLM serves
a Qwen3.5/3.6 checkpoint's video processor), a short clip, sent as a `video_url` part.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from . import images
from .capacity import check_capacity
from .chat_api import API_KEY_ENV
from .formatting import split_reasoning
from .generation import HFEngine, LlamaCppEngine, OpenAIEngine, Sampling, prompt_texts, template_kwargs
from .modeling import load_model
from .recipe import PRESETS, Recipe
from .runs import final_adapter, stage_dir
from .serve import find_gguf

NOTICE = ("⚠️ **Not medical advice.** Answers come from a research model, are not validated for clinical "
          "use, can be wrong, and must be reviewed by a qualified health professional.")
EXAMPLES = [
    "A 58-year-old man has crushing chest pain and ST elevation in II, III and aVF. Which artery is occluded?",
    "What is the first-line treatment of anaphylaxis in an adult?",
    "A patient on warfarin starts clarithromycin. What happens to the INR?",
    "对乙酰氨基酚过量的解毒剂是什么？",
    "青年女性怕热、心悸、甲状腺弥漫性肿大伴突眼，最可能的诊断是什么？",
]
MAX_INPUT_CHARS = 4000


def preset(recipe: Recipe, thinking: bool, max_new_tokens: int = 512) -> Sampling:
    p = recipe.sampling.thinking if thinking else recipe.sampling.non_thinking
    return Sampling.from_preset(p, max_new_tokens)


def images_in(messages: list[dict]) -> list:
    """The images of a conversation's `image_url` parts, in order, as Pillow images."""
    return [images.read(part["image_url"]["url"]) for m in messages
            for part in (m["content"] if isinstance(m.get("content"), list) else []) if part.get("type") == "image_url"]


def user_content(content):
    """A user turn of the Chatbot (text, or text with an image file, in Gradio's shapes) → OpenAI content."""
    if isinstance(content, str):
        return content
    items = content if isinstance(content, list) else [content]
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append({"type": "text", "text": item})
        elif item.get("type") == "text":
            parts.append({"type": "text", "text": item["text"]})
        else:  # a file: {"path": ...}, or {"type": "file", "file": {"path": ...}}
            parts.append(images.media_part((item.get("file") or item)["path"]))
    return parts


def history_messages(history: list[dict], keep_reasoning: bool) -> list[dict]:
    """Chatbot history → chat messages. Thinking blocks are dropped (the model's default) unless kept, in
    which case each goes back with its answer as `reasoning_content`, and the backend asks the template to
    preserve it (`preserve_thinking`)."""
    out, pending = [], None
    for m in history:
        title = (m.get("metadata") or {}).get("title")
        if m["role"] == "assistant" and title:
            pending = m["content"] if keep_reasoning else None
            continue
        if m["role"] == "assistant":
            out.append({"role": "assistant", "content": m["content"], **({"reasoning_content": pending} if pending else {})})
            pending = None
        elif m["role"] == "user":
            out.append({"role": "user", "content": user_content(m["content"])})
    return out


class TemplateBackend:
    """An engine that takes rendered prompts (hf, llama.cpp), behind the chat template of the run."""

    video = False  # hf and llama.cpp: the kit feeds them images; a clip needs the openai backend on vLLM

    def __init__(self, engine, tokenizer, name: str):
        self.engine, self.tokenizer, self.name = engine, tokenizer, name
        self.vision = getattr(engine, "vision", False)
        self.lock = threading.Lock()  # one model: one generation at a time

    def stream(self, messages: list[dict], thinking: bool, s: Sampling) -> Iterator[str]:
        if any(p.get("type") == "video_url" for m in messages if isinstance(m.get("content"), list) for p in m["content"]):
            raise ValueError(f"{self.name} reads text and images; a video clip needs a server that takes video "
                             f"(the openai backend on `python -m kit serve --engine vllm`)")
        # the template turns each image part into the model's image placeholder; the engine fills them
        (prompt,) = prompt_texts(self.tokenizer, [messages], **template_kwargs(messages, thinking))
        images = images_in(messages)
        with self.lock:
            yield from self.engine.stream(prompt, s, images) if images else self.engine.stream(prompt, s)


def local_backend(recipe: Recipe) -> TemplateBackend:
    """The run's adapter (RL, else SFT) on its base, through transformers."""
    check_capacity(recipe, ["eval"])
    adapter = final_adapter(recipe)
    loaded = load_model(recipe, adapter=adapter, trainable=False)
    name = f"local ({adapter.parent.name} adapter)" if adapter else "local (base model)"
    return TemplateBackend(HFEngine(loaded.model, loaded.tokenizer, processor=loaded.processor), loaded.tokenizer, name)


def gguf_backend(recipe: Recipe, path: Path | None = None) -> TemplateBackend:
    from transformers import AutoTokenizer

    path = path or find_gguf(recipe)
    tokenizer = AutoTokenizer.from_pretrained(stage_dir(recipe, "export") / "merged")
    return TemplateBackend(LlamaCppEngine(path, n_ctx=4096), tokenizer, f"llama.cpp ({path.name})")


def openai_backend(base_url: str, model: str, api_key: str | None = None) -> OpenAIEngine:
    engine = OpenAIEngine(base_url, model, api_key)
    engine.name = f"OpenAI-compatible ({base_url}, {model})"
    engine.vision = engine.video = True  # the server decides: vLLM serves a vision-language model's images and
    # clips, others say why not
    return engine


def respond(backend, message: str, history: list[dict], thinking: bool, keep_reasoning: bool, s: Sampling,
            image: str | None = None, video: str | None = None):
    """Chatbot history after each streamed piece: user turn (with its image and clip, if uploaded),
    Thinking block, answer; errors shown in the chat."""
    history = list(history or [])
    message = (message or "").strip()
    if not message:
        yield history
        return
    files = [{"path": f} for f in (image, video) if f]
    history.append({"role": "user", "content": [*files, message] if files else message})
    if len(message) > MAX_INPUT_CHARS:
        history.append({"role": "assistant", "content": f"Your message is {len(message):,} characters long; "
                        f"the limit is {MAX_INPUT_CHARS:,}. Please shorten it."})
        yield history
        return
    base, text = list(history), ""
    try:
        messages = history_messages(history, keep_reasoning)
        for text in backend.stream(messages, thinking, s):
            yield base + shown_turn(text, thinking, finished=False)
        yield base + shown_turn(text, thinking, finished=True)
    except Exception as e:  # the app stays up; the user sees what went wrong
        yield base + [{"role": "assistant", "content": f"⚠️ The model backend failed: {type(e).__name__}: {e}"}]


def shown_turn(text: str, thinking: bool, finished: bool) -> list[dict]:
    """The assistant's turn as chat messages: a collapsible Thinking block, then the answer."""
    reasoning, answer = split_reasoning(text, thinking)
    out = []
    if reasoning is not None:
        done = finished or "</think>" in text
        out.append({"role": "assistant", "content": reasoning or "…",
                    "metadata": {"title": "Thinking", "status": "done" if done else "pending"}})
    if finished and not answer:
        answer = "(no final answer: the model was still thinking at the token limit — raise max new tokens)" \
            if thinking else "(empty answer)"
    if answer:
        out.append({"role": "assistant", "content": answer})
    return out


def build_app(recipe: Recipe, backend):
    import gradio as gr

    think = preset(recipe, True)
    with gr.Blocks(title=f"Medical reasoning demo · {recipe.name}") as app:
        gr.Markdown(f"# Medical reasoning demo · `{recipe.name}`\nBackend: {backend.name}")
        gr.Markdown(NOTICE, elem_id="notice")
        chat = gr.Chatbot(label="Conversation", height=480, elem_id="chat")
        with gr.Row():
            box = gr.Textbox(placeholder="Ask a medical question…", scale=5, show_label=False, elem_id="question")
            image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image (optional)", height=120,
                             scale=1, visible=bool(getattr(backend, "vision", False)), elem_id="image")
            clip = gr.Video(sources=["upload"], label="Video clip (optional)", height=120, scale=1,
                            visible=bool(getattr(backend, "video", False)), elem_id="video")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        with gr.Row():
            presets = gr.Radio(list(PRESETS), value="thinking", label="Sampling preset (Qwen3.6's card)",
                               elem_id="preset")
            thinking = gr.Checkbox(value=True, label="Thinking", elem_id="thinking")
            keep = gr.Checkbox(value=False, label="Send earlier reasoning back to the model",
                               info="preserve_thinking: Qwen3.6's template keeps it; Qwen3.5's drops it anyway")
            clear = gr.Button("Clear")
        with gr.Accordion("Advanced", open=False):
            temperature = gr.Slider(0.0, 2.0, value=think.temperature, step=0.05, label="temperature")
            top_p = gr.Slider(0.05, 1.0, value=think.top_p, step=0.05, label="top_p")
            top_k = gr.Slider(0, 100, value=think.top_k, step=1, label="top_k")
            presence = gr.Slider(0.0, 2.0, value=think.presence_penalty, step=0.1, label="presence_penalty")
            max_new = gr.Slider(16, 8192, value=think.max_new_tokens, step=16, label="max new tokens")
        gr.Examples(EXAMPLES, inputs=box)

        def pick_preset(name: str):
            p = recipe.sampling.named(name)
            return name != "instruct", p.temperature, p.top_p, p.top_k, p.presence_penalty

        # the preset sets the sliders and thinking; moving a slider afterwards overrides it, as in the API
        presets.input(pick_preset, presets, [thinking, temperature, top_p, top_k, presence], show_progress="hidden")
        thinking.input(lambda on: pick_preset("thinking" if on else "instruct")[1:], thinking,  # the user's click only
                       [temperature, top_p, top_k, presence])

        def chat_fn(message, history, on, keep_r, t, p, k, pres, mx, picture=None, video=None):
            s = Sampling(int(mx), t, p, int(k), presence_penalty=pres)
            yield from respond(backend, message, history, on, keep_r, s, picture, video)

        inputs = [box, chat, thinking, keep, temperature, top_p, top_k, presence, max_new, image, clip]
        for trigger in (send.click, box.submit):
            trigger(chat_fn, inputs, chat, api_name="chat" if trigger == send.click else False).then(
                lambda: ("", None, None), None, [box, image, clip])
        clear.click(lambda: [], None, chat)
    app.queue(default_concurrency_limit=2, max_size=32)  # generations at once; requests waiting
    return app


def make_backend(recipe: Recipe, kind: str = "local", base_url: str | None = None, model: str | None = None):
    if kind == "local":
        return local_backend(recipe)
    if kind == "gguf":
        return gguf_backend(recipe)
    if kind == "openai":
        if not base_url:
            raise ValueError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        return openai_backend(base_url, model or recipe.name, os.environ.get(API_KEY_ENV))  # `kit serve`'s key
    raise ValueError(f"unknown backend '{kind}' (local, gguf, openai)")


AUTH_ENV = "KIT_DEMO_AUTH"


def demo_login(share: bool, auth: str | None = None, no_auth: bool = False) -> tuple[str, str] | None:
    """The login Gradio asks for (its own `auth`): `auth` as "user:password" (else $KIT_DEMO_AUTH); with a public
    link and none given, a password made here and printed once (workshops paste share links into chat rooms);
    `no_auth` for an open link that is meant.

    >>> demo_login(False), demo_login(False, "ward:s3cret")
    (None, ('ward', 's3cret'))
    """
    auth = auth or os.environ.get(AUTH_ENV)
    if auth:
        user, sep, password = auth.partition(":")
        if not (sep and user and password):
            raise ValueError(f"--auth wants user:password, not {auth[:3]}… (${AUTH_ENV} likewise)")
        return user, password
    if share and not no_auth:
        password = secrets.token_urlsafe(9)
        print(f"[kit] the public link asks for a login: user 'kit', password '{password}' (shown once; "
              f"--auth user:password to choose one, --no-auth for an open link)", flush=True)
        return "kit", password
    if share:
        print("[kit] warning: the public link has no login (--no-auth): anyone with it can use this GPU", flush=True)
    return None


def launch(recipe: Recipe, backend: str = "local", *, base_url: str | None = None, model: str | None = None,
           share: bool = False, port: int | None = None, block: bool = True, inline: bool = False,
           auth: str | None = None, no_auth: bool = False):
    """Start the demo on 127.0.0.1 (public link only with share=True, behind a login unless `no_auth`: see
    `demo_login`). Returns the app (call .close())."""
    login = demo_login(share, auth, no_auth)
    app = build_app(recipe, make_backend(recipe, backend, base_url, model))
    app.launch(server_name="127.0.0.1", server_port=port, share=share, prevent_thread_lock=not block,
               show_error=True, inline=inline, auth=login,
               auth_message="medreason-kit demo: not medical advice, not validated for clinical use" if login else None)
    return app
