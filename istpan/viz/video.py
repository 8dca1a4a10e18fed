"""A video of the input with the model's attention overlaid, encoded with PyAV while the input is decoded.

The model only sees K sampled frames, so attention exists at K time points. Every frame in between gets the heat
linearly interpolated in time between its two neighbouring samples (held constant before the first and after the last
sample): the overlay glides instead of jumping, and each sampled frame shows exactly the model's attention.

Frames go in as an iterator and are encoded one at a time, so writing the video of a long input never holds more
than one frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from istpan.viz.overlay import overlay_heatmap

__all__ = ["heat_at", "write_attention_video", "write_video"]

# Browsers play H.264 in MP4 and animated GIF everywhere; the suffix of the output path picks which.
_CODECS = {".mp4": ("libx264", "yuv420p"), ".gif": ("gif", "rgb8")}


def heat_at(heat: torch.Tensor | np.ndarray, sample_indices: Sequence[int], t: int | float) -> np.ndarray:
    """Heat (h, w) at frame index t, linear in time between the sampled frames of heat (K, h, w)."""
    heat = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    idx = np.asarray(sample_indices, dtype=np.float64)  # (K,) increasing
    if t <= idx[0]:
        return heat[0]
    if t >= idx[-1]:
        return heat[-1]
    hi = int(np.searchsorted(idx, t, side="right"))  # idx[hi - 1] <= t < idx[hi]
    lo = hi - 1
    w = (t - idx[lo]) / (idx[hi] - idx[lo])
    return (1.0 - w) * heat[lo] + w * heat[hi]


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: float) -> Path:
    """Encode uint8 frames (H, W, 3), streamed, into `path` (.mp4: H.264, .gif: animated GIF).

    H.264 in yuv420p needs even sizes, so an odd last row/column is dropped.
    """
    path = Path(path)
    try:
        codec, pix_fmt = _CODECS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: unsupported video suffix; use one of {sorted(_CODECS)}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    # +faststart is a muxer (container) option: it moves the index (moov) before the data so a browser starts playing
    # before the download ends. Given as an encoder option, FFmpeg ignores it.
    container_options = {"movflags": "+faststart"} if codec == "libx264" else {}
    with av.open(str(path), mode="w", container_options=container_options) as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                if codec == "libx264":
                    h, w = h - h % 2, w - w % 2
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
                if codec == "libx264":
                    stream.options = {"crf": "23", "preset": "veryfast"}
            image = np.ascontiguousarray(frame[: stream.height, : stream.width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_attention_video(path: str | Path, frames: Iterable[tuple[int, np.ndarray]],
                          heat: torch.Tensor | np.ndarray, sample_indices: Sequence[int], *, fps: float,
                          alpha: float = 0.5, cmap: str = "jet") -> Path:
    """Write the frames (index, uint8 (H, W, 3)) with heat (K, h, w) at `sample_indices` overlaid, to `path`.

    The frames must show what the model saw (same resize and crop), otherwise the heat lands in the wrong place.
    One colour scale for the whole video (the min and max of `heat`), as in the frame grid.
    """
    heat = heat.detach().cpu().float().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat, np.float32)
    vmin, vmax = float(heat.min()), float(heat.max())

    def overlaid() -> Iterable[np.ndarray]:
        for t, frame in frames:
            frame = frame.numpy() if isinstance(frame, torch.Tensor) else frame
            h_t = heat_at(heat, sample_indices, t)[None]  # (1, h, w)
            yield overlay_heatmap(frame[None], h_t, alpha=alpha, cmap=cmap, vmin=vmin, vmax=vmax)[0]

    return write_video(path, overlaid(), fps=fps)
