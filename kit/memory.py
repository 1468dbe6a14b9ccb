"""GPU memory and disk by arithmetic: what each stage of a recipe needs, before anything is downloaded.

    python -m kit check --recipe qwen3.5-4b-gspo --gpu all     # T4, L4, A100-40GB, H100

Parameters are counted exactly, from the architecture built on PyTorch's meta device (no memory, no
download): the checkpoint's config when it is on disk or the hub answers, else the published shape in
`SHAPES`. The rest is arithmetic, every term named in what `check` prints:

- weights: 2 bytes per parameter in 16-bit; in 4-bit (NF4, double quantisation) 0.52 bytes for every
  linear layer's weight, 16-bit for the rest (embeddings, head, norms, the linear attention's small tensors);
- LoRA: trainable parameters × (4 B weight + 4 B gradient + the optimiser's state: 2 B for 8-bit Adam,
  8 B otherwise); modules trained in full (`modules_to_save`) the same way;
- activations under gradient checkpointing: one hidden state per layer kept (2 B × tokens × hidden) plus
  one layer recomputed in backward (2 B × tokens × (10 × hidden + 4 × intermediate));
- logits: the transformers end materialises them (bf16 + an fp32 copy for the loss: 6 B × tokens ×
  vocabulary; Qwen3.5's vocabulary is 248,320); Unsloth's end computes the loss in chunks (left out);
- generation: the KV cache of the full-attention layers (2 × layers/4 × kv heads × head dim × 2 B per
  token) and the Gated DeltaNet state of the linear-attention layers (v heads × k dim × v dim × 4 B per
  sequence), for the batch; vLLM takes `gpu_memory_utilization` of the GPU whatever the batch, so its row
  checks that its share holds the weights and one batch;
- a 10 % margin for the CUDA context, allocator fragmentation and workspaces.

Prompts are taken as `PROMPT_TOKENS` long (medical questions are 50–400 tokens) until the data stage has
measured them. Disk: the download (16-bit), the merged model, the f16 GGUF and each quantisation.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .base_model import SHAPES, SHAPE_PREFIX, model_path, shape_config, shape_text_config
from .recipe import Recipe, trainer_setting
from .runs import QUANTS, stage_dir
from .runtime import Sharding, world_size

GiB = 2**30
PROMPT_TOKENS = 512
MARGIN = 1.10
GGUF_BYTES = {kind: q.bytes_per_weight for kind, q in QUANTS.items()}  # bytes per weight in each GGUF type
# What GPUs report to PyTorch (total_memory), GiB.
GPUS = {"T4": 14.74, "L4": 22.03, "A100-40GB": 39.39, "H100": 79.19}

def model_config(recipe: Recipe):
    """The config of the recipe's base model: on disk, the built-in tiny model, a published shape, or the hub."""
    from transformers import AutoConfig

    name = recipe.model.name_or_path
    if name.startswith(SHAPE_PREFIX):
        return shape_text_config(name[len(SHAPE_PREFIX):])
    if name.startswith("builtin:") or Path(name).exists():
        return AutoConfig.from_pretrained(model_path(recipe))
    if name in SHAPES:
        return shape_config(name)
    return AutoConfig.from_pretrained(name)


