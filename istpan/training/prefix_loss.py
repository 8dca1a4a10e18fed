"""Training for anytime inference: a loss on the prefixes of the anytime frame order (`train.prefix_loss`).

Anytime inference (inference/anytime.py) classifies a video from the first 1, 2, ..., K of its K frames taken in the
spread order, each frame at its own segment time (k + 0.5) / K. A model trained only on all K frames has never seen
such prefixes. Training on random frame subsets *instead of* all K frames (`train.frame_subset_min`) was measured to
cost fixed-K accuracy (docs/latency.md). This loss keeps the K-frame loss and adds the cross-entropy of the same
clips classified from prefixes of the order:

    L = L_K  +  w · mean over n in S of CE(head(first n frames of the order), target)

with S = {1, ..., K-1} (`train.prefix_sizes=all`) or one n drawn uniformly from 1..K-1 per batch (`one`), and the
target either the label (`train.prefix_target=label`) or the model's own detached K-frame prediction (`final`:
self-distillation; what stopping early needs is the answer all K frames would give, not a better guess). The
backbone runs once per frame (`frame_features`); only the cheap head (`forward_clip`: layer, time encoding, classifier)
runs again per prefix, through `anytime.prefix_clip`, so training and inference share the order and the times.
Measured at the demo's budget and not adopted there (docs/latency.md): off by default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from istpan.config import CHOICES
from istpan.inference.anytime import DEFAULT_ORDER, frame_order, prefix_clip
from istpan.losses import classification_loss

__all__ = ["PREFIX_SIZES", "forward_with_prefixes", "prefix_ce", "prefix_sizes"]

PREFIX_SIZES = CHOICES["train.prefix_sizes"]  # ("all", "one"): the config checks a typo when it is read


def prefix_sizes(mode: str, num: int) -> list[int]:
    """The prefix lengths one batch is trained on: every n in 1..num-1 ("all") or one drawn uniformly ("one", from
    torch's global RNG, which the training loop seeds per step, so a resumed run draws the same)."""
    if mode not in PREFIX_SIZES:
        raise ValueError(f"prefix sizes {mode!r}: one of {', '.join(PREFIX_SIZES)}")
    if num < 2:
        return []
    if mode == "one":
        return [int(torch.randint(1, num, ()))]
    return list(range(1, num))


def forward_with_prefixes(
    model: nn.Module, video: torch.Tensor, sizes: list[int], *, order: str = DEFAULT_ORDER
) -> tuple[Any, list[torch.Tensor]]:
    """The model on all K frames (exactly `model(video)`'s output) and the logits (B, C) after the first n frames of
    the anytime order for each n in sizes; video (B, K, 3, H, W), each frame through the backbone once."""
    b, k = video.shape[:2]
    feats = model.frame_features(video.flatten(0, 1)).unflatten(0, (b, k))  # (B, K, ΣC_j, h, w)
    out = model.forward_clip(feats)
    taken = frame_order(order, k)
    return out, [prefix_clip(model, feats, taken[:n], k).logits for n in sizes]


def prefix_ce(logits: list[torch.Tensor], target: torch.Tensor, *, multi_label: bool,
              full_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Mean classification loss over the prefixes' logits (each (B, C)); 0 when there are none.

    target: the batch's labels (`train.prefix_target=label`). With full_logits (the K-frame logits, `final`), each
    prefix learns the model's own K-frame prediction instead (softmax, or sigmoid for a multi-label head; detached,
    so the K-frame output only follows the label): self-distillation, which asks the prefix for what anytime
    stopping needs, the answer all K frames would give.
    """
    if not logits:
        return target.new_zeros((), dtype=torch.float32)
    if full_logits is not None:
        full = full_logits.detach()
        target = full.sigmoid() if multi_label else full.softmax(-1)  # (B, C) soft targets
    return torch.stack([classification_loss(x, target, multi_label=multi_label) for x in logits]).mean()
