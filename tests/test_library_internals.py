"""The kit leans on a few internals of other libraries (not their public API). Each test here names the library's
version and the kit module that relies on the internal, and fails loudly when an upgrade moves it, instead of
the kit breaking quietly at run time."""

from __future__ import annotations

import inspect
from importlib.metadata import version


def test_llama_cpp_python_reads_its_default_model_params_at_load():
    """kit/gguf.py `without_amx_repacking` swaps `llama_cpp.llama_cpp.llama_model_default_params` for the load."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    v = f"llama-cpp-python {version('llama-cpp-python')}"
    assert callable(getattr(low, "llama_model_default_params", None)), f"{v}: llama_model_default_params is gone"
    assert hasattr(low.llama_model_default_params(), "use_extra_bufts"), f"{v}: the model params lost use_extra_bufts"
    source = inspect.getsource(llama_cpp.Llama.__init__)
    assert "llama_model_default_params" in source, f"{v}: Llama() no longer reads llama_model_default_params at load"
    assert callable(getattr(llama_cpp, "llama_model_quantize_default_params", None)), \
        f"{v}: llama_model_quantize_default_params (kit/gguf.py's quantisation) is gone"


def test_llama_cpp_python_s_mtmd_handler_keeps_the_methods_the_kit_overrides_and_calls():
    """kit/gguf.py `vision` subclasses MTMDChatHandler, overriding `_get_chat_template(llama)` and calling
    `_init_mtmd_context(llama)`."""
    from llama_cpp.llama_chat_format import MTMDChatHandler

    v = f"llama-cpp-python {version('llama-cpp-python')}"
    for name in ("_get_chat_template", "_init_mtmd_context"):
        method = getattr(MTMDChatHandler, name, None)
        assert callable(method), f"{v}: MTMDChatHandler.{name} is gone"
        assert len(inspect.signature(method).parameters) == 2, \
            f"{v}: MTMDChatHandler.{name} no longer takes (self, the Llama) alone"


def test_llama_cpp_s_converter_keeps_the_pre_tokenizer_method_the_kit_wraps():
    """kit/gguf_convert.py wraps `conversion.base.TextModel.get_vocab_base_pre(self, tokenizer)`."""
    import sys

    from kit.gguf import converter_dir, llama_cpp_version

    root = converter_dir()
    sys.path[:0] = [str(root), str(root / "gguf-py")]
    try:
        from conversion import base
    finally:
        del sys.path[:2]
    v = f"llama.cpp's converter (llama-cpp-python {llama_cpp_version()})"
    method = getattr(getattr(base, "TextModel", None), "get_vocab_base_pre", None)
    assert callable(method), f"{v}: conversion.base.TextModel.get_vocab_base_pre is gone"
    assert list(inspect.signature(method).parameters) == ["self", "tokenizer"], f"{v}: its signature changed"


def test_transformers_compiles_chat_templates_where_the_kit_reads_their_variables():
    """kit/chat_api.py `template_variables` parses a template compiled by transformers' `_compile_jinja_template`."""
    from transformers.utils import chat_template_utils

    v = f"transformers {version('transformers')}"
    compile_template = getattr(chat_template_utils, "_compile_jinja_template", None)
    assert callable(compile_template), f"{v}: chat_template_utils._compile_jinja_template is gone"
    assert hasattr(compile_template("{{ messages }}"), "environment"), f"{v}: it no longer returns a jinja2 Template"


def test_lm_eval_keeps_its_yaml_loader():
    """kit/benchmarks.py reads a task's yaml with `lm_eval.tasks._yaml_loader.load_yaml`."""
    v = f"lm-eval {version('lm_eval')}"
    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError as e:
        raise AssertionError(f"{v}: lm_eval.tasks._yaml_loader.load_yaml is gone ({e})") from None
    assert callable(load_yaml), f"{v}: load_yaml is not a function"
