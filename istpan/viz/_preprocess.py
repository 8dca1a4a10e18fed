"""What the model sees, for the viz modules: the checkpoint's preprocessing, frame sampling and one forward pass.

The heatmaps must be drawn on exactly the pixels the model saw, so frames are kept in two forms: the uint8 "view"
(decoded at the checkpoint's short side, centre-cropped to its input size), which is what the overlays are drawn on,
and the normalised float tensor made from that view, which is what the model gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Test-time preprocessing from checkpoint meta (`meta["preprocessing"]`), falling back to the model's own."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    short_side: int
    num_segments: int

    @classmethod
    def from_meta(cls, model: nn.Module, meta: dict[str, Any]) -> Preprocessing:
        pre = dict(meta.get("preprocessing") or {})
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        input_size = int(pre.get("input_size") or cfg.get("input_size") or 224)
        return cls(
            mean=tuple(float(v) for v in pre.get("mean", cfg.get("mean", _IMAGENET_MEAN))),
            std=tuple(float(v) for v in pre.get("std", cfg.get("std", _IMAGENET_STD))),
            input_size=input_size,
            # The short side must cover the crop; TSN's usual ratio (256 for 224) when the meta does not say.
            short_side=max(input_size, int(pre.get("short_side") or round(input_size * 8 / 7))),
            num_segments=int(pre.get("num_segments") or 8),
        )

    def view(self, frames: torch.Tensor) -> torch.Tensor:
        """Centre crop uint8 (..., H, W, 3) decoded at `short_side` to (..., s, s, 3), s = input_size."""
        h, w = frames.shape[-3], frames.shape[-2]
        s = self.input_size
        if h < s or w < s:
            raise ValueError(f"frames ({h}x{w}) smaller than the crop {s}; decode with short_side={self.short_side}")
        top, left = (h - s) // 2, (w - s) // 2
        return frames[..., top : top + s, left : left + s, :]

    def to_input(self, views: torch.Tensor) -> torch.Tensor:
        """uint8 views (..., K, s, s, 3) -> normalised float (..., K, 3, s, s) for the model."""
        x = views.movedim(-1, -3).float() / 255.0  # (..., K, 3, s, s)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


def segment_centres(start: int, length: int, num_segments: int) -> list[int]:
    """TSN test-time sampling: the centre frame of each of `num_segments` equal segments of [start, start + length).

    Repeats frames when the span is shorter than `num_segments` (a 3-frame video still gives K indices).
    """
    return [start + min(length - 1, int((i + 0.5) * length / num_segments)) for i in range(num_segments)]


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
