"""Training curves and confusion matrices as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np  # noqa: E402


def read_events(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl events; after a resume, the later record of a (event, split, step) wins."""
    latest: dict[tuple, dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            event = json.loads(line)
            latest[(event.get("event"), event.get("split"), event.get("step"))] = event
    return sorted(latest.values(), key=lambda e: e.get("step") or 0)


def plot_curves(metrics_jsonl: Path, out: Path) -> None:
    """Training loss and dev accuracy against optimizer steps."""
    events = read_events(metrics_jsonl)
    train = [(e["step"], e["loss"]) for e in events if e.get("event") == "train"]
    dev = [(e["step"], e["accuracy"]) for e in events if e.get("event") == "eval" and e.get("split") == "dev"]
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train, strict=True))
    ax_loss.set(title="training loss", xlabel="step", ylabel="loss")
    if dev:
        ax_dev.plot(*zip(*dev, strict=True), marker="o")
    ax_dev.set(title="dev accuracy", xlabel="step", ylabel="accuracy")
    fig.tight_layout()
    _save(fig, out)


def plot_confusion(confusion: dict[str, Any], out: Path) -> None:
    """Rows: gold label; columns: predicted; colour: row-normalised share, text: counts."""
    labels, matrix = confusion["labels"], np.array(confusion["matrix"])
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = 1.5 + 0.5 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="gold")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
