"""Naive reference implementations shared by several test modules (written as the official scripts are)."""

from __future__ import annotations

from collections.abc import Sequence


def charades_ap_loop(conf: Sequence[float], labels: Sequence[int]) -> float:
    """THUMOSeventclspr from Charades_v1_classify.m, line by line (sort is stable in MATLAB: ties keep input order)."""
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    tp = fp = 0
    ap = 0.0
    npos = sum(1 for v in labels if v == 1)
    for i in order:
        if labels[i] == 1:
            tp += 1
            ap += tp / (tp + fp)
        else:
            fp += 1
    return ap / npos if npos else float("nan")
