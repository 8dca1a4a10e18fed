"""The whole-video modes behind the `Predictor`: one forward pass per video (optionally drawn: --explain), anytime
(frames coarse to fine until the prediction is clear: --confidence), and late fusion of several models' scores.

Each takes the model and its `ModelDescription` (or a list of Predictors for fusion) and returns one result per path
in the shared schema (`istpan.inference.results`), a video that cannot be read giving the error record; the
`Predictor` methods of the same names are the front door (`istpan predict` calls those).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.errors import UserError
from istpan.files.description import ModelDescription
from istpan.inference.anytime import anytime_predict, frame_order, per_step
from istpan.inference.calibration_file import resolve_confidence
from istpan.inference.explain import Explainer
from istpan.inference.predict import infer_video, prediction_of
from istpan.inference.results import error_record, video_result

__all__ = ["TSN_FLOW_WEIGHTS", "fuse_scores", "parse_fuse_weights", "predict_anytime", "predict_videos"]

TSN_FLOW_WEIGHTS = (1.0, 1.5)  # RGB, flow (TSN, Wang et al. 2016)


def predict_videos(model: nn.Module, description: ModelDescription | dict[str, Any], paths: Sequence[str | Path], *,
                   topk: int = 5, num_frames: int | None = None, device: str | torch.device | None = None,
                   explain: str | Path | None = None, levels: bool = False) -> list[dict[str, Any]]:
    """One result per path, in order (`istpan.inference.results`); a video that cannot be read gives the error
    record instead of stopping the others. `num_frames` overrides K (the model takes any K). The model is used on the
    device it is on (`device` moves it there first). With `explain=OUTDIR` the same forward pass is also drawn
    (`istpan.inference.explain`: overlays, report, results.json)."""
    if device is not None:
        model.to(device)
    description = ModelDescription.from_dict(description, model=model)
    pre = description.preprocessing.with_frames(num_frames)
    explainer = None if explain is None else Explainer(description, pre, explain, levels=levels, topk=topk)
    results = []
    for path in paths:
        try:
            inference = infer_video(model, pre, path, multi_label=description.multi_label)
        except UserError as err:  # VideoError: missing, unreadable, no decodable frame
            results.append(error_record(path, err))
            if explainer is not None:
                explainer.failed(path, err)
            continue
        results.append(prediction_of(inference, description, topk=topk))
        if explainer is not None:
            explainer.add(inference)
    if explainer is not None:
        explainer.finish()
    return results


def predict_anytime(model: nn.Module, description: ModelDescription | dict[str, Any], paths: Sequence[str | Path], *,
                    max_frames: int | None = None, confidence: Any = None, order: str | Sequence[int] | None = None,
                    topk: int = 5) -> list[dict[str, Any]]:
    """`istpan predict --num-frames N --confidence X [--frame-order O]`: one result per path, `num_frames` the frames
    used, plus "max_frames" (N). The N candidate frames are decoded in one pass (decoding is sequential anyway); the
    backbone runs only on the frames taken. confidence: one margin threshold for every step, or N - 1 of them (one
    per number of frames seen; a value above 1 never stops at that step), or a calibration written by `istpan eval
    --anytime` (its path or a `Calibration`: it brings N, the order and the rule, margin or gain); None: never stop
    early (all N frames, = fixed K = N). order: a FRAME_ORDERS name (default DEFAULT_ORDER) or a permutation."""
    confidence, max_frames, order, gain = resolve_confidence(confidence, max_frames, order)
    if max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {max_frames}")
    frame_order(order, max_frames)  # a bad name or permutation fails before any decoding
    if confidence is not None:
        values = per_step(confidence, max_frames)  # checks the count
        if gain is None and any(v < 0.0 for v in values):
            raise UserError(f"--confidence: margins p1 - p2 are >= 0 (above 1: never stop there), got {confidence}")
    description = ModelDescription.from_dict(description, model=model)
    pre = description.preprocessing.with_frames(max_frames)
    threshold = 2.0 if confidence is None else confidence  # a margin never reaches 2: no early stop
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            views, indices, n = pre.read(path)  # (N, s, s, 3) uint8, in time order
        except UserError as err:
            results.append(error_record(path, err))
            continue
        probs, used = anytime_predict(model, lambda k, views=views: pre.to_input(views[k]), len(indices),
                                      threshold=threshold, order=order, gain=gain)
        results.append(video_result(path, num_frames=used, video_frames=n, multi_label=description.multi_label,
                                    probs=probs.cpu(), names=description.class_names, topk=topk,
                                    max_frames=len(indices)))
    return results


def parse_fuse_weights(weights: Sequence[float] | None, num_models: int) -> list[float]:
    """One non-negative weight per model, not all zero; default equal weights (TSN's 1 / 1.5 must be asked for)."""
    if weights is None or len(weights) == 0:
        return [1.0] * num_models
    if len(weights) != num_models:
        raise UserError(f"--fuse-weights: {len(weights)} weight(s) for {num_models} checkpoints; give one per "
                        "checkpoint, in the same order (e.g. --fuse-weights 1 1.5 for RGB, flow)")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"--fuse-weights: weights must be >= 0 and not all 0, got {list(weights)}")
    return [float(w) for w in weights]


def fuse_scores(scores: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean of per-model probabilities: M x (N, C) -> (N, C) (`istpan.evaluation.fusion` says why)."""
    if len(scores) != len(weights) or not scores:
        raise ValueError(f"{len(scores)} score tensors but {len(weights)} weights")
    shapes = {tuple(s.shape) for s in scores}
    if len(shapes) != 1:
        raise UserError(f"models scored different numbers of videos or classes: {sorted(shapes)}")
    total = sum(weights)
    return sum((w / total) * s.float() for w, s in zip(weights, scores))
