"""The confusion matrix of an evaluation as a PNG (what `istpan eval --json FILE` writes beside FILE).

Colours are row-normalised (the share of each true class's videos that went to each prediction), so a rare class's
mistakes are as visible as a frequent one's; the cells carry the raw counts while they stay legible (<= 30 classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_confusion"]


def plot_confusion(confusion: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str], path: str | Path, *,
                   title: str = "") -> Path:
    """confusion: (C, C) counts, rows = true class, columns = predicted class. Returns `path`."""
    from matplotlib.figure import Figure  # lazy: matplotlib import costs ~0.3 s

    counts = np.asarray(confusion, dtype=np.int64)  # (C, C)
    c = counts.shape[0]
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # (C, C) share of each true class
    side = min(max(3.0, 0.35 * c + 1.5), 40.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    ticks = np.arange(c)
    font = 8 if c <= 30 else 5
    ax.set_xticks(ticks, [str(n) for n in class_names], rotation=90, fontsize=font)
    ax.set_yticks(ticks, [str(n) for n in class_names], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix", fontsize=9)
    if c <= 30:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font,
                    color="white" if rows[i, j] > 0.5 else "black")
    path = Path(path)
    fig.savefig(path)
    return path
