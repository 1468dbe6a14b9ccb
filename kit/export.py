"""Export stage: merge the final adapter into a 16-bit base, convert to GGUF, quantise, verify.

    python -m kit export --recipe tiny

Reads `runs/<recipe>/rl/adapter/` (or `sft/adapter/` when there is no RL stage), writes
`runs/<recipe>/export/`: `merged/` (safetensors, tokenizer, chat template, generation config with
the recipe's sampling defaults, model card), `gguf/` (f16 plus each quantisation in the recipe,
an Ollama `Modelfile`) and `metrics.json` with sizes, times and every verification.
Every file written is checked; a failed check fails the stage with its reason.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

from . import gguf, images
from .base_model import model_path
from .capacity import check_capacity
from .cards import NOT_MEDICAL_ADVICE, model_card
from .errors import KitError
from .formatting import opens_thinking
from .memory import counted, disk
from .generation import STOP_TOKENS, free_memory
from .modeling import load_model
from .progress import enabled as progress_enabled
from .recipe import PRESETS, SAMPLING_KEYS, Recipe
from .runs import GGUF_PREFERENCE, QUANTS, Timer, final_adapter, metrics_header, start_stage, write_metrics
from .runtime import UNSLOTH, import_end, peak_memory_mb

VERIFY_PROMPT = [{"role": "user", "content": "What is the antidote for opioid overdose?"}]
# Largest |logit| difference allowed between merged weights and adapter-on-base: absolute in fp32;
# in 16-bit a fraction of the largest |logit| (a bf16 logit of 14 is only good to ±0.03), never
# below 0.05. Merging into 4-bit weights, the mistake this catches, is off by far more.
LOGIT_TOLERANCE = {"float32": 1e-3, "16-bit": 5e-2, "16-bit relative": 2e-2}
# llama.cpp architecture names of the model types the recipes use
# (another architecture is converted as llama.cpp's converter names it, unchecked)
GGUF_ARCH = {"qwen3_5_text": "qwen35", "qwen3_5": "qwen35", "qwen3_5_moe_text": "qwen35moe", "qwen3": "qwen3",
             "llama": "llama"}


class ExportError(KitError, RuntimeError):
    """An export step or a verification that failed, with the reason."""


def _logits(model, tokenizer):
    import torch

    text = tokenizer.apply_chat_template(VERIFY_PROMPT, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        return model(**ids).logits.float().cpu()


def generation_config(recipe: Recipe, tokenizer):
    from transformers import GenerationConfig

    p = recipe.sampling.thinking
    return GenerationConfig(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def merge(recipe: Recipe, adapter: Path, out: Path) -> dict:
    """Merge into the base loaded in 16-bit (never 4-bit), check logits against adapter-on-base, save."""
    loaded = load_model(recipe, adapter=adapter, trainable=False, load_in_4bit=False)
    tokenizer, end, device = loaded.tokenizer, loaded.end, loaded.device
    before = _logits(loaded.model, tokenizer)
    if out.exists():
        shutil.rmtree(out)
    if end == UNSLOTH:
        loaded.model.save_pretrained_merged(str(out), loaded.processor or tokenizer, save_method="merged_16bit")
        dtype = loaded.model.dtype
        del loaded  # one 16-bit copy on the GPU at a time: free the adapter model before the merged one loads
        free_memory()
        from transformers import AutoModelForCausalLM

        merged = AutoModelForCausalLM.from_pretrained(out, dtype=dtype, device_map=device)
    else:
        merged = loaded.model.merge_and_unload(progressbar=progress_enabled())  # in place: still one copy
        merged.save_pretrained(out)
        loaded.save_tokenizer(out)
    merged.generation_config = generation_config(recipe, tokenizer)
    merged.generation_config.save_pretrained(out)
    after = _logits(merged, tokenizer)
    diff = (before - after).abs().max().item()
    dtype = str(merged.dtype).replace("torch.", "")
    scale = before.abs().max().item()
    tol = LOGIT_TOLERANCE["float32"] if dtype == "float32" else \
        max(LOGIT_TOLERANCE["16-bit"], LOGIT_TOLERANCE["16-bit relative"] * scale)
    if not diff <= tol:
        raise ExportError(f"merged model disagrees with adapter-on-base: max |Δlogit| = {diff:.3g} > {tol:.3g} "
                          f"({dtype}, largest |logit| {scale:.3g})")
    return {"end": end, "dtype": dtype, "max_abs_logit_diff": diff, "logit_tolerance": tol,
            "max_abs_logit": scale, "model_type": merged.config.model_type}


def is_mtp(name: str) -> bool:
    """A multi-token-prediction tensor of a Qwen3.5/3.6 checkpoint (`mtp.fc.weight`, `mtp.layers.0.…`)."""
    return name.startswith("mtp.") or ".mtp." in name


def checkpoint_files(base: str) -> list[Path]:
    """The base checkpoint's safetensors files that hold MTP tensors: a local folder's, or a hub repository's
    (only the shards its index lists for `mtp.*`, from the cache where loading the model put them)."""
    folder = Path(base)
    if folder.is_dir():
        return sorted(folder.glob("*.safetensors"))
    from huggingface_hub import hf_hub_download

    try:
        index = json.loads(Path(hf_hub_download(base, "model.safetensors.index.json")).read_text())
    except Exception:  # a single-file checkpoint, or no hub: read the one file if it can be had
        try:
            return [Path(hf_hub_download(base, "model.safetensors"))]
        except Exception:
            return []
    shards = sorted({f for name, f in index["weight_map"].items() if is_mtp(name)})
    return [Path(hf_hub_download(base, shard)) for shard in shards]


def carry_mtp(base: str, merged_dir: Path) -> dict | None:
    """Copy the base checkpoint's multi-token-prediction tensors (`mtp.*`, which vLLM uses for speculative
    decoding) into `merged/` unchanged: LoRA never touches them, and `save_pretrained` writes only what the
    model class loaded, so the merge drops them. They go into `model-mtp.safetensors`, listed in the index.
    None when the base has none; a tensor `merged/` already holds (Unsloth's merge may keep them) must be
    identical, else an ExportError."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {}
    for path in checkpoint_files(base):
        with safe_open(str(path), "pt") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys() if is_mtp(name)})
    if not tensors:
        return None
    index_path = merged_dir / "model.safetensors.index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
    else:
        with safe_open(str(merged_dir / "model.safetensors"), "pt") as f:
            index = {"metadata": {}, "weight_map": {name: "model.safetensors" for name in f.keys()}}
    present = {n: f for n, f in index["weight_map"].items() if n in tensors}
    for name, file in present.items():
        with safe_open(str(merged_dir / file), "pt") as f:
            if not torch.equal(f.get_tensor(name), tensors[name]):
                raise ExportError(f"merged/{file} holds {name}, and it differs from the base checkpoint's")
    missing = {n: t.contiguous() for n, t in tensors.items() if n not in present}
    if missing:
        save_file(missing, str(merged_dir / "model-mtp.safetensors"), metadata={"format": "pt"})
        index["weight_map"].update({n: "model-mtp.safetensors" for n in missing})
        index["metadata"]["total_size"] = sum(p.stat().st_size for p in merged_dir.glob("*.safetensors"))
        index_path.write_text(json.dumps(index, indent=2))
    return {"tensors": len(tensors), "copied": len(missing), "already_in_merged": len(present),
            "bytes": sum(t.numel() * t.element_size() for t in tensors.values())}


