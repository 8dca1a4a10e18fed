"""Frame-exact video decoding: read only the frames a sampler asked for, and nothing else.

Frame `i` always means "the i-th frame a full sequential decode outputs" (display order), never a timestamp guess or
the container's claimed count: AVIs with packed B-frames (UCF101, HMDB51) have unreliable timestamps and HMDB51
containers claim one frame more than decodes. So the PyAV backend decodes sequentially, converts to RGB (and resizes)
only the wanted frames, and stops after the last one; converting every frame is what makes naive loaders slow.

It seeks only where that is proven exact: H.264/HEVC in MP4/MOV/MKV after `count_frames` has decoded the whole file
once without error and recorded the timestamp of every output frame (so a frame's timestamp maps to its sequential
index) and the file's keyframes. After a seek the first output frame must be a keyframe and the following ones must be
in increasing recorded order with no wanted frame missing, otherwise the read falls back to a sequential decode (and
never seeks that file again). Decoding from an H.264 keyframe (IDR) gives bit-identical frames because it resets all
references. In that same case unwanted non-reference frames (most B-frames) are not decoded at all (`skip_frame`),
which is exact by construction: no other frame depends on them.

The index of a file (frame count, timestamps, keyframes) is kept per process and, when a persistent index is active
(`istpan.data.index`, one SQLite file beside the dataset), read from and written to it, so the full-decode scan runs
once per video version instead of once per worker and run. `EncodedVideo` (a video's encoded bytes, e.g. from a
WebDataset shard, with the index entry stored next to them) decodes exactly like the file it came from.

Backends: "pyav" (default), "opencv" (optional, imported lazily) and "frames" (a folder of `img_00001.jpg`, ...: the
TSN/MMAction2 extracted-frames layout).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from istpan.data import _backends
from istpan.data import index as video_index
from istpan.data._backends import VideoError, resized_size
from istpan.data.pyav_source import (
    SAFE_DEMUXERS,
    EncodedVideo,
    open_video,
    packets,
    quarter_turns,
    rgb_array,
    source_of,
)

__all__ = [
    "BACKENDS",
    "SAFE_DEMUXERS",
    "EncodedVideo",
    "VideoError",
    "VideoInfo",
    "count_frames",
    "decode_errors",
    "index_entry",
    "iter_frames",
    "read_frames",
    "video_info",
]

BACKENDS = ("pyav", "opencv", "frames")
_SEEKABLE_CODECS = {"h264", "hevc"}
_SEEKABLE_FORMATS = ("mov", "mp4", "m4a", "matroska")  # containers that store real presentation timestamps
_CACHE_SIZE = 2048  # full indexes kept per process (a few KB each); plain frame counts are kept for every file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What the container claims (cheap: no decoding). `claimed_frames` may be wrong; use `count_frames` for truth."""

    fps: float  # 0.0 when unknown (a folder of frames)
    width: int  # as decoded frames come out: upright, i.e. after the display rotation (phone videos)
    height: int
    claimed_frames: int
    duration_s: float
    rotation: int = 0  # degrees counter-clockwise the stored pictures are turned by to show them upright (0, 90, ...)


@dataclass(frozen=True)
class _Index:
    """Result of one full decode without RGB conversion: the truth about a file, cached per (path, size, mtime)."""

    num_frames: int
    pts: np.ndarray  # int64 (num_frames,) presentation timestamp of every output frame, in output order
    keyframes: tuple[int, ...]  # sorted pts of keyframe packets
    seekable: bool
    errors: tuple[str, ...] = ()  # packets that failed to decode (a damaged or truncated file)


_index_cache: OrderedDict[tuple, _Index] = OrderedDict()
_counts: dict[tuple, int] = {}  # (path, size, mtime) -> frames that decode; survives eviction from _index_cache


def _cache_key(path: Path | EncodedVideo) -> tuple:
    if isinstance(path, EncodedVideo):
        return ("bytes", path.name, len(path.data))
    st = path.stat()
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend '{backend}' (choose from {', '.join(BACKENDS)})")


# ------------------------------------------------------- PyAV: the index (one full decode), then the wanted frames
def _decoded(container, stream, errors: list[str] | None = None) -> Iterator[av.VideoFrame]:
    """Every frame the decoder outputs, in order. A packet that fails to decode is skipped (as ffmpeg does), so a
    file with one damaged packet still yields its other frames; `errors` collects what went wrong."""
    errors = [] if errors is None else errors
    for packet in packets(container, stream, errors):
        try:
            yield from packet.decode()
        except av.error.FFmpegError as err:
            errors.append(str(err))


