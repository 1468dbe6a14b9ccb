"""Model loading, one function with two ends.

- Unsloth end: a CUDA GPU with unsloth installed. Qwen3.5/3.6 checkpoints are vision-language,
  so they load through `FastVisionModel` with only the language layers trained; plain text
  models (and the kit's tiny model) through `FastLanguageModel`.
- Transformers end: everything else (CPU, or a GPU without unsloth): transformers + peft, 4-bit
  through bitsandbytes when the recipe asks (`prepare_model_for_kbit_training`).

unsloth is imported only on the Unsloth end: on a machine without a GPU its import fails.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from . import base_model, tiny_model
from .recipe import Recipe
from .runs import world_size

UNSLOTH = "unsloth"
TRANSFORMERS = "transformers+peft"


class CapacityError(RuntimeError):
    """The recipe asks for more than this machine has; raised before anything is loaded."""


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


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_end() -> str:
    """Unsloth on a CUDA machine that has it, else transformers+peft; `KIT_END` forces one (gpu-check)."""
    forced = os.environ.get("KIT_END")
    if forced:
        if forced not in (UNSLOTH, TRANSFORMERS):
            raise CapacityError(f"KIT_END must be '{UNSLOTH}' or '{TRANSFORMERS}', got '{forced}'")
        if forced == UNSLOTH and not has_cuda():
            raise CapacityError("KIT_END=unsloth needs a CUDA GPU (unsloth cannot be imported without one)")
        return forced
    if world_size() > 1:  # Unsloth trains on one GPU; several processes use this end
        return TRANSFORMERS
    if has_cuda() and importlib.util.find_spec("unsloth") is not None:
        return UNSLOTH
    return TRANSFORMERS


def import_end() -> str:
    """Pick the end and, on the Unsloth end, import unsloth now, before transformers, TRL or peft:
    unsloth patches them when it is imported and warns (and skips its patches) when it comes later.
    Every stage calls this first."""
    end = pick_end()
    if end == UNSLOTH:
        import unsloth  # noqa: F401

    return end


def gpu_memory_needed(recipe: Recipe, stages=None) -> float:
    """GiB of GPU memory the recipe needs: the recipe's figure, else kit.memory's estimate of the largest
    of `stages` (default: every stage; per GPU inside a multi-process launch). 0 = runs on a CPU."""
    if recipe.model.min_gpu_memory_gb is not None:
        return recipe.model.min_gpu_memory_gb
    from .memory import needed_gib

    return round(needed_gib(recipe, unsloth=pick_end() == UNSLOTH if has_cuda() else True, stages=stages), 1)


def check_capacity(recipe: Recipe, stages=None, need: float | None = None) -> None:
    """Fail early, with the reason, when this machine cannot run the recipe's `stages` (default: all),
    or give a GPU the `need` GiB (`kit check` of a launch: its per-GPU estimate)."""
    if need is None or recipe.model.min_gpu_memory_gb is not None:
        need = gpu_memory_needed(recipe, stages)
    if need <= 0:
        return
    if not has_cuda():
        raise CapacityError(
            f"recipe '{recipe.name}' ({recipe.model.name_or_path}, {recipe.model.params_b:g}B parameters) "
            f"needs a CUDA GPU with about {need:g} GiB of memory; this machine has none. "
            f"On a CPU use the 'tiny' recipe: python -m kit <stage> --recipe tiny"
        )
    import torch

    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    if total < need:
        which = "stages" if stages is None else ", ".join(stages)
        raise CapacityError(
            f"recipe '{recipe.name}' needs about {need:g} GiB of GPU memory (the largest of its {which}"
            f"{' per GPU of this launch' if world_size() > 1 else ''}; "
            f"`python -m kit check --recipe {recipe.name}` shows each); {torch.cuda.get_device_name(0)} has "
            f"{total:.1f} GiB. Try the 'workshop' recipe, or a smaller batch or sequence length."
        )


def model_path(recipe: Recipe) -> str:
    """Hub id or folder of the base model; the built-in tiny model, a random-init model of a published
    shape (`builtin:shape:Qwen/Qwen3.5-0.8B`), or a real model from a registry package
    (`builtin:smollm2-135m-instruct`, kit.base_model) is built (once) here."""
    if recipe.model.name_or_path in base_model.BUILDERS:
        return str(base_model.ensure(recipe.model.name_or_path))
    if recipe.model.name_or_path == tiny_model.BUILTIN:
        return str(tiny_model.ensure(recipe.model.tiny))
    if recipe.model.name_or_path == tiny_model.BUILTIN_VL:
        return str(tiny_model.ensure_vision_language(recipe.model.tiny))
    if recipe.model.name_or_path.startswith(tiny_model.SHAPE_PREFIX):
        return str(tiny_model.ensure_shape(recipe.model.name_or_path[len(tiny_model.SHAPE_PREFIX):]))
    return recipe.model.name_or_path


def tokenizer_path(recipe: Recipe) -> str:
    """Where the recipe's tokenizer comes from: the base model's, or, with `data.offline` and a Qwen3.5/3.6
    checkpoint, the kit's built-in copy of that tokenizer (the same ids, no hub)."""
    builtin = base_model.offline_tokenizer(recipe.model.name_or_path) if recipe.data.offline else None
    return str(base_model.ensure(builtin)) if builtin else model_path(recipe)


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path(recipe))
    return getattr(tok, "tokenizer", tok)


