"""GGUF tooling without cloning or building llama.cpp at run time.

llama.cpp's own converter (`convert_hf_to_gguf.py`, its `conversion/` package and the `gguf-py`
it needs) ships inside the llama-cpp-python source distribution on PyPI. We fetch the sdist of the
installed llama-cpp-python version through pip (the package registry; cached after the first time),
convert with it, and quantise and load with the installed llama-cpp-python, so the converter and the
runtime that reads the file come from the same llama.cpp.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import KitError
from .gguf_convert import FORCED
from .progress import enabled as progress_enabled
from .runs import QUANTS, cache_dir
from .runtime import cpu_threads

# where Qwen's chat template puts an image (inside <|vision_start|>…<|vision_end|>); llama.cpp's multimodal
# library (libmtmd) puts the image's embeddings there
IMAGE_PLACEHOLDER = "<|image_pad|>"
# llama.cpp file types (llama.h: enum llama_ftype)
FTYPES = {kind: q.ftype for kind, q in QUANTS.items() if kind != "f16"}  # what llama.cpp's quantiser makes


class GGUFError(KitError, RuntimeError):
    """A GGUF step that failed, with the reason."""


def llama_cpp_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def converter_dir() -> Path:
    """Folder holding llama.cpp's `convert_hf_to_gguf.py`, `conversion/` and `gguf-py/` (fetched once)."""
    version = llama_cpp_version()
    target = cache_dir() / f"llama.cpp-{version}"
    if (target / "convert_hf_to_gguf.py").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
             f"llama-cpp-python=={version}", "-d", tmp],
            capture_output=True, text=True,
        )
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            raise GGUFError(f"could not fetch the llama-cpp-python {version} source distribution from the "
                            f"package registry (it holds llama.cpp's converter): {proc.stderr.strip()[-500:]}")
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(prefix) and m.name[len(prefix):].startswith(wanted) and m.isfile()]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(partial, members=members, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


@dataclass
class Converted:
    path: Path
    pre_tokenizer: str | None  # llama.cpp's name for the tokenizer's pre-tokenizer (None: not a BPE tokenizer)
    recognised: bool  # the converter recognised it itself (False: it was told, for a tokenizer the kit trained)


def convert(model_dir: Path, out_file: Path, *, outtype: str = "f16", pre_tokenizer: str = "qwen2",
            extra_args: list[str] | None = None) -> Converted:
    """HF folder → GGUF with llama.cpp's converter, in a subprocess (it imports its own gguf-py).

    The converter names a BPE tokenizer's pre-tokenizer by hashing how it splits a test text: a real
    checkpoint's tokenizer (Qwen3.5/3.6's, SmolLM2's) it recognises itself. `pre_tokenizer` is used only
    when it does not (a tokenizer the kit trained locally): llama.cpp is then told which split it was
    trained with, and `recognised` is False.
    """
    tool = converter_dir()
    cmd = [sys.executable, "-m", "kit.gguf_convert", str(tool), pre_tokenizer, "--", str(model_dir),
           "--outfile", str(out_file), "--outtype", outtype, *(extra_args or [])]
    # its log (a line per tensor) and gguf-py's "Writing" bar go to the user's stderr where bars are drawn, and
    # are kept for the error message and the check below either way
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)
    shown, said = progress_enabled(), bytearray()
    while chunk := proc.stdout.read1(4096):
        said += chunk
        if shown:
            sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()
    proc.wait()
    output = said.decode(errors="replace")
    if proc.returncode != 0 or not out_file.exists():
        raise GGUFError(f"convert_hf_to_gguf failed for {model_dir}: {output[-1500:]}")
    return Converted(out_file, inspect(out_file).get("pre_tokenizer"), FORCED not in output)


def quantize(src: Path, dst: Path, kind: str) -> Path:
    import llama_cpp

    if kind not in FTYPES:
        raise GGUFError(f"unknown quantisation '{kind}' (known: {', '.join(FTYPES)})")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.exists():
        raise GGUFError(f"llama.cpp could not quantise {src.name} to {kind} (return code {rc})")
    return dst


def inspect(path: Path) -> dict:
    """Architecture, tensor count and tensor types from the file's own metadata."""
    from collections import Counter

    sys.path.insert(0, str(converter_dir() / "gguf-py"))
    try:
        from gguf import GGUFReader
    finally:
        sys.path.pop(0)
    try:
        reader = GGUFReader(str(path))
    except Exception as e:
        raise GGUFError(f"{path} is not a readable GGUF file: {type(e).__name__}: {e}") from None
    field = reader.fields.get("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode() if field else None
    types = Counter(t.tensor_type.name for t in reader.tensors)
    template = reader.fields.get("tokenizer.chat_template")
    pre = reader.fields.get("tokenizer.ggml.pre")
    rope = {}
    for name, f in reader.fields.items():
        if arch and name.startswith(f"{arch}.rope.scaling.") and f.data:
            value = f.parts[f.data[0]]
            rope[name.rsplit(".", 1)[-1]] = bytes(value).decode() if f.types[0].name == "STRING" else value.tolist()[0]
    return {"architecture": arch, "tensor_count": len(reader.tensors), "tensor_types": dict(types),
            "has_chat_template": template is not None, "rope_scaling": rope, "bytes": path.stat().st_size,
            "pre_tokenizer": bytes(pre.parts[pre.data[0]]).decode() if pre else None}


def probe(path: Path, timeout: float = 900) -> None:
    """Load the file through `load` and generate two tokens in a child process before this one does. A llama.cpp
    build that crashes on load or on its first step kills the loading process with no Python error; here it is a
    GGUFError naming the file, the signal and, where it can tell, why, and the stage that asked keeps its process
    and what it made."""
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path; from kit.gguf import load; "
            "load(Path(sys.argv[1]), n_ctx=64).create_completion('Hello', max_tokens=2)")
    kit_parent = str(Path(__file__).resolve().parent.parent)  # the kit this process runs, installed or not
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code, str(path), kit_parent],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode < 0:
        why = linkage_problem()
        raise GGUFError(f"llama.cpp crashed ({signal.Signals(-proc.returncode).name}) loading {path.name}"
                        + (f": {why}" if why else f"; its output: {proc.stderr.strip()[-800:]}"))
    if proc.returncode != 0:
        raise GGUFError(f"llama.cpp could not load {path}: {proc.stderr.strip()[-800:]}")


