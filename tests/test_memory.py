"""The memory and disk estimator (kit.memory) against what is published about the real checkpoints.

Parameters are counted from the architectures built on the meta device; the figures compared with are
the checkpoints' names (0.8B, 4B, 27B: their sizes rounded) and Unsloth's Qwen3.5 guide (bf16 LoRA needs
about 10 GB for the 4B and 56 GB for the 27B).
"""

import pytest

from kit.memory import GiB, count, disk, estimate
from kit.base_model import shape_config
from kit.recipe import load_recipe


@pytest.fixture(scope="module")
def counts():
    recipe = load_recipe("qwen3.5-4b-gspo", ["lora.r=16"])
    return {name: count(shape_config(f"Qwen/Qwen3.5-{name}"), recipe) for name in ("0.8B", "4B", "27B")}


@pytest.mark.parametrize("name, published_b", [("0.8B", 0.8), ("4B", 4.0), ("27B", 27.0)])
def test_real_shapes_have_their_published_sizes(counts, name, published_b):
    c = counts[name]
    assert abs(c.total / 1e9 - published_b) / published_b < 0.15, c.total
    assert c.vision_language and c.text < c.total and c.vocab == 248_320
    assert c.linear < c.total  # embeddings (and norms) are not linear layers: 4-bit leaves them in 16-bit


def test_kv_cache_counts_only_the_full_attention_layers(counts):
    # Qwen3.5-4B: 32 layers, every 4th full attention (8), 4 KV heads of 256, K and V, 2 bytes
    assert counts["4B"].kv_bytes_per_token == 2 * 8 * 4 * 256 * 2
    # the other 24 keep a fixed-size Gated DeltaNet state per sequence (32 heads × 128 × 128, fp32)
    assert counts["4B"].state_bytes_per_sequence > 24 * 32 * 128 * 128 * 4


@pytest.mark.parametrize("name, published_gb", [("4B", 10.0), ("27B", 56.0)])
def test_bf16_lora_sft_matches_unsloths_published_figures(name, published_gb):
    """Unsloth's notebook defaults: batch 2 × 2,048 tokens, r=16, 8-bit AdamW, its gradient checkpointing."""
    recipe = load_recipe("qwen3.5-4b-gspo", [
        f"model.name_or_path=Qwen/Qwen3.5-{name}", "model.load_in_4bit=false", "model.max_seq_length=2048",
        "lora.r=16", "sft.trainer.per_device_train_batch_size=2", "sft.trainer.optim=adamw_8bit"])
    c = count(shape_config(f"Qwen/Qwen3.5-{name}"), recipe)
    sft = next(e for e in estimate(recipe, c, unsloth=True) if e.stage == "sft (train step)")
    assert abs(sft.total / 1e9 - published_gb) / published_gb < 0.25, sft.total / 1e9


def test_27b_export_needs_about_210_gb_of_disk():
    recipe = load_recipe("qwen3.6-27b-grpo")
    c = count(shape_config("Qwen/Qwen3.6-27B"), recipe)
    total = sum(disk(recipe, c).values()) / 1e9
    assert 190 < total < 235, total


def test_the_transformers_end_counts_the_logits_unsloth_chunks():
    """TRL's default SFT eval batch (8 × 4,096 tokens) materialises 48 GB of logits with a 248k vocabulary."""
    recipe = load_recipe("qwen3.5-4b-gspo", ["sft.trainer.per_device_eval_batch_size=8"])
    c = count(shape_config("Qwen/Qwen3.5-4B"), recipe)
    hf = next(e for e in estimate(recipe, c, unsloth=False) if e.stage == "sft (eval step)")
    us = next(e for e in estimate(recipe, c, unsloth=True) if e.stage == "sft (eval step)")
    assert hf.total / GiB > 40 > us.total / GiB


def test_every_shipped_gpu_recipe_fits_the_gpu_its_comments_promise():
    from kit.memory import GPUS, needed_gib

    assert needed_gib(load_recipe("workshop")) < GPUS["T4"]
    assert needed_gib(load_recipe("qwen3.5-4b-gspo")) < GPUS["T4"]
    assert GPUS["T4"] < needed_gib(load_recipe("qwen3.5-4b-gspo-bf16")) < GPUS["L4"]
    assert GPUS["A100-40GB"] < needed_gib(load_recipe("qwen3.6-27b-grpo")) < GPUS["H100"]
