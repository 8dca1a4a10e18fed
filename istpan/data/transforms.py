"""Clip transforms on (K, C, H, W) uint8 tensors, with ONE set of random parameters for all K frames of a clip.

torchvision's transforms.v2 already does the hard part: a tensor with leading dimensions is transformed as one image,
so a crop or flip is drawn once and applied to every frame. What v2 lacks is TSN's multi-scale crop (corner and centre
crops at a few scales of the short side, the augmentation TSN and IST-PAN train with) and the three-crop test view;
they are written here as v2 transforms so they compose with the rest.

Operations that compute statistics of their input (AutoContrast's min/max, Equalize's histogram, Contrast's mean
grey level) would compute them per frame on a (K, C, H, W) tensor: one draw, but a different mapping per frame,
which erases the temporal brightness changes some actions are made of (a flash, a light switched on). The `Clip*`
versions of RandAugment, TrivialAugmentWide and ColorJitter compute them over the whole clip instead (the clip viewed
as one tall (C, K·H, W) image), so every frame gets the same pixel mapping.

Randomness comes from torch's global RNG like every v2 transform; the dataset seeds it per (seed, epoch, video) in a
forked RNG scope, so augmentations are reproducible whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from istpan.modality import IMAGENET_MEAN, IMAGENET_STD  # re-exported: the data pipeline's name for them

__all__ = [
    "AUGMENT_POLICIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAIN_CROPS",
    "ClipColorJitter",
    "ClipRandAugment",
    "ClipTrivialAugmentWide",
    "MultiCrop",
    "MultiScaleCrop",
    "test_transform",
    "train_transform",
]

TRAIN_CROPS = ("multiscale", "resized", "center")
AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment")


class MultiScaleCrop(v2.Transform):
    """TSN's GroupMultiScaleCrop: crop a (w, h) pair of sizes taken from `scales` x short side (aspect distortion at
    most `max_distort` scale steps) at one of 13 fixed positions (corners, centre, edge midpoints, quarter points),
    then resize to `size` x `size`. Fixed positions instead of uniform offsets is TSN's choice: it
    over-samples borders, where a uniform offset rarely goes.
    """

    def __init__(self, size: int, *, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66), max_distort: int = 1):
        super().__init__()
        self.size = size
        self.scales = tuple(scales)
        self.max_distort = max_distort

    def _fixed_offsets(self, height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
        hs, ws = (height - crop_h) // 4, (width - crop_w) // 4
        grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2),  # corners and centre, as (row, col) in quarter steps
                (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
        return [(r * hs, c * ws) for r, c in grid]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        base = min(height, width)
        sizes = [int(base * s) for s in self.scales]
        sizes = [self.size if abs(s - self.size) < 3 else s for s in sizes]  # snap near-sizes, as TSN does
        pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= self.max_distort]
        crop_h, crop_w = pairs[int(torch.randint(len(pairs), ()))]
        crop_h, crop_w = min(crop_h, height), min(crop_w, width)
        offsets = self._fixed_offsets(height, width, crop_h, crop_w)
        top, left = offsets[int(torch.randint(len(offsets), ()))]
        return dict(top=top, left=left, height=crop_h, width=crop_w)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resized_crop, inpt, **params, size=[self.size, self.size], antialias=True)


class MultiCrop(v2.Transform):
    """Deterministic test crops stacked on a new leading axis: (K, C, H, W) -> (crops, K, C, size, size), except
    that one crop stays (K, C, size, size).

    1 = centre; 3 = three squares along the long side (left/centre/right or top/middle/bottom: together they see the
    whole frame); 5 = corners + centre; 10 = those five and their mirror images (TSN's over-sampling).
    """

    def __init__(self, size: int, crops: int = 1):
        super().__init__()
        if crops not in (1, 3, 5, 10):
            raise ValueError(f"crops must be 1, 3, 5 or 10, got {crops}")
        self.size = size
        self.crops = crops

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        s = self.size
        if self.crops == 1:
            return F.center_crop(inpt, [s, s])  # (K, C, s, s)
        if self.crops == 3:
            h, w = inpt.shape[-2:]
            if w >= h:
                views = [F.crop(inpt, (h - s) // 2, left, s, s) for left in (0, (w - s) // 2, w - s)]
            else:
                views = [F.crop(inpt, top, (w - s) // 2, s, s) for top in (0, (h - s) // 2, h - s)]
        elif self.crops == 5:
            views = list(F.five_crop(inpt, [s, s]))
        else:
            views = list(F.ten_crop(inpt, [s, s]))
        return torch.stack([v.as_subclass(torch.Tensor) for v in views])  # (crops, K, C, s, s)


def _as_one_image(fn: Callable[[torch.Tensor], torch.Tensor], clip: torch.Tensor) -> torch.Tensor:
    """Apply an image function to a (K, C, H, W) clip viewed as one (C, K·H, W) image: its statistics span the clip."""
    if clip.ndim != 4:
        return fn(clip)
    k, c, h, w = clip.shape
    out = fn(clip.transpose(0, 1).reshape(c, k * h, w))  # (C, K·H, W)
    return out.reshape(c, k, h, w).transpose(0, 1).contiguous()  # (K, C, H, W)


_CLIP_STATISTIC_OPS = ("AutoContrast", "Equalize", "Contrast")


class _ClipStatistics:
    """Mixin for torchvision's auto-augment policies: the ops that use image statistics see the whole clip.

    Hooks torchvision's `_apply_image_or_video_transform` (the one method every policy calls per op); the policy, its
    op list and magnitudes stay torchvision's.
    """

    def _apply_image_or_video_transform(self, image, transform_id, magnitude, interpolation, fill):
        apply = super()._apply_image_or_video_transform  # type: ignore[misc]
        if transform_id in _CLIP_STATISTIC_OPS:
            return _as_one_image(lambda x: apply(x, transform_id, magnitude, interpolation, fill), image)
        return apply(image, transform_id, magnitude, interpolation, fill)


class ClipRandAugment(_ClipStatistics, v2.RandAugment):
    """RandAugment with clip-wide statistics (see the module docstring)."""


class ClipTrivialAugmentWide(_ClipStatistics, v2.TrivialAugmentWide):
    """TrivialAugmentWide with clip-wide statistics (see the module docstring)."""


class ClipColorJitter(v2.ColorJitter):
    """ColorJitter whose contrast uses the clip's mean grey level, not each frame's (it has only colour ops, so the
    whole transform runs on the clip viewed as one image)."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _as_one_image(lambda x: super(ClipColorJitter, self).transform(x, params), inpt)


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def train_transform(
    *,
    input_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop: str = "multiscale",
    flip: bool = True,
    policy: str = "none",
    randaugment_ops: int = 2,
    randaugment_magnitude: int = 9,
    color_jitter: float = 0.0,
    random_erasing: float = 0.0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (K, C, H, W) -> float (K, C, input_size, input_size), normalised with the backbone's mean/std.

    crop: "multiscale" (TSN), "resized" (RandomResizedCrop, area 25-100 %) or "center" (no crop augmentation).
    flip=False for datasets whose classes depend on left/right (e.g. "moving left" vs "moving right").
    policy: "randaugment" (`randaugment_ops` operations at `randaugment_magnitude`) or "trivialaugment"
    (TrivialAugmentWide), on uint8 frames after the crop; color_jitter: brightness/contrast/saturation strength
    (hue a quarter of it); random_erasing: probability of erasing one rectangle, on the normalised frames (filled
    with 0, the mean colour). All of them are torchvision v2 transforms: given the (K, C, H, W) clip as one input,
    each draws its parameters once, so every frame gets the same operation, magnitude and rectangle; the ones that
    use image statistics compute them over the clip (`ClipRandAugment` etc.).

    The order follows timm's `create_transform`: geometry, colour policy, jitter, normalise, erase.
    """
    if crop == "multiscale":
        crops: list[v2.Transform] = [MultiScaleCrop(input_size)]
    elif crop == "resized":
        crops = [v2.RandomResizedCrop(input_size, scale=(0.25, 1.0), antialias=True)]
    elif crop == "center":
        crops = [v2.Resize(input_size, antialias=True), v2.CenterCrop(input_size)]
    else:
        raise ValueError(f"unknown train crop '{crop}' (choose from {', '.join(TRAIN_CROPS)})")
    flips = [v2.RandomHorizontalFlip()] if flip else []
    colour: list[v2.Transform] = []
    if policy == "randaugment":
        colour.append(ClipRandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude))
    elif policy == "trivialaugment":
        colour.append(ClipTrivialAugmentWide())
    elif policy != "none":
        raise ValueError(f"unknown augmentation policy '{policy}' (choose from {', '.join(AUGMENT_POLICIES)})")
    if color_jitter > 0:
        colour.append(ClipColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                     hue=min(color_jitter / 4, 0.5)))
    erase = [v2.RandomErasing(p=random_erasing, value=0)] if random_erasing > 0 else []
    return v2.Compose([*crops, *flips, *colour, *_normalise(mean, std), *erase])


def test_transform(
    *,
    input_size: int,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crops: int = 1,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (K, C, H, W) -> float (K, C, s, s) with one crop, or (crops, K, C, s, s) with 3 / 5 / 10.

    The short side is first resized to `resize` (default: input_size * 256 / 224, the usual test ratio).
    """
    resize = resize or round(input_size * 256 / 224)
    return v2.Compose([v2.Resize(resize, antialias=True), MultiCrop(input_size, crops), *_normalise(mean, std)])


test_transform.__test__ = False  # not a pytest test, despite the name
