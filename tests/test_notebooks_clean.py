"""Notebooks are committed clean, open with the standard header, and only call the kit."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_numbered_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)]


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
