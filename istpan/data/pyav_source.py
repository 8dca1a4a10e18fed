"""A video as PyAV sees it: open a file or encoded bytes (with the checks untrusted media needs), its packets, and a
decoded frame as an upright RGB array. No frame choice here: which frames to decode, and how to get to them exactly,
is decode.py's job (its index, seeks and sequential fallback).

`mp4_index_problem` says why an MP4 does not open (FFmpeg only says "invalid data"): a file cut off before its index.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from istpan.data import _backends
from istpan.data._backends import VideoError, resized_size

__all__ = ["SAFE_DEMUXERS", "EncodedVideo", "mp4_index_problem", "open_video", "packets", "quarter_turns", "rgb_array",
           "source_of"]

# Media is untrusted: FFmpeg probes by content, and a "clip.mp4" that is a concat list or a playlist would make it
# open the files or URLs named inside. Only plain video containers are opened (FFmpeg demuxer names; mov covers
# mp4/m4v/3gp, matroska covers webm), and only through the file protocol; serve/security.py checks uploads
# against the same list.
SAFE_DEMUXERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "mpegts", "mpeg", "flv", "ogg", "asf", "h264",
                 "hevc", "mjpeg")
_OPEN_OPTIONS = {"format_whitelist": ",".join(SAFE_DEMUXERS), "protocol_whitelist": "file"}


@dataclass(frozen=True, eq=False)
class EncodedVideo:
    """A video held as its encoded bytes (a WebDataset sample): decoded from memory, never written to disk.

    `name` is what error messages show ("<shard>:<key> (<original path>)"); `index` is the entry `index_entry` gave
    for the original file, so no scan is needed and seeks stay exact (the bytes are the same)."""

    name: str
    data: bytes
    index: dict | None = None

    def __str__(self) -> str:
        return self.name

    def __fspath__(self) -> str:  # Path(EncodedVideo) would lose the bytes: fail loudly instead
        raise TypeError(f"{self.name}: an EncodedVideo has no file path")


def source_of(path) -> Path | EncodedVideo:
    """A path argument as decode reads it: encoded bytes stay as they are, anything else becomes a Path."""
    return path if isinstance(path, EncodedVideo) else Path(path)


def mp4_index_problem(path: Path | EncodedVideo) -> str | None:
    """Why an MP4/MOV file has no usable index, from its top-level boxes; None when the index is there (or the file
    is not MP4-like). FFmpeg only says "invalid data" or opens such a file with no stream at all, which reads as
    "not a video" when the usual truth is a recording or copy that was cut off before the index was written."""
    try:
        with io.BytesIO(path.data) if isinstance(path, EncodedVideo) else path.open("rb") as fh:
            size_total = fh.seek(0, io.SEEK_END)
            pos, seen_ftyp = 0, False
            while pos + 8 <= size_total:
                fh.seek(pos)
                header = fh.read(16)
                size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if size == 1 and len(header) == 16:
                    size = int.from_bytes(header[8:16], "big")
                elif size == 0:
                    size = size_total - pos
                if pos == 0 and kind != b"ftyp":
                    return None  # not an ISO-BMFF (MP4/MOV) file
                seen_ftyp = True
                if kind == b"moov":
                    complete = pos + size <= size_total
                    return None if complete else "the MP4 index (moov atom) is truncated: the file was cut off"
                if size < 8:
                    break
                pos += size
    except OSError:
        return None
    if not seen_ftyp:
        return None
    return "the MP4 index (moov atom) is missing: the file was cut off or never finalised while being written"


def open_video(path: Path | EncodedVideo) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    if not isinstance(path, EncodedVideo):
        _backends.check_file(path)
    try:
        container = av.open(io.BytesIO(path.data) if isinstance(path, EncodedVideo) else str(path),
                            options=dict(_OPEN_OPTIONS))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        refused = isinstance(err, av.error.ArgumentError)  # the demuxer FFmpeg probed is not a whitelisted one
        reason = mp4_index_problem(path) or ("not a plain video container (playlists and concat lists are refused: "
                                             "they make FFmpeg open other files)" if refused else
                                             f"cannot open as a video ({getattr(err, 'strerror', None) or err})")
        raise VideoError(path, reason) from err
    if not container.streams.video:
        container.close()
        # a cut-off index parses as no stream, or as a stray data stream; a real audio-only MP4 has a whole index
        raise VideoError(path, mp4_index_problem(path) or "no video stream (audio only, or not a video file)")
    return container, container.streams.video[0]


def packets(container, stream, errors: list[str]) -> Iterator[av.Packet]:
    """Demuxed packets until the end or until the demuxer gives up (truncated file: what came before is all)."""
    try:
        yield from container.demux(stream)
    except av.error.FFmpegError as err:
        errors.append(str(err))


def rgb_array(frame: av.VideoFrame, short_side: int | None) -> np.ndarray:
    """uint8 (H, W, 3) as a player shows it: resized by swscale on the way out (no full-resolution copy is kept) and
    turned upright by the stream's rotation (display matrix; phones record portrait video as rotated landscape)."""
    if short_side is None:
        rgb = frame.to_ndarray(format="rgb24")
    else:
        h, w = resized_size(frame.height, frame.width, short_side)  # the short side is the same after rotating
        rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BILINEAR")
    turns = quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def quarter_turns(frame: av.VideoFrame) -> int:
    return round(frame.rotation / 90) % 4  # counter-clockwise, as FFmpeg's display matrix reports it
