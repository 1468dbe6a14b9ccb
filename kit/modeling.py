"""Model loading, one function with two ends.

- Unsloth end: a CUDA GPU with unsloth installed. Qwen3.5/3.6 checkpoints are vision-language,
  so they load through `FastVisionModel` with only the language layers trained; plain text
  models (and the kit's tiny model) through `FastLanguageModel`.
- Transformers end: everything else (CPU, or a GPU without unsloth): transformers + peft, 4-bit
  through bitsandbytes when the recipe asks (`prepare_model_for_kbit_training`).

unsloth is imported only on the Unsloth end: on a machine without a GPU its import fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


from .base_model import model_path, tokenizer_path
from .errors import KitError
from .recipe import Recipe, RecipeError
from .runtime import TRANSFORMERS, UNSLOTH, Sharding, has_cuda, pick_end


@dataclass
class Loaded:
    model: object
    tokenizer: object
    end: str  # UNSLOTH or TRANSFORMERS
    device: str
    processor: object | None = None  # vision-language checkpoints: saved with every adapter and merge
    loader: object | None = None  # Unsloth's class that loaded it (its for_inference / for_training switches)

    def save_tokenizer(self, folder) -> None:
        """The processor of a vision-language checkpoint (tokenizer, image processor, chat template), so that
        `FastVisionModel` or `vllm serve` reload the folder; the tokenizer alone otherwise."""
        (self.processor or self.tokenizer).save_pretrained(folder)

    def for_inference(self) -> None:
        if self.loader is not None:
            self.loader.for_inference(self.model)

    def for_training(self) -> None:
        if self.loader is not None:
            self.loader.for_training(self.model)


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path(recipe))
    return getattr(tok, "tokenizer", tok)


def compute_dtype(recipe: Recipe):
    """The dtype the model is loaded and trained in: the recipe's, else bf16 where the GPU has it, fp16 on other
    GPUs, fp32 on a CPU."""
    import torch

    if recipe.model.dtype != "auto":
        return getattr(torch, recipe.model.dtype)
    if has_cuda():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def cpu_has_native_bf16(flags: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX-512 BF16, from /proc/cpuinfo's flags): there a
    bf16 decode step reads half the bytes and runs faster; elsewhere oneDNN emulates bf16, slower than fp32.

    >>> cpu_has_native_bf16("fpu avx2 avx512f amx_bf16 amx_tile"), cpu_has_native_bf16("fpu avx2 avx512f")
    (True, False)
    """
    if flags is None:
        try:
            flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
        except OSError:
            return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def inference_dtype(setting: str, field: str = "eval.cpu_dtype"):
    """The dtype an inference-only load takes on a CPU (`eval.cpu_dtype`, `rl.cpu_dtype`): `auto` = bf16 where the
    CPU has it in hardware, else fp32; `float32` / `bfloat16` as named. None on a GPU: the recipe's own dtype
    applies there."""
    import torch

    if setting not in ("auto", "float32", "bfloat16"):
        raise RecipeError(f"{field} must be auto, float32 or bfloat16, got '{setting}'")
    if has_cuda():
        return None
    if setting == "auto":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return getattr(torch, setting)


class InferenceCopy:
    """A generation-only copy of a training `PeftModel` (transformers end): `plain`, the base model loaded as an
    inference load makes it (`load_model(trainable=False, dtype=...)`, as eval's), into which `sync()` writes the
    policy's current weights with the adapter merged in. A decode step on it runs the base's matmuls alone, and in
    bf16 reads half the bytes; TRL's own generation runs on the training model, its adapter unmerged, in the training
    dtype. Synced before each rollout, as TRL pushes the weights into vLLM; the training model is never changed: an
    adapted layer's weight is its base weight plus peft's `get_delta_weight`, computed aside, not merged and unmerged
    in place (which would round the training weights a little at every sync). Not a deep copy of the training model:
    cast after loading, its rotary frequencies and its config's dtype stayed fp32 and generation ran at half the
    speed of the same weights loaded in bf16 (smollm2, 2 cores)."""

    def __init__(self, model, plain):
        from peft.tuners.lora import LoraLayer

        self.model = plain.eval()
        self.dtype = next(plain.parameters()).dtype
        self.model.requires_grad_(False)
        modules = dict(self.model.named_modules())
        params = dict(self.model.named_parameters(remove_duplicate=False))
        base = model.get_base_model()
        self.layers = []  # (an adapted layer of the training model, its plain layer in the copy)
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer):
                if any(module.use_dora.get(a) for a in module.active_adapters):
                    raise KitError(f"an inference copy merges LoRA as W + BA; {name} uses DoRA, which it does not merge")
                if name not in modules:
                    raise KitError(f"an inference copy has no layer '{name}' for the adapted one")
                self.layers.append((module, modules[name]))
        self.weights = []  # (a weight trained in full, e.g. modules_to_save, its place in the copy)
        for name, p in base.named_parameters():
            if p.requires_grad and "lora_" not in name:
                # the name it has once merged: TRL's mapping when it pushes a PeftModel's weights into vLLM
                target = name.replace(".modules_to_save.default", "").replace(".base_layer", "")
                if target not in params:
                    raise KitError(f"an inference copy has no weight '{target}' for the trained '{name}'")
                self.weights.append((p, params[target]))
        trained = {id(t) for _, t in self.weights}
        if len(trained) < len(self.weights):  # two trained weights, one tensor in the copy (tied embeddings)
            raise KitError("an inference copy ties weights the policy trains apart (modules_to_save of tied embeddings)")

    def sync(self) -> None:
        import torch

        with torch.no_grad():
            for lora, plain in self.layers:
                delta = sum(lora.get_delta_weight(a) for a in lora.active_adapters)
                plain.weight.copy_(lora.get_base_layer().weight + delta)
            for trained, plain in self.weights:
                plain.copy_(trained)


