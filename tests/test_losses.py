"""The losses against naive Python loops over the written equations (float64, tight tolerance)."""

from __future__ import annotations

import math

import pytest
import torch

from istpan.losses import attention_losses, classification_loss, l_attn, l_interactive
from istpan.models import ModelOutput


def _rand_attention(B: int, d: int, P: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(B, d, P, generator=g, dtype=torch.float64)).softmax(-1)


def _naive_interactive(A: torch.Tensor, X: torch.Tensor) -> float:
    """−Σ_m Σ_c (Σ_k A[m,k] X[k,c])² + Σ_{m≠n} (Σ_k A[m,k] A[n,k])², averaged over the batch."""
    B, d, P = A.shape
    C = X.shape[2]
    total = 0.0
    for b in range(B):
        trace = 0.0
        for m in range(d):
            for c in range(C):
                trace += sum(A[b, m, k].item() * X[b, k, c].item() for k in range(P)) ** 2
        off = 0.0
        for m in range(d):
            for n in range(d):
                if m != n:
                    off += sum(A[b, m, k].item() * A[b, n, k].item() for k in range(P)) ** 2
        total += -trace + off
    return total / B


def _naive_l_attn(a: torch.Tensor, scales: list[torch.Tensor]) -> float:
    B, d, P = a.shape
    total = 0.0
    for b in range(B):
        acc = 0.0
        for s in scales:
            for m in range(d):
                for k in range(P):
                    delta = abs(a[b, m, k].item() - s[b, m, k].item())
                    acc += 1 - delta**2
        total += math.sqrt(acc)
    return total / B


def test_l_interactive_matches_naive_loop():
    B, d, P, C = 2, 3, 7, 4
    A = torch.nn.functional.normalize(_rand_attention(B, d, P, 0), dim=-1)
    X = torch.randn(B, P, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert l_interactive(A, X).item() == pytest.approx(_naive_interactive(A, X), rel=1e-12, abs=1e-12)


def test_l_attn_matches_naive_loop():
    B, d, P = 2, 3, 6
    a = _rand_attention(B, d, P, 2)
    scales = [_rand_attention(B, d, P, 3), _rand_attention(B, d, P, 4)]
    assert l_attn(a, scales).item() == pytest.approx(_naive_l_attn(a, scales), rel=1e-12)


def _output(B: int, d: int, K: int, h: int, w: int, C: int, N: int, seed: int) -> ModelOutput:
    P = K * h * w
    a = _rand_attention(B, d, P, seed)
    scales = [_rand_attention(B, d, P, seed + 1 + j) for j in range(N)]
    X = torch.randn(B, P, C, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 99))
    grid = (B, d, K, h, w)
    return ModelOutput(
        logits=torch.zeros(B, 5, dtype=torch.float64),
        attn=a.reshape(grid),
        scale_attn=[s.reshape(grid) for s in scales],
        features=X,
    )


def test_normalised_losses_match_documented_formulas():
    out = _output(B=2, d=4, K=2, h=2, w=3, C=5, N=2, seed=10)
    a, X = out.attn.flatten(2), out.features
    d = a.shape[1]
    A = torch.nn.functional.normalize(a, dim=-1)
    expect_inter, expect_attn = 0.0, 0.0
    for b in range(a.shape[0]):
        energy = sum(((A[b, m] @ X[b]) ** 2).sum().item() for m in range(d))
        off = sum((A[b, m] @ A[b, n]).item() ** 2 for m in range(d) for n in range(d) if m != n)
        expect_inter += -energy / (d * (X[b] ** 2).sum().item()) + off / (d * (d - 1))
        dist = sum(((a[b] - s.flatten(2)[b]) ** 2).sum().item() for s in out.scale_attn)
        expect_attn += math.sqrt(1 - dist / (2 * len(out.scale_attn) * d))
    losses = attention_losses(out)
    assert losses["interactive"].item() == pytest.approx(expect_inter / 2, rel=1e-12)
    assert losses["attn"].item() == pytest.approx(expect_attn / 2, rel=1e-12)


def test_normalised_losses_are_bounded_and_scale_free():
    """Ranges hold for any K, resolution and d; the interactive loss ignores the feature scale (no reward for
    simply growing the backbone's activations)."""
    for d, K, h, w in [(1, 1, 1, 1), (4, 2, 2, 2), (49, 8, 7, 7), (9, 25, 3, 3)]:
        out = _output(B=2, d=d, K=K, h=h, w=w, C=6, N=3, seed=d + K)
        losses = attention_losses(out)
        assert -1 <= losses["interactive"].item() <= 1
        assert 0 <= losses["attn"].item() <= 1
        out.features = out.features * 1000
        assert attention_losses(out)["interactive"].item() == pytest.approx(losses["interactive"].item(), rel=1e-9)


def test_attention_losses_zero_for_tsn():
    losses = attention_losses(ModelOutput(logits=torch.randn(3, 4)))
    assert losses["interactive"].item() == 0 and losses["attn"].item() == 0


def test_classification_loss_matches_naive():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, dtype=torch.float64, generator=g)
    target = torch.tensor([0, 4, 2, 2])
    naive = -sum(
        logits[b, target[b]].item() - math.log(sum(math.exp(v) for v in logits[b].tolist())) for b in range(4)
    ) / 4
    assert classification_loss(logits, target, multi_label=False).item() == pytest.approx(naive, rel=1e-12)

    multi = (torch.rand(4, 5, generator=g) > 0.5).double()
    naive_bce = 0.0
    for b in range(4):
        for c in range(5):
            p = 1 / (1 + math.exp(-logits[b, c].item()))
            y = multi[b, c].item()
            naive_bce -= y * math.log(p) + (1 - y) * math.log(1 - p)
    got = classification_loss(logits, multi, multi_label=True).item()
    assert got == pytest.approx(naive_bce / 20, rel=1e-12)
