"""Run llama.cpp's convert_hf_to_gguf.py, telling it the pre-tokenizer when it cannot recognise one.

    python -m kit.gguf_convert LLAMA_CPP_DIR PRE_TOKENIZER -- MODEL_DIR --outfile F --outtype f16

The converter identifies a BPE tokenizer by hashing how it splits a test string and refuses an
unknown hash; it has no option to name the pre-tokenizer, so this wrapper supplies one.
"""

import runpy
import sys
from pathlib import Path

FORCED = "kit.gguf_convert: unrecognised BPE pre-tokenizer, told: "


def main() -> None:
    tool, pre, sep, *rest = sys.argv[1:]
    assert sep == "--", "usage: python -m kit.gguf_convert LLAMA_CPP_DIR PRE -- converter args"
    sys.path[:0] = [tool, str(Path(tool) / "gguf-py")]
    from conversion import base

    recognised = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return recognised(self, tokenizer)
        except NotImplementedError:
            print(f"{FORCED}{pre}", file=sys.stderr, flush=True)
            return pre

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    script = str(Path(tool) / "convert_hf_to_gguf.py")
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