def linkage_problem(lib: Path | None = None) -> str | None:
    """Why the installed llama.cpp crashes on load, where the cause is the known one: a compiler that links
    a static copy of libstdc++ into each shared library (libllama's C++ streams then run on libggml's
    copy, never set up, and the first number printed while loading a model segfaults). Seen on a GPU
    machine whose default C++ compiler was such a build; the system g++ fixed it."""
    import llama_cpp

    lib = lib or Path(llama_cpp.__file__).parent / "lib" / "libllama.so"
    if not lib.exists() or not shutil.which("ldd"):
        return None
    if "libstdc++" in subprocess.run(["ldd", str(lib)], capture_output=True, text=True).stdout:
        return None
    return (f"{lib.name} does not link the system's libstdc++ (the compiler that built llama-cpp-python "
            f"linked a copy into each of its libraries); rebuild it with the system compiler: CC=gcc "
            f"CXX=g++ pip install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python "
            f"llama-cpp-python=={llama_cpp.__version__}")


def amx() -> bool:
    """Whether llama.cpp's CPU backend runs on Intel AMX here (its system info says AMX_INT8 = 1). False for a
    llama_cpp without the function (a stand-in, as tests use)."""
    import llama_cpp

    info = getattr(llama_cpp, "llama_print_system_info", None)
    return bool(info) and b"AMX_INT8 = 1" in info()


@contextmanager
def without_amx_repacking():
    """On a CPU with AMX (Intel Sapphire Rapids and later) llama.cpp repacks q8_0 / q4_K weights into its AMX
    buffer and segfaults in the first matrix product (`ggml_backend_amx_mul_mat`; ggml-org/llama.cpp#20824,
    closed without a fix; the same crash took down dspy's CI on such runners). Loading without the "extra"
    buffer types (llama.h: `use_extra_bufts = false`) keeps the weights in plain CPU memory, which computes
    correctly. llama-cpp-python's `Llama` takes no such argument and reads llama.cpp's default model params
    while it loads, so for the load only those defaults come with the flag off; elsewhere nothing changes
    (repacking speeds up CPUs without AMX)."""
    if not amx():
        yield
        return
    import llama_cpp.llama_cpp as low

    defaults = low.llama_model_default_params

    def params():
        p = defaults()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = defaults


def load(path: Path, n_ctx: int = 1024):
    import llama_cpp

    try:
        with without_amx_repacking():
            return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=cpu_threads(), verbose=False, seed=0)
    except Exception as e:
        raise GGUFError(f"llama.cpp could not load {path}: {type(e).__name__}: {e}") from None


def projector(path: Path) -> Path | None:
    """The vision projector (mmproj) the export wrote beside a GGUF: vision-language checkpoints only."""
    return next(iter(sorted(path.parent.glob("mmproj-*.gguf"))), None)


def vision(llm, mmproj: Path):
    """llama.cpp's multimodal path (libmtmd) for prompts the kit renders itself (with tools and
    `chat_template_kwargs`): llama-cpp-python's `MTMDChatHandler`, given a template that only joins the
    parts, so that it encodes the images, evaluates text and images in order, and samples as
    `create_completion` does. Pass it to `complete`."""
    from llama_cpp.llama_chat_format import MTMDChatHandler

    class RenderedPrompt(MTMDChatHandler):
        def _get_chat_template(self, llama) -> str:
            return "{% for part in messages[0]['content'] %}{{ part['text'] }}{% endfor %}"

    handler = RenderedPrompt(clip_model_path=str(mmproj), verbose=False)
    try:
        handler._init_mtmd_context(llm)  # here, not at the first request: a projector that does not fit fails now
    except Exception as e:
        raise GGUFError(f"llama.cpp could not load the vision projector {mmproj.name}: {e}") from None
    return handler


def complete(llm, params: dict, images: list[str] = (), handler=None, stream: bool = False):
    """`llm.create_completion(**params)`, in its shape (choices[0].text, usage), with `images` (data URLs)
    filling the prompt's image placeholders, in order, through a `vision` handler."""
    if not images:
        return llm.create_completion(stream=stream, **params)
    pieces = params["prompt"].split(IMAGE_PLACEHOLDER)
    if handler is None or len(pieces) - 1 != len(images):
        raise ValueError(f"{len(images)} image(s) for {len(pieces) - 1} image placeholder(s) in the prompt"
                         if handler else "this GGUF has no vision projector")
    content = []
    for i, text in enumerate(pieces):
        content.append({"type": "text", "text": text})
        if i < len(images):
            content.append({"type": "image_url", "image_url": {"url": images[i]}})
    rest = {k: v for k, v in params.items() if k != "prompt"}
    out = handler(llama=llm, messages=[{"role": "user", "content": content}], stream=stream, **rest)

    def as_completion(choice: dict, text: str | None) -> dict:
        return {"index": 0, "text": text or "", "finish_reason": choice.get("finish_reason")}

    if not stream:
        c = out["choices"][0]
        return {**out, "choices": [as_completion(c, c["message"]["content"])]}
    return ({"choices": [as_completion(ch["choices"][0], ch["choices"][0]["delta"].get("content"))]} for ch in out)
