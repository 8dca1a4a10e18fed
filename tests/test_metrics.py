"""Metrics against direct computations: a naive loop of the official Charades script, torchmetrics, plain counting."""

from __future__ import annotations

import math

import pytest
import torch
from references import charades_ap_loop
from torchmetrics.functional.classification import multilabel_average_precision

from istpan.evaluation.metrics import average_precision_charades, multilabel_metrics, single_label_metrics


def _random_multilabel(n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=g)
    targets = (torch.rand(n, c, generator=g) < 0.3).float()
    targets[:, 0] = 0  # a class without positives
    targets[3] = 0  # a video without any label
    return scores, targets


def test_charades_ap_matches_naive_loop_including_ties():
    scores, targets = _random_multilabel(40, 6, seed=0)
    scores = (scores * 2).round() / 2  # coarse scores: many ties
    ap = average_precision_charades(scores, targets)
    for c in range(6):
        expected = charades_ap_loop(scores[:, c].tolist(), targets[:, c].int().tolist())
        if math.isnan(expected):
            assert math.isnan(ap[c].item())
        else:
            assert ap[c].item() == pytest.approx(expected, abs=1e-12)


def test_map_wap_match_direct_formulas_and_torchmetrics_without_ties():
    scores, targets = _random_multilabel(50, 7, seed=1)
    out = multilabel_metrics(scores, targets)
    aps = [charades_ap_loop(scores[:, c].tolist(), targets[:, c].int().tolist()) for c in range(7)]
    npos = targets.sum(0).tolist()
    valid = [c for c in range(7) if not math.isnan(aps[c])]
    assert out["classes_without_positives"] == 1
    assert out["mAP"] == pytest.approx(100 * sum(aps[c] for c in valid) / len(valid), abs=1e-9)
    assert out["wAP"] == pytest.approx(100 * sum(aps[c] * npos[c] for c in valid) / sum(npos), abs=1e-9)
    # torchmetrics agrees when no scores tie (it groups ties, the Charades script does not)
    tm = multilabel_average_precision(scores, targets.long(), num_labels=7, average=None, thresholds=None)
    assert torch.allclose(tm[1:].double(), torch.tensor(aps[1:], dtype=torch.float64), atol=1e-6)


def test_perfect_ranking_scores_100():
    targets = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.float)
    out = multilabel_metrics(targets * 5 + torch.rand(4, 2) * 0.1, targets)
    assert out["mAP"] == pytest.approx(100.0)
    assert out["wAP"] == pytest.approx(100.0)


def test_single_label_against_counting():
    g = torch.Generator().manual_seed(2)
    n, c = 60, 8
    scores = torch.randn(n, c, generator=g)
    labels = torch.randint(0, c - 1, (n,), generator=g)  # class c-1 never appears
    out = single_label_metrics(scores, labels)
    top5 = scores.topk(5, dim=1).indices
    pred = scores.argmax(1)
    assert out["top1"] == pytest.approx(100 * (pred == labels).float().mean().item())
    assert out["top5"] == pytest.approx(100 * (top5 == labels[:, None]).any(1).float().mean().item())
    per_class = [(pred[labels == k] == k).float().mean().item() for k in range(c - 1)]
    assert out["mean_class_acc"] == pytest.approx(100 * sum(per_class) / len(per_class))
    confusion = torch.zeros(c, c, dtype=torch.long)
    for t, p in zip(labels.tolist(), pred.tolist()):
        confusion[t, p] += 1
    assert out["confusion"] == confusion.tolist()
