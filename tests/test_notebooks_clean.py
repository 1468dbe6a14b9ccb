"""Notebooks are committed clean, open with the standard header, and only call the kit."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_numbered_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]
    assert NOTEBOOKS[0].name == "00_workshop.ipynb"


def _code(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_the_install_cell_is_the_same_in_every_notebook():
    installs = {path.name: next(c for c in _code(path) if "notebook.setup(" in c) for path in NOTEBOOKS}
    assert len(set(installs.values())) == 1, "the install cells differ"
    for path in NOTEBOOKS:
        params = next(c for c in _code(path) if "RECIPE =" in c)
        # notebook 00, the workshop, takes the real model where there is no GPU; the stage notebooks the toy locally
        default = '"workshop" if GPU else "smollm2"' if path.name.startswith("00") else '"workshop" if HOSTED else "tiny"'
        assert "STAGE =" in params and default in params, path.name
        if not path.name.startswith(("00", "01")):  # a stage notebook: its inputs, when missing
            assert "UPSTREAM =" in params and any("prepare_inputs(" in c for c in _code(path)), path.name
            if "STAGE = \"demo\"" not in params:  # a stage that writes outputs can keep them
                assert "SAVE_TO =" in params and any("save_outputs(" in c for c in _code(path)), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_complete(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# ") and "colab.research.google.com" in first
    text = json.dumps(nb).lower()
    assert "not medical advice" in text and "not validated for clinical use" in text
    assert any("RECIPE =" in "".join(c["source"]) for c in code), "a parameters cell"
    assert any("COLAB_RELEASE_TAG" in "".join(c["source"]) for c in code), "the shared install cell"
    # short cells: logic belongs in kit/
    assert max(len(c["source"]) for c in code) <= 14
    assert "sk-" not in text and "hf_" not in text.replace("hf_hub", "")


def _rendered():
    import importlib.util

    spec = importlib.util.spec_from_file_location("render", NOTEBOOKS[0].parent.parent / "docs" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_rendered_copy_is_current_and_shows_outputs(path):
    render = _rendered()
    copy = render.OUT / path.name
    assert copy.exists(), f"no rendered copy of {path.name}: run `make docs`"
    rendered = json.loads(copy.read_text())
    assert rendered["metadata"]["kit"]["source_sha256"] == render.source_hash(json.loads(path.read_text())), \
        f"docs/notebooks/{path.name} was rendered from an older {path.name}: run `make docs`"
    code = [c for c in rendered["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "every cell ran"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = json.dumps(outputs)
    assert not any(p in text for p in ("/home/", "/root/", "/tmp/", "/work/")), "machine paths left"
