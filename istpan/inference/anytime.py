"""Anytime inference: look at frames coarse-to-fine and stop as soon as the prediction is clear.

The paper's outlook asks for fewer sampled frames without losing accuracy. Because the backbone sees frames one at a
time and the IST-PAN layer takes any K, a video can be classified from 1, 2, 3, ... frames with one backbone pass per
added frame (`frame_features`) and one cheap head pass over the frames so far (`forward_clip`):

    candidates   the N frames fixed K = N would use (centres of N equal segments), times (k + 0.5) / N
    order        coarse to fine over those, one of FRAME_ORDERS:
                 "spread" (default): every prefix spreads over the whole video; after 2 frames the fixed K = 2
                 grid, after 4 an even grid, ... (targets 1/4 + the van der Corput sequence, modulo 1)
                 "dyadic": the middle, then the quarters, then the eighths, ... (the issue's first wording; its
                 2-frame prefix sits in one half of the video, which costs accuracy: docs/latency.md)
    after n      head over the n frames taken, in time order, each with its own time (order-aware model)
    stop         "margin" rule: when the top-1 margin p₁ − p₂ after n frames reaches threshold n, or at n = N;
                 "gain" rule (anytime_gain.py): when the top-1 gain of waiting for all N frames, predicted from
                 the probabilities after n and n - 1 frames by a model fit on calibration videos, is <= the threshold

With every margin threshold above 1 this is exactly fixed K = N (same frames, same times). The thresholds are
calibrated on validation videos for a target accuracy loss: margins one per step (`calibrate_thresholds`) or one shared
by all steps (`calibrate_threshold`), the gain rule's one threshold (`anytime_gain.calibrate_gain`); each the setting
with the fewest mean frames whose loss (or its upper bound loss + z * SE) stays within `max_loss` points of fixed
K = N. docs/latency.md reports the trade-off and why the gain rule is the default of `istpan eval --anytime`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from istpan.errors import UserError
from istpan.inference.anytime_gain import GainModel, loss_bound, stopped_correct
from istpan.inference.predict import probabilities

__all__ = [
    "DEFAULT_ORDER",
    "FRAME_ORDERS",
    "AnytimeCurve",
    "anytime_predict",
    "anytime_scores",
    "calibrate_threshold",
    "calibrate_thresholds",
    "coarse_to_fine",
    "frame_order",
    "margins",
    "per_step",
    "prefix_clip",
    "scores_from_features",
    "spread_order",
    "stop_mask",
    "stopping_point",
    "van_der_corput",
]


def coarse_to_fine(num: int) -> list[int]:
    """Positions 0..num-1 (segment centres (k + 0.5) / num) in coarse-to-fine order, e.g. 8 -> [3, 1, 5, 0, 2, 4, 6, 7].

    Dyadic targets 1/2, 1/4, 3/4, 1/8, 3/8, ... each take the nearest candidate not yet taken (ties: the earlier).
    """
    if num < 1:
        raise ValueError(f"need at least one frame, got {num}")
    order: list[int] = []
    level = 1
    while len(order) < num:
        for j in range(1, 2**level, 2):  # odd numerators: the new points of this level
            free = [k for k in range(num) if k not in order]
            if not free:
                break
            target = j / 2**level
            order.append(min(free, key=lambda k: (abs((k + 0.5) / num - target), k)))
        level += 1
    return order


def van_der_corput(i: int) -> Fraction:
    """The i-th point of the base-2 van der Corput sequence: 0, 1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8, ... (i's binary
    digits mirrored behind the point), whose first 2^m points are the grid j / 2^m for every m. Exact (a Fraction),
    so that a target midway between two candidates is a true tie."""
    out, scale = Fraction(0), Fraction(1, 2)
    while i:
        out += scale * (i & 1)
        i, scale = i >> 1, scale / 2
    return out


def spread_order(num: int) -> list[int]:
    """Positions 0..num-1 in an order whose every prefix spreads over the video: 8 -> [2, 6, 4, 0, 3, 7, 5, 1].

    Targets t_i = (1/4 + vdc(i)) mod 1 (0.25, 0.75, 0.5, 0, 0.375, 0.875, ...): their first 2^m are an even grid
    shifted by 1/4, so the first 2 are the fixed K = 2 frames (t = 1/4, 3/4) and, when 2^m divides num, the first 2^m
    are evenly spaced candidates. Each target takes the nearest candidate not yet taken (ties: the later one, i.e. the
    candidate whose segment [k/num, (k+1)/num) holds the target); targets go on until every candidate is taken.
    """
    if num < 1:
        raise ValueError(f"need at least one frame, got {num}")
    order: list[int] = []
    free = list(range(num))
    i = 0
    while free:
        target = (Fraction(1, 4) + van_der_corput(i)) % 1
        k = min(free, key=lambda k: (abs(Fraction(2 * k + 1, 2 * num) - target), -k))
        order.append(k)
        free.remove(k)
        i += 1
    return order


FRAME_ORDERS: dict[str, Callable[[int], list[int]]] = {"spread": spread_order, "dyadic": coarse_to_fine}
DEFAULT_ORDER = "spread"  # measured on 1,280 held-out synthetic videos: docs/latency.md


def frame_order(order: str | Sequence[int], num: int) -> list[int]:
    """The order candidates 0..num-1 are taken in: a name in FRAME_ORDERS, or an explicit permutation (a calibration
    file's)."""
    if isinstance(order, str):
        if order not in FRAME_ORDERS:
            raise UserError(f"unknown frame order {order!r}: one of {', '.join(FRAME_ORDERS)}")
        return FRAME_ORDERS[order](num)
    out = [int(k) for k in order]
    if sorted(out) != list(range(num)):
        raise UserError(f"a frame order for {num} frames must use each of 0..{num - 1} once, got {out}")
    return out


def margins(probs: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 probability, (..., C) -> (...); with one class the margin is the top-1 probability."""
    if probs.shape[-1] < 2:
        return probs[..., 0]
    top2 = probs.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def _probs(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    return probabilities(logits, multi_label=getattr(model, "multi_label", False))


def prefix_clip(model: nn.Module, feats: torch.Tensor, taken: Sequence[int], num: int) -> Any:
    """The head over the frames `taken` of num candidates (feats (B, num, ΣC_j, h, w)), in time order, each at its
    own time (k + 0.5) / num: the ModelOutput anytime inference sees after len(taken) frames. Also what training's
    prefix loss (train.prefix_loss, prefix_loss.py) classifies, so both see the same frames at the same times."""
    keep = sorted(taken)
    times = (torch.tensor(keep, dtype=torch.float32, device=feats.device) + 0.5) / num  # (n,)
    return model.forward_clip(feats[:, keep], times=times)


def _head(model: nn.Module, feats: torch.Tensor, taken: list[int], num: int) -> torch.Tensor:
    """Probabilities from the frames `taken` of num candidates (feats (B, num, ...)), in time order, own times."""
    return _probs(model, prefix_clip(model, feats, taken, num).logits)  # (B, C)


@torch.no_grad()
def anytime_scores(model: nn.Module, frames: torch.Tensor, *, order: str | Sequence[int] = DEFAULT_ORDER
                   ) -> torch.Tensor:
    """Probabilities after 1, 2, ..., N frames taken in `order`: frames (B, N, 3, S, S) -> (B, N, C).

    Every frame goes through the backbone once (the same features whatever n); what calibration needs.
    """
    b, num = frames.shape[:2]
    model.eval()
    feats = model.frame_features(frames.flatten(0, 1)).unflatten(0, (b, num))  # (B, N, ΣC_j, h, w)
    return scores_from_features(model, feats, order=order)


@torch.no_grad()
def scores_from_features(model: nn.Module, feats: torch.Tensor, *, order: str | Sequence[int] = DEFAULT_ORDER
                         ) -> torch.Tensor:
    """`anytime_scores` from the frames' features (B, N, ΣC_j, h, w) -> (B, N, C): several orders, one backbone pass."""
    num = feats.shape[1]
    taken = frame_order(order, num)
    return torch.stack([_head(model, feats, taken[: n + 1], num) for n in range(num)], dim=1)  # (B, N, C)


@torch.no_grad()
def anytime_predict(
    model: nn.Module, frame: Callable[[int], torch.Tensor], num: int, *, threshold: Thresholds,
    order: str | Sequence[int] = DEFAULT_ORDER, gain: GainModel | None = None,
) -> tuple[torch.Tensor, int]:
    """One video, frames computed only when needed: probabilities (C,) and how many frames were used.

    frame(k) returns candidate k (of num, time order) as a float (3, S, S) model input; it is called in `order`
    until the rule says stop after n frames (`stop_mask`: the margin reaches threshold n, or with a `gain` model the
    predicted gain of waiting is <= threshold n; one float: the same at every step, a list: one per step, as
    the calibrations give), so a clear video costs one or two backbone passes.
    """
    thr = per_step(threshold, num)
    model.eval()
    device = next(model.parameters()).device
    feats: dict[int, torch.Tensor] = {}
    seen: list[torch.Tensor] = []  # the probabilities after 1, 2, ... frames (the gain rule looks one step back)
    for n, k in enumerate(frame_order(order, num), start=1):
        feats[k] = model.frame_features(frame(k)[None].to(device))[0]  # (ΣC_j, h, w)
        keep = sorted(feats)
        times = (torch.tensor(keep, dtype=torch.float32, device=device) + 0.5) / num
        probs = _probs(model, model.forward_clip(torch.stack([feats[i] for i in keep])[None], times=times).logits)[0]
        seen.append(probs.cpu())
        if n == num or bool(stop_mask(torch.stack(seen)[None], thr, gain)[0, -1]):
            return probs, n
    raise AssertionError("unreachable: the loop returns at n == num")


Thresholds = float | Sequence[float]


def per_step(thresholds: Thresholds, num: int) -> list[float]:
    """One threshold per number of frames seen 1..num-1 (a single float: the same at every step; the last frame
    always stops, so a list may give num - 1 or num values, the num-th is ignored)."""
    if isinstance(thresholds, (int, float)):
        return [float(thresholds)] * (num - 1)
    out = [float(t) for t in thresholds]
    if len(out) not in (num - 1, num):
        raise UserError(f"need one threshold per step: {num - 1} (or {num}) values for {num} frames, got {len(out)}")
    return out[: num - 1]


def stop_mask(scores: torch.Tensor, thresholds: Thresholds, gain: GainModel | None = None) -> torch.Tensor:
    """Whether the rule says stop after each of the first n frames: scores (V, n, C), n <= N, -> (V, n) bool, with
    thresholds per step (N - 1 of them; the N-th frame always stops, `stopping_point`). Without `gain`: margin >=
    threshold; with it: predicted gain of waiting <= threshold. The one place both `stopping_point` (calibration,
    all steps at once) and `anytime_predict` (frame by frame) decide, so they cannot disagree."""
    n = scores.shape[1]
    thr = torch.tensor(thresholds, dtype=torch.float64)[:n]
    if gain is None:
        return margins(scores).double()[:, : len(thr)] >= thr
    return gain.predict(scores)[:, : len(thr)] <= thr


def stopping_point(scores: torch.Tensor, thresholds: Thresholds, gain: GainModel | None = None) -> torch.Tensor:
    """Frames used per video (V,): the first n where the rule says stop (`stop_mask`), or N: scores (V, N, C)."""
    num = scores.shape[1]
    clear = torch.cat([stop_mask(scores, per_step(thresholds, num), gain),
                       torch.ones(len(scores), 1, dtype=torch.bool)], 1)  # (V, N): the last frame always stops
    return clear.float().argmax(1) + 1  # first True, 1-based


@dataclass(frozen=True)
class AnytimeCurve:
    """Accuracy (percent) and mean frames used at each threshold; fixed-K accuracy for reference."""

    thresholds: list[float]
    accuracy: list[float]
    mean_frames: list[float]
    full_accuracy: float  # n = N for every video: fixed K = N


def _curve(scores: torch.Tensor, labels: torch.Tensor, thresholds: Sequence[float]) -> AnytimeCurve:
    correct = scores.argmax(-1) == labels[:, None]  # (V, N)
    acc, frames = [], []
    for thr in thresholds:
        used = stopping_point(scores, thr)  # (V,)
        acc.append(100.0 * stopped_correct(correct, used).float().mean().item())
        frames.append(used.float().mean().item())
    return AnytimeCurve(list(thresholds), acc, frames, 100.0 * correct[:, -1].float().mean().item())


def calibrate_threshold(
    scores: torch.Tensor, labels: torch.Tensor, *, max_loss: float = 1.0, steps: int = 201
) -> tuple[float, AnytimeCurve]:
    """The margin threshold that uses the fewest frames while top-1 stays within `max_loss` points of fixed K = N.

    scores (V, N, C) from `anytime_scores` on a validation set, labels (V,). Thresholds 0, 1/(steps-1), ..., 1 and
    1 + ε (never stop early) are tried; accuracy need not be monotone in the threshold, so every one is checked and
    the one with the fewest mean frames (then the highest accuracy) among those within the loss wins.
    """
    grid = [i / (steps - 1) for i in range(steps)] + [1.0 + 1e-6]
    curve = _curve(scores, labels, grid)
    ok = [i for i, a in enumerate(curve.accuracy) if a >= curve.full_accuracy - max_loss - 1e-9]
    best = min(ok, key=lambda i: (curve.mean_frames[i], -curve.accuracy[i]))
    return grid[best], curve


def _point(scores: torch.Tensor, correct: torch.Tensor, thresholds: Sequence[float], z: float
           ) -> tuple[float, float, float]:
    """(accuracy %, mean frames, loss bound in points) of per-step margin thresholds."""
    used = stopping_point(scores, thresholds)  # (V,)
    acc = 100.0 * stopped_correct(correct, used).float().mean().item()
    return acc, used.float().mean().item(), loss_bound(correct, used, z)[2]


def calibrate_thresholds(
    scores: torch.Tensor, labels: torch.Tensor, *, max_loss: float = 1.0, steps: int = 51, rounds: int = 3,
    z: float = 0.0,
) -> tuple[list[float], float, float]:
    """One margin threshold per step (after 1, 2, ..., N-1 frames) that use the fewest mean frames while top-1 stays
    within `max_loss` points of fixed K = N; returns (thresholds, accuracy %, mean frames) on these scores. With
    z > 0 the upper bound loss + z * SE (`anytime_gain.loss_bound`, paired per-video SE) must stay within, not the
    loss itself: what `istpan eval --anytime` does (z = 2), as the loss on other videos is noisy.

    Why per step: a margin means different things after 1 frame and after 7 (an order-aware model is over-confident
    from one frame; an order-blind one never separates time-reversed classes, so waiting does not help it), and one
    shared threshold must suit the worst step. Search: coordinate descent from "never stop early" (= fixed K = N, always
    within the loss), each step's threshold tried over 0, 1/(steps-1), ..., 1 and 2 (never) with the others fixed,
    keeping any change that lowers the mean frames (ties: higher accuracy) within the loss; `rounds` passes. scores
    (V, N, C) from `anytime_scores`, labels (V,). Calibrate on other videos than the ones you report on (the per-step
    rule has N - 1 knobs and fits a small set's noise: docs/latency.md).
    """
    num = scores.shape[1]
    correct = scores.argmax(-1) == labels[:, None]  # (V, N)
    grid = [i / (steps - 1) for i in range(steps)] + [2.0]
    thr = [2.0] * (num - 1)
    acc, frames, _ = _point(scores, correct, thr, z)
    for _ in range(rounds):
        for n in range(num - 1):
            for value in grid:
                trial = [*thr[:n], value, *thr[n + 1:]]
                a, f, bound = _point(scores, correct, trial, z)
                if bound <= max_loss + 1e-9 and (f, -a) < (frames, -acc):
                    thr, acc, frames = trial, a, f
    return thr, acc, frames
