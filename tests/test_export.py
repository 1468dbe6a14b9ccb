import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kit import gguf


@pytest.mark.slow
def test_merged_model_equals_adapter_on_base(export_metrics, shared_runs):
    m = export_metrics["merge"]
    assert m["dtype"] == "float32" and m["max_abs_logit_diff"] < 1e-3
    merged = shared_runs / "tiny" / "export" / "merged"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "README.md"):
        assert (merged / name).exists(), name
    gen = json.loads((merged / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_p"], gen["top_k"]) == (1.0, 0.95, 20)
    assert "not medical advice" in (merged / "README.md").read_text().lower()


@pytest.mark.slow
def test_each_gguf_loads_generates_and_q4_k_m_is_a_real_k_quant(export_metrics, shared_runs):
    files = export_metrics["gguf"]
    assert set(files) == {"f16", "q8_0", "q4_k_m"}
    for info in files.values():
        assert info["architecture"] == "qwen35" and info["tensor_count"] > 0
        assert info["generated_tokens"] >= 1 and info["tokenizer_matches"] and info["has_chat_template"]
    assert "Q4_K" in files["q4_k_m"]["tensor_types"] and "Q8_0" in files["q8_0"]["tensor_types"]
    assert files["q4_k_m"]["bytes"] < files["q8_0"]["bytes"] < files["f16"]["bytes"]
    # the file on disk, read again independently of the stage's own metrics
    info = gguf.inspect(shared_runs / "tiny" / "export" / "gguf" / files["q4_k_m"]["file"])
    assert info["tensor_types"].get("Q4_K", 0) >= 10
    modelfile = (shared_runs / "tiny" / "export" / "gguf" / "Modelfile").read_text()
    assert f"FROM ./{files['q4_k_m']['file']}" in modelfile and "PARAMETER top_k 20" in modelfile


@pytest.mark.slow
def test_server_answers_the_openai_client_with_thinking_on_and_off(export_metrics):
    from openai import OpenAI

    from kit.serve import Server

    with Server("tiny") as url:
        client = OpenAI(base_url=url, api_key="unused")
        assert [m.id for m in client.models.list().data] == ["tiny"]
        q = [{"role": "user", "content": "What is the antidote for opioid overdose?"}]
        on = client.chat.completions.create(model="tiny", messages=q, max_tokens=48, seed=0)
        assert "reasoning_content" in on.choices[0].message.model_extra
        off = client.chat.completions.create(model="tiny", messages=q, max_tokens=24, seed=0,
                                             extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        assert "reasoning_content" not in (off.choices[0].message.model_extra or {})
        assert off.usage.completion_tokens >= 1
        chunks = list(client.chat.completions.create(model="tiny", messages=q, max_tokens=32, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        raw = client.chat.completions.with_raw_response.create(model="tiny", messages=q, max_tokens=100_000)
        assert "asked 100000" in raw.headers["x-kit-max-tokens"]  # cut to what the context holds, and said
        assert raw.parse().usage.completion_tokens <= 2048
        too_long = client.with_options(max_retries=0).chat.completions
        with pytest.raises(Exception, match="fills the context"):
            too_long.create(model="tiny", messages=[{"role": "user", "content": "naloxone " * 3000}], max_tokens=8)


def test_split_reasoning_table():
    from kit.formatting import split_reasoning

    assert split_reasoning("why\n</think>\n\nNaloxone", True) == ("why", "Naloxone")
    assert split_reasoning("still thinking", True) == ("still thinking", "")
    assert split_reasoning("Naloxone", False) == (None, "Naloxone")


def test_corrupted_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(gguf.GGUFError, match="broken.gguf"):
        gguf.inspect(bad)
    with pytest.raises(gguf.GGUFError, match="could not load"):
        gguf.load(bad)


@pytest.mark.slow
def test_a_llama_cpp_that_crashes_on_load_is_a_clear_error_not_a_dead_stage(export_metrics, shared_runs, tmp_path, monkeypatch):
    """On a GPU machine llama.cpp segfaulted loading every GGUF, killing the export stage without a word.
    The load is now tried in a child first: here a stand-in llama_cpp that really segfaults."""
    f16 = shared_runs / "tiny" / "export" / "gguf" / export_metrics["gguf"]["f16"]["file"]
    gguf.probe(f16)  # the real llama.cpp loads it
    fake = tmp_path / "llama_cpp"
    fake.mkdir()
    (fake / "__init__.py").write_text("import ctypes\nclass Llama:\n    def __init__(self, **kw):\n        ctypes.string_at(0)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(gguf.GGUFError, match=r"llama.cpp crashed \(SIGSEGV\) loading tiny-f16.gguf.*Segmentation fault"):
        gguf.probe(f16)
    monkeypatch.setattr(gguf, "linkage_problem", lambda: "libllama.so does not link the system's libstdc++")
    with pytest.raises(gguf.GGUFError, match="crashed .SIGSEGV. loading tiny-f16.gguf: libllama.so does not link"):
        gguf.probe(f16)


def test_on_a_cpu_with_amx_llama_cpp_loads_without_repacking_and_only_while_it_loads(monkeypatch):
    """llama.cpp's AMX kernels segfault in the first matrix product of a q8_0 / q4_K model
    (ggml-org/llama.cpp#20824): on such a CPU the kit loads with `use_extra_bufts` off."""
    import llama_cpp.llama_cpp as low

    assert low.llama_model_default_params().use_extra_bufts  # llama.cpp's default
    monkeypatch.setattr(gguf, "amx", lambda: True)
    with gguf.without_amx_repacking():
        assert not low.llama_model_default_params().use_extra_bufts
    assert low.llama_model_default_params().use_extra_bufts
    monkeypatch.setattr(gguf, "amx", lambda: False)
    with gguf.without_amx_repacking():
        assert low.llama_model_default_params().use_extra_bufts  # CPUs without AMX keep repacking


def test_the_linkage_check_tells_a_statically_linked_build_from_a_normal_one():
    import _ctypes  # a C extension: links no libstdc++, as the crashing llama.cpp build did not

    assert gguf.linkage_problem() is None  # the installed build
    why = gguf.linkage_problem(Path(_ctypes.__file__))
    assert "does not link the system's libstdc++" in why and "CXX=g++" in why and "llama-cpp-python==" in why


def test_missing_adapter_is_a_clear_error(runs_dir):
    proc = subprocess.run([sys.executable, "-m", "kit", "export", "--recipe", "tiny"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no adapter to export" in proc.stderr and "kit sft --recipe tiny" in proc.stderr


def test_unknown_quantisation(tmp_path):
    with pytest.raises(gguf.GGUFError, match="unknown quantisation 'q3'"):
        gguf.quantize(tmp_path / "a.gguf", tmp_path / "b.gguf", "q3")


@pytest.mark.slow
def test_yarn_reaches_the_merged_config_the_gguf_metadata_and_vllms_overrides(sft_metrics, shared_runs, tmp_path, monkeypatch):
    """Qwen's long-context recipe (`export.yarn`): the merged config, then the GGUF's rope scaling metadata,
    and for adapters served on the base, vLLM's --hf-overrides."""
    from kit import export
    from kit.recipe import load_recipe

    runs = tmp_path / "runs"
    shutil.copytree(shared_runs / "tiny" / "data", runs / "tiny" / "data")
    shutil.copytree(shared_runs / "tiny" / "sft", runs / "tiny" / "sft")
    monkeypatch.setenv("KIT_RUNS_DIR", str(runs))
    recipe = load_recipe("tiny", ["export.yarn={factor: 2.0, original_max_position_embeddings: 4096}",
                                  "export.quantizations=[q8_0]"])
    metrics = export.run(recipe)
    config = json.loads((runs / "tiny" / "export" / "merged" / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "yarn" and config["rope_parameters"]["factor"] == 2.0
    assert config["rope_parameters"]["mrope_section"] and config["max_position_embeddings"] == 8192
    for f in metrics["gguf"].values():
        assert f["rope_scaling"]["type"] == "yarn" and f["rope_scaling"]["factor"] == 2.0
        assert f["rope_scaling"]["original_context_length"] == 4096 and f["generated_tokens"] >= 1
    from transformers import AutoConfig

    from kit.base_model import model_path

    override = recipe.export.yarn_update(AutoConfig.from_pretrained(model_path(recipe)).to_dict())
    assert override["rope_parameters"]["rope_type"] == "yarn" and override["rope_parameters"]["mrope_section"]
    with pytest.raises(Exception, match="factor > 1"):
        load_recipe("tiny", ["export.yarn={factor: 0.5, original_max_position_embeddings: 4096}"]).export.rope_yarn()


def test_the_bases_multi_token_prediction_layers_reach_merged_unchanged(tmp_path):
    """A Qwen3.5/3.6 checkpoint's `mtp.*` tensors, which the model class does not load and the merge so drops,
    are copied into merged/ bit for bit and listed in its index; a run of the copy again changes nothing."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from kit.export import ExportError, carry_mtp

    base, merged = tmp_path / "base", tmp_path / "merged"
    base.mkdir(), merged.mkdir()
    mtp = {"mtp.fc.weight": torch.randn(8, 16, dtype=torch.bfloat16),
           "mtp.layers.0.self_attn.q_proj.weight": torch.randn(4, 8, dtype=torch.bfloat16)}
    save_file({"model.embed_tokens.weight": torch.randn(10, 8), **mtp}, str(base / "model.safetensors"))
    save_file({"model.embed_tokens.weight": torch.randn(10, 8)}, str(merged / "model.safetensors"))
    got = carry_mtp(str(base), merged)
    assert got["tensors"] == got["copied"] == 2
    index = json.loads((merged / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"model.embed_tokens.weight": "model.safetensors", "mtp.fc.weight": "model-mtp.safetensors",
                                   "mtp.layers.0.self_attn.q_proj.weight": "model-mtp.safetensors"}
    with safe_open(str(merged / "model-mtp.safetensors"), "pt") as f:
        assert all(torch.equal(f.get_tensor(n), t) and f.get_tensor(n).dtype == torch.bfloat16 for n, t in mtp.items())
    assert carry_mtp(str(base), merged)["already_in_merged"] == 2  # present and identical: nothing copied
    save_file({"mtp.fc.weight": torch.zeros(8, 16, dtype=torch.bfloat16)}, str(merged / "model-mtp.safetensors"))
    with pytest.raises(ExportError, match="holds mtp.fc.weight, and it differs"):
        carry_mtp(str(base), merged)
    empty = tmp_path / "plain"
    empty.mkdir()
    save_file({"w": torch.zeros(2)}, str(empty / "model.safetensors"))
    assert carry_mtp(str(empty), merged) is None


def test_speculative_decoding_asks_vllm_for_the_models_own_mtp_layers(runs_dir):
    from kit.generation import GenerationError
    from kit.modeling import load_tokenizer
    from kit.recipe import load_recipe
    from kit.vllm_end import vllm_command

    recipe = load_recipe("tiny")
    merged = runs_dir / "tiny" / "export" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    load_tokenizer(recipe).save_pretrained(merged)
    (merged.parent / "metrics.json").write_text("{}")  # as a finished export leaves it
    with pytest.raises(GenerationError, match="has no multi-token-prediction tensors"):
        vllm_command(recipe, "127.0.0.1", 8001, speculative="mtp")
    (merged / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"mtp.fc.weight": "model-mtp.safetensors"}}))
    cmd = vllm_command(recipe, "127.0.0.1", 8001, speculative="mtp")
    assert json.loads(cmd[cmd.index("--speculative-config") + 1]) == {"method": "mtp", "num_speculative_tokens": 2}
    assert "--speculative-config" not in vllm_command(recipe, "127.0.0.1", 8001)


def test_a_stopped_export_leaves_nothing_a_later_stage_takes_for_finished(tmp_path, monkeypatch):
    """The export's files count only once its metrics.json is written (last); starting the stage again removes
    it, so an export killed while it reruns is not finished either."""
    from kit.recipe import load_recipe
    from kit.runs import finished, gguf_file, start_stage
    from kit.serve import find_gguf

    monkeypatch.setenv("KIT_RUNS_DIR", str(tmp_path))
    recipe = load_recipe("tiny")
    gguf_dir = tmp_path / "tiny" / "export" / "gguf"
    gguf_dir.mkdir(parents=True)
    (gguf_dir / "tiny-q4_k_m.gguf").write_bytes(b"GGUF half-written")
    assert gguf_file(recipe) is None and not finished(recipe, "export")
    with pytest.raises(FileNotFoundError, match="finished export"):
        find_gguf(recipe)
    (tmp_path / "tiny" / "export" / "metrics.json").write_text("{}")
    assert gguf_file(recipe) == gguf_dir / "tiny-q4_k_m.gguf"
    start_stage(recipe, "export", quiet=True)  # the export runs again...
    assert gguf_file(recipe) is None  # ...and until it ends, its old files are not the run's


def test_a_full_disk_during_export_is_an_export_error_naming_the_folder_and_the_bytes(tmp_path, monkeypatch):
    import errno

    from kit import export
    from kit.recipe import load_recipe

    monkeypatch.setenv("KIT_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(export, "check_capacity", lambda *a, **k: None)
    monkeypatch.setattr(export, "final_adapter", lambda recipe: tmp_path / "sft" / "adapter")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "merge", full)
    with pytest.raises(export.ExportError, match=r"disk holding .*export is full: the export writes about [\d.]+ GB"):
        export.run(load_recipe("tiny"))
    monkeypatch.setattr(export, "merge", lambda *a: (_ for _ in ()).throw(PermissionError("read-only")))
    with pytest.raises(PermissionError):  # another OS error is not called a full disk
        export.run(load_recipe("tiny"))
