"""The one surface every backbone has (timm's `feature_info` habit): a list of stage maps, shallow -> deep.

Its own module so that backbones defined elsewhere (`bninception.py`) subclass it without importing the builders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from istpan.modality import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["Backbone", "FeatureInfo"]


@dataclass(frozen=True)
class FeatureInfo:
    """One stage output: its channel count and its stride (reduction) w.r.t. the input frame."""

    num_chs: int
    reduction: int


class Backbone(nn.Module):
    """Base class: `forward(frames (N, 3, H, W)) -> [(N, C_j, H/s_j, W/s_j) for each stage j]`, shallow -> deep."""

    feature_info: list[FeatureInfo]
    default_input_size: int = 224
    in_chans: int = 3
    # RGB normalisation its weights expect: ImageNet's, unless hub weights say otherwise (timm tags may use 0.5)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    @property
    def num_stages(self) -> int:
        """Stages a pyramid can draw from (per stream for a two-stream backbone)."""
        return len(self.feature_info)

    def pyramid_indices(self, num_scales: int) -> list[int]:
        """Which stages feed an N-scale pyramid, shallow -> deep, the last being the top map: the last N."""
        return list(range(self.num_stages - num_scales, self.num_stages))
