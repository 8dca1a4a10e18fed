"""The result schema every prediction mode shares, and the one error record.

Per video (whole video, windows, anytime, explain, `--list`, fused, `Predictor.predict`):

    path          the video file or folder of frames ("input i" for an array given to `Predictor.predict`)
    num_frames    K: frames the model saw (anytime: the frames it used before stopping; windows: per window)
    video_frames  frames that decode in the video (an array: its T)
    multi_label   sigmoid scores (each class on its own) instead of softmax
    top           [{"class", "index", "score"}], best first

A mode adds its own keys beside these (windows: "windows", "segments", ...; anytime: "max_frames"); a decision of a
stream has "num_frames", "multi_label" and "top" with its time instead of a path. A video that cannot be read is
`error_record`: {"path", "error"} (one line saying why), and the others are still predicted. README.md's table lists
every key; CHANGELOG.md the ones that changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["VIDEO_KEYS", "error_record", "top_classes", "video_result"]

VIDEO_KEYS = ("path", "num_frames", "video_frames", "multi_label", "top")  # in every per-video result


def top_classes(scores: torch.Tensor, names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """[{"class", "index", "score"}] for the k best classes of scores (C,), best first."""
    values, indices = scores.topk(max(1, min(k, len(scores))))
    return [{"class": names[i], "index": int(i), "score": float(v)} for v, i in zip(values.tolist(), indices.tolist())]


def video_result(path: str | Path, *, num_frames: int, video_frames: int, multi_label: bool, probs: torch.Tensor,
                 names: Sequence[str], topk: int, **extra: Any) -> dict[str, Any]:
    """One video's result: the shared keys (module docstring), then the mode's own `extra` keys."""
    return {"path": str(path), "num_frames": int(num_frames), "video_frames": int(video_frames),
            "multi_label": bool(multi_label), "top": top_classes(probs, names, topk), **extra}


def error_record(path: str | Path, err: Exception | str) -> dict[str, Any]:
    """A video that could not be predicted: {"path", "error"}, the error's one line."""
    return {"path": str(path), "error": str(err)}
