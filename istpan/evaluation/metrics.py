"""Classification metrics on per-video scores, computed once over the whole evaluation set.

Single-label: top-1 / top-5 accuracy, mean class accuracy and the confusion matrix, via torchmetrics.
Multi-label: mAP and wAP exactly as the official Charades evaluation (`Charades_v1_classify.m`, adapted from
THUMOS'15) defines them:

    AP_c  = (1 / P_c) · Σ_{i positive} precision@rank(i)      videos ranked by score, ties kept in input order
    mAP   = mean_c AP_c
    wAP   = Σ_c P_c · AP_c / Σ_c P_c                             P_c = number of positive videos of class c

Classes without positives: the official script divides 0/0 and returns NaN for such a class (and thus a NaN mAP).
Here their AP is NaN in `per_class_ap`, they are left out of mAP (reported as `classes_without_positives`) and they
carry zero weight in wAP — identical to the official numbers whenever every class has a positive, as on Charades.
Videos with no label at all stay in, as negatives for every class (the official script does the same).

Why not torchmetrics' AP here: it groups tied scores into one threshold, while the Charades script ranks ties in input
order, so the two differ when scores tie; the tests check this implementation against a naive loop of the script and
against torchmetrics on tie-free scores.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix

__all__ = ["average_precision_charades", "multilabel_metrics", "single_label_metrics"]


def single_label_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict:
    """scores: (N, C) any monotone scores, labels: (N,) long. Accuracies in percent."""
    num_classes = scores.shape[1]
    if scores.shape[0] == 0:
        return {"top1": float("nan"), "top5": float("nan"), "mean_class_acc": float("nan"), "confusion": []}
    k = min(5, num_classes)
    top1 = multiclass_accuracy(scores, labels, num_classes=num_classes, average="micro", top_k=1)
    top5 = multiclass_accuracy(scores, labels, num_classes=num_classes, average="micro", top_k=k)
    # Mean over the classes present in this set: a class with no test video has no accuracy to average.
    per_class = multiclass_accuracy(scores, labels, num_classes=num_classes, average=None, top_k=1)
    present = torch.bincount(labels, minlength=num_classes) > 0
    confusion = multiclass_confusion_matrix(scores, labels, num_classes=num_classes)  # (C_true, C_pred)
    return {
        "top1": 100.0 * top1.item(),
        "top5": 100.0 * top5.item(),
        "mean_class_acc": 100.0 * per_class[present].mean().item(),
        "confusion": confusion.tolist(),
    }


def average_precision_charades(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class AP (C,) of scores (N, C) against multi-hot targets (N, C); NaN for classes without positives."""
    scores = scores.double()
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices  # (N, C): ties keep input order
    hits = torch.gather(targets > 0.5, 0, order).double()  # (N, C) 1 where the ranked video is positive
    precision = hits.cumsum(0) / torch.arange(1, scores.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
    positives = hits.sum(0)  # (C,)
    return (precision * hits).sum(0) / positives  # 0/0 = NaN when a class has no positive


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor) -> dict:
    """scores: (N, C), targets: (N, C) multi-hot. mAP / wAP in percent (see module docstring for the definition)."""
    ap = average_precision_charades(scores, targets)
    positives = (targets > 0.5).sum(0).double()
    valid = ~torch.isnan(ap)
    m_ap = ap[valid].mean().item() if valid.any() else float("nan")
    w_ap = (ap[valid] * positives[valid]).sum().item() / positives.sum().item() if valid.any() else float("nan")
    return {
        "mAP": 100.0 * m_ap,
        "wAP": 100.0 * w_ap,
        "classes_without_positives": int((~valid).sum()),
        "per_class_ap": [float(v) for v in ap.tolist()],
    }
