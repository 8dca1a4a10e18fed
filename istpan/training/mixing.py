"""Batch-level augmentation: mixup / cutmix with soft targets and label smoothing (single- and multi-label heads),
and random frame subsets (`FrameSubset`, train.frame_subset_min) for anytime inference.

torchvision's v2 `MixUp` and `CutMix` do the work: λ ~ Beta(α, α), the cutmix box (λ corrected for the part of the
box clipped by the frame border), pairing each clip with its neighbour in the (shuffled) batch. A batch of videos is
handed to them as a `tv_tensors.Video` (B, K, C, H, W), so one λ and one box hold for all K frames of a clip.
Their labels may be probabilities (B, C), which is what makes the multi-label case work unchanged:

    single-label (softmax CE):  y = (1 − ε)·one_hot(c) + ε/C                 (the usual label smoothing)
    multi-label (sigmoid BCE):  y = (1 − ε)·multi_hot + ε/2                  (each class is its own 2-way problem,
                                                                              smoothed toward 0.5, as TF's
                                                                              sigmoid_cross_entropy does)
    mixed:                      y_i = λ·y_i + (1 − λ)·y_{i−1}                (for multi-hot: each class's target is
                                                                              the share of the clip that shows it)

With mixing and smoothing off the target is returned untouched (integer classes for CE), so the loss is bit-identical
to the plain recipe's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from istpan.config import AugmentConfig

__all__ = ["BatchMix", "FrameSubset", "soft_targets"]


def soft_targets(target: torch.Tensor, *, num_classes: int, multi_label: bool, smoothing: float) -> torch.Tensor:
    """(B,) class indices or (B, C) multi-hot -> (B, C) float probabilities with label smoothing `smoothing`."""
    if multi_label:
        return target.float() * (1.0 - smoothing) + smoothing / 2  # (B, C)
    return F.one_hot(target, num_classes).float() * (1.0 - smoothing) + smoothing / num_classes  # (B, C)


class BatchMix:
    """`video, target = mix(video, target)`: mixup or cutmix (one of them, 50/50, when both are on) with probability
    `mix_prob`, soft targets with label smoothing. Draws from torch's global RNG, which the training loop seeds per
    step, so a resumed run mixes exactly as the uninterrupted one.
    """

    def __init__(self, cfg: AugmentConfig, *, num_classes: int, multi_label: bool) -> None:
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.smoothing = cfg.label_smoothing
        self.mix_prob = cfg.mix_prob
        mixers: list[v2.Transform] = []
        if cfg.mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=cfg.mixup_alpha))
        if cfg.cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cfg.cutmix_alpha))
        self.mixer = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers) if mixers else None

    @property
    def enabled(self) -> bool:
        return self.mixer is not None or self.smoothing > 0

    def __call__(self, video: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, K, C, H, W), target (B,) long or (B, C) multi-hot -> same video shape, target (B, C) float."""
        if not self.enabled:
            return video, target
        target = soft_targets(target, num_classes=self.num_classes, multi_label=self.multi_label,
                              smoothing=self.smoothing)  # (B, C)
        if self.mixer is None or float(torch.rand(())) >= self.mix_prob:
            return video, target
        mixed, target = self.mixer(tv_tensors.Video(video), target)
        return mixed.as_subclass(torch.Tensor), target  # (B, K, C, H, W), (B, C)


class FrameSubset:
    """`video, times = subset(video)`: keep a random time-ordered subset of the K frames of every clip in the batch.

    Why: anytime inference (inference/anytime.py) classifies from the first 1, 2, 3, ... of K frames, each at its own
    time (k + 0.5) / K; a model trained only on all K frames is poorly calibrated and less accurate on those short
    prefixes (docs/latency.md). Training on subsets uses the layer's any-K property. The size n is uniform in
    [min_frames, K] (min_frames is clipped to K), the same n and the same frames for the whole batch (one
    `times` (n,) serves it, as `forward_clip` takes it); the frames are drawn uniformly without replacement and kept
    in time order. Draws from torch's global RNG, which the training loop seeds per step (resume stays exact).
    `times` is None when the clip is left whole (min_frames = 0, off).
    """

    def __init__(self, min_frames: int) -> None:
        self.min_frames = int(min_frames)

    @property
    def enabled(self) -> bool:
        return self.min_frames > 0

    def __call__(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """video (B, K, C, H, W) -> (B, n, C, H, W) and times (n,) in (0, 1), or (video, None) when off."""
        if not self.enabled:
            return video, None
        k = video.shape[1]
        low = min(self.min_frames, k)
        n = int(torch.randint(low, k + 1, ()))
        keep = torch.randperm(k)[:n].sort().values  # (n,) frame indices, in time order
        times = (keep.float() + 0.5) / k  # (n,) each kept frame's own segment centre, as anytime inference uses
        return video[:, keep.to(video.device)], times.to(video.device)