def _is_vision_language(path: str) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    return hasattr(config, "vision_config")


def load_model(recipe: Recipe, *, adapter: str | Path | None = None, trainable: bool = True,
               load_in_4bit: bool | None = None, fast_inference: bool = False, dtype=None,
               merge: bool = False) -> Loaded:
    """Base model (+ a new LoRA, or an existing adapter) on the best end this machine offers.
    `fast_inference` (Unsloth end): a vLLM engine in the same process shares the weights, for rollouts.
    For an inference-only load on the transformers end, `dtype` replaces the recipe's and `merge` folds the
    adapter into the weights (peft's `merge_and_unload`): each decode step then runs the base's matmuls alone,
    not two more per adapted layer (smollm2: 1.17x the tokens/s of the unmerged adapter, bench/bench_eval_cpu.py)."""
    path = model_path(recipe)
    four_bit = recipe.model.load_in_4bit if load_in_4bit is None else load_in_4bit
    end = pick_end()
    print(f"[kit] loading {recipe.model.name_or_path} on the {end} end (4-bit: {four_bit}"
          f"{', vLLM fast_inference' if fast_inference else ''})")
    if end == UNSLOTH:
        return _load_unsloth(recipe, path, adapter, trainable, four_bit, fast_inference)
    return _load_transformers(recipe, path, adapter, trainable, four_bit, dtype,
                              merge and not trainable and not four_bit)


