"""What the model sees: one typed object for frame choice, resize, crop, normalisation and to-tensor at test time.

Like timm's `PretrainedCfg` or torchvision's `weights.transforms()`, it is built once (from the run's DataConfig and
the backbone's mean/std), saved with the weights (a plain dict: checkpoints load with `weights_only=True`), and every
consumer takes it from there: evaluation (`build_dataset(train=False)`), `istpan predict`, `--explain`, sliding
windows, streaming, `Predictor` and the export sidecar. Nobody else re-implements it or invents fallbacks.

Test-time pipeline, for a video of n frames (or a window of n frames starting at `start`):

    indices(n, start)   K frame indices: centre of K equal segments (TSN), or a centred dense clip  (K,) ints
    decode              frames at `short_side` (resized while decoding), by `backend`               uint8 (K, H, W, 3)
    view(frames)        short side to `resize`, centre crop `input_size`: what is drawn on          uint8 (K, s, s, 3)
    to_input(views)     [0, 1] floats, (x - mean) / std, channels first: what the network gets      float (K, 3, s, s)

`backend` is how a path is decoded (pyav, opencv, or frames: a folder of extracted frame images), the training
config's `data.backend`: a model trained on a dataset's rawframes predicts the same folders by default.

The view / to_input split lets the viz modules draw on exactly the pixels the model saw. Every step works on any
leading shape, so one frame (H, W, 3) -> (3, s, s) is the same code (`frame_input`, what a stream feeds).

A flow checkpoint (`modality` flow or rgb+flow, docs/flow.md) sees C = 2L or 3 + 2L channels instead of 3: `read`
computes the K flow stacks from the video on the fly (TSN's stack sampling, the checkpoint's algorithm and bound),
`view` / `to_input` work on any channel count, `transform` negates horizontal flow in mirrored crops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from istpan.modality import IMAGENET_MEAN, IMAGENET_STD, input_stats

__all__ = ["Preprocessing"]


def _stats(modality: str, flow_length: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return input_stats(modality, flow_length, IMAGENET_MEAN, IMAGENET_STD)


def _test_ratio(input_size: int) -> int:
    """The usual test-time short side for a crop: 256 for 224 (what old checkpoints without `resize` used)."""
    return round(input_size * 256 / 224)


LEGACY_K_KEYS = ("num_segments", "clip_len")  # K's names in files written before it had one


@dataclass(frozen=True)
class Preprocessing:
    """Test-time preprocessing of a checkpoint (see the module docstring for the pipeline)."""

    input_size: int = 224  # side of the square centre crop the network sees
    short_side: int = 256  # frames are resized to this short side while decoding (0: decoded as stored)
    resize: int = 256  # short side right before the centre crop (max(short_side, input_size) from a DataConfig)
    mean: tuple[float, ...] = IMAGENET_MEAN  # per-channel normalisation of [0, 1] RGB: the backbone's
    std: tuple[float, ...] = IMAGENET_STD
    num_frames: int = 8  # K: frames the model sees per video (or per window) at test time, any sampling
    sampling: str = "segment"  # segment (TSN) | dense | uniform; see istpan.data.sampling
    frame_stride: int = 1  # dense sampling: step between frames
    modality: str = "rgb"  # rgb | flow | rgb+flow (istpan/modality.py)
    flow_length: int = 5  # L flow frames per segment (flow, rgb+flow)
    flow_algorithm: str = "tvl1"  # flow computed on the fly at test time: the algorithm the training flow used
    flow_bound: float = 20.0
    backend: str = "pyav"  # how a path is decoded: pyav | opencv | frames (istpan.data.decode); flow: always pyav

    def __post_init__(self) -> None:  # tuples, whatever came in (lists from JSON / a checkpoint)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    # ------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_data_config(cls, data_cfg: Any, *, mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None) -> Preprocessing:
        """From a `DataConfig` and the backbone's mean/std (`model.pretrained_cfg`; ImageNet's when None)."""
        d = data_cfg
        modality, flow_length = str(getattr(d, "modality", "rgb")), int(getattr(d, "flow_length", 5))
        default_mean, default_std = _stats(modality, flow_length)
        return cls(
            input_size=int(d.input_size),
            short_side=int(d.short_side),
            resize=max(int(d.short_side), int(d.input_size)),
            mean=tuple(mean or default_mean),
            std=tuple(std or default_std),
            num_frames=int(d.test_num_frames),
            sampling=str(d.sampling),
            frame_stride=int(d.frame_stride),
            modality=modality,
            flow_length=flow_length,
            flow_algorithm=str(getattr(d, "flow_algorithm", "tvl1")),
            flow_bound=float(getattr(d, "flow_bound", 20.0)),
            backend=str(getattr(d, "backend", "pyav")) if modality == "rgb" else "pyav",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain built-in types (lists, ints, floats, str): what checkpoints, sidecars and config.json store.

        K is also written under its two old names (LEGACY_K_KEYS), so that an istpan from before K had one name
        reads the right K from a new file instead of its default of 8; `from_dict` reads `num_frames` first."""
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out.update(dict.fromkeys(LEGACY_K_KEYS, self.num_frames))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> Preprocessing:
        """Inverse of `to_dict`, and the ONE place where older or partial dicts are completed.

        Checkpoints written before this object existed stored a dict that may lack `resize`, `mean`/`std` (then
        `mean`/`std` given here, e.g. the model's `pretrained_cfg`, else ImageNet's); missing sizes follow the usual
        256/224 test ratio; a missing `backend` is pyav (`ModelDescription.from_dict` fills it from the run config).
        Dicts written before K had one name hold `num_segments` (K of segment/uniform sampling) and `clip_len` (K of
        dense sampling) instead of `num_frames`. Unknown keys (from a newer istpan) are ignored.
        """
        d = dict(data or {})
        input_size = int(d.get("input_size") or 224)
        sampling = str(d.get("sampling") or "segment")
        old_k = d.get("clip_len") if sampling == "dense" else None
        num_frames = int(d.get("num_frames") or old_k or d.get("num_segments") or 8)
        modality, flow_length = str(d.get("modality") or "rgb"), int(d.get("flow_length") or 5)
        if modality != "rgb":
            mean, std = mean or _stats(modality, flow_length)[0], std or _stats(modality, flow_length)[1]
        return cls(
            input_size=input_size,
            short_side=int(d["short_side"]) if d.get("short_side") is not None else _test_ratio(input_size),
            resize=int(d.get("resize") or _test_ratio(input_size)),
            mean=tuple(d.get("mean") or mean or IMAGENET_MEAN),
            std=tuple(d.get("std") or std or IMAGENET_STD),
            num_frames=num_frames,
            sampling=sampling,
            frame_stride=int(d.get("frame_stride") or 1),
            modality=modality,
            flow_length=flow_length,
            flow_algorithm=str(d.get("flow_algorithm") or "tvl1"),
            flow_bound=float(d.get("flow_bound") or 20.0),
            backend=str(d.get("backend") or "pyav") if modality == "rgb" else "pyav",
        )

    def with_frames(self, k: int | None) -> Preprocessing:
        """The same preprocessing with K = k frames (segment count and dense clip length alike); None: unchanged."""
        if k is None:
            return self
        if int(k) < 1:
            raise ValueError(f"the number of frames must be >= 1, got {k}")
        return dataclasses.replace(self, num_frames=int(k))

    def with_backend(self, backend: str | None) -> Preprocessing:
        """The same preprocessing decoding paths with `backend` (pyav, opencv, frames); None: unchanged.

        Flow models compute their flow from video files with PyAV (what training's on-the-fly flow does too)."""
        from istpan.data.decode import BACKENDS
        from istpan.errors import UserError

        if backend is None or backend == self.backend:
            return self
        if backend not in BACKENDS:
            raise ValueError(f"unknown video backend '{backend}' (choose from {', '.join(BACKENDS)})")
        if self.modality != "rgb" and backend != "pyav":
            raise UserError(f"a {self.modality} model computes flow from video files with PyAV: backend '{backend}' "
                            "is for RGB models")
        return dataclasses.replace(self, backend=backend)

    # ------------------------------------------------------------------------------------------- frame choice

    def indices(self, video_frames: int, start: int = 0) -> list[int]:
        """The K frames the model sees among `video_frames` frames from `start` (deterministic test sampling)."""
        from istpan.data.sampling import sample_indices

        idx = sample_indices(video_frames, method=self.sampling, num_frames=self.num_frames, stride=self.frame_stride)
        return [start + int(i) for i in idx]  # (K,)

    @property
    def decode_short_side(self) -> int | None:
        """`short_side` as the decoders take it (None: no resize while decoding)."""
        return self.short_side or None

    def read(self, path: str | Path, *, backend: str | None = None) -> tuple[torch.Tensor, list[int], int]:
        """Decode a video's K sampled frames as the model sees them: (views uint8 (K, s, s, 3), indices, frame count).
        backend: None is this preprocessing's (`self.backend`).

        Raises VideoError (a UserError) naming the file when it cannot be read or has no decodable frame.
        """
        from istpan.data.decode import VideoError, count_frames, read_frames

        backend = backend or self.backend
        if self.modality != "rgb":
            return self._read_flow(path, backend=backend)
        n = count_frames(path, backend=backend)
        if n <= 0:
            raise VideoError(path, "no frame images (.jpg, .jpeg, .png) in this folder" if backend == "frames"
                             else "no frame could be decoded")
        indices = self.indices(n)
        frames = read_frames(path, indices, backend=backend, short_side=self.decode_short_side)  # (K, H, W, 3)
        return self.view(frames), indices, n

    def _read_flow(self, path: str | Path, *, backend: str) -> tuple[torch.Tensor, list[int], int]:
        """Flow stacks computed from the video: (views uint8 (K, s, s, C), stack starts, frame count)."""
        from istpan.data.decode import VideoError, count_frames, read_frames
        from istpan.data.flow.frames import stacks_from_video
        from istpan.data.sampling import stack_starts

        n, length = count_frames(path, backend=backend), self.flow_length
        if n - 1 < length:
            raise VideoError(path, f"{max(n - 1, 0)} flow frames, too short for a stack of L={length} flow frames")
        method = "segment" if self.sampling == "dense" else self.sampling
        starts = stack_starts(n - 1, method=method, num_frames=self.num_frames, stack=length)  # (K,)
        stacks = stacks_from_video(path, starts, length=length, video_frames=n, short_side=self.decode_short_side,
                                   algorithm=self.flow_algorithm, bound=self.flow_bound)  # (K, 2L, H, W)
        if self.modality == "rgb+flow":  # the RGB frame at each stack's centre first
            rgb = read_frames(path, starts + length // 2, backend=backend, short_side=self.decode_short_side)
            stacks = torch.cat([rgb.movedim(-1, -3), stacks], dim=1)  # (K, 3 + 2L, H, W)
        return self.view(stacks.movedim(-3, -1)), [int(s) for s in starts], n

    # ------------------------------------------------------------------------------------------- pixels

    def view(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., H, W, 3) -> the model's centre crop, uint8 (..., s, s, 3) (short side to `resize` first)."""
        from torchvision.transforms.v2 import functional as F

        chw = frames.movedim(-1, -3)  # (..., 3, H, W)
        chw = F.center_crop(F.resize(chw, [self.resize], antialias=True), [self.input_size, self.input_size])
        return chw.movedim(-3, -1)

    def to_input(self, views: torch.Tensor) -> torch.Tensor:
        """uint8 views (..., s, s, 3) -> normalised float (..., 3, s, s), the network's input."""
        from torchvision.transforms.v2 import functional as F

        if views.shape[-1] != len(self.mean):
            from istpan.errors import UserError

            raise UserError(f"this checkpoint takes {self.modality} input with {len(self.mean)} channels per frame, "
                            f"got {views.shape[-1]}; give it video files (flow is computed from them)")
        x = F.to_dtype(views.movedim(-1, -3).contiguous(), torch.float32, scale=True)  # (..., C, s, s)
        return F.normalize(x, list(self.mean), list(self.std))

    def frame_input(self, frame: torch.Tensor) -> torch.Tensor:
        """One decoded frame uint8 (H, W, 3) -> float (3, s, s): the unit a stream or a frame cache works on."""
        return self.to_input(self.view(frame))

    def transform(self, crops: int = 1):
        """The evaluation transform with 1 / 3 / 5 / 10 crops: uint8 (K, 3, H, W) -> float (K, 3, s, s), or
        (crops, K, 3, s, s). With one crop it computes what `to_input(view(...))` does (same torchvision ops)."""
        from istpan.data.transforms import test_transform

        if self.modality != "rgb":
            from istpan.data.flow.transforms import flow_test_transform
            from istpan.modality import flow_x_channels

            return flow_test_transform(input_size=self.input_size, resize=self.resize, mean=self.mean, std=self.std,
                                       x_channels=flow_x_channels(self.modality, self.flow_length), crops=crops)
        return test_transform(input_size=self.input_size, resize=self.resize, mean=self.mean, std=self.std,
                              crops=crops)

    def box_to_view(self, box: Sequence[float], height: int, width: int) -> tuple[float, ...] | None:
        """A box (x0, y0, x1, y1) normalised to the original (height, width) frame -> normalised to the view.

        Follows `view` step by step (decode at short_side, resize to `resize`, centre crop). None when the box falls
        outside the crop.
        """
        from istpan.data._backends import resized_size

        h, w = resized_size(height, width, self.short_side) if self.short_side else (height, width)  # as decoded
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
