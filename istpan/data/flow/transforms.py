"""Transforms for clips with flow channels: the RGB ones plus what a mirror image means for motion.

Flipping a flow image left-right is not enough: motion to the right becomes motion to the left, so the horizontal
component changes sign; on the 0..255 encoding (128 = still) that is u -> 255 - u (TSN's GroupRandomHorizontalFlip
with is_flow, and its over-sampling's mirrored crops). Everything else (crops, resizing, normalisation) is
channel-agnostic and reused from istpan/data/transforms.py; only the flip and the 10-crop mirror images differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

from istpan.data.transforms import test_transform, train_transform

__all__ = ["FlowFlip", "flow_test_transform", "flow_train_transform", "negate_flow_x"]


def negate_flow_x(video: torch.Tensor, x_channels: Sequence[int]) -> torch.Tensor:
    """u -> 255 - u on the horizontal flow channels of uint8 (..., C, H, W); other channels untouched."""
    out = video.clone()
    idx = list(x_channels)
    out[..., idx, :, :] = 255 - video[..., idx, :, :]
    return out


class FlowFlip:
    """Random horizontal flip (p = 0.5, one draw for the whole clip) that also negates the horizontal flow.

    Drawn from torch's global RNG like v2's flips (the dataset seeds it per (seed, epoch, video)). Placed before the
    crop: every crop here draws from a left-right symmetric set, so flip-then-crop has the distribution of
    crop-then-flip.
    """

    def __init__(self, x_channels: Sequence[int], p: float = 0.5) -> None:
        self.x_channels = tuple(x_channels)
        self.p = p

    def __call__(self, video: torch.Tensor) -> torch.Tensor:  # uint8 (K, C, H, W)
        if float(torch.rand(())) >= self.p:
            return video
        return negate_flow_x(video.flip(-1), self.x_channels)


def flow_train_transform(
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    x_channels: Sequence[int],
    crop: str = "multiscale",
    flip: bool = True,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (K, C, H, W) -> float (K, C, input_size, input_size): flow-aware flip, then the RGB pipeline."""
    rest = train_transform(input_size=input_size, mean=mean, std=std, crop=crop, flip=False)
    if not flip:
        return rest
    return v2.Compose([FlowFlip(x_channels), rest])


def flow_test_transform(
    *,
    input_size: int,
    resize: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    x_channels: Sequence[int],
    crops: int = 1,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """As `test_transform`; with 10 crops the mirrored five get their horizontal flow negated as well.

    After normalisation (v/255 - m)/s, the code 255 - v becomes (1 - 2m)/s - x, which is what is applied.
    """
    base = test_transform(input_size=input_size, resize=resize, mean=mean, std=std, crops=crops)
    if crops != 10 or not x_channels:
        return base
    return v2.Compose([base, _MirroredCropsFix(x_channels, mean, std)])


class _MirroredCropsFix:
    """(10, K, C, s, s) normalised ten-crop views: negate the horizontal flow of the five mirrored ones."""

    def __init__(self, x_channels: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> None:
        self.idx = list(x_channels)
        self.mean = torch.tensor([mean[i] for i in self.idx])[:, None, None]  # (len(idx), 1, 1)
        self.std = torch.tensor([std[i] for i in self.idx])[:, None, None]

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        out = views.clone()  # torchvision's ten_crop: 5 crops, then their mirror images
        out[5:, :, self.idx] = (1 - 2 * self.mean) / self.std - views[5:, :, self.idx]
        return out
