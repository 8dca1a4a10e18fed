"""How well the model localises the action: in time (segments, Charades per-frame mAP) and in space (pointing game).

Temporal spans and segments are `(start, end)` in seconds. Spatial boxes are `(x0, y0, x1, y1)` normalised to [0, 1]
of the frame the attention was computed on, so they do not depend on the display resolution.

The Charades localisation protocol (Sigurdsson et al., `Charades_v1_localize`): every video is scored at 25 equally
spaced time points t_j = j / 25 · duration, j = 0..24; a class is present at t_j when some annotated span of it has
start <= t_j <= end; the per-class average precision over all (video, time point) pairs is the mean precision at each
positive, ranked by score; the metric is the mean over classes. The AP itself is the engine's Charades AP
(`istpan.evaluation.metrics`), so video-level and frame-level mAP are computed the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from istpan.inference.windows import charades_timepoints

__all__ = [
    "charades_timepoints",
    "frame_targets",
    "localization_map",
    "merge_segments",
    "pointing_accuracy",
    "pointing_game",
    "segment_iou",
    "temporal_iou",
]

Span = tuple[float, float]


def segment_iou(a: Span, b: Span) -> float:
    """Intersection over union of two time intervals; 0 when the union is empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0]) if inter > 0 else (a[1] - a[0]) + (b[1] - b[0])
    return inter / union if union > 0 else 0.0


def merge_segments(segments: Iterable[Span]) -> list[Span]:
    """Union of intervals as sorted, disjoint intervals (touching intervals merge)."""
    merged: list[list[float]] = []
    for start, end in sorted((float(s), float(e)) for s, e in segments if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def temporal_iou(segments: Iterable[Span], span: Span) -> float:
    """IoU between the union of predicted segments and the true span: 1 = the segments cover exactly the action.

    Using the union (not the best single segment) charges the prediction for every false-positive stretch.
    """
    pred = merge_segments(segments)
    inter = sum(max(0.0, min(e, span[1]) - max(s, span[0])) for s, e in pred)
    union = sum(e - s for s, e in pred) + max(0.0, span[1] - span[0]) - inter
    return inter / union if union > 0 else 0.0


def frame_targets(spans: Sequence[tuple[int, float, float]], duration: float, num_classes: int,
                  n: int = 25) -> torch.Tensor:
    """Per-time-point multi-hot targets (n, num_classes) from annotated (class, start, end) spans in seconds."""
    times = charades_timepoints(duration, n)  # (n,)
    target = torch.zeros(n, num_classes)
    for label, start, end in spans:
        target[(times >= start) & (times <= end), int(label)] = 1.0
    return target


def localization_map(scores: torch.Tensor, targets: torch.Tensor) -> dict:
    """Charades per-frame localisation mAP / wAP in percent: scores, targets (videos, 25, C) or (N, C).

    Same AP as the video-level metric (`istpan.evaluation.metrics.multilabel_metrics`), only the rows are the
    (video, time point) pairs instead of videos.
    """
    from istpan.evaluation.metrics import multilabel_metrics

    scores, targets = torch.as_tensor(scores), torch.as_tensor(targets)
    if scores.shape != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must have the same shape")
    flat = scores.reshape(-1, scores.shape[-1]).float(), targets.reshape(-1, targets.shape[-1]).float()  # (N, C)
    return multilabel_metrics(*flat)


def pointing_game(heat: torch.Tensor, box: Sequence[float], *, tolerance: float = 0.0) -> bool:
    """Hit when the centre of the hottest attention cell lies inside the true box (grown by `tolerance`).

    heat: (h, w); box: (x0, y0, x1, y1) normalised to [0, 1]. With a 7×7 map the cell centre is as precise as the
    attention can be; `tolerance` (normalised units) plays the role of the usual 15-pixel margin.
    """
    heat = torch.as_tensor(heat)
    h, w = heat.shape
    i, j = divmod(int(heat.flatten().argmax()), w)
    x, y = (j + 0.5) / w, (i + 0.5) / h
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 - tolerance <= x <= x1 + tolerance) and (y0 - tolerance <= y <= y1 + tolerance)


def pointing_accuracy(heats: torch.Tensor, boxes: torch.Tensor | Sequence[Sequence[float]], *,
                      tolerance: float = 0.0) -> float:
    """Fraction of hits over frames: heats (N, h, w), boxes (N, 4) normalised."""
    hits = [pointing_game(hm, box, tolerance=tolerance) for hm, box in zip(heats, boxes, strict=True)]
    return sum(hits) / len(hits) if hits else float("nan")