def build_on_meta(config):
    """The architecture with no memory behind it, to count and measure its parameters."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    with torch.device("meta"):
        if hasattr(config, "vision_config"):
            return AutoModelForImageTextToText.from_config(config)
        return AutoModelForCausalLM.from_config(config)


@dataclass
class Counts:
    total: int  # every parameter, vision tower included
    text: int  # the language model's (what GGUF export keeps)
    linear: int  # weights of linear layers other than the head (what 4-bit quantises)
    lora: int  # trainable LoRA parameters for the recipe's target modules and rank
    full: int  # parameters trained in full (modules_to_save)
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    kv_bytes_per_token: int  # full-attention layers, 16-bit
    state_bytes_per_sequence: int  # linear-attention (Gated DeltaNet) recurrent + conv state
    vision_language: bool


def count(config, recipe: Recipe) -> Counts:
    import torch

    model = build_on_meta(config)
    text_cfg = getattr(config, "text_config", config)
    targets, full_names = set(recipe.lora.target_modules), set(recipe.lora.modules_to_save)
    linear = lora = full = 0
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and module is not head:
            linear += module.weight.numel()
            if leaf in targets and "visual" not in name:  # LoRA on the language model only
                lora += recipe.lora.r * (module.in_features + module.out_features)
        if leaf in full_names:
            full += sum(p.numel() for p in module.parameters())
    total = sum(p.numel() for p in model.parameters())
    text = sum(p.numel() for n, p in model.named_parameters() if "visual" not in n)
    types = list(getattr(text_cfg, "layer_types", None) or ["full_attention"] * text_cfg.num_hidden_layers)
    n_full, n_linear = types.count("full_attention"), types.count("linear_attention")
    head_dim = getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads
    kv = 2 * n_full * text_cfg.num_key_value_heads * head_dim * 2
    state = 0
    if n_linear:
        k_heads, v_heads = text_cfg.linear_num_key_heads, text_cfg.linear_num_value_heads
        k_dim, v_dim = text_cfg.linear_key_head_dim, text_cfg.linear_value_head_dim
        conv = (2 * k_heads * k_dim + v_heads * v_dim) * text_cfg.linear_conv_kernel_dim * 2
        state = n_linear * (v_heads * k_dim * v_dim * 4 + conv)
    return Counts(total, text, linear, lora, full, text_cfg.hidden_size, text_cfg.intermediate_size,
                  text_cfg.num_hidden_layers, text_cfg.vocab_size, kv, state, hasattr(config, "vision_config"))


@dataclass
class Estimate:
    stage: str
    terms: dict[str, float] = field(default_factory=dict)  # bytes
    needed: bool = True  # False for vLLM's rows: where vLLM does not fit, generation falls back to HF

    @property
    def total(self) -> float:
        return sum(self.terms.values()) * MARGIN


def weights(c: Counts, four_bit: bool) -> float:
    return c.linear * 0.52 + (c.total - c.linear) * 2 if four_bit else c.total * 2


def trainable(c: Counts, optim: str) -> float:
    per = 4 + 4 + (2 if "8bit" in optim else 8)
    return (c.lora + c.full) * per


def one_layer(c: Counts, tokens: int) -> float:
    """One decoder layer's activations in 16-bit, as the backward pass recomputes them."""
    return 2 * tokens * (10 * c.hidden + 4 * c.intermediate)


def activations(c: Counts, tokens: int, checkpointing: bool) -> float:
    if checkpointing:  # one hidden state kept per layer, one layer recomputed at a time
        return c.layers * 2 * tokens * c.hidden + one_layer(c, tokens)
    return c.layers * one_layer(c, tokens)


def logits(c: Counts, tokens: int, unsloth: bool, bytes_each: float = 6.0) -> float:
    """Logits the transformers end materialises (bf16 + an fp32 copy for the loss by default)."""
    return 0.0 if unsloth else bytes_each * tokens * c.vocab


def generation(c: Counts, sequences: int, tokens_each: int) -> float:
    return sequences * (tokens_each * c.kv_bytes_per_token + c.state_bytes_per_sequence)


@dataclass
class Lengths:
    """Token lengths the estimate assumes: the longest SFT row and the longest prompt. Before the data
    stage has run, the recipe's limit and `PROMPT_TOKENS`; after, what it measured (batches are padded to
    their longest row, so the longest is what counts)."""

    sft: int
    prompt: int
    source: str = "assumed"


def lengths(recipe: Recipe) -> Lengths:
    """What the data stage measured, where it ran on the recipe's own data. Measured offline (`data.offline`:
    the bundled samples, shorter than the hub datasets) they would understate the real run: the recipe's
    limits stay, and the source says so."""
    import json

    path = stage_dir(recipe, "data") / "lengths.json"
    if not path.exists():
        return Lengths(recipe.model.max_seq_length, PROMPT_TOKENS)
    measured = json.loads(path.read_text())
    prompts = (measured.get("rl") or []) + (measured.get("mcq") or [])
    metrics = stage_dir(recipe, "data") / "metrics.json"
    if metrics.exists() and json.loads(metrics.read_text()).get("offline"):
        return Lengths(recipe.model.max_seq_length, max(prompts + [PROMPT_TOKENS]),
                       "the recipe's limits: the data stage measured the bundled samples (data.offline), shorter "
                       "than the real datasets")
    return Lengths(min(recipe.model.max_seq_length, max(measured.get("sft") or [recipe.model.max_seq_length])),
                   max(prompts) if prompts else PROMPT_TOKENS, "measured by the data stage")


