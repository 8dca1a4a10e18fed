"""Plots over time: where the attention mass goes across the sampled frames, and per-class score timelines.

Drawn with matplotlib's object API (`Figure` + Agg canvas) instead of pyplot: no global figure state, no GUI
backend to pick, safe to call from a loop over many videos without leaking figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["plot_attention_mass", "plot_class_timeline", "plot_window_timelines"]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # lazy: matplotlib import costs ~0.3 s

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _np(x: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def plot_attention_mass(times: Sequence[float] | torch.Tensor, mass: Sequence[float] | torch.Tensor,
                        path: str | Path, *, title: str = "") -> Path:
    """Bar chart of the fused attention mass on each sampled frame (sums to 1 over the clip) against its time (s).

    IST-PAN's softmax runs over all K·h·w positions at once, so this is how the model spreads its attention in time.
    """
    t, m = _np(times), _np(mass)
    fig = _figure(6.0, 2.4)
    ax = fig.add_subplot()
    width = 0.8 * float(np.min(np.diff(t))) if len(t) > 1 and np.min(np.diff(t)) > 0 else 0.5
    ax.bar(t, m, width=width, color="tab:orange", edgecolor="black", linewidth=0.5)
    ax.axhline(1.0 / max(len(m), 1), color="gray", linestyle="--", linewidth=1, label="uniform")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("attention mass")
    ax.set_title(title or "attention mass per sampled frame", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    path = Path(path)
    fig.savefig(path)
    return path


def plot_class_timeline(centres: Sequence[float] | torch.Tensor, scores: Sequence[float] | torch.Tensor,
                        path: str | Path, *, segments: Sequence[tuple[float, float]] = (),
                        threshold: float | None = None, duration: float | None = None, title: str = "") -> Path:
    """One class's score per window (at the window centres, seconds), its threshold and the segments above it."""
    c, s = _np(centres), _np(scores)
    fig = _figure(7.0, 2.2)
    ax = fig.add_subplot()
    for i, (start, end) in enumerate(segments):
        ax.axvspan(start, end, color="tab:green", alpha=0.25, label="segment" if i == 0 else None)
    ax.plot(c, s, marker="o", markersize=3, color="tab:blue", label="score")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlim(0.0, duration if duration else (float(c.max()) if len(c) else 1.0))
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    path = Path(path)
    fig.savefig(path)
    return path


def plot_window_timelines(result: dict[str, Any], scores: torch.Tensor, names: Sequence[str], outdir: Path
                          ) -> dict[str, str]:
    """One PNG per class worth looking at in a sliding-window result (top-k or with a segment), not 157 plots for
    every Charades video. scores: (windows, C). Returns {class name: PNG path}."""
    from istpan.viz.report import slug

    outdir.mkdir(parents=True, exist_ok=True)
    wanted = [t["index"] for t in result["top"]]
    wanted += [s["index"] for s in result["segments"] if s["index"] not in wanted]
    centres = [w["centre_s"] for w in result["windows"]]
    stem = slug(Path(result["path"]).stem)
    plots = {}
    for c in wanted:
        spans = [(s["start_s"], s["end_s"]) for s in result["segments"] if s["index"] == c]
        file = outdir / f"{stem}_timeline_{c:03d}_{slug(names[c], 24)}.png"
        plot_class_timeline(centres, scores[:, c], file, segments=spans, threshold=result["threshold"],
                            duration=result["duration_s"], title=f"{names[c]}  ({Path(result['path']).name})")
        plots[names[c]] = str(file)
    return plots
