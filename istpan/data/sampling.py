"""Which frames to read: pure functions of (video_frames, params, rng) that return (K,) long indices and never decode.

Training randomness comes from a `torch.Generator` made by `clip_generator(seed, epoch, index)`, so a clip depends
only on (seed, epoch, video index): not on the worker that happens to load it, nor on the number of workers.
Evaluation is deterministic; several test views of one video spread their offsets evenly (`offset=(c + 0.5) / C`).

Every function accepts any video_frames >= 1, including videos shorter than K (frames then repeat, in order).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "SAMPLING_METHODS",
    "clip_generator",
    "dense_indices",
    "sample_indices",
    "segment_indices",
    "stack_starts",
    "uniform_indices",
    "view_indices",
]

SAMPLING_METHODS = ("segment", "dense", "uniform")


def clip_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """A generator seeded from (seed, epoch, index) through NumPy's SeedSequence (well-mixed, no collisions between
    e.g. (epoch 1, video 0) and (epoch 0, video 1)). `stream` gives independent generators for the same clip (frame
    choice, augmentation, ...)."""
    state = np.random.SeedSequence([seed, epoch, index, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _check(video_frames: int, count: int, what: str) -> None:
    if video_frames < 1:
        raise ValueError(f"video_frames must be >= 1, got {video_frames}")
    if count < 1:
        raise ValueError(f"{what} must be >= 1, got {count}")


def segment_indices(
    video_frames: int, num_frames: int, *, rng: torch.Generator | None = None, offset: float = 0.5
) -> torch.Tensor:
    """TSN sampling: one frame from each of K equal segments. (K,) long, non-decreasing.

    With `rng` the frame is uniform within its segment (training); without, it sits at `offset` (0 = start,
    0.5 = centre, the TSN test protocol). Segment k covers frames [floor(k·n/K), floor((k+1)·n/K)), so unlike TSN's
    integer `n // K` the last frames are never left out; with n < K some segments are empty and take the frame at
    their start, so short videos repeat frames instead of failing.
    """
    _check(video_frames, num_frames, "num_frames")
    k = torch.arange(num_frames, dtype=torch.float64)  # (K,)
    if rng is None:
        # TSN's test protocol, float operations included: int(tick / 2 + tick * k) with tick = n / K (offset 0.5).
        tick = video_frames / num_frames
        return (tick * offset + tick * k).floor().long().clamp_(0, video_frames - 1)
    start = (k * video_frames / num_frames).floor()
    end = ((k + 1) * video_frames / num_frames).floor()
    pick = (torch.rand(num_frames, generator=rng, dtype=torch.float64) * (end - start).clamp_min(1)).floor()
    return (start + pick).long().clamp_(0, video_frames - 1)


def dense_indices(
    video_frames: int, num_frames: int, stride: int = 1, *, rng: torch.Generator | None = None, offset: float = 0.5
) -> torch.Tensor:
    """T consecutive frames at stride s (an I3D/SlowFast-style clip). (T,) long.

    The clip start is uniform over the valid range with `rng`, else at `offset` of it. A video shorter than the clip
    span repeats its last frame.
    """
    _check(video_frames, num_frames, "num_frames")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    span = (num_frames - 1) * stride + 1
    room = max(0, video_frames - span)
    random_start = rng is not None
    start = int(torch.randint(room + 1, (1,), generator=rng)) if random_start else int(room * offset)
    return (start + torch.arange(num_frames) * stride).clamp_(max=video_frames - 1)


def uniform_indices(video_frames: int, num_frames: int) -> torch.Tensor:
    """K frames evenly spread over the whole video (untrimmed videos, e.g. Charades): centres of K equal parts."""
    return segment_indices(video_frames, num_frames, offset=0.5)


def sample_indices(
    video_frames: int,
    *,
    method: str,
    num_frames: int,
    stride: int = 1,
    rng: torch.Generator | None = None,
    offset: float = 0.5,
) -> torch.Tensor:
    """Dispatch on `method` ("segment", "dense", "uniform"); `num_frames` is K (segments / clip frames / samples).

    "uniform" ignores `rng`: the same K evenly spread frames in training and at test (augmentation then comes from
    the crops only). Use "segment" for TSN's jittered version over the whole video.
    """
    if method == "segment":
        return segment_indices(video_frames, num_frames, rng=rng, offset=offset)
    if method == "dense":
        return dense_indices(video_frames, num_frames, stride, rng=rng, offset=offset)
    if method == "uniform":
        return segment_indices(video_frames, num_frames, offset=offset)
    raise ValueError(f"unknown sampling method '{method}' (choose from {', '.join(SAMPLING_METHODS)})")


def view_indices(video_frames: int, *, method: str, num_frames: int, stride: int = 1, clips: int = 1) -> torch.Tensor:
    """Deterministic multi-clip test views: (clips, K) long, clip c at offset (c + 0.5) / clips.

    With one clip this is the usual centre sampling; with several, the clips tile the segment (or start range)
    evenly, so together they cover the video instead of repeating the centre.
    """
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    rows = [
        sample_indices(video_frames, method=method, num_frames=num_frames, stride=stride, offset=(c + 0.5) / clips)
        for c in range(clips)
    ]
    return torch.stack(rows)  # (clips, K)


def stack_starts(
    num_flow: int,
    *,
    method: str,
    num_frames: int,
    stack: int,
    stride: int = 1,
    rng: torch.Generator | None = None,
    offset: float = 0.5,
) -> torch.Tensor:
    """First flow frame of each of K stacks of `stack` (L) consecutive flow frames: (K,) long.

    TSN's flow sampling: the K segments divide the num_flow - L + 1 valid start positions, so every stack fits in
    the video. The caller checks num_flow >= L (a shorter video has no stack; data/flow_frames.py says so).
    """
    if stack < 1:
        raise ValueError(f"stack length must be >= 1, got {stack}")
    starts = max(1, num_flow - stack + 1)
    return sample_indices(starts, method=method, num_frames=num_frames, stride=stride, rng=rng, offset=offset)