def apply_yarn(recipe: Recipe, merged_dir: Path) -> dict | None:
    """Write the recipe's YaRN settings into the merged model's `rope_parameters` (the text model's, in a
    vision-language config), where transformers, vLLM and llama.cpp's converter read them."""
    path = merged_dir / "config.json"
    config = json.loads(path.read_text())
    update = recipe.export.yarn_update(config)
    if update is None:
        return None
    target, values = (config["text_config"], update["text_config"]) if "text_config" in update else (config, update)
    target.update(values)
    path.write_text(json.dumps(config, indent=2))
    print(f"[kit] YaRN ×{recipe.export.yarn['factor']:g} from {recipe.export.yarn['original_max_position_embeddings']} "
          f"tokens written into {path.name}")
    return target["rope_parameters"]


def modelfile(recipe: Recipe, gguf_name: str, opens_thinking: bool = True) -> str:
    """An Ollama Modelfile: the recipe's thinking preset and a ChatML template (Qwen's, and SmolLM2's) opening the
    reasoning where the model's own template does; the other presets written out as comments (an Ollama model
    has one set of parameters)."""
    p = recipe.sampling.thinking
    others = "".join(f"#   {name}: " + ", ".join(f"{k} {getattr(recipe.sampling.named(name), k)}" for k in SAMPLING_KEYS)
                     + "\n" for name in PRESETS if name != "thinking")
    return f'''# Ollama: ollama create {recipe.name} -f Modelfile
# Not medical advice; not validated for clinical use.
# The thinking preset below; the card's other presets, to set with /set parameter or in a copy of this file:
{others}
FROM ./{gguf_name}
TEMPLATE """{{{{- range .Messages }}}}<|im_start|>{{{{ .Role }}}}
{{{{ .Content }}}}<|im_end|>
{{{{ end }}}}<|im_start|>assistant
{"<think>" + chr(10) if opens_thinking else ""}"""
PARAMETER temperature {p.temperature}
PARAMETER top_p {p.top_p}
PARAMETER top_k {p.top_k}
PARAMETER min_p {p.min_p}
PARAMETER repeat_penalty {p.repetition_penalty}
''' + "".join(f"PARAMETER stop {t}\n" for t in STOP_TOKENS)


