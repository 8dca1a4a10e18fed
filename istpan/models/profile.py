"""Model cost: parameter count and FLOPs of one forward (torch.utils.flop_counter; no third-party profiler).

FlopCounterMode counts matmuls and convolutions (2 FLOPs per multiply-add); pooling, softmax and normalisation are
not counted, which is the usual convention for CNN FLOPs and makes IST-PAN vs TSN ratios comparable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_params"]


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, video: torch.Tensor) -> int:
    """FLOPs of `model(video)` for this input shape (e.g. video (1, 8, 3, 224, 224)), counted on the given device."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(video)
    return int(counter.get_total_flops())
