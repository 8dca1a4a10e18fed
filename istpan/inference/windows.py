"""Untrimmed and long videos: sliding windows of K frames, a score per window, segments where a class stays on.

IST-PAN takes any number of frames, but one K-frame sample of a 10-minute video says little about a 5-second action
in it. So the video is cut into windows (length and stride in frames or seconds), each window is classified from its
K segment-centre frames, and the per-window scores give a video-level score (mean or max) and, per class, the
temporal segments where its score stays above a threshold.

Windows, for a video of T frames, window W and stride S (all in frames):
    [s, s + W) for s = 0, S, 2S, ... while s + W <= T,
    plus [T - W, T) when those stop short of the end (the tail is never skipped),
    or the single window [0, T) when T < W.

`stride` defaults to half the window, derived in frames after the window is converted (never below one frame).

Decoding streams: frames pass through once, the last W cropped frames sit in a ring buffer (the end-aligned window
needs them, and the frame count is only known at the end of the stream), and each window is classified as soon as it
completes. Memory depends on W and the crop size, not on the length or resolution of the video.

Feature cache (the streaming split of the model, istpan/inference/stream.py): overlapping windows share frames, so each
sampled frame goes through the backbone once (`model.frame_features`) and its features are kept while a later window
may still use them; a window is the layer + head over its K frames' cached features (`model.forward_clip`). The
result equals running the model on each window's K frames (to float rounding); the backbone passes per distinct
sampled frame are 1.0 instead of about window / stride. `backbone_frames` and `sampled_frames` in the result say so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.files.description import ModelDescription
from istpan.inference.predict import device_of, probabilities
from istpan.inference.results import error_record, video_result

__all__ = [
    "charades_timepoints",
    "check_window_args",
    "frame_scores",
    "predict_windows",
    "scores_at",
    "segments_from_scores",
    "sliding_window_predict",
    "window_bounds",
]


def window_bounds(video_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The [start, end) frame ranges of the sliding windows over a video of `video_frames` frames (see module doc)."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1 frame, got window={window}, stride={stride}")
    if video_frames <= 0:
        return []
    if video_frames < window:
        return [(0, video_frames)]
    bounds = [(s, s + window) for s in range(0, video_frames - window + 1, stride)]
    if bounds[-1][1] < video_frames:
        bounds.append((video_frames - window, video_frames))
    return bounds


def _cells(centres: Sequence[float], duration: float) -> list[tuple[float, float]]:
    """Each window owns the stretch of time closer to its centre than to any other window's centre."""
    mids = [(a + b) / 2 for a, b in pairwise(centres)]
    return list(zip([0.0, *mids], [*mids, max(duration, centres[-1] if centres else 0.0)]))


def segments_from_scores(centres: Sequence[float], scores: Sequence[float] | torch.Tensor, threshold: float, *,
                         duration: float) -> list[tuple[float, float, float]]:
    """(start_s, end_s, peak score) of each run of consecutive windows whose score is above `threshold`.

    A window stands for its cell on the time axis (see `_cells`), so a run of windows becomes the union of their cells:
    segments tile the video without overlaps even when the windows themselves overlap.
    """
    scores = [float(s) for s in (scores.tolist() if isinstance(scores, torch.Tensor) else scores)]
    cells = _cells(list(centres), duration)
    segments: list[tuple[float, float, float]] = []
    run: list[int] = []
    for i, score in enumerate([*scores, float("-inf")]):  # sentinel closes the last run
        if score > threshold:
            run.append(i)
        elif run:
            segments.append((cells[run[0]][0], cells[run[-1]][1], max(scores[j] for j in run)))
            run = []
    return segments


def scores_at(times: Sequence[float] | torch.Tensor, centres: Sequence[float],
              window_scores: torch.Tensor) -> torch.Tensor:
    """Per-time-point scores (n, C): each time takes the scores of the window whose cell holds it (nearest centre).

    This is what the Charades localisation metric evaluates at its 25 time points per video.
    """
    t = torch.as_tensor(times, dtype=torch.float64)  # (n,)
    c = torch.as_tensor(list(centres), dtype=torch.float64)  # (W,)
    nearest = (t[:, None] - c[None, :]).abs().argmin(1)  # (n,) first of equally near windows
    return window_scores[nearest]


def charades_timepoints(duration: float, n: int = 25) -> torch.Tensor:
    """The n evaluation times (seconds) of the Charades localisation protocol: j / n · duration, j = 0..n-1 (here,
    below both the windows that are scored at them and the metric, `istpan.evaluation.localization`)."""
    return torch.arange(n, dtype=torch.float64) / n * float(duration)