TOKENIZER_PROBE = "Opioid overdose? 答案是纳洛酮。 It's 3.5 mg, don't!\n\n  <|im_start|>user\n<think>x</think>"


def verify_gguf(path: Path, expected_arch: str | None, expected_kind: str, tokenizer=None) -> dict:
    """Metadata (architecture, tensor count and types), tokenisation identical to the HF tokenizer,
    and a real generation with the embedded chat template, through llama.cpp."""
    info = gguf.inspect(path)
    if expected_arch and info["architecture"] != expected_arch:
        raise ExportError(f"{path.name}: architecture {info['architecture']!r}, expected {expected_arch!r}")
    if not info["tensor_count"]:
        raise ExportError(f"{path.name}: no tensors")
    wanted = QUANTS[expected_kind].tensor_type
    if wanted not in info["tensor_types"]:
        raise ExportError(f"{path.name}: no {wanted} tensors (types: {info['tensor_types']}); the quantisation "
                          f"fell back — tensor widths must be multiples of 256 for K-quants")
    gguf.probe(path)  # a llama.cpp that crashes on load fails here with the reason, not in this process
    llm = gguf.load(path)
    try:
        if tokenizer is not None:
            ours = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
            theirs = llm.tokenize(TOKENIZER_PROBE.encode(), add_bos=False, special=True)
            if ours != theirs:
                raise ExportError(f"{path.name}: llama.cpp tokenises differently from the model's tokenizer "
                                  f"({len(theirs)} vs {len(ours)} tokens): wrong pre-tokenizer?")
        out = llm.create_chat_completion(messages=VERIFY_PROMPT, max_tokens=8, temperature=0.0)
    finally:
        llm.close()
    text = out["choices"][0]["message"]["content"] or ""
    tokens = out["usage"]["completion_tokens"]
    if tokens < 1:
        raise ExportError(f"{path.name}: llama.cpp generated nothing")
    return {**info, "tokenizer_matches": tokenizer is not None, "generated_tokens": tokens, "sample": text[:80]}


