"""What the model sees, for the viz modules: the checkpoint's preprocessing, frame sampling and one forward pass.

The heatmaps must be drawn on exactly the pixels the model saw, so frames are kept in two forms: the uint8 "view"
(decoded at the checkpoint's short side, centre-cropped to its input size), which is what the overlays are drawn on,
and the normalised float tensor made from that view, which is what the model gets.

`istpan.experiments.demo` draws its attention picture with `Preprocessing` too: keep its method names stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Preprocessing:
    """Test-time preprocessing from checkpoint meta (`meta["preprocessing"]`), falling back to the model's own.

    Same operations, in the same order, as `istpan.engine.predict.load_clip` (decode at `short_side`, the data
    pipeline's `test_transform` with one centre crop, `sample_indices` at the centre offset), split in two so the
    uint8 view can be drawn on: the explanation is of the very input that `istpan predict` classifies.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    short_side: int
    num_segments: int
    resize: int = 0  # short side before the centre crop at test time (0: test_transform's default)
    sampling: str = "segment"
    clip_len: int = 0
    frame_stride: int = 1

    @classmethod
    def from_meta(cls, model: nn.Module, meta: dict[str, Any]) -> Preprocessing:
        from istpan.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        pre = dict(meta.get("preprocessing") or {})
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        input_size = int(pre.get("input_size") or cfg.get("input_size") or 224)
        return cls(
            mean=tuple(float(v) for v in pre.get("mean", cfg.get("mean", IMAGENET_MEAN))),
            std=tuple(float(v) for v in pre.get("std", cfg.get("std", IMAGENET_STD))),
            input_size=input_size,
            short_side=int(pre.get("short_side") or round(input_size * 256 / 224)),
            num_segments=int(pre.get("num_segments") or 8),
            resize=int(pre.get("resize") or round(input_size * 256 / 224)),
            sampling=str(pre.get("sampling") or "segment"),
            clip_len=int(pre.get("clip_len") or 0),
            frame_stride=int(pre.get("frame_stride") or 1),
        )

    def indices(self, num_frames: int, start: int = 0) -> list[int]:
        """The frames the model sees among `num_frames` frames starting at `start` (test-time sampling)."""
        from istpan.data.sampling import sample_indices

        dense = self.sampling == "dense"
        length = self.clip_len if dense and self.clip_len > 0 else self.num_segments
        idx = sample_indices(num_frames, method=self.sampling, length=length, stride=self.frame_stride)  # (K,)
        return [start + int(i) for i in idx]

    def view(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., H, W, 3) decoded at `short_side` -> the model's centre crop, uint8 (..., s, s, 3)."""
        from torchvision.transforms.v2 import functional as F

        chw = frames.movedim(-1, -3)  # (..., 3, H, W)
        chw = F.center_crop(F.resize(chw, [self.resize], antialias=True), [self.input_size, self.input_size])
        return chw.movedim(-3, -1)

    def box_to_view(self, box: Sequence[float], height: int, width: int) -> tuple[float, ...] | None:
        """A box (x0, y0, x1, y1) normalised to the original (height, width) frame -> normalised to the view.

        Follows `view` step by step (decode at short_side, resize to `resize`, centre crop). None when the box falls
        outside the crop.
        """
        from istpan.data._backends import resized_size

        h, w = resized_size(height, width, self.short_side)  # as decoded
        r = self.resize  # torchvision's Resize(short side): the long side truncates
        h, w = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
        s = self.input_size
        top, left = round((h - s) / 2.0), round((w - s) / 2.0)  # torchvision's center_crop offsets
        x0, y0, x1, y1 = (float(v) for v in box)
        out = (
            min(max((x0 * w - left) / s, 0.0), 1.0),
            min(max((y0 * h - top) / s, 0.0), 1.0),
            min(max((x1 * w - left) / s, 0.0), 1.0),
            min(max((y1 * h - top) / s, 0.0), 1.0),
        )
        return out if out[2] > out[0] and out[3] > out[1] else None

    def to_input(self, views: torch.Tensor) -> torch.Tensor:
        """uint8 views (..., K, s, s, 3) -> normalised float (..., K, 3, s, s) for the model."""
        from torchvision.transforms.v2 import functional as F

        x = F.to_dtype(views.movedim(-1, -3).contiguous(), torch.float32, scale=True)  # (..., K, 3, s, s)
        return F.normalize(x, list(self.mean), list(self.std))


def class_names(meta: dict[str, Any], num_classes: int) -> list[str]:
    names = list(meta.get("class_names") or [])
    return names if len(names) == num_classes else [f"class {i}" for i in range(num_classes)]


def probabilities(model: nn.Module, logits: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """Sigmoid for a multi-label head (Charades), softmax otherwise: (B, C) -> (B, C)."""
    multi = bool(meta.get("multi_label", getattr(model, "multi_label", False)))
    return logits.float().sigmoid() if multi else logits.float().softmax(-1)


def topk(scores: torch.Tensor, names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """[{label, index, score}] for the k best classes of scores (C,)."""
    values, indices = scores.topk(min(k, len(scores)))
    return [{"label": names[i], "index": int(i), "score": float(v)} for v, i in zip(values.tolist(), indices.tolist())]


def device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe version of a video or class name (HMDB51 names carry '!', '+', spaces)."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:limit].strip("._")
    return out or "video"
