"""Tiny real video files for tests, written with PyAV (the PyTorchVideo `tests/utils.py` habit).

Why real files and not mocks: the bugs that matter in a video pipeline (B-frames, frame counts the container gets
wrong, codecs that need even sizes) only exist in real encoded streams. A 16-frame 64x64 H.264 file takes a few
milliseconds to write.

    from videos import make_video      # pytest puts tests/ on sys.path (no tests/__init__.py)
    path = make_video(tmp_path / "a.mp4")                       # 16 frames, 64x64, 25 fps, H.264
    path = make_video(tmp_path / "b.avi", codec="mpeg4")        # MPEG-4 part 2 in AVI, like UCF101/HMDB51
    path = make_video(tmp_path / "c.mp4", frames)               # your own uint8 (T, H, W, 3) frames
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch

__all__ = ["make_frames", "make_video"]


def make_frames(num_frames: int = 16, size: tuple[int, int] = (64, 64), *, seed: int = 0) -> np.ndarray:
    """Distinct, codec-friendly frames: uint8 (T, H, W, 3).

    Each frame is a smooth colour gradient whose brightness encodes the frame index plus a bright square that moves
    one step per frame, so frames stay distinguishable after lossy compression (tests can tell frame 3 from 4) while
    compressing well (tiny files, fast tests).
    """
    h, w = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")  # (H, W)
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    side = max(4, min(h, w) // 4)
    for t in range(num_frames):
        level = (t * 211) % 200  # well-separated brightness per frame
        for c in range(3):
            frames[t, :, :, c] = (base[c] + level + (xx * 64) // max(w, 1) + (yy * 32) // max(h, 1) * c) % 256
        y0 = (t * 3) % max(h - side, 1)
        x0 = (t * 5) % max(w - side, 1)
        frames[t, y0 : y0 + side, x0 : x0 + side] = 255
    return frames


def make_video(
    path: str | Path,
    frames: np.ndarray | torch.Tensor | None = None,
    *,
    num_frames: int = 16,
    size: tuple[int, int] = (64, 64),
    fps: int = 25,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    rotation: int = 0,
    pix_fmt: str | None = None,
    pts: list[int] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 frames (T, H, W, 3) into a real video file at `path` and return the path.

    `size` is (height, width) and is used only when `frames` is None. The container comes from the file suffix
    (.mp4, .avi, .mkv, ...). `options` go to the encoder, e.g. {"bf": "2"} for B-frames with mpeg4 or
    {"g": "4"} for a keyframe every 4 frames with libx264. `rotation` (degrees counter-clockwise) writes a display
    matrix, as a phone held upright does: players (and our decoders) turn the stored frames by it. `pix_fmt`
    overrides the pixel format (e.g. yuv444p for odd sizes), `pts` gives each frame's timestamp in ms (variable frame
    rate), `container_options` go to the muxer (e.g. {"movflags": "faststart"}: the index first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames is None:
        frames = make_frames(num_frames, size)
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got shape {frames.shape}")
    _, h, w, _ = frames.shape
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = w, h
        stream.pix_fmt = pix_fmt or ("yuvj420p" if codec == "mjpeg" else "yuv420p")
        if pts is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        opts = {"crf": "18", "preset": "ultrafast"} if codec == "libx264" else {}
        opts.update(options or {})
        stream.options = opts
        if rotation:
            stream.set_display_rotation(rotation)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def fed_pipe(data: bytes, *, hold_open: threading.Event | None = None,
             written: threading.Event | None = None) -> BinaryIO:
    """A readable file object fed `data` by a thread, like `cat clip.ts | istpan ...`. With `hold_open` the pipe stays
    open after the data (a live source that stalls) until the test sets the event, at most 120 s: a product that
    waits for the end of the stream instead of timing out then sees one and fails its test rather than hanging it.
    `written` is set once all of `data` is in the pipe."""
    r, w = os.pipe()

    def feed() -> None:
        view = memoryview(data)
        while view:  # a signal may cut a write short
            view = view[os.write(w, view):]
        if written is not None:
            written.set()
        if hold_open is not None:
            hold_open.wait(120)
        os.close(w)

    threading.Thread(target=feed, daemon=True).start()
    return os.fdopen(r, "rb")