def run(recipe: Recipe) -> dict:
    import_end()
    check_capacity(recipe, ["export"])
    out = start_stage(recipe, "export")
    try:
        return _run(recipe, out)
    except (OSError, gguf.GGUFError) as e:  # a full disk, here or in llama.cpp's converter (its stderr says so)
        if not (isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e)):
            raise
        raise ExportError(f"the disk holding {out} is full: {disk_needed(recipe, out)}; free space there (or point "
                          f"KIT_RUNS_DIR at a larger disk) and run `python -m kit export --recipe {recipe.name}` again "
                          f"(a stopped export is not taken as finished)") from None


def disk_needed(recipe: Recipe, out: Path) -> str:
    """What the export writes, from the kit's estimate (kit.memory.disk), against what is free at `out`."""
    sizes = disk(recipe, counted(recipe))
    need = sum(v for k, v in sizes.items() if k.startswith(("merged", "GGUF")))
    return (f"the export writes about {need / 1e9:.2f} GB (merged model and GGUF files), and "
            f"{shutil.disk_usage(out).free / 1e9:.2f} GB are free")


def _run(recipe: Recipe, out: Path) -> dict:
    adapter = final_adapter(recipe)
    if adapter is None:
        raise ExportError(f"no adapter to export for recipe '{recipe.name}': run "
                          f"`python -m kit sft --recipe {recipe.name}` (and rl) first")
    print(f"[kit] exporting {adapter.parent.name}/adapter of recipe {recipe.name}")
    metrics: dict = {**metrics_header(recipe, "export"), "adapter": f"{adapter.parent.name}/adapter"}
    with Timer() as t:
        merged_dir = out / "merged"
        metrics["merge"] = merge(recipe, adapter, merged_dir)
    metrics["merge"]["seconds"] = round(t.seconds, 2)
    metrics["mtp"] = carry_mtp(model_path(recipe), merged_dir)
    if metrics["mtp"]:
        print(f"[kit] multi-token-prediction layers carried into merged/: {metrics['mtp']['tensors']} tensors "
              f"({metrics['mtp']['copied']} copied from the base, unchanged)")
    (merged_dir / "README.md").write_text(model_card(recipe, "export", metrics, extra=NOT_MEDICAL_ADVICE), encoding="utf-8")
    print(f"[kit] merged into a {metrics['merge']['dtype']} base: max |Δlogit| vs adapter-on-base "
          f"{metrics['merge']['max_abs_logit_diff']:.2e}")
    metrics["rope_parameters"] = apply_yarn(recipe, merged_dir)  # after the check: YaRN changes the logits

    gguf_dir = out / "gguf"
    metrics["gguf"] = files = write_gguf(recipe, merged_dir, gguf_dir, metrics["merge"]["model_type"])
    preferred = next((k for k in GGUF_PREFERENCE if k in files), "f16")
    metrics["mmproj"] = write_projector(recipe, merged_dir, gguf_dir / files[preferred]["file"])
    from transformers import AutoTokenizer

    opened = opens_thinking(AutoTokenizer.from_pretrained(merged_dir))
    (gguf_dir / "Modelfile").write_text(modelfile(recipe, files[preferred]["file"], opened), encoding="utf-8")
    metrics["merged_bytes"] = sum(p.stat().st_size for p in merged_dir.glob("*.safetensors"))
    if recipe.export.push_to_hub:
        metrics["pushed_to"] = push(recipe, merged_dir, gguf_dir)
    metrics.update(end=metrics["merge"]["end"], **peak_memory_mb())
    write_metrics(out, metrics)
    print(f"[kit] export done → {out}")
    return metrics


