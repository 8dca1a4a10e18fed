"""The data path: annotation line -> frame count -> sampled indices -> decoded frames -> transforms -> batches.

Each step lives in its own module (decode, with pyav_source for opening a video and frames as arrays; sampling,
transforms, datasets, video_dataset, loader); see docs/data.md.
The names below are imported on first use (PEP 562), so `istpan --help` and `istpan data synth` don't pay for
torch and PyAV start-up they never need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORMATS": "datasets",
    "Annotations": "datasets",
    "VideoRecord": "datasets",
    "parse_annotations": "datasets",
    "BACKENDS": "decode",
    "VideoError": "decode",
    "VideoInfo": "decode",
    "count_frames": "decode",
    "iter_frames": "decode",
    "read_frames": "decode",
    "video_info": "decode",
    "build_loader": "loader",
    "Preprocessing": "preprocess",
    "collate_clips": "loader",
    "VideoDataset": "video_dataset",
    "build_dataset": "video_dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'istpan.data' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"istpan.data.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
