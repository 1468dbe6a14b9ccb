from kit import base_model as tiny_model  # the built-in tiny model lives in kit.base_model
from kit.recipe import TinyModelConfig


def test_same_seed_same_weights_and_another_seed_differs(tmp_path):
    cfg = TinyModelConfig()
    a = tiny_model.build(cfg, tmp_path / "a")
    b = tiny_model.build(cfg, tmp_path / "b")
    c = tiny_model.build(TinyModelConfig(seed=1), tmp_path / "c")
    assert tiny_model.weights_hash(a) == tiny_model.weights_hash(b)
    assert tiny_model.weights_hash(a) != tiny_model.weights_hash(c)


def test_loads_like_a_hub_checkpoint_with_qwen35_template(runs_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model.ensure_tiny(TinyModelConfig())
    assert tiny_model.ensure_tiny(TinyModelConfig()) == path  # cached, not rebuilt
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "qwen3_5_text"
    assert set(model.config.layer_types) == {"linear_attention", "full_attention"}
    assert tok.chat_template == tiny_model.chat_template()
    for t in ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    # <think> stays in decoded text (as in Qwen's tokenizer); control tokens do not.
    ids = tok("<|im_start|>a<think>b</think>c<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "a<think>b</think>c"
    # widths that llama.cpp's K-quants need
    for name, p in model.named_parameters():
        if p.dim() == 2 and "embed" not in name and "lm_head" not in name and p.shape[1] > 8:
            assert p.shape[1] % 256 == 0, (name, tuple(p.shape))
    with torch.no_grad():
        logits = model(**tok("hello", return_tensors="pt")).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


def test_builders_that_start_together_never_share_a_folder_and_a_half_built_one_is_replaced(tmp_path):
    """A launch's ranks (and parallel tests) ask for the same built-in model at once: each builds into a folder of
    its own, the first rename wins, every caller gets a complete folder and no partial copy is left behind."""
    import threading
    import time

    from kit.base_model import _cached

    def build(folder):
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"x" * 1000)
        time.sleep(0.3)  # both builders are inside at once
        (folder / "BUILT_BY_KIT.json").write_text("{}")

    (tmp_path / "m").mkdir()  # left half-built: no stamp
    (tmp_path / "m" / "weights.bin").write_bytes(b"")
    got = []
    threads = [threading.Thread(target=lambda: got.append(_cached("m", build, tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [tmp_path / "m"] * 3
    assert (tmp_path / "m" / "BUILT_BY_KIT.json").exists() and (tmp_path / "m" / "weights.bin").stat().st_size == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