def unsloth_fast_inference_problem(path: str) -> str | None:
    """Why the installed Unsloth cannot put this checkpoint on vLLM (`fast_inference`), from its own
    lists (vision-language types it supports; text types it does not), or None."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    types = [config.model_type] + [getattr(getattr(config, k, None), "model_type", None)
                                   for k in ("text_config", "vision_config")]
    types = [t for t in types if t]
    try:
        from unsloth.models.loader import VLLM_UNSUPPORTED_MODEL_TYPES
        from unsloth.models.vision import VLLM_SUPPORTED_VLM
    except ImportError as e:
        return f"could not read the installed Unsloth's vLLM support lists ({e})"
    if hasattr(config, "vision_config") and not any(t in VLLM_SUPPORTED_VLM for t in types):
        return f"the installed Unsloth supports fast_inference for vision-language types {VLLM_SUPPORTED_VLM}, not {types}"
    if bad := [t for t in types if t in VLLM_UNSUPPORTED_MODEL_TYPES]:
        return f"the installed Unsloth does not support fast_inference for {bad[0]}"
    return None


def _load_unsloth(recipe, path, adapter, trainable, four_bit, fast_inference=False) -> Loaded:
    from unsloth import FastLanguageModel, FastVisionModel

    vision = _is_vision_language(path)
    loader = FastVisionModel if vision else FastLanguageModel
    vllm_args = dict(fast_inference=True, gpu_memory_utilization=recipe.rl.gpu_memory_utilization,
                     max_lora_rank=recipe.lora.r) if fast_inference else {}
    model, tokenizer = loader.from_pretrained(
        model_name=str(adapter or path),  # Unsloth resolves an adapter folder to its base
        max_seq_length=recipe.model.max_seq_length,
        load_in_4bit=four_bit,
        dtype=None if recipe.model.dtype == "auto" else compute_dtype(recipe),
        use_gradient_checkpointing="unsloth",
        **vllm_args,
    )
    if trainable and adapter is None:
        lora = recipe.lora
        # The recipe's modules on the language model, and the vision tower's only with `finetune_vision_layers`:
        # Unsloth intersects an explicit list with its finetune_* filters, so an untrained tower is saved as it was
        scope = dict(finetune_vision_layers=lora.finetune_vision_layers, finetune_language_layers=lora.finetune_language_layers,
                     finetune_attention_modules=True, finetune_mlp_modules=True) if vision else {}
        targets = lora.target_modules + (VISION_MODULES if vision and lora.finetune_vision_layers else [])
        model = loader.get_peft_model(
            model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
            target_modules=targets, use_gradient_checkpointing="unsloth", random_state=recipe.data.seed,
            modules_to_save=lora.modules_to_save or None, **scope,
        )
    elif not trainable:
        loader.for_inference(model)
    processor = tokenizer if vision else None
    return Loaded(model, getattr(tokenizer, "tokenizer", tokenizer), UNSLOTH, "cuda", processor, loader)


def _load_transformers(recipe, path, adapter, trainable, four_bit, dtype=None, merge=False) -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    # one GPU per process under a multi-process launch (LOCAL_RANK), as DDP expects
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if has_cuda() else "cpu"
    vision = _is_vision_language(path)
    kwargs = load_kwargs(recipe, four_bit, device)
    if dtype is not None and not trainable:
        kwargs["dtype"] = dtype
    # a vision-language checkpoint keeps its vision tower (merged and saved as it was); text-only training
    # passes through it untouched
    model = (AutoModelForImageTextToText if vision else AutoModelForCausalLM).from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter) if adapter else path)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    processor = AutoProcessor.from_pretrained(path) if vision else None
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    # (sharded QLoRA: its fp32 upcasts would break FSDP's one dtype per wrapped unit; TRL skips it too)
    if four_bit and trainable and "device_map" in kwargs:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
        if merge:
            model = model.merge_and_unload()
    elif trainable:
        lora = recipe.lora
        torch.manual_seed(recipe.data.seed)  # the LoRA init, as Unsloth's random_state= does on its end
        model = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
            target_modules=lora_targets(lora.target_modules, vision, lora.finetune_vision_layers,
                                        lora.finetune_language_layers), modules_to_save=lora.modules_to_save or None,
            task_type="CAUSAL_LM",
        ))
    if not trainable:
        model.eval()
    return Loaded(model, tokenizer, TRANSFORMERS, device, processor)


def load_kwargs(recipe: Recipe, four_bit: bool, device: str) -> dict:
    """`from_pretrained` arguments on the transformers end. Inside a launch that shards the weights
    (FSDP FULL_SHARD, ZeRO-3) the launcher places them: no device_map (transformers refuses one under
    ZeRO-3; under FSDP every process would first load the whole model onto its GPU), and 4-bit weights
    stored in the model's dtype, which FSDP needs to shard them with the rest (bitsandbytes' FSDP-QLoRA)."""
    import torch
    from transformers import BitsAndBytesConfig

    sharded = Sharding.from_env().weights
    dtype = compute_dtype(recipe)
    kwargs = {"dtype": dtype} if sharded else {"dtype": dtype, "device_map": device}
    if four_bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            # Qwen3.5's per-head gate projections are a few rows wide: too small to quantise
            # (bitsandbytes' CPU kernel needs blocks of rows), and negligible in memory.
            llm_int8_skip_modules=["lm_head", "in_proj_a", "in_proj_b"],
            bnb_4bit_compute_dtype=dtype if dtype != torch.float16 or device.startswith("cuda") else torch.float32,
            **({"bnb_4bit_quant_storage": dtype} if sharded else {}),
        )
    return kwargs


# The linear layers of Qwen3.5/3.6's vision tower (its blocks' attention and MLP, and the merger into the language model)
VISION_MODULES = ["qkv", "proj", "linear_fc1", "linear_fc2"]


def lora_targets(names: list[str], vision: bool, vision_layers: bool = False, language_layers: bool = True) -> list[str] | str:
    """peft's target_modules: the recipe's module names, scoped to the language model of a vision-language
    checkpoint, and the vision tower's linear layers where `vision_layers` (a regex peft matches against full
    module names).

    >>> lora_targets(["q_proj", "v_proj"], vision=True)
    '.*language_model.*\\\\.(q_proj|v_proj)'
    >>> lora_targets(["q_proj"], vision=True, vision_layers=True, language_layers=False)
    '.*visual.*\\\\.(qkv|proj|linear_fc1|linear_fc2)'
    """
    if not vision:
        return names
    parts = ([r".*language_model.*\.(" + "|".join(names) + ")"] if language_layers else []) + \
            ([r".*visual.*\.(" + "|".join(VISION_MODULES) + ")"] if vision_layers else [])
    if not parts:
        raise RecipeError("lora: finetune_vision_layers and finetune_language_layers are both false: nothing to train")
    return "|".join(parts)
