"""Prediction on video files with a trained checkpoint: class names and scores per video, any length, any K.

The checkpoint's meta says how frames must be prepared (short side, crop size, mean/std, K), so a checkpoint is
usable without its config or dataset. Test-time sampling is the deterministic centre of K equal segments over the
whole video, which is TSN's test protocol and covers untrimmed videos of any length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from istpan.data.decode import VideoError, count_frames, read_frames
from istpan.engine.evaluate import video_scores

__all__ = ["load_clip", "predict_videos", "segment_centres"]


def segment_centres(num_frames: int, num_segments: int) -> torch.Tensor:
    """(K,) long: the centre frame of each of K equal segments (repeats frames when the video has fewer than K)."""
    k = torch.arange(num_segments, dtype=torch.float64)
    return ((k + 0.5) * num_frames / num_segments).floor().long().clamp(0, num_frames - 1)


def load_clip(path: str | Path, meta: dict[str, Any], *, num_segments: int | None = None) -> tuple[torch.Tensor, int]:
    """Decode and preprocess one video as the checkpoint expects: float (K, 3, S, S) and the video's frame count.

    Raises VideoError (a UserError) naming the file when it cannot be read.
    """
    pre = meta["preprocessing"]
    k = int(num_segments or pre["num_segments"])
    n = count_frames(path)
    if n <= 0:
        raise VideoError(f"{path}: no frame could be decoded")
    indices = segment_centres(n, k)  # (K,)
    unique, inverse = torch.unique(indices, return_inverse=True)  # read each frame once, in order
    frames = read_frames(path, unique.tolist(), short_side=int(pre["short_side"]))[inverse]  # (K, H, W, 3) uint8
    video = frames.permute(0, 3, 1, 2)  # (K, 3, H, W)
    size = int(pre["input_size"])
    if min(video.shape[-2:]) < size:  # small videos: upscale so that the centre crop fits
        video = TF.resize(video, size, antialias=True)
    video = TF.center_crop(video, [size, size])
    video = TF.to_dtype(video, torch.float32, scale=True)  # [0, 1]
    return TF.normalize(video, mean=pre["mean"], std=pre["std"]), n  # (K, 3, S, S)


@torch.no_grad()
def predict_videos(
    model: nn.Module,
    meta: dict[str, Any],
    paths: list[str | Path],
    *,
    topk: int = 5,
    num_segments: int | None = None,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """One result per path, in order: {"path", "frames", "num_segments", "top": [{"class", "index", "score"}], ...}.

    A video that cannot be read gives {"path", "error"} instead of stopping the others.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    names = meta["class_names"]
    topk = max(1, min(topk, len(names)))
    results = []
    for path in paths:
        try:
            video, n = load_clip(path, meta, num_segments=num_segments)
        except VideoError as err:
            results.append({"path": str(path), "error": str(err)})
            continue
        _, probs = video_scores(model, video.unsqueeze(0).to(device))  # (1, C)
        scores, idx = probs[0].topk(topk)
        results.append({
            "path": str(path),
            "frames": n,
            "num_segments": video.shape[0],
            "multi_label": bool(meta.get("multi_label", False)),
            "top": [{"class": names[i], "index": int(i), "score": float(s)} for s, i in zip(scores, idx.tolist())],
        })
    return results