def _scan(path: Path) -> _Index:
    container, stream = open_video(path)
    with container:
        keyframes: list[int] = []
        nonempty_packets = 0
        # Decode without converting: cheap compared to RGB conversion, and the only honest frame count.
        errors: list[str] = []
        pts: list[int | None] = []
        for packet in packets(container, stream, errors):
            if packet.size:
                nonempty_packets += 1
                if packet.is_keyframe and packet.pts is not None:
                    keyframes.append(packet.pts)
            try:
                pts.extend(frame.pts for frame in packet.decode())
            except av.error.FFmpegError as err:
                errors.append(str(err))
        fmt = container.format.name
        codec = stream.codec_context.name
    exact_pts = all(p is not None for p in pts) and all(a < b for a, b in itertools.pairwise(pts))
    seekable = (
        codec in _SEEKABLE_CODECS
        and any(name in fmt.split(",") for name in _SEEKABLE_FORMATS)
        and not errors
        and exact_pts
        and len(pts) == nonempty_packets
    )
    if errors:
        log.debug("%s: %d packets failed to decode (first: %s)", path, len(errors), errors[0])
    clean_pts = np.array(pts if exact_pts else [], dtype=np.int64)
    return _Index(len(pts), clean_pts, tuple(sorted(keyframes)), seekable, tuple(errors))


def _index(path: Path | EncodedVideo, *, scan: bool) -> _Index | None:
    """The cached index of this file version: this process's memory, else the persistent index, else (scan=True)
    one full decode, which is then stored in both."""
    if isinstance(path, EncodedVideo):  # the entry travels with the bytes: nothing to cache or store
        if path.index is not None:
            return _from_entry(path.index)
        return _scan(path) if scan else None
    _backends.check_file(path)
    key = _cache_key(path)
    if key in _index_cache:
        _index_cache.move_to_end(key)
        return _index_cache[key]
    if (stored := video_index.lookup(*key)) is not None:
        index = _from_entry(stored)
    elif not scan:
        return None
    else:
        index = _scan(path)
        video_index.store(*key, dataclasses.asdict(index))
    _index_cache[key] = index
    if video_index.active() is None:  # with a persistent index an evicted entry is looked up there: no dict that
        _counts[key] = index.num_frames  # grows with every video a long-lived worker ever reads
    if len(_index_cache) > _CACHE_SIZE:
        _index_cache.popitem(last=False)
    return index


def _from_entry(entry: dict) -> _Index:
    return _Index(int(entry["num_frames"]), np.asarray(entry["pts"], dtype=np.int64),
                  tuple(int(k) for k in entry["keyframes"]), bool(entry["seekable"]), tuple(entry.get("errors", ())))


class _NotExact(Exception):
    """A seek did not land where the recorded index says it must: read sequentially instead."""


def _read_sequential(path: Path, wanted: list[int], short_side: int | None) -> dict[int, np.ndarray]:
    want, last, out = set(wanted), wanted[-1], {}
    container, stream = open_video(path)
    with container:
        i = -1
        for i, frame in enumerate(_decoded(container, stream)):
            if i in want:
                out[i] = rgb_array(frame, short_side)
            if i >= last:
                return out
    raise VideoError(path, f"frame {last} requested but only {i + 1} frames decode")


def _decoded_sparse(container, stream, keep_pts: set[int]) -> Iterator[av.VideoFrame]:
    """Like `_decoded`, but packets of unwanted frames are decoded with skip_frame=NONREF: FFmpeg then drops them
    only if no other frame references them (H.264/HEVC non-reference pictures), so every frame that is decoded is
    bit-identical to a full decode. Only used where timestamps map frames to indices (the seekable case)."""
    ctx = stream.codec_context
    try:
        for packet in container.demux(stream):
            ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in keep_pts else "NONREF"
            yield from packet.decode()
    except av.error.FFmpegError as err:  # this file decoded cleanly in `count_frames`: something changed
        raise _NotExact from err
    finally:
        ctx.skip_frame = "DEFAULT"


def _read_seeking(path: Path, index: _Index, wanted: list[int], short_side: int | None) -> dict[int, np.ndarray]:
    pts = index.pts.tolist()
    position = {p: i for i, p in enumerate(pts)}
    want, out = set(wanted), {}
    keep_pts = {pts[i] for i in wanted}
    container, stream = open_video(path)
    with container:
        frames, current = None, -1  # `current`: index of the last frame the decoder gave us
        for target in wanted:
            if target <= current:
                continue
            k = bisect.bisect_right(index.keyframes, pts[target]) - 1
            key_pts = index.keyframes[max(k, 0)]
            if frames is None or position.get(key_pts, -1) > current + 1:
                if frames is not None or position.get(key_pts, 0) > 0:
                    container.seek(key_pts, stream=stream, backward=True, any_frame=False)
                frames, started = _decoded_sparse(container, stream, keep_pts), False
            for frame in frames:
                i = position.get(frame.pts)
                if i is None:
                    raise _NotExact
                if not started:
                    if not frame.key_frame:
                        continue  # a leading frame of an open GOP: not decodable from here, and not wanted
                    if i > target:
                        raise _NotExact
                    started = True
                elif i <= current or any(j in want for j in range(current + 1, i)):
                    raise _NotExact  # out of order, or a wanted frame went missing
                current = i
                if i in want:
                    out[i] = rgb_array(frame, short_side)
                if i >= target:
                    break
            if current < target:
                raise _NotExact
    return out


