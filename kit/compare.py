"""Two runs side by side: what one changed setting did.

    python -m kit compare tiny runs-seed1/tiny            # a recipe's runs, or a recipe's runs folder
    python -m kit compare tiny smollm2 --out compare.png

Each side is a recipe's runs folder (`runs/<recipe>`, what `kit pipeline` writes) or a recipe name (its folder
under the runs root). Prints the eval accuracies of both, system by system and task by task, with a paired test
where the two evaluated the same items (McNemar's exact test for one sample per item, a paired permutation test
for several: `kit.stats.paired_test`), the recipes' differing settings, and writes one figure with both runs'
SFT loss and RL reward curves.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .errors import KitError
from .plots import runs_curves
from .runs import runs_root
from .stats import clipped_mean, mean_over_samples, paired_test


class CompareError(KitError):
    pass


def run_folder(spec: str) -> Path:
    """A runs folder of one recipe: the path itself when it holds stage folders, else the recipe's folder under
    the runs root."""
    for path in (Path(spec), runs_root() / spec):
        if path.is_dir() and any((path / stage).is_dir() for stage in ("data", "sft", "rl", "eval")):
            return path.resolve()
    raise CompareError(f"{spec}: neither a runs folder of a recipe (with data/, sft/, rl/ or eval/ in it) nor a recipe "
                       f"with runs under {runs_root()}")


def _outputs(folder: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """{(system, task): {item: {"question", "correct": [per sample]}}} from eval/outputs.jsonl."""
    path = folder / "eval" / "outputs.jsonl"
    if not path.exists():
        return {}
    out: dict = defaultdict(dict)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            entry = out[row["system"], row["task"]].setdefault(int(row["item"]), {"question": row.get("question"), "correct": []})
            entry["correct"].append(bool(row["correct"]))
        except (ValueError, KeyError, TypeError) as e:
            raise CompareError(f"{path}, line {n}: not an eval output row ({type(e).__name__}: {e})") from None
    return dict(out)


def _settings(folder: Path) -> dict:
    """The settings each stage ran with, flattened to dotted keys: a stage's own section from the resolved recipe
    it saved (`sft.*` from sft/recipe.yaml), the rest from the latest stage's."""
    import yaml

    def flat(value, prefix=""):
        if not isinstance(value, dict):
            return {prefix: value}
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}" if prefix else str(key)).items()}

    out: dict = {}
    for stage in ("data", "sft", "rl", "export", "eval"):
        path = folder / stage / "recipe.yaml"
        if path.exists():
            saved = flat(yaml.safe_load(path.read_text()) or {})
            out |= {k: v for k, v in saved.items() if not k.startswith(("data.", "sft.", "rl.", "export.", "eval."))}
            out |= {k: v for k, v in saved.items() if k.startswith(f"{stage}.")}
    return out


def compare(a: str, b: str) -> dict:
    """Both runs' eval accuracies with a paired test where the items match, and their differing settings."""
    fa, fb = run_folder(a), run_folder(b)
    if fa == fb:
        raise CompareError(f"{a} and {b} are the same runs folder ({fa})")
    oa, ob = _outputs(fa), _outputs(fb)
    if not oa and not ob:
        raise CompareError(f"neither {fa} nor {fb} has eval/outputs.jsonl: run `python -m kit eval` on them first")
    rows = []
    for key in sorted(set(oa) | set(ob)):
        ia, ib = oa.get(key, {}), ob.get(key, {})
        # a rubric task's outputs hold scores (numbers), a right-or-wrong task's true or false
        scores = any(not isinstance(c, bool) for v in [*ia.values(), *ib.values()] for c in v["correct"])

        def figure(items):
            if not items:
                return None
            per_item = [v["correct"] for v in items.values()]
            return clipped_mean([sum(c) / len(c) for c in per_item]) if scores else mean_over_samples(per_item)

        row = {"system": key[0], "task": key[1], "a": figure(ia), "b": figure(ib)}
        same = sorted(i for i in set(ia) & set(ib) if ia[i]["question"] == ib[i]["question"])
        if same:
            row["paired"] = paired_test([ia[i]["correct"] for i in same], [ib[i]["correct"] for i in same], scores=scores)
        rows.append(row)
    sa, sb = _settings(fa), _settings(fb)
    differ = {k: (sa.get(k), sb.get(k)) for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k) and k != "name"}
    return {"a": str(fa), "b": str(fb), "rows": rows, "settings": differ}


def table(result: dict) -> str:
    def acc(x):
        return "-" if not x or x["value"] is None else f"{x['value']:.2f} (n={x['n']})"

    lines = [f"A: {result['a']}", f"B: {result['b']}", "",
             "| system | task | A | B | B − A | paired test | p |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        p = r.get("paired")
        lines.append(f"| {r['system']} | {r['task']} | {acc(r['a'])} | {acc(r['b'])} | "
                     + (f"{p['difference']:+.2f} | {p['test']} (n={p['n']}) | {p['p_value']:.3g} |" if p else
                        "- | no items in common | - |"))
    if result["settings"]:
        lines += ["", "Settings that differ (A → B):"]
        lines += [f"  {k}: {va!r} → {vb!r}" for k, (va, vb) in list(result["settings"].items())[:40]]
    return "\n".join(lines)


def curves(result: dict, out: Path) -> Path:
    """SFT loss and RL reward of both runs on one figure (two panels)."""
    series = {}
    for label, folder in (("A", Path(result["a"])), ("B", Path(result["b"]))):
        sft, rl = folder / "sft" / "metrics.json", folder / "rl" / "metrics.json"
        series[f"{label}: {folder.parent.name}/{folder.name}"] = (
            json.loads(sft.read_text()).get("loss_history", {}).get("train", []) if sft.exists() else [],
            json.loads(rl.read_text()).get("reward_history", []) if rl.exists() else [])
    runs_curves(series, out)
    return out
