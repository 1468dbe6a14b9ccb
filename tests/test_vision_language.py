"""A vision-language checkpoint through the kit: the tiny model with a small vision tower in Qwen3.5's
VL architecture (`builtin:tiny-vl`, random weights, Qwen's processor). Qwen's video processor needs
torchvision, which only the vLLM lane's environment has, so the stages run there, through the CLI.

What a real Qwen3.5/3.6 checkpoint needs and this checks: the adapter and the merged model carry the
processor, LoRA touches the language model only, the merge leaves the vision tower as it was, and
`vllm serve` on the merged folder answers a question about an image sent as an OpenAI `image_url`.
"""

import base64
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SETS = ["model.name_or_path=builtin:tiny-vl", "lora.modules_to_save=[]", "sft.trainer.max_steps=4",
        "sft.trainer.eval_steps=2", "sft.trainer.save_steps=2", "sft.format_check_questions=2"]
MERGE = """
from pathlib import Path
from kit.export import merge
from kit.recipe import load_recipe
from kit.runs import stage_dir
import json, sys
recipe = load_recipe("tiny", sys.argv[1:])
print(json.dumps(merge(recipe, stage_dir(recipe, "sft") / "adapter", stage_dir(recipe, "export") / "merged")))
"""
VISION_UNCHANGED = """
import sys
from safetensors import safe_open
from transformers import AutoProcessor
base, merged = (safe_open(p, "pt") for p in sys.argv[1:3])
vision = [k for k in base.keys() if "visual" in k]
assert vision and all((base.get_tensor(k) == merged.get_tensor(k)).all() for k in vision), "vision tower changed"
print(type(AutoProcessor.from_pretrained(sys.argv[3])).__name__, len(vision))
"""


def run(*args, env):
    proc = subprocess.run([str(VLLM_PYTHON), *args], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-4000:])
    return proc.stdout


@pytest.mark.slow
def test_a_vision_language_checkpoint_keeps_its_processor_and_vision_tower_and_serves_an_image(tmp_path):
    from openai import BadRequestError, OpenAI
    from safetensors import safe_open

    from kit.serve import Server

    assert VLLM_PYTHON.exists(), "the CPU lane's vLLM environment is missing: run `make setup`"
    runs = tmp_path / "runs"
    env = {**os.environ, "KIT_RUNS_DIR": str(runs)}
    sets = [a for s in SETS for a in ("--set", s)]
    for stage in ("data", "sft"):
        run("-m", "kit", stage, "--recipe", "tiny", *sets, env=env)
    adapter = runs / "tiny" / "sft" / "adapter"
    assert (adapter / "processor_config.json").exists(), sorted(p.name for p in adapter.iterdir())
    keys = list(safe_open(adapter / "adapter_model.safetensors", "pt").keys())
    assert keys and not any("visual" in k for k in keys)  # the recipe's modules, on the language model only

    merged = runs / "tiny" / "export" / "merged"
    check = json.loads(run("-c", MERGE, *SETS, env=env).strip().splitlines()[-1])
    assert check["model_type"] == "qwen3_5" and check["max_abs_logit_diff"] <= check["logit_tolerance"]
    base = next((runs / "_models").glob("tiny-vl-qwen3.5-*")) / "model.safetensors"
    out = run("-c", VISION_UNCHANGED, str(base), str(merged / "model.safetensors"), str(merged), env=env)
    assert out.startswith("Qwen3VLProcessor")

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
    image_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    old = os.environ.get("KIT_RUNS_DIR")
    os.environ["KIT_RUNS_DIR"] = str(runs)
    try:
        with Server("tiny", overrides=SETS, args=["--engine", "vllm"], python=str(VLLM_PYTHON), timeout_s=400) as url:
            client = OpenAI(base_url=url, api_key="unused")
            text = {"type": "text", "text": "What is shown?"}
            reply = client.chat.completions.create(model="tiny", max_tokens=8, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_url}}, text]}])
            plain = client.chat.completions.create(model="tiny", max_tokens=8,
                                                   messages=[{"role": "user", "content": [text]}])
            # a 64 × 64 image in 16-pixel patches merged 2 × 2: 4 image tokens, plus its start and end markers
            assert reply.usage.prompt_tokens - plain.usage.prompt_tokens == 4 + 2
            assert reply.usage.completion_tokens > 0
            # not an image: vLLM refuses it with a 400 naming the problem, and keeps serving
            not_png = "data:image/png;base64," + base64.b64encode(b"this is not an image").decode()
            with pytest.raises(BadRequestError) as refused:
                client.chat.completions.create(model="tiny", max_tokens=8, messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": not_png}}, text]}])
            print("vLLM on a broken image:", refused.value.message)
            assert client.chat.completions.create(model="tiny", max_tokens=4, messages=[
                {"role": "user", "content": [text]}]).usage.completion_tokens > 0
    finally:
        if old is None:
            os.environ.pop("KIT_RUNS_DIR", None)
        else:
            os.environ["KIT_RUNS_DIR"] = old