def _read_pyav(path: Path | EncodedVideo, wanted: list[int], short_side: int | None) -> dict[int, np.ndarray]:
    index = _index(path, scan=False)
    known = index.num_frames if index is not None else _counts.get(_cache_key(path))
    if known is not None and wanted[-1] >= known:
        raise VideoError(path, f"frame {wanted[-1]} requested but only {known} frames decode")
    if index is not None and index.seekable:
        try:
            return _read_seeking(path, index, wanted, short_side)
        except _NotExact:
            log.debug("%s: seek was not frame-exact, decoding sequentially from now on", path)
            if not isinstance(path, EncodedVideo):
                _index_cache[_cache_key(path)] = dataclasses.replace(index, seekable=False)
    return _read_sequential(path, wanted, short_side)


# ---------------------------------------------------------------------------------------------------- public API
def decode_errors(path: str | Path) -> list[str]:
    """Why packets of this file failed to decode during `count_frames` (PyAV backend; [] for a clean file)."""
    return list(_index(source_of(path), scan=True).errors)


def index_entry(path: str | Path) -> dict:
    """The index entry of a file (scanned once, or from the persistent index): what `EncodedVideo(index=...)` and
    `istpan.data.index` store. Keys: num_frames, pts, keyframes, seekable, errors."""
    return dataclasses.asdict(_index(source_of(path), scan=True))


def count_frames(path: str | Path, *, backend: str = "pyav") -> int:
    """Number of frames that really decode (may be fewer than the container claims). Cached per file version."""
    _check_backend(backend)
    path = source_of(path)
    if backend == "frames":
        return len(_backends.frame_files(path))
    if backend == "opencv":
        return _backends.opencv_count(path)
    if not isinstance(path, EncodedVideo):
        _backends.check_file(path)
    known = _counts.get(_cache_key(path))
    return known if known is not None else _index(path, scan=True).num_frames


def read_frames(
    path: str | Path, indices: Sequence[int] | torch.Tensor, *, backend: str = "pyav", short_side: int | None = None
) -> torch.Tensor:
    """The frames at `indices` (any order, repeats allowed) as uint8 (n, H, W, 3), bit-identical to a full sequential
    decode at those indices. Frames are resized to `short_side` while decoding. Negative indices are a caller bug
    (ValueError); an index past the last decodable frame raises VideoError."""
    _check_backend(backend)
    path = source_of(path)
    idx = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if any(i < 0 for i in idx):
        raise ValueError(f"{path}: frame indices must be >= 0, got {min(idx)}")
    if not idx:
        h, w = _empty_size(path, backend, short_side)
        return torch.empty((0, h, w, 3), dtype=torch.uint8)
    wanted = sorted(set(idx))
    if backend == "frames":
        got = _backends.frames_read(path, wanted, short_side)
    elif backend == "opencv":
        got = _backends.opencv_read(path, wanted, short_side)
    else:
        got = _read_pyav(path, wanted, short_side)
    return torch.from_numpy(np.stack([got[i] for i in idx]))  # (n, H, W, 3)


def iter_frames(
    path: str | Path, *, short_side: int | None = None, step: int = 1, backend: str = "pyav"
) -> Iterator[tuple[int, torch.Tensor]]:
    """Stream (index, uint8 (H, W, 3)) for every `step`-th frame. Memory stays flat however long the video is: one
    decoded frame at a time, only the yielded ones converted to RGB."""
    _check_backend(backend)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    path = source_of(path)
    if backend != "pyav":
        yield from _backends.iter_other(path, backend, short_side, step)
        return
    container, stream = open_video(path)
    with container:
        for i, frame in enumerate(_decoded(container, stream)):
            if i % step == 0:
                yield i, torch.from_numpy(rgb_array(frame, short_side))


def video_info(path: str | Path, *, backend: str = "pyav") -> VideoInfo:
    """Container metadata, with width and height of the frames decoding returns (upright). For a folder of frames fps
    is 0.0 (unknown) and duration 0.0.

    Decodes the first frame (no conversion): PyAV exposes a stream's display matrix only on decoded frames, and a
    rotated phone video stores 1920x1080 pictures that every backend returns as 1080x1920."""
    _check_backend(backend)
    path = source_of(path)
    if backend == "frames":
        files = _backends.frame_files(path)
        h, w = _backends.frames_read(path, [0], None)[0].shape[:2] if files else (0, 0)
        return VideoInfo(0.0, w, h, len(files), 0.0)
    container, stream = open_video(path)
    with container:
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        claimed = stream.frames or round(duration * fps)
        width, height = stream.codec_context.width, stream.codec_context.height
        first = next(_decoded(container, stream), None)
        turns = quarter_turns(first) if first is not None else 0
        if turns % 2:
            width, height = height, width
        return VideoInfo(fps, width, height, int(claimed), duration, rotation=90 * turns)


def _empty_size(path: Path, backend: str, short_side: int | None) -> tuple[int, int]:
    info = video_info(path, backend="frames" if backend == "frames" else "pyav")
    return resized_size(info.height, info.width, short_side) if short_side else (info.height, info.width)
