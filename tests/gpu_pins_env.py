"""Build the GPU-pins lane's environment: the main venv's packages, with transformers, TRL and datasets at the
versions requirements-gpu.txt pins (what the pinned Unsloth allows on a GPU) in front of them.

    python tests/gpu_pins_env.py .venv-gpupins      # `make setup` runs it (seconds: three wheels)

The lane's venv is an overlay, not a second copy: its own site-packages holds the three pinned packages and
their pinned dependencies (huggingface_hub < 2, fsspec <= 2026.2.0), and a .pth file adds the main venv's
site-packages behind them, so everything else (torch, peft, llama.cpp's bindings, lm-eval, the kit itself)
is the main venv's, and the lane costs seconds and megabytes, not a 2 GB venv and a llama.cpp compile.

One change to TRL 1.15.0, the only one: its chunked log-prob kernel (`trl/kernels/chunked_logprob.py`,
which both SFTTrainer and GRPOTrainer call for every loss) runs a Triton kernel, and Triton ships only with
CUDA builds of torch. TRL 1.16.0's copy of that file is the same autograd function with a torch fold for
devices without Triton (`_use_triton(device)`; diffed: nothing else changed in it), so the lane takes that
file from the main venv's TRL 1.16.0. Everything else, the trainers, their configs, collators and losses,
is TRL 1.15.0's own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED = ("transformers", "trl", "datasets")
KERNELS_INIT = '''"""TRL 1.15.0's kernels, as the GPU-pins lane has them (tests/gpu_pins_env.py): chunked_logprob.py is
TRL 1.16.0's, which falls back to torch without Triton; the entropy kernel needs Triton and is left out
(TRL's trainers then take their torch path, as on any device without it)."""

from .chunked_logprob import ChunkedLogProbFunction

try:
    from .logprob_entropy import selective_log_softmax_and_entropy
except ImportError:
    selective_log_softmax_and_entropy = None
'''


def gpu_pins() -> list[str]:
    """The `name==version` lines of requirements-gpu.txt for the packages the lane pins."""
    text = (ROOT / "requirements-gpu.txt").read_text()
    pins = [m.group(0) for m in re.finditer(rf"^(?:{'|'.join(PINNED)})==[\w.]+", text, re.M)]
    if len(pins) != len(PINNED):
        sys.exit(f"requirements-gpu.txt pins {pins}; the lane needs one pin for each of {PINNED}")
    return pins


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def build(target: Path) -> None:
    if not (target / "bin" / "python").exists():
        venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    own = site_packages(python)
    main = Path(sysconfig.get_paths()["purelib"])  # the main venv's: this script runs with its python
    # `site.addsitedir` (not a bare path line) so the main venv's own .pth files run too: the kit's editable install
    (own / "kit-main-venv.pth").write_text(f"import site; site.addsitedir({str(main)!r})\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", *gpu_pins()], check=True)
    import trl

    if trl.__version__ != "1.16.0":
        sys.exit(f"the main venv has trl {trl.__version__}; the kernel file is taken from 1.16.0's")
    kernels = own / "trl" / "kernels"
    (kernels / "chunked_logprob.py").write_text((Path(trl.__file__).parent / "kernels" / "chunked_logprob.py").read_text())
    (kernels / "__init__.py").write_text(KERNELS_INIT)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