def estimate(recipe: Recipe, c: Counts, unsloth: bool, n: Lengths | None = None) -> list[Estimate]:
    """Peak GPU memory of each stage the recipe runs, on the given end."""
    n = n or Lengths(recipe.model.max_seq_length, PROMPT_TOKENS)
    prompt = n.prompt
    four = recipe.model.load_in_4bit
    w = weights(c, four)
    out = []
    sft = recipe.sft.trainer
    ckpt = sft.get("activation_checkpointing", sft.get("gradient_checkpointing", True))
    if recipe.data.sft:
        b, seq = trainer_setting(recipe, "sft", "per_device_train_batch_size"), n.sft
        eb = sft.get("per_device_eval_batch_size", 8)
        out.append(Estimate("sft (train step)", {
            "weights": w, "LoRA + optimiser": trainable(c, sft.get("optim", "adamw_torch")),
            f"activations ({b} × {seq} tokens)": activations(c, b * seq, ckpt),
            "logits": logits(c, b * seq, unsloth)}))
        out.append(Estimate("sft (eval step)", {
            "weights": w, "LoRA + optimiser": trainable(c, sft.get("optim", "adamw_torch")),
            f"one layer's activations ({eb} × {seq} tokens)": one_layer(c, eb * seq),
            f"logits ({eb} × {seq} tokens)": logits(c, eb * seq, unsloth)}))
    rl = recipe.rl.trainer
    if recipe.data.rl:
        b, comp = trainer_setting(recipe, "rl", "per_device_train_batch_size"), trainer_setting(recipe, "rl", "max_completion_length")
        tokens = b * (prompt + comp)
        rl_ckpt = rl.get("activation_checkpointing", rl.get("gradient_checkpointing", True))
        terms = {"weights": w, "LoRA + optimiser": trainable(c, rl.get("optim", "adamw_torch")),
                 f"activations ({b} × {prompt}+{comp} tokens)": activations(c, tokens, rl_ckpt),
                 "completion logits": logits(c, b * comp, unsloth, bytes_each=2.0),  # bf16: log-probs are gathered
                 f"rollout KV cache + state ({b} sequences)": generation(c, b, prompt + comp)}
        out.append(Estimate("rl (GSPO/GRPO step)", terms))
    ev = recipe.eval
    tokens_each = prompt + ev.max_new_tokens
    out.append(Estimate("eval (HF generate)", {
        "weights": w, f"KV cache + state ({ev.batch_size} × {tokens_each} tokens)":
        generation(c, ev.batch_size, tokens_each), "last-token logits": 4.0 * ev.batch_size * c.vocab}))
    out.append(Estimate("eval (vLLM, one batch)", {
        "weights (16-bit)": c.total * 2, "LoRA slots": 2 * c.lora * 2 * 2,
        f"KV cache + state ({ev.batch_size} × {tokens_each} tokens)": generation(c, ev.batch_size, tokens_each)},
        needed=False))
    out.append(Estimate("export (16-bit merge)", {"weights (16-bit, one copy)": c.total * 2,
                                                  "reference logits": 4.0 * 64 * c.vocab}))
    return out


TRAINING_ROWS = ("sft (train step)", "sft (eval step)", "rl (GSPO/GRPO step)")


def per_gpu(recipe: Recipe, c: Counts, stages: list[Estimate], processes: int, sharding: Sharding,
            server_gpus: int = 0, n: Lengths | None = None) -> list[Estimate]:
    """The estimates of a launch of `processes` training processes, per GPU. Sharded weights: 1/N of
    them, plus two decoder layers gathered whole (the one computing and the one prefetched); sharded
    gradients and optimiser state: 1/N. Activations, logits and rollouts are per process, as on one GPU.
    Export and eval run afterwards on one GPU. With a rollout server: its row, per server GPU (vLLM
    tensor-parallel: weights and KV cache split), for one generation batch of every process."""
    n = n or Lengths(recipe.model.max_seq_length, PROMPT_TOKENS)
    layer = c.linear * (0.52 if recipe.model.load_in_4bit else 2) / c.layers
    out = []
    for e in stages:
        if e.stage not in TRAINING_ROWS or processes == 1:
            out.append(e)
            continue
        terms = {}
        for k, v in e.terms.items():
            if k == "weights" and sharding.weights:
                terms[f"weights (1/{processes})"] = v / processes
                terms["2 layers gathered"] = 2 * layer
            elif k == "LoRA + optimiser" and sharding.states:
                terms[f"LoRA + optimiser (1/{processes})"] = v / processes
            else:
                terms[k] = v
        out.append(Estimate(f"{e.stage}, per GPU ({sharding.name})", terms, e.needed))
    if server_gpus and recipe.data.rl:
        rl = recipe.rl.trainer
        # TRL generates per_device batch × steps_per_generation (default: the accumulation steps) × processes
        steps = rl.get("steps_per_generation", rl.get("gradient_accumulation_steps", 1))
        batch = trainer_setting(recipe, "rl", "per_device_train_batch_size") * steps * processes
        tokens = n.prompt + trainer_setting(recipe, "rl", "max_completion_length")
        # vLLM takes 0.9 of each server GPU and queues what its KV cache does not hold: the weights must fit
        out.append(Estimate(f"rl rollout server (vLLM, per GPU of {server_gpus}; the batch at once)", {
            f"weights (16-bit, 1/{server_gpus})": c.total * 2 / server_gpus,
            f"KV cache + state ({batch} × {tokens} tokens)": generation(c, batch, tokens) / server_gpus}, needed=False))
    return out