def _dtype(recipe: Recipe):
    import torch

    if recipe.model.dtype != "auto":
        return getattr(torch, recipe.model.dtype)
    if has_cuda():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _is_vision_language(path: str) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    return hasattr(config, "vision_config")


def load_model(recipe: Recipe, *, adapter: str | Path | None = None, trainable: bool = True,
               load_in_4bit: bool | None = None, fast_inference: bool = False) -> Loaded:
    """Base model (+ a new LoRA, or an existing adapter) on the best end this machine offers.
    `fast_inference` (Unsloth end): a vLLM engine in the same process shares the weights, for rollouts."""
    check_capacity(recipe, ["sft", "rl"] if trainable else ["eval", "export"])
    path = model_path(recipe)
    four_bit = recipe.model.load_in_4bit if load_in_4bit is None else load_in_4bit
    end = pick_end()
    print(f"[kit] loading {recipe.model.name_or_path} on the {end} end (4-bit: {four_bit}"
          f"{', vLLM fast_inference' if fast_inference else ''})")
    if end == UNSLOTH:
        return _load_unsloth(recipe, path, adapter, trainable, four_bit, fast_inference)
    return _load_transformers(recipe, path, adapter, trainable, four_bit)


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
        dtype=None if recipe.model.dtype == "auto" else _dtype(recipe),
        use_gradient_checkpointing="unsloth",
        **vllm_args,
    )
    if trainable and adapter is None:
        lora = recipe.lora
        # The recipe's modules, on the language model only: Unsloth intersects an explicit list with its
        # finetune_* filters, so the vision tower stays untouched (and is saved as it was)
        scope = dict(finetune_vision_layers=False, finetune_language_layers=True,
                     finetune_attention_modules=True, finetune_mlp_modules=True) if vision else {}
        model = loader.get_peft_model(
            model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
            target_modules=lora.target_modules, use_gradient_checkpointing="unsloth", random_state=recipe.data.seed,
            modules_to_save=lora.modules_to_save or None, **scope,
        )
    elif not trainable:
        loader.for_inference(model)
    processor = tokenizer if vision else None
    return Loaded(model, getattr(tokenizer, "tokenizer", tokenizer), UNSLOTH, "cuda", processor, loader)


def _load_transformers(recipe, path, adapter, trainable, four_bit) -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    # one GPU per process under a multi-process launch (LOCAL_RANK), as DDP expects
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if has_cuda() else "cpu"
    vision = _is_vision_language(path)
    kwargs = load_kwargs(recipe, four_bit, device)
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
    elif trainable:
        lora = recipe.lora
        torch.manual_seed(recipe.data.seed)  # the LoRA init, as Unsloth's random_state= does on its end
        model = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
            target_modules=lora_targets(lora.target_modules, vision), modules_to_save=lora.modules_to_save or None,
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

    from .memory import Sharding

    sharded = Sharding.from_env().weights
    dtype = _dtype(recipe)
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


def lora_targets(names: list[str], vision: bool) -> list[str] | str:
    """peft's target_modules: the recipe's module names, scoped to the language model of a
    vision-language checkpoint (a regex peft matches against full module names).

    >>> lora_targets(["q_proj", "v_proj"], vision=True)
    '.*language_model.*\\\\.(q_proj|v_proj)'
    """
    if not vision:
        return names
    return r".*language_model.*\.(" + "|".join(names) + ")"


def restore_full_module_dtypes(loaded: Loaded, model) -> None:
    """Put each module trained in full (`lora.modules_to_save`) back in the dtype of the module it replaces.

    TRL's trainers cast every trainable parameter of a quantized model to bf16 (the QLoRA convention
    for LoRA A/B; TRL PR #7272 and peft issue #2889 discuss it). A full copy of the embeddings or the
    head then hands bf16 activations to layers that compute in fp32, which fails (4-bit on a CPU). Call
    after building the trainer (`model` is the trainer's). Unsloth sets these dtypes itself: nothing to do there.
    """
    if loaded.end == UNSLOTH:
        return
    from peft.utils import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            for copy in module.modules_to_save.values():
                copy.to(module.original_module.weight.dtype)


def precision_args(recipe: Recipe) -> dict:
    """Trainer flags for this machine: bf16/fp16 as the dtype the model is loaded in, and `use_cpu` where
    there is no GPU (accelerate then runs several CPU processes as one job, over gloo; without it they
    each train alone, with no error)."""
    import torch

    dtype = _dtype(recipe)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16, "use_cpu": not has_cuda()}


def peak_memory_logger():
    """A trainer callback that adds the peak GPU memory so far (MiB) to every log line, printed with it:
    a run stopped before its end (metrics.json is written at the end) still says what it used."""
    from transformers import TrainerCallback

    class PeakMemory(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and has_cuda():
                import torch

                logs["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)

    return PeakMemory()


def peak_memory_mb() -> dict:
    """Peak GPU memory (when on a GPU) and this process's peak resident memory, in MiB."""
    import resource

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if has_cuda():
        import torch

        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
