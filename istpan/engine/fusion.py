"""Late score fusion of separately trained models (TSN's two-stream fusion: RGB 1, flow 1.5).

Each model scores the same videos (per-video probabilities: softmax or sigmoid of each view, averaged over views, as
`evaluate` computes them); the fused score of a video is the weighted mean

    p = Σ_m w_m · p_m / Σ_m w_m                                      (N, C)

Dividing by Σ w keeps p a probability, so the fused loss, mAP and wAP stay meaningful; the ranking (top-1, AP) is
that of TSN's weighted sum. Ours: TSN sums raw class scores (fc outputs averaged over views), we sum probabilities,
the quantity `istpan eval` already averages over views, so a confident stream cannot be cancelled by the other's
logit scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from istpan.engine.metrics import multilabel_metrics, single_label_metrics
from istpan.errors import UserError

__all__ = ["TSN_FLOW_WEIGHTS", "fuse_scores", "fused_metrics", "parse_fuse_weights"]

TSN_FLOW_WEIGHTS = (1.0, 1.5)  # RGB, flow (TSN, Wang et al. 2016)


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
    """Weighted mean of per-model probabilities: M x (N, C) -> (N, C)."""
    if len(scores) != len(weights) or not scores:
        raise ValueError(f"{len(scores)} score tensors but {len(weights)} weights")
    shapes = {tuple(s.shape) for s in scores}
    if len(shapes) != 1:
        raise UserError(f"models scored different numbers of videos or classes: {sorted(shapes)}")
    total = sum(weights)
    return sum((w / total) * s.float() for w, s in zip(weights, scores))


def fused_metrics(results: Sequence[dict], weights: Sequence[float], *, multi_label: bool) -> dict:
    """Metrics of the fused scores of several `evaluate(..., return_scores=True)` results on one dataset.

    The videos are matched by dataset index: only those every model scored count (a video one model could not decode,
    e.g. a missing flow folder, is left out and counted in `skipped`).
    """
    common = set(results[0]["indices"].tolist())
    for r in results[1:]:
        common &= set(r["indices"].tolist())
    keep = torch.tensor(sorted(common), dtype=torch.long)
    aligned = []
    for r in results:
        pos = {int(i): n for n, i in enumerate(r["indices"].tolist())}
        rows = torch.tensor([pos[int(i)] for i in keep], dtype=torch.long)
        aligned.append((r["scores"][rows], r["labels"][rows]))
    labels = aligned[0][1]
    scores = fuse_scores([a[0] for a in aligned], weights)  # (N, C)
    eps = 1e-12
    if multi_label:
        out = multilabel_metrics(scores, labels)
        out["loss"] = F.binary_cross_entropy(scores.clamp(eps, 1 - eps), labels.float()).item()
    else:
        out = single_label_metrics(scores, labels.long())
        out["loss"] = F.nll_loss(scores.clamp_min(eps).log(), labels.long()).item()
    total = max(r["num_videos"] + r.get("skipped", 0) for r in results)
    out.update(num_videos=len(keep), skipped=total - len(keep), scores=scores, labels=labels, indices=keep)
    return out
