"""Prediction on video files with a trained checkpoint: class names and scores per video, any length, any K.

The checkpoint's meta says how frames must be prepared (sampling, short side, crop size, mean/std, K), so a checkpoint
is usable without its config or dataset. Frames are chosen and transformed by the data pipeline's own test-time
functions (`sample_indices` with the centre offset, `test_transform` with one centre crop): exactly what `istpan
eval` feeds the model for a 1x1 view. With segment sampling that is the centre of K equal segments over the whole
video (TSN's test protocol), which covers untrimmed videos of any length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.data.decode import VideoError, count_frames, read_frames
from istpan.data.sampling import sample_indices
from istpan.data.transforms import test_transform
from istpan.engine.evaluate import video_scores

__all__ = ["load_clip", "predict_videos"]


def load_clip(path: str | Path, meta: dict[str, Any], *, num_segments: int | None = None) -> tuple[torch.Tensor, int]:
    """Decode and preprocess one video as the checkpoint expects: float (K, 3, S, S) and the video's frame count.

    Raises VideoError (a UserError) naming the file when it cannot be read.
    """
    pre = meta["preprocessing"]
    k = int(num_segments or pre["num_segments"])
    n = count_frames(path)
    if n <= 0:
        raise VideoError(path, "no frame could be decoded")
    method = pre.get("sampling", "segment")
    length = int(pre.get("clip_len", k)) if method == "dense" and num_segments is None else k
    indices = sample_indices(n, method=method, length=length, stride=int(pre.get("frame_stride", 1)))  # (K,)
    frames = read_frames(path, indices, short_side=int(pre["short_side"]))  # (K, H, W, 3) uint8; repeats read once
    transform = test_transform(input_size=int(pre["input_size"]), resize=pre.get("resize"), mean=pre["mean"],
                               std=pre["std"], crops=1)
    return transform(frames.permute(0, 3, 1, 2)), n  # (K, 3, S, S)


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
