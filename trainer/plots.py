"""Training curves and confusion matrices as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from math import nan
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np  # noqa: E402

from trainer.core.atomic import write_error  # noqa: E402
from trainer.core.jsonio import loads  # noqa: E402


def read_events(path: Path) -> tuple[list[dict[str, Any]], int]:
    """metrics.jsonl events, and how many torn lines (a run killed mid-write) were skipped.

    After a resume, the later record of an (event, split, step) wins.
    """
    latest: dict[tuple, dict[str, Any]] = {}
    torn = 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            event = loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            torn += 1
            continue
        latest[(event.get("event"), event.get("split"), event.get("step"))] = event
    return sorted(latest.values(), key=lambda e: e.get("step") or 0), torn


def end_torn_line(path: Path) -> bool:
    """End a log whose last line a killed run left half-written, so that the next event starts a line."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
        f.write(b"\n")
    return True


def plot_curves(metrics_jsonl: Path, out: Path) -> int:
    """Training loss and dev accuracy against optimizer steps; returns how many torn log lines were skipped."""
    events, torn = read_events(metrics_jsonl)
    # A non-finite loss is logged as null (strict JSON); plotted as a gap.
    train = [(e["step"], nan if e["loss"] is None else e["loss"]) for e in events if e.get("event") == "train"]
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
    return torn


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
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=6, color="white" if share[i, j] > 0.5 else "black"
            )
    fig.tight_layout()
    _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> None:
    """`out` written whole or not at all; a write error (a full disk) names it. The temporary has one fixed
    name, so the next save over `out` replaces whatever a killed run left under it."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=100)
        tmp.replace(out)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(out, exc) from None
        raise
    finally:
        plt.close(fig)
