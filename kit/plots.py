"""Figures the notebooks show and the summary embeds (matplotlib, Agg-safe)."""

from __future__ import annotations

import json
from pathlib import Path


def _figure(width=7, height=3.2):
    import matplotlib

    if matplotlib.get_backend().lower().startswith(("qt", "tk", "gtk", "wx", "mac")):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _finish(fig, ax, xlabel: str, ylabel: str, out: Path | None):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    if out:
        fig.savefig(out, dpi=110)
    return fig


def length_histogram(data_dir: Path, max_len: int, out: Path | None = None):
    """Token lengths of each kind of data, with the recipe's max length marked."""
    lengths = json.loads((Path(data_dir) / "lengths.json").read_text())
    fig, ax = _figure()
    for kind, values in lengths.items():
        ax.hist(values, bins=30, alpha=0.6, label=f"{kind} (n={len(values)})")
    ax.axvline(max_len, color="red", linestyle="--", label=f"max_seq_length = {max_len}")
    return _finish(fig, ax, "tokens per rendered example", "rows", out)


def loss_curve(history: dict, out: Path | None = None):
    """Train and validation loss per step, from the SFT stage's metrics."""
    fig, ax = _figure()
    for name, points in history.items():
        if points:
            ax.plot([p["step"] for p in points], [p["loss"] for p in points], marker="o" if name == "val" else None,
                    label=f"{name} loss")
    return _finish(fig, ax, "optimiser step", "cross-entropy (nats / token)", out)


def reward_curve(history: list[dict], out: Path | None = None):
    """Total reward and each component per RL step."""
    fig, ax = _figure()
    steps = [h["step"] for h in history]
    keys = sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    ax.plot(steps, [h.get("reward") for h in history], linewidth=2.5, label="reward (weighted sum)")
    for key in keys:
        ax.plot(steps, [h.get(key) for h in history], linestyle="--", label=key.split("/")[1])
    return _finish(fig, ax, "optimiser step", "mean reward", out)


def runs_curves(series: dict[str, tuple[list[dict], list[dict]]], out: Path):
    """Several runs' SFT loss and RL reward, two panels: {label: (loss history, reward history)} (`kit compare`)."""
    fig, _ = _figure(11, 3.4)
    fig.clf()
    loss_ax, reward_ax = fig.subplots(1, 2)
    for label, (losses, rewards) in series.items():
        if losses:
            loss_ax.plot([p["step"] for p in losses], [p["loss"] for p in losses], marker=".", label=label)
        if rewards:
            reward_ax.plot([h["step"] for h in rewards], [h.get("reward") for h in rewards], marker=".", label=label)
    for ax, title, ylabel in ((loss_ax, "SFT", "train loss"), (reward_ax, "RL", "mean reward")):
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig


def bar_plot(results: dict, path: Path):
    """Accuracy per task, one bar per system, with 95% intervals."""
    names = list(results)
    tasks = list(next(iter(results.values()))["tasks"]) if results else []
    fig, ax = _figure(max(6, 1.6 * len(tasks) + 2), 3.6)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals = [results[name]["tasks"][t]["accuracy"] for t in tasks]
        centre = [v["value"] or 0 for v in vals]
        err = [[c - v["ci95"][0] for c, v in zip(centre, vals)], [v["ci95"][1] - c for c, v in zip(centre, vals)]]
        ax.bar([x + i * width for x in range(len(tasks))], centre, width, yerr=err, capsize=3, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(tasks))], tasks)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def budget_plot(budgets: dict, path: Path):
    """Accuracy against the thinking budget (95% intervals), and the share of forced closes."""
    curve = budgets["curve"]
    x = [b["budget"] for b in curve]
    acc = [b["accuracy"]["value"] or 0 for b in curve]
    fig, ax = _figure(6, 3.4)
    ax.errorbar(x, acc, yerr=[[a - b["accuracy"]["ci95"][0] for a, b in zip(acc, curve)],
                              [b["accuracy"]["ci95"][1] - a for a, b in zip(acc, curve)]],
                marker="o", capsize=3, label=f"accuracy ({budgets['system']})")
    ax.plot(x, [b["forced_close"]["value"] for b in curve], "s--", color="grey", label="forced closes")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_ylim(0, 1)
    ax.set_xlabel("thinking budget (tokens)")
    ax.set_ylabel("share of items")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig
