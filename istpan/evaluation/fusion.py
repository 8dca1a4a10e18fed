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

from istpan.errors import UserError
from istpan.evaluation.metrics import multilabel_metrics, single_label_metrics

__all__ = ["TSN_FLOW_WEIGHTS", "evaluate_fused", "fuse_scores", "fused_metrics", "parse_fuse_weights", "predict_fused"]

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


def evaluate_fused(checkpoints: Sequence[str], *, weights: Sequence[float] | None = None, views: str = "1x1",
                   batch_size: int | None = None, overrides: Sequence[str] = (), progress: bool = False) -> dict | None:
    """`istpan eval --checkpoint A --checkpoint B --fuse-weights 1 1.5`: each checkpoint evaluated on its own
    validation data (`evaluate_checkpoint`: an RGB model reads frames, a flow model its flow), then the per-video
    probabilities fused. The checkpoints must share the class list and the validation videos.

    Returns the fused metrics, plus `streams` (each checkpoint's own metrics) and `fuse_weights`; None on the other
    DDP ranks.
    """
    from istpan.evaluation.evaluate import evaluate_checkpoint

    weights = parse_fuse_weights(weights, len(checkpoints))
    results = []
    for ckpt in checkpoints:
        res = evaluate_checkpoint(ckpt, views=views, batch_size=batch_size, overrides=list(overrides),
                                  progress=progress, return_scores=True)
        if res is None:
            return None
        results.append(res)
    first = results[0]
    for ckpt, res in zip(checkpoints[1:], results[1:]):
        if res["class_names"] != first["class_names"]:
            raise UserError(f"{ckpt}: its classes differ from {checkpoints[0]}'s; late fusion needs models of the "
                            "same classes, in the same order")
        if res["videos"] != first["videos"]:
            raise UserError(f"{ckpt}: its validation videos differ from {checkpoints[0]}'s ({len(res['videos'])} vs "
                            f"{len(first['videos'])}); evaluate both on the same split (data.* overrides apply to "
                            "every checkpoint)")
    out = fused_metrics(results, weights, multi_label=bool(first["multi_label"]))
    keys = ("mAP", "wAP") if first["multi_label"] else ("top1", "top5", "mean_class_acc")
    out.update(
        views=views, class_names=first["class_names"], multi_label=first["multi_label"], fuse_weights=weights,
        streams=[{"checkpoint": str(c), **{k: r[k] for k in (*keys, "num_videos", "skipped")}}
                 for c, r in zip(checkpoints, results)],
    )
    for key in ("scores", "labels", "indices"):  # tensors: not for printing or JSON
        out.pop(key)
    return out


def predict_fused(checkpoints: Sequence[str], videos: Sequence[str], *, weights: Sequence[float] | None = None,
                  topk: int = 5, num_segments: int | None = None, device: str = "cpu",
                  backend: str | None = None) -> list[dict]:
    """`istpan predict VIDEO... --checkpoint A --checkpoint B --fuse-weights 1 1.5`: each checkpoint predicts every
    video as it alone would (its own Preprocessing: frames for RGB, flow computed on the fly for a flow model), then
    the probabilities are fused. One dict per video, in order; a video any model cannot read gives {"path", "error"}.
    backend: how every model decodes the paths (None: each checkpoint's own).
    """
    from istpan.inference.predict import topk_classes
    from istpan.inference.predictor import Predictor

    weights = parse_fuse_weights(weights, len(checkpoints))
    predictors = [Predictor.from_checkpoint(c, device=device, num_segments=num_segments, backend=backend)
                  for c in checkpoints]
    first = predictors[0]
    for ckpt, pred in zip(checkpoints[1:], predictors[1:]):
        if pred.class_names != first.class_names or pred.multi_label != first.multi_label:
            raise UserError(f"{ckpt}: its classes differ from {checkpoints[0]}'s; late fusion needs models of the "
                            "same classes, in the same order")
    runs = [list(p._run(list(videos), 8, "report")) for p in predictors]  # per model: (info, probs (C,) or None)
    results = []
    for path, outputs in zip(videos, zip(*runs)):
        errors = [info["error"] for info, probs in outputs if probs is None]
        if errors:
            results.append({"path": str(path), "error": errors[0]})
            continue
        fused = fuse_scores([probs[None] for _, probs in outputs], weights)[0]  # (C,)
        info = outputs[0][0]
        results.append({"path": str(path), "frames": info["frames"], "multi_label": first.multi_label,
                        "fuse_weights": weights, "top": topk_classes(fused, first.class_names, topk, key="class")})
    return results
