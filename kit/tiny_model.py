"""The offline end's base model: a random-init Qwen3.5 text model with a tokenizer trained on
the bundled samples and the real Qwen3.5 chat template (thinking on by default).

It is built once, deterministically from its seed, and cached under `runs/_models/`; after
that it loads through `AutoModelForCausalLM` / `AutoTokenizer` like any hub checkpoint.

    python -m kit tiny-model          # build (or find) it and print its folder
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from .data import SAMPLES_DIR
from .recipe import RecipeError, TinyModelConfig
from .runs import runs_root

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
        from .base_model import qwen_tokenizer

        return qwen_tokenizer()
    raise RecipeError(f"model.tiny.tokenizer must be 'trained' or 'qwen3.5', got '{cfg.tokenizer}'")


def build_config(cfg: TinyModelConfig, tokenizer):
    from transformers import Qwen3_5TextConfig

    from .base_model import QWEN_VOCAB_ROWS

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

    text_dir = ensure(cfg)
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
    """A random-init language model of a published checkpoint's real shape (kit.memory.SHAPES: layers,
    widths, heads; the vision tower left out), in bf16, with the real Qwen3.5/3.6 tokenizer (kit.base_model:
    real ids, the 248,320-row vocabulary, the checkpoint's chat template): for measuring time and memory on a
    GPU without a hub, on real token sequences. It knows no language."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3_5TextConfig

    from .base_model import QWEN_TOKENIZER, QWEN_VOCAB_ROWS, TEMPLATES, offline_tokenizer, qwen_tokenizer
    from .memory import SHAPES

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


def ensure(cfg: TinyModelConfig) -> Path:
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
