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
from istpan.inference.videos import TSN_FLOW_WEIGHTS, fuse_scores, parse_fuse_weights

__all__ = ["TSN_FLOW_WEIGHTS", "evaluate_fused", "fuse_scores", "fused_metrics", "parse_fuse_weights"]

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
