"""Line plots: training curves from a run's metrics.jsonl, and evaluation metrics across checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_log(jsonl: str | Path, out: str | Path, keys: tuple[str, ...] = ("loss", "loss_music", "loss_motion")) -> Path:
    """Loss curves (and validation losses when logged) from ``logs/metrics.jsonl`` to a PNG."""
    rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in sorted({k for r in rows for k in r if k in keys or k.startswith("val_loss")}):
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*points), label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def plot_metric(names: list[str], values: list[float], metric: str, out: str | Path) -> Path:
    """One evaluation metric across checkpoints (in the given order) to a PNG."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(len(values)), values, marker="o")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(metric)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
