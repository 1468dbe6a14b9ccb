"""A vision-language checkpoint through the kit: the tiny model with a small vision tower in Qwen3.5's
VL architecture (`builtin:tiny-vl`, random weights, Qwen's processor). Qwen's video processor needs
torchvision, which only the vLLM lane's environment has, so the stages run there, through the CLI.

What a real Qwen3.5/3.6 checkpoint needs and this checks: the adapter and the merged model carry the
processor, LoRA touches the language model only, the merge leaves the vision tower as it was, and
`vllm serve` on the merged folder answers a question about an image sent as an OpenAI `image_url` and
about a short clip sent as a `video_url`, and the demo sends an uploaded image both to the run's own model
(its processor fills the image tokens) and to that server, and a clip to that server. On the CPU end, the export writes llama.cpp's vision projector (mmproj) beside the
GGUFs and `kit serve` reads images through llama.cpp's multimodal library.
"""

import base64
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from child import failure

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SETS = ["model.name_or_path=builtin:tiny-vl", "lora.modules_to_save=[]", "sft.trainer.max_steps=4",
        "sft.trainer.eval_steps=2", "sft.trainer.save_steps=2", "sft.format_check_questions=2",
        # the vLLM environment has no lm-evaluation-harness, which the recipe's harness tasks need
        "data.eval=[{path: 'bundled:medqa_4options'}]"]
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

DEMO_LOCAL = """
import json, sys
from kit.demo import Sampling, images_in, make_backend, respond, user_content
from kit.generation import prompt_texts
from kit.recipe import load_recipe
backend = make_backend(load_recipe("tiny", sys.argv[2:]), "local")
frames = list(respond(backend, "What is shown?", [], False, False, Sampling(8), sys.argv[1]))
messages = [{"role": "user", "content": user_content([{"path": sys.argv[1]}, "What is shown?"])}]
(prompt,) = prompt_texts(backend.tokenizer, [messages], enable_thinking=False)
ids = backend.engine.processor(text=[prompt], images=images_in(messages), return_tensors="pt")["input_ids"][0].tolist()
print(json.dumps({"vision": backend.vision, "name": backend.name, "turn": frames[-1][-1],
                  "image_tokens": ids.count(backend.tokenizer.convert_tokens_to_ids("<|image_pad|>"))}))
"""

# a one-second clip, 8 frames of 64 × 64 (a bar that grows), written by OpenCV: what vLLM's video loader reads
CLIP = """
import sys
import cv2
import numpy as np
out = cv2.VideoWriter(sys.argv[1], cv2.VideoWriter_fourcc(*"mp4v"), 8, (64, 64))
for i in range(8):
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, : 8 * (i + 1)] = (30, 30, 200)
    out.write(frame)
out.release()
"""


def run(*args, env):
    proc = subprocess.run([str(VLLM_PYTHON), *args], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], failure(proc))
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
    (merged.parent / "metrics.json").write_text("{}")  # the merge alone, served as a finished export's

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
    image_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    upload = tmp_path / "upload.png"
    upload.write_bytes(png.getvalue())

    # the demo's local backend: the image uploaded with the question reaches the model through its processor
    demo = json.loads(run("-c", DEMO_LOCAL, str(upload), *SETS, env=env).strip().splitlines()[-1])
    assert demo["vision"] and demo["name"] == "local (sft adapter)", demo
    assert demo["image_tokens"] == 4 and demo["turn"]["role"] == "assistant", demo
    assert not demo["turn"]["content"].startswith("⚠️"), demo
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
            # the demo on this server: the upload goes out as an image_url part and is answered
            from kit.demo import Sampling, openai_backend, respond

            frames = list(respond(openai_backend(url, "tiny"), "What is shown?", [], False, False, Sampling(8),
                                  str(upload)))
            assert frames[-1][0]["content"] == [{"path": str(upload)}, "What is shown?"]
            assert frames[-1][-1]["role"] == "assistant" and not frames[-1][-1]["content"].startswith("⚠️"), frames[-1]
            # a clip as a video_url part: vLLM samples its frames through the model's video processor
            clip = tmp_path / "clip.mp4"
            run("-c", CLIP, str(clip), env=env)
            video = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()}}
            seen = client.chat.completions.create(model="tiny", max_tokens=8, messages=[{"role": "user", "content": [video, text]}])
            print("a 1 s clip of 64 × 64 frames:", seen.usage.prompt_tokens - plain.usage.prompt_tokens, "prompt tokens")
            assert seen.usage.prompt_tokens - plain.usage.prompt_tokens > 4 + 2 and seen.usage.completion_tokens > 0
            # the demo sends an uploaded clip the same way
            frames = list(respond(openai_backend(url, "tiny"), "What happens?", [], False, False, Sampling(8), None, str(clip)))
            assert frames[-1][0]["content"] == [{"path": str(clip)}, "What happens?"]
            assert frames[-1][-1]["role"] == "assistant" and not frames[-1][-1]["content"].startswith("⚠️"), frames[-1]

        # the CPU end: the export writes the vision projector beside the GGUFs, and llama.cpp reads the image
        from kit.export import write_gguf, write_projector
        from kit.recipe import load_recipe

        recipe, gguf_dir = load_recipe("tiny", SETS), runs / "tiny" / "export" / "gguf"
        files = write_gguf(recipe, merged, gguf_dir, check["model_type"])
        proj = write_projector(recipe, merged, gguf_dir / files["q4_k_m"]["file"])
        assert proj["file"] == "mmproj-tiny-f16.gguf" and proj["usage_prompt_tokens_of_a_64px_image"] > 2, proj
        with Server("tiny", overrides=SETS, timeout_s=300) as url:  # llama.cpp: the q4_k_m file and its projector
            client = OpenAI(base_url=url, api_key="unused")
            ask = dict(model="tiny", max_tokens=8, temperature=0.0, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
            reply = client.chat.completions.create(messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_url}}, text]}], **ask)
            plain = client.chat.completions.create(messages=[{"role": "user", "content": [text]}], **ask)
            assert reply.usage.prompt_tokens - plain.usage.prompt_tokens == proj["usage_prompt_tokens_of_a_64px_image"]
            assert reply.usage.completion_tokens > 0
            streamed = client.chat.completions.create(messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_url}}, text]}], stream=True, **ask)
            # greedy: the same tokens (the plain reply is parsed, which ends the toy's answer at a stray tag)
            said = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).strip()
            assert said and said.startswith(reply.choices[0].message.content.strip()), (said, reply.choices[0].message)
            with pytest.raises(BadRequestError, match=r"messages\[0\]\.content\[0\] is not an image"):
                client.chat.completions.create(messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": not_png}}, text]}], **ask)
            frames = list(respond(openai_backend(url, "tiny"), "What is shown?", [], False, False, Sampling(8),
                                  str(upload)))
            assert not frames[-1][-1]["content"].startswith("⚠️"), frames[-1]
    finally:
        if old is None:
            os.environ.pop("KIT_RUNS_DIR", None)
        else:
            os.environ["KIT_RUNS_DIR"] = old