def write_gguf(recipe: Recipe, merged_dir: Path, gguf_dir: Path, model_type: str) -> dict:
    """The merged model as an f16 GGUF and each of the recipe's quantisations, each verified."""
    shutil.rmtree(gguf_dir, ignore_errors=True)
    gguf_dir.mkdir(parents=True)
    arch = GGUF_ARCH.get(model_type)
    extra = ["--no-mtp"] if arch and arch.startswith("qwen35") else []
    files = {}
    with Timer() as t:
        converted = gguf.convert(merged_dir, gguf_dir / f"{recipe.name}-f16.gguf", outtype="f16", extra_args=extra)
    base = converted.path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    print(f"[kit] llama.cpp's converter {'recognised' if converted.recognised else 'was told'} the pre-tokenizer: "
          f"{converted.pre_tokenizer}" + ("" if converted.recognised else " (a tokenizer the kit trained; no hash of it is known)"))
    files["f16"] = {"file": base.name, "seconds": round(t.seconds, 2), "pre_tokenizer_recognised": converted.recognised,
                    **verify_gguf(base, arch, "f16", tokenizer)}
    for kind in recipe.export.quantizations:
        with Timer() as t:
            q = gguf.quantize(base, gguf_dir / f"{recipe.name}-{kind}.gguf", kind)
        files[kind] = {"file": q.name, "seconds": round(t.seconds, 2), **verify_gguf(q, arch, kind, tokenizer)}
        print(f"[kit] {q.name}: {files[kind]['bytes'] / 2**20:.2f} MiB, {files[kind]['tensor_types']}")
    return files


def write_projector(recipe: Recipe, merged_dir: Path, text_gguf: Path) -> dict | None:
    """For a vision-language checkpoint, its vision tower and projector as llama.cpp's `mmproj` GGUF
    (llama.cpp's converter, `--mmproj`), beside the text GGUFs; verified by answering a question about an
    image through llama.cpp's multimodal library with `text_gguf`. None for a text-only model."""
    if "vision_config" not in json.loads((merged_dir / "config.json").read_text()):
        return None
    with Timer() as t:
        path = gguf.convert(merged_dir, text_gguf.parent / f"mmproj-{recipe.name}-f16.gguf", outtype="f16",
                            extra_args=["--mmproj"]).path
    from PIL import Image
    from transformers import AutoTokenizer

    image = images.data_url(Image.new("RGB", (64, 64), (200, 30, 30)))

    tokenizer, question = AutoTokenizer.from_pretrained(merged_dir), {"type": "text", "text": "What is shown?"}
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": parts}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False)
               for parts in ([{"type": "image_url", "image_url": {"url": image}}, question], [question])]
    llm = gguf.load(text_gguf)
    try:
        seen = gguf.complete(llm, dict(prompt=prompts[0], max_tokens=4, temperature=0.0), [image],
                             gguf.vision(llm, path))["usage"]
        text = gguf.complete(llm, dict(prompt=prompts[1], max_tokens=4, temperature=0.0))["usage"]
    finally:
        llm.close()
    # as llama-cpp-python counts them: positions (libmtmd gives a Qwen image max(rows, columns) under M-RoPE)
    image_tokens = seen["prompt_tokens"] - text["prompt_tokens"]
    if image_tokens < 1 or seen["completion_tokens"] < 1:
        raise ExportError(f"{path.name}: llama.cpp did not read the image ({seen})")
    print(f"[kit] {path.name}: vision projector; a 64×64 image adds {image_tokens} to the prompt tokens llama.cpp reports with {text_gguf.name}")
    return {"file": path.name, "seconds": round(t.seconds, 2), "bytes": path.stat().st_size,
            "usage_prompt_tokens_of_a_64px_image": image_tokens, "checked_with": text_gguf.name}


def push(recipe: Recipe, merged_dir: Path, gguf_dir: Path) -> str:
    """Upload the merged model and GGUF files (only when the recipe says so). The token comes from
    the Hugging Face login or $HF_TOKEN and is never printed."""
    from huggingface_hub import HfApi

    if not recipe.export.hub_repo:
        raise ExportError("export.push_to_hub is true but export.hub_repo is not set")
    api = HfApi()
    api.create_repo(recipe.export.hub_repo, exist_ok=True)
    api.upload_folder(repo_id=recipe.export.hub_repo, folder_path=str(merged_dir))
    api.upload_folder(repo_id=recipe.export.hub_repo, folder_path=str(gguf_dir), allow_patterns=["*.gguf", "Modelfile"])
    return recipe.export.hub_repo
