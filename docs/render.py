"""Rendered copies of the notebooks, run on the tiny recipe, with their outputs, tables and plots, for
readers on GitHub (the notebooks themselves are committed clean).

    make docs      # ~5 min on 2 CPU cores; writes docs/notebooks/*.ipynb

`00_workshop` runs in a runs folder of its own; `01`–`06` run in order in another, as a reader going
through them would. Each copy records the hash of the notebook it was made from, and the tests check
that every copy is current. This machine's paths are replaced by neutral names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "docs" / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"


def source_hash(nb: dict) -> str:
    """What a rendered copy must match: every cell's type and source, in order."""
    cells = [[c["cell_type"], "".join(c["source"])] for c in nb["cells"]]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def scrub(text: str, runs: Path) -> str:
    for path, name in [(runs, "runs"), (ROOT, "medreason-kit"), (Path.home(), "~")]:
        text = text.replace(str(path), name)
    return re.sub(r"/tmp/[^\s'\"`)]+", "<tmp>", text)


def clean_outputs(nb, runs: Path) -> None:
    """Widgets (progress bars: GitHub cannot draw them, and their text is the bar at 0%) go; so do this
    machine's paths."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET not in o.get("data", {})]
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            for key, value in list(data.items()):
                if key.startswith("text/"):
                    data[key] = scrub(value if isinstance(value, str) else "".join(value), runs)
            if "text" in out:
                out["text"] = scrub(out["text"], runs)
            if out.get("output_type") == "error":
                raise RuntimeError(f"a cell failed: {out.get('ename')}: {out.get('evalue')}")
        cell.get("metadata", {}).pop("execution", None)


def render(names: list[str], runs: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    os.environ["KIT_RUNS_DIR"] = str(runs)
    os.environ["KIT_RECIPE"] = "tiny"
    for name in names:
        path = NOTEBOOKS / name
        nb = nbformat.read(path, as_version=4)
        print(f"[docs] running {name} …", flush=True)
        NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        clean_outputs(nb, runs)
        nb.metadata["kit"] = {"rendered_from": f"notebooks/{name}", "source_sha256": source_hash(json.loads(path.read_text())),
                              "recipe": "tiny"}
        OUT.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, OUT / name)


def main() -> None:
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    wanted = sys.argv[1:] or names
    with tempfile.TemporaryDirectory() as tmp:
        render([n for n in names if n in wanted and n.startswith("00")], Path(tmp) / "workshop-runs")
        render([n for n in names if n in wanted and not n.startswith("00")], Path(tmp) / "runs")
    print(f"[docs] {len(wanted)} rendered copies in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