def disk(recipe: Recipe, c: Counts) -> dict[str, float]:
    """Bytes each artefact takes on disk: the download, the merged model, the GGUF files, checkpoints."""
    out = {"download (16-bit checkpoint)": c.total * 2.0} if not recipe.model.name_or_path.startswith("builtin:") else {}
    out["merged model (16-bit)"] = c.total * 2.0
    out["GGUF f16"] = c.text * GGUF_BYTES["f16"]
    for q in recipe.export.quantizations:
        out[f"GGUF {q}"] = c.text * GGUF_BYTES.get(q, 1.0)
    keep = max(recipe.sft.trainer.get("save_total_limit", 2), recipe.rl.trainer.get("save_total_limit", 2))
    out[f"checkpoints ({keep} per stage: LoRA + optimiser)"] = 2 * keep * trainable(c, "adamw_torch")
    return out


_COUNTED: dict[tuple, Counts] = {}


def counted(recipe: Recipe) -> Counts:
    """`count` of the recipe's model, built on the meta device once per process for a model and its LoRA targets:
    a pipeline checks its stages up front and each stage checks itself again."""
    key = (recipe.model.name_or_path, repr(recipe.model.tiny), tuple(recipe.lora.target_modules),
           tuple(recipe.lora.modules_to_save))
    if key not in _COUNTED:
        _COUNTED[key] = count(model_config(recipe), recipe)
    return _COUNTED[key]


def needed_gib(recipe: Recipe, unsloth: bool = True, stages=None) -> float:
    """The largest estimate of `stages` (default: all), GiB: what they need of a GPU. Inside a launch of
    several processes, the training rows are per GPU with the launch's sharding (accelerate's
    environment says which). vLLM's rows are left out: where vLLM does not fit, generation falls back to HF."""
    c = counted(recipe)
    n = lengths(recipe)
    rows = per_gpu(recipe, c, estimate(recipe, c, unsloth, n), world_size(), Sharding.from_env(), n=n)
    return max([e.total for e in rows if e.needed and (stages is None or e.stage.split()[0] in stages)] or [0]) / GiB


def free_disk_gib(path: Path) -> float:
    path = Path(path)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / GiB


def report(recipe: Recipe, gpus: dict[str, float], unsloth: bool = True, processes: int = 1,
           sharding: Sharding | None = None, server_gpus: int = 0) -> tuple[str, float, float]:
    """(the printed table, the peak stage in GiB, the disk needed in GiB); per GPU of a launch of
    `processes` training processes sharded as `sharding` (and a rollout server on `server_gpus`)."""
    c = count(model_config(recipe), recipe)
    n = lengths(recipe)
    stages = per_gpu(recipe, c, estimate(recipe, c, unsloth, n), processes, sharding or Sharding("ddp"),
                     server_gpus, n)
    end = "Unsloth end (chunked loss)" if unsloth else "transformers+peft end (logits materialised)"
    lines = [f"{recipe.name}: {recipe.model.name_or_path}, {c.total / 1e9:.2f}B parameters "
             f"({c.text / 1e9:.2f}B language model{', vision-language' if c.vision_language else ''}), "
             f"{'4-bit' if recipe.model.load_in_4bit else '16-bit'} weights, LoRA r={recipe.lora.r} "
             f"({c.lora / 1e6:.1f}M trainable); {end}; longest SFT row {n.sft} tokens, prompt {n.prompt} "
             f"({n.source})",
             "", "| stage | GiB | " + " | ".join(gpus) + " | largest terms |",
             "|---|---|" + "---|" * len(gpus) + "---|"]
    for e in stages:
        gib = e.total / GiB
        fits = " | ".join("fits" if gib <= cap else "**no**" for cap in gpus.values())
        top = ", ".join(f"{k} {v / GiB:.1f}" for k, v in sorted(e.terms.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"| {e.stage} | {gib:.1f} | {fits} | {top} |")
    d = disk(recipe, c)
    need_disk = sum(d.values()) / GiB
    lines += ["", f"Disk: {need_disk:.0f} GiB (" + ", ".join(f"{k} {v / GiB:.1f}" for k, v in d.items()) + ")"]
    return "\n".join(lines), max(e.total for e in stages if e.needed) / GiB, need_disk
