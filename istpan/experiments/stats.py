"""Confidence intervals for the ablation: mean over seeds, paired differences, and what a difference means.

Why paired: every row of the pretrained ablation is trained with the same seeds on the same data, so seed s of row A
and seed s of row B share the data order, the frame sampling and the validation videos. The per-seed difference
A_s − B_s cancels what the two share, and its t interval is much tighter than comparing two unpaired means.

The 95 % interval is Student's t over seeds (the t quantile is tabulated below: SciPy is not a dependency for one
number). `verdict` turns an interval into the words the docs use; `bootstrap_paired` adds the uncertainty from the
finite validation set, which the t interval over seeds does not see (every seed is tested on the same videos).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

__all__ = ["NEGLIGIBLE", "bootstrap_paired", "mean_ci", "paired_ci", "t_quantile", "verdict"]

# two-sided 95 % Student t quantiles t_{0.975, df}, df = 1..30 (standard tables); the normal 1.96 beyond
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
NEGLIGIBLE = 1.0  # points of top-1: an effect whose whole interval lies within ±1 point is "too small to matter"


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the half-width multiplier of a two-sided 95 % interval."""
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample std, n and the 95 % t interval [lo, hi] of the mean."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return dict(mean=float("nan"), std=float("nan"), n=0, lo=float("nan"), hi=float("nan"))
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if n > 1 else float("nan")
    half = t_quantile(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return dict(mean=mean, std=std, n=n, lo=mean - half, hi=mean + half)


def paired_ci(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """95 % interval of mean(a_s − b_s) over the seeds both have (a and b indexed by seed)."""
    n = min(len(a), len(b))
    return mean_ci([a[i] - b[i] for i in range(n)])


def bootstrap_paired(correct_a: torch.Tensor, correct_b: torch.Tensor, *, samples: int = 2000, seed: int = 0
                     ) -> dict[str, float]:
    """95 % percentile interval of the top-1 difference (points) when the validation videos are resampled.

    correct_a, correct_b: (S, V) bool, per seed and validation video, whether rows A and B were right. Each bootstrap
    draw resamples the V videos (the same draw for both rows and all seeds) and takes the mean over seeds, so the
    interval covers "another validation set of this size", which the seeds' t interval cannot.
    """
    s = min(len(correct_a), len(correct_b))
    diff = (correct_a[:s].float() - correct_b[:s].float()).mean(0)  # (V,) per-video difference, mean over seeds
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, diff.numel(), (samples, diff.numel()), generator=g)
    means = 100.0 * diff[idx].mean(1)  # (samples,)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975])).tolist()
    return dict(mean=100.0 * float(diff.mean()), lo=lo, hi=hi)


def verdict(ci: dict[str, float], *, negligible: float = NEGLIGIBLE) -> str:
    """'holds' (interval above 0), 'does not hold' (below 0, or entirely within ±negligible: no effect worth
    having), else 'too small to tell at this power'."""
    lo, hi = ci.get("lo", float("nan")), ci.get("hi", float("nan"))
    if math.isnan(lo) or math.isnan(hi):
        return "too small to tell at this power"
    if lo > 0 and hi > negligible:
        return "holds"
    if hi < 0 or (-negligible <= lo and hi <= negligible):
        return "does not hold"
    return "too small to tell at this power"