def frame_scores(result: dict[str, Any], n: int = 25) -> torch.Tensor:
    """Scores (n, C) of a `sliding_window_predict` result at the Charades time points j / n · duration."""
    centres = [w["centre_s"] for w in result["windows"]]
    scores = torch.tensor([w["scores"] for w in result["windows"]])  # (W, C)
    return scores_at(charades_timepoints(result["duration_s"], n), centres, scores)


def check_window_args(*, window: float, stride: float | None, unit: str, reduce: str = "mean") -> None:
    """The checks that do not depend on a video (so a CLI can refuse bad arguments before reading any file)."""
    if unit not in ("frames", "seconds"):
        raise UserError(f"unit must be 'frames' or 'seconds', got {unit!r}")
    if reduce not in ("mean", "max"):
        raise UserError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    if not window > 0:
        raise UserError(f"--window must be > 0, got {window:g}")
    if stride is not None and not stride > 0:
        raise UserError(f"--stride must be > 0, got {stride:g}")


def _to_frames(value: float, unit: str, fps: float, what: str, path: Path) -> int:
    if unit == "frames":
        frames = int(value)
    else:
        if fps <= 0:
            raise UserError(f"{path}: frame rate unknown, give --{what} in frames instead of seconds (--unit frames)")
        frames = round(value * fps)
    if frames < 1:
        raise UserError(f"{path}: --{what} {value:g} {unit} is less than one frame; use a larger value")
    return frames


def _windows(path: Path, pre: Preprocessing, window: int, stride: int
             ) -> Iterator[tuple[int, int, list[int], Callable[[int], torch.Tensor]]]:
    """Stream (start, end, frame indices (K,), view_of) for every window, in order, decoding the video once.

    view_of(i) is frame i's uint8 view (s, s, 3); it is valid for the window's frames until the next item.
    """
    from istpan.data import iter_frames

    buffer: deque[torch.Tensor] = deque(maxlen=window)  # the last `window` views (s, s, 3)
    next_start, last_end, t = 0, 0, -1

    def view_of(i: int) -> torch.Tensor:
        return buffer[i - (t + 1 - len(buffer))]  # buffer[0] is frame t + 1 - len(buffer)

    for t, frame in iter_frames(path, short_side=pre.decode_short_side, backend=pre.backend):
        buffer.append(pre.view(frame).clone())  # clone: drop the reference to the full decoded frame
        if t + 1 - window == next_start:  # window [next_start, t + 1) just completed
            yield next_start, t + 1, pre.indices(window, start=next_start), view_of
            last_end, next_start = t + 1, next_start + stride
    total = t + 1
    if total == 0:
        raise UserError(f"{path}: no frame images (.jpg, .jpeg, .png) in this folder" if pre.backend == "frames"
                        else f"{path}: no frame could be decoded; is it a video file?")
    tail = [(0, total)] if total < window else ([(total - window, total)] if last_end < total else [])
    for start, end in tail:  # every frame of the tail window is still in the buffer
        yield start, end, pre.indices(end - start, start=start), view_of


@torch.no_grad()
def _window_scores(model: nn.Module, pre: Preprocessing, path: Path, win: int, step: int, *, batch_size: int,
                   multi_label: bool) -> tuple[list[tuple[int, int]], torch.Tensor, int, set[int]]:
    """Every window's probabilities, each sampled frame through the backbone once: (bounds, scores (windows, C),
    frames through the backbone, distinct frames sampled). A window's new frames are batched; features of frames
    that a later window may reuse are cached, and dropped once every window has moved past them."""
    device = device_of(model)
    model.eval()
    bounds: list[tuple[int, int]] = []
    chunks: list[torch.Tensor] = []
    feats: dict[int, torch.Tensor] = {}  # frame index -> cached features (ΣC_j, h, w) of frames a window may reuse
    backbone_frames, sampled = 0, set()
    for start, end, idx, view_of in _windows(path, pre, win, step):
        bounds.append((start, end))
        sampled.update(idx)
        for i in [i for i in feats if i < start]:  # windows only move forward (the tail window too): never used again
            del feats[i]
        new = sorted(set(idx) - set(feats))
        for i in range(0, len(new), batch_size * pre.num_frames):  # the backbone on this window's new frames only
            part = new[i: i + batch_size * pre.num_frames]
            x = pre.to_input(torch.stack([view_of(j) for j in part])).to(device)  # (n, 3, s, s)
            feats.update(zip(part, model.frame_features(x)))  # n x (ΣC_j, h, w)
            backbone_frames += len(part)
        clip = torch.stack([feats[i] for i in idx])[None]  # (1, K, ΣC_j, h, w)
        chunks.append(probabilities(model.forward_clip(clip).logits, multi_label=multi_label).cpu())  # (1, C)
    return bounds, torch.cat(chunks), backbone_frames, sampled  # scores (num_windows, C)


