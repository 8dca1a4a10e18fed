"""Streaming inference with a feature cache: each sampled frame through the backbone once, a decision over the last K.

    frame (H, W, 3) uint8 -> pre.frame_input -> (3, S, S) -> model.frame_features -> (ΣC_j, h, w)   once per frame
    ring buffer of the last K frames' features (K, ΣC_j, h, w)
    decision: model.forward_clip(buffer) -> logits -> top-k                                   IST-PAN layer + head

The layer has no parameter that depends on K and sees the K frames only as more positions of one softmax, so the
head over the cached features of the last K frames equals the model on those K frames (tests/test_feature_cache.py):
a decision costs one backbone pass plus the layer instead of K backbone passes.

Time for the order-aware model (time_encoding="fourier"): the buffer is the clip, its K frames evenly spaced at the
sampling rate, oldest first, so frame k of the buffer gets t_k = (k + 0.5) / K, the segment-centre time it had in
training (a K-frame clip sampled at the centres of K equal segments). The window the model "sees" therefore slides
with the stream: its length is K / sampling rate seconds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.inference.predict import device_of, probabilities
from istpan.inference.results import top_classes

__all__ = ["FeatureCache", "as_frame", "stream_decisions"]

log = logging.getLogger(__name__)


class FeatureCache:
    """Ring buffer of the cached features of the last `capacity` sampled frames, oldest first.

    A deque of per-frame tensors rather than a preallocated ring with a moving head: the head needs the frames in
    time order, which a deque keeps for free, and stacking K small maps per decision costs far less than the layer.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the buffer must hold at least one frame, got {capacity}")
        self.capacity = capacity
        self._feats: deque[torch.Tensor] = deque(maxlen=capacity)
        self._times: deque[float] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._feats)

    @property
    def full(self) -> bool:
        return len(self._feats) == self.capacity

    def push(self, feats: torch.Tensor, time_s: float) -> None:
        """Add one frame's features (ΣC_j, h, w); the oldest frame drops out once the buffer is full."""
        self._feats.append(feats)
        self._times.append(time_s)

    def clip(self) -> torch.Tensor:
        """The buffered frames as one clip for `forward_clip`: (1, k, ΣC_j, h, w), k = len(self)."""
        return torch.stack(list(self._feats))[None]

    @property
    def times(self) -> list[float]:
        return list(self._times)


def as_frame(frame: Any, index: int) -> torch.Tensor:
    """A frame from a user's iterable as uint8 (H, W, 3), or one UserError line saying what is wrong with it."""
    if isinstance(frame, np.ndarray):
        frame = torch.from_numpy(frame)
    if not isinstance(frame, torch.Tensor):
        raise UserError(f"frame {index}: expected a uint8 array (H, W, 3), got {type(frame).__name__}")
    if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[-1] != 3 or min(frame.shape[:2]) < 1:
        raise UserError(f"frame {index}: expected a uint8 array (H, W, 3), got {str(frame.dtype).replace('torch.', '')}"
                        f" {tuple(frame.shape)}")
    return frame


@torch.no_grad()
def stream_decisions(
    model: nn.Module,
    pre: Preprocessing,
    frames: Iterable[Any],
    *,
    class_names: Sequence[str],
    topk: int = 5,
    every_frames: int | None = 1,
    every_seconds: float | None = None,
    fps: float | None = None,
    multi_label: bool = False,
) -> Iterator[dict[str, Any]]:
    """Decisions over a stream of frames, as they come.

    frames: uint8 (H, W, 3) arrays/tensors, or (time_s, frame) pairs (a `VideoSource` yields those); a plain frame's
    time is its index / `fps` (or its index when fps is None). Each frame is preprocessed by `pre.frame_input` (the
    checkpoint's resize, centre crop, mean/std). A decision is made once the buffer holds K = `pre.num_frames`
    frames and then after every `every_frames` frames, or when `every_seconds` of stream time have passed since the
    last one. A stream that ends before the buffer ever filled gets one decision over the frames it had (logged:
    fewer frames than the model's K).

    Yields {"time_s", "frame", "num_frames", "window_s", "multi_label", "top", "latency_ms"}: `frame` counts frames
    fed to the backbone (from 0), `num_frames` the frames in the window decided over (K once the buffer is full),
    `latency_ms` is from receiving the frame to the decision (preprocessing, backbone, layer, head).
    """
    if every_frames is not None and every_frames < 1:
        raise UserError(f"a decision every {every_frames} frames: must be >= 1")
    if every_seconds is not None and not every_seconds > 0:
        raise UserError(f"a decision every {every_seconds} seconds: must be > 0")
    device = device_of(model)
    model.eval()
    num_frames = pre.num_frames
    cache = FeatureCache(num_frames)
    since, last_time = 0, None
    index, t = -1, 0.0

    def decide(received: float) -> dict[str, Any]:
        scores = probabilities(model.forward_clip(cache.clip()).logits, multi_label=multi_label)[0].cpu()  # (C,)
        times = cache.times
        return {"time_s": round(times[-1], 4), "frame": index, "num_frames": len(cache),
                "window_s": round(times[-1] - times[0], 4), "multi_label": multi_label,
                "top": top_classes(scores, class_names, topk),
                "latency_ms": round(1000 * (time.perf_counter() - received), 3)}

    for index, item in enumerate(frames):
        received = time.perf_counter()
        if isinstance(item, tuple):
            t, frame = float(item[0]), item[1]
        else:
            t, frame = (index / fps if fps else float(index)), item
        x = pre.frame_input(as_frame(frame, index))[None].to(device)  # (1, 3, S, S)
        cache.push(model.frame_features(x)[0], t)  # (ΣC_j, h, w)
        if not cache.full:
            continue
        since += 1
        due = last_time is None
        if every_seconds is not None:
            due = due or t - last_time >= every_seconds - 1e-9
        elif every_frames is not None:
            due = due or since >= every_frames
        if due:
            since, last_time = 0, t
            yield decide(received)
    if last_time is None and len(cache):
        log.warning("stream ended after %d frames, fewer than the model's K = %d: one decision over those",
                    len(cache), num_frames)
        yield decide(time.perf_counter())
