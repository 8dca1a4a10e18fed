"""Losses as plain functions: classification, and the two attention losses of IST-PAN (Du et al., 2018).

    L = classification_loss + β·l_interactive + γ·l_attn           (weight decay lives in the optimiser)

`l_interactive` and `l_attn` are the equations as written in the paper ("raw"), averaged over the batch.
`attention_losses(out)` returns the normalised versions used for training: raw values grow with the number of
positions P = K·h·w, with d and with the feature scale, so one β and one γ would not carry from 8 frames at 224 px to
25 frames at 112 px. The normalisation is derived in docs/models.md; in short:

    interactive = −‖A X‖²_F / (d · ‖X‖²_F)  +  Σ_{m≠n} (A_m·A_n)² / (d(d−1))     ∈ [−1, 1]
    attn        = sqrt(1 − Σ_j ‖a − softmax(Y_j)‖²_F / (2·N·d))                   ∈ [0, 1]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["attention_losses", "classification_loss", "l_attn", "l_interactive"]


def classification_loss(logits: torch.Tensor, target: torch.Tensor, *, multi_label: bool) -> torch.Tensor:
    """Softmax cross-entropy (target: (B,) class indices or (B, C) probabilities), or for multi-label datasets
    (Charades) sigmoid binary cross-entropy against a (B, C) multi-hot target, averaged over classes and batch."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
    return F.cross_entropy(logits, target)


def _gram_terms(A: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per video: tr(A X Xᵀ Aᵀ) = ‖A X‖²_F and Σ_{m≠n} (A Aᵀ)²_{mn}; A (B, d, P), X (B, P, C) -> two (B,)."""
    energy = (A @ X).pow(2).sum((1, 2))  # (B,)
    gram = A @ A.transpose(1, 2)  # (B, d, d)
    off_diag = gram.pow(2).sum((1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).pow(2).sum(1)  # (B,)
    return energy, off_diag


def l_interactive(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Eq. 6, raw: −tr(A X Xᵀ Aᵀ) + Σ_{m≠n} (a_m·a_n)², mean over the batch.

    A: (B, d, P) L2-normalised attention rows; X: (B, P, C) the top-level features the attention pools.
    """
    energy, off_diag = _gram_terms(A, X)
    return (off_diag - energy).mean()


def l_attn(a: torch.Tensor, scale_attn: list[torch.Tensor]) -> torch.Tensor:
    """Raw multi-scale loss: sqrt(Σ_j Σ_m Σ_k (1 − δ²_{j,m,k})), δ = |a − softmax(Y_j)|, mean over the batch.

    a: (B, d, P) fused softmax attention; scale_attn: N tensors (B, d, P), each scale's own softmax(Y_j).
    """
    total = sum((1 - (a - s).pow(2)).sum((1, 2)) for s in scale_attn)  # (B,)
    return torch.sqrt(total).mean()


def attention_losses(out: Any) -> dict[str, torch.Tensor]:
    """Normalised `interactive` and `attn` losses of a `ModelOutput` (zeros for TSN, which has no attention).

    Shapes are taken from the output: attn (B, d, K, h, w) is flattened to (B, d, P) with P = K·h·w.
    """
    if out.attn is None:
        zero = out.logits.new_zeros(())
        return dict(interactive=zero, attn=zero)
    # float32 at least: under bf16/fp16 autocast, sums over K·h·w·C products lose the small terms that matter here.
    dtype = torch.promote_types(out.attn.dtype, torch.float32)
    a = out.attn.flatten(2).to(dtype)  # (B, d, P)
    X = out.features.to(dtype)  # (B, P, C)
    d = a.shape[1]
    A = F.normalize(a, dim=-1)
    energy, off_diag = _gram_terms(A, X)
    # ‖A_m X‖² <= ‖X‖²_F for a unit row A_m, so the energy term lies in [−1, 0]; d(d−1) off-diagonal entries <= 1 each.
    interactive = -energy / (d * X.pow(2).sum((1, 2)).clamp_min(1e-12)) + off_diag / max(d * (d - 1), 1)
    # ‖p − q‖²₂ <= 2 for two probability rows: a budget of 2 per row replaces the per-entry 1 of the raw loss.
    dist = sum((a - s.flatten(2).to(dtype)).pow(2).sum((1, 2)) for s in out.scale_attn)  # (B,)
    attn = torch.sqrt((1 - dist / (2 * len(out.scale_attn) * d)).clamp_min(1e-12))
    return dict(interactive=interactive.mean(), attn=attn.mean())