def _segments(centres: Sequence[float], scores: torch.Tensor, names: Sequence[str], threshold: float,
              duration: float) -> list[dict[str, Any]]:
    """[{class, index, start_s, end_s, peak}] of every class's runs above threshold, sorted by start."""
    segments = []
    for c in range(scores.shape[1]):
        for start_s, end_s, peak in segments_from_scores(centres, scores[:, c], threshold, duration=duration):
            segments.append({"class": names[c], "index": c, "start_s": start_s, "end_s": end_s, "peak": peak})
    segments.sort(key=lambda seg: (seg["start_s"], -seg["peak"]))
    return segments


def sliding_window_predict(model: nn.Module, description: ModelDescription | dict[str, Any], path: str | Path, *,
                           window: float, stride: float | None = None, unit: str = "frames", reduce: str = "mean",
                           threshold: float = 0.5, outdir: str | Path | None = None, batch_size: int = 8, topk: int = 5,
                           num_frames: int | None = None) -> dict[str, Any]:
    """Classify every window of a video; return per-window scores, video-level scores and temporal segments.

    Returns a dict of built-in types: the per-video keys of every mode (path, num_frames = K per window,
    video_frames, multi_label, top = [{class, index, score}] of the video score; istpan/inference/results.py), then
    fps, duration_s, window / stride (frames), reduce, threshold, backbone_frames, sampled_frames,
    windows = [{start, end, start_s, end_s, centre_s, scores: [C]}], scores = [C] (mean or max over windows),
    segments = [{class, index, start_s, end_s, peak}] sorted by start, and
    timelines = {class name: PNG path} (one plot per class in the top-k or with a segment) when `outdir` is given.
    stride None: half the window (in frames, at least 1). num_frames: K frames per window (default: the
    checkpoint's). Raises UserError (VideoError) naming the file.
    """
    from istpan.data import video_info

    path = Path(path)
    check_window_args(window=window, stride=stride, unit=unit, reduce=reduce)
    description = ModelDescription.from_dict(description, model=model)
    pre, names = description.preprocessing.with_frames(num_frames), description.class_names
    info = video_info(path, backend=pre.backend)
    win = _to_frames(window, unit, info.fps, "window", path)
    step = max(1, win // 2) if stride is None else _to_frames(stride, unit, info.fps, "stride", path)
    multi = description.multi_label
    bounds, scores, backbone_frames, sampled = _window_scores(model, pre, path, win, step, batch_size=batch_size,
                                                              multi_label=multi)

    fps = info.fps if info.fps > 0 else 1.0
    total = bounds[-1][1]
    duration = total / fps
    centres = [(s + e) / 2 / fps for s, e in bounds]
    video_scores = scores.mean(0) if reduce == "mean" else scores.amax(0)  # (C,)
    segments = _segments(centres, scores, names, threshold, duration)
    result = video_result(
        path, num_frames=pre.num_frames, video_frames=total, multi_label=multi, probs=video_scores, names=names,
        topk=topk,
        fps=info.fps,
        duration_s=duration,
        window=win,
        stride=step,
        reduce=reduce,
        threshold=threshold,
        backbone_frames=backbone_frames,  # frames through the backbone (each sampled frame once: feature cache)
        sampled_frames=len(sampled),  # distinct frames the windows sample
        windows=[
            {"start": s, "end": e, "start_s": s / fps, "end_s": e / fps, "centre_s": c, "scores": sc}
            for (s, e), c, sc in zip(bounds, centres, scores.tolist())
        ],
        scores=video_scores.tolist(),
        segments=segments,
        timelines={},
    )
    if outdir is not None:
        from istpan.viz.timeline import plot_window_timelines

        result["timelines"] = plot_window_timelines(result, scores, names, Path(outdir))
    return result


def predict_windows(model: nn.Module, description: ModelDescription | dict[str, Any], paths: Sequence[str | Path], *,
                    window: float,
                    stride: float | None = None, unit: str = "seconds", reduce: str = "mean", threshold: float = 0.5,
                    topk: int = 5, num_frames: int | None = None, outdir: str | Path | None = None
                    ) -> list[dict[str, Any]]:
    """`sliding_window_predict` for each path, in order; a video that cannot be read (or is too short for the
    window in seconds, or has no frame rate) gives {"path", "error"} and the others still run.

    With `outdir`, per-class timelines and OUTDIR/index.html (failed videos listed with their reason) are written.
    """
    check_window_args(window=window, stride=stride, unit=unit, reduce=reduce)  # argument errors stop before any file
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            results.append(sliding_window_predict(model, description, path, window=window, stride=stride, unit=unit,
                                                  reduce=reduce, threshold=threshold, outdir=outdir, topk=topk,
                                                  num_frames=num_frames))
        except UserError as err:  # VideoError is a UserError: missing, unreadable, no decodable frame
            results.append(error_record(path, err))
    if outdir is not None:
        from istpan.viz.report import write_report

        write_report(outdir, results)
    return results
