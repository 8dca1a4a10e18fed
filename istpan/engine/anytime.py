"""Anytime inference: look at frames coarse-to-fine and stop as soon as the prediction is clear.

The paper's outlook asks for fewer sampled frames without losing accuracy. Because the backbone sees frames one at a
time and the IST-PAN layer takes any K, a video can be classified from 1, 2, 3, ... frames with one backbone pass per
added frame (`frame_features`) and one cheap head pass over the frames so far (`forward_clip`):

    candidates   the N frames fixed K = N would use (centres of N equal segments), times (k + 0.5) / N
    order        coarse to fine over those: the middle, then the quarters, then the eighths, ...
                 (each dyadic target 1/2, 1/4, 3/4, 1/8, ... takes the nearest unused candidate)
    after n      head over the n frames taken, in time order, each with its own time (order-aware model)
    stop         when the top-1 margin p₁ − p₂ after n frames reaches threshold n, or at n = N

With every threshold above 1 this is exactly fixed K = N (same frames, same times). The thresholds are calibrated on
validation videos for a target accuracy loss: one per step (`calibrate_thresholds`, the default we recommend) or one
shared by all steps (`calibrate_threshold`), each the setting with the fewest mean frames whose accuracy stays within
`max_loss` points of fixed K = N. docs/latency.md reports the trade-off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.engine.predict import probabilities
from istpan.errors import UserError

__all__ = [
    "AnytimeCurve",
    "anytime_predict",
    "anytime_scores",
    "calibrate_threshold",
    "calibrate_thresholds",
    "coarse_to_fine",
    "margins",
    "per_step",
    "predict_anytime",
    "stopping_point",
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


def margins(probs: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 probability, (..., C) -> (...); with one class the margin is the top-1 probability."""
    if probs.shape[-1] < 2:
        return probs[..., 0]
    top2 = probs.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def _probs(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    return probabilities(logits, multi_label=getattr(model, "multi_label", False))


def _head(model: nn.Module, feats: torch.Tensor, taken: list[int], num: int) -> torch.Tensor:
    """Probabilities from the frames `taken` of num candidates (feats (B, num, ...)), in time order, own times."""
    keep = sorted(taken)
    times = (torch.tensor(keep, dtype=torch.float32, device=feats.device) + 0.5) / num  # (n,)
    return _probs(model, model.forward_clip(feats[:, keep], times=times).logits)  # (B, C)


@torch.no_grad()
def anytime_scores(model: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Probabilities after 1, 2, ..., N frames in coarse-to-fine order: frames (B, N, 3, S, S) -> (B, N, C).

    Every frame goes through the backbone once (the same features whatever n); what calibration needs.
    """
    b, num = frames.shape[:2]
    model.eval()
    feats = model.frame_features(frames.flatten(0, 1)).unflatten(0, (b, num))  # (B, N, ΣC_j, h, w)
    order = coarse_to_fine(num)
    return torch.stack([_head(model, feats, order[: n + 1], num) for n in range(num)], dim=1)  # (B, N, C)


@torch.no_grad()
def anytime_predict(
    model: nn.Module, frame: Callable[[int], torch.Tensor], num: int, *, threshold: Thresholds
) -> tuple[torch.Tensor, int]:
    """One video, frames computed only when needed: probabilities (C,) and how many frames were used.

    frame(k) returns candidate k (of num, time order) as a float (3, S, S) model input; it is called in coarse-to-fine
    order until the margin after n frames reaches threshold n (one float: the same at every step; a list: one per step,
    as `calibrate_thresholds` gives), so a clear video costs one or two backbone passes.
    """
    thr = [*per_step(threshold, num), -1.0]  # the last frame always stops
    model.eval()
    device = next(model.parameters()).device
    order = coarse_to_fine(num)
    feats: dict[int, torch.Tensor] = {}
    for n, k in enumerate(order, start=1):
        feats[k] = model.frame_features(frame(k)[None].to(device))[0]  # (ΣC_j, h, w)
        keep = sorted(feats)
        times = (torch.tensor(keep, dtype=torch.float32, device=device) + 0.5) / num
        probs = _probs(model, model.forward_clip(torch.stack([feats[i] for i in keep])[None], times=times).logits)[0]
        if float(margins(probs)) >= thr[n - 1]:
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


def stopping_point(scores: torch.Tensor, thresholds: Thresholds) -> torch.Tensor:
    """Frames used per video (V,): the first n whose margin >= the threshold of step n (or N): scores (V, N, C)."""
    num = scores.shape[1]
    thr = torch.tensor([*per_step(thresholds, num), -1.0])  # (N,): the last frame always stops
    clear = margins(scores) >= thr  # (V, N)
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
        acc.append(100.0 * correct.gather(1, (used - 1)[:, None]).float().mean().item())
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


def _point(scores: torch.Tensor, correct: torch.Tensor, thresholds: Sequence[float]) -> tuple[float, float]:
    used = stopping_point(scores, thresholds)  # (V,)
    return 100.0 * correct.gather(1, (used - 1)[:, None]).float().mean().item(), used.float().mean().item()


def calibrate_thresholds(
    scores: torch.Tensor, labels: torch.Tensor, *, max_loss: float = 1.0, steps: int = 51, rounds: int = 3
) -> tuple[list[float], float, float]:
    """One margin threshold per step (after 1, 2, ..., N-1 frames) that use the fewest mean frames while top-1 stays
    within `max_loss` points of fixed K = N; returns (thresholds, accuracy %, mean frames) on these scores.

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
    floor = 100.0 * correct[:, -1].float().mean().item() - max_loss - 1e-9
    grid = [i / (steps - 1) for i in range(steps)] + [2.0]
    thr = [2.0] * (num - 1)
    acc, frames = _point(scores, correct, thr)
    for _ in range(rounds):
        for n in range(num - 1):
            for value in grid:
                trial = [*thr[:n], value, *thr[n + 1:]]
                a, f = _point(scores, correct, trial)
                if a >= floor and (f, -a) < (frames, -acc):
                    thr, acc, frames = trial, a, f
    return thr, acc, frames


def predict_anytime(
    model: nn.Module,
    meta: dict[str, Any],
    paths: Sequence[str | Path],
    *,
    max_frames: int,
    confidence: Thresholds | None = None,
    topk: int = 5,
) -> list[dict[str, Any]]:
    """`istpan predict --max-frames N [--confidence X]`: one result per path, like `predict_videos`, plus
    "frames_used". The N candidate frames are decoded in one pass (decoding is sequential anyway); the backbone runs
    only on the frames taken. confidence: one margin threshold for every step, or N - 1 of them (one per number of
    frames seen, from `calibrate_thresholds`; a value above 1 never stops at that step); None: never stop early (all
    N frames, = fixed K = N)."""
    from istpan.data.preprocess import Preprocessing
    from istpan.engine.predict import class_names, topk_classes

    if max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {max_frames}")
    if confidence is not None:
        values = per_step(confidence, max_frames)  # checks the count
        if any(v < 0.0 for v in values):
            raise UserError(f"--confidence: margins p1 - p2 are >= 0 (above 1: never stop there), got {confidence}")
    pre = Preprocessing.from_meta(model, meta).with_frames(max_frames)
    names = class_names(meta, int(meta.get("num_classes") or len(meta.get("class_names") or [])))
    threshold = 2.0 if confidence is None else confidence  # a margin never reaches 2: no early stop
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            views, indices, n = pre.read(path)  # (N, s, s, 3) uint8, in time order
        except UserError as err:
            results.append({"path": str(path), "error": str(err)})
            continue
        probs, used = anytime_predict(model, lambda k, views=views: pre.to_input(views[k]), len(indices),
                                      threshold=threshold)
        results.append({"path": str(path), "frames": n, "num_segments": used, "frames_used": used,
                        "max_frames": len(indices), "multi_label": bool(getattr(model, "multi_label", False)),
                        "top": topk_classes(probs.cpu(), names, topk, key="class")})
    return results
