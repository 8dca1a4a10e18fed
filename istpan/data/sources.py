"""Live frame sources: a file played as a stream, a webcam, an RTSP/HTTP URL, or an encoded stream on stdin.

    with open_source("rtsp://cam/stream", sample_fps=8) as source:
        for time_s, frame in source:          # stream time (s from the first frame), uint8 (H, W, 3)
            ...

Where `decode.py` reads a file of known length frame-exactly, a source has no length and may never end; what matters
is that it never hangs and never dies on one bad packet:

- a network source (URL) that connects but stops sending, or never answers, ends after `timeout_s` seconds of
  silence (PyAV's `timeout=` option on open and on every read) with a `SourceError` saying so;
- stdin (`-`) is read through a guard that waits at most `timeout_s` for each chunk (`select`), for the same reason;
- a packet that fails to decode is logged and skipped (the next keyframe resynchronises the decoder), not fatal;
- frames may change size mid-stream (a camera switching resolution, a concatenated stream): each frame is converted
  on its own, and the change is logged once per change; the preprocessing that follows resizes and crops per frame.

`sample_fps` keeps only frames at least 1 / sample_fps seconds of stream time apart (the first frame always), and only
those are converted to RGB: converting every frame of a 30 fps camera to feed 8 frames/s is wasted work. Every frame
is still decoded (codecs need it). A file source is read as fast as it decodes, not paced to real time; its times
are the file's timestamps, so decisions are the same on every run.
"""

from __future__ import annotations

import logging
import os
import select
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import av
import torch

from istpan.data._backends import VideoError, check_file
from istpan.data.pyav_source import mp4_index_problem, rgb_array

__all__ = ["SourceError", "VideoSource", "open_source", "source_kind"]

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 10.0
# Live sources start after 1 s of stream instead of FFmpeg's default 5 s of probing (what ffplay's low-latency
# settings do): a live stream has no end to probe towards, and the first decision should not wait for it.
_LIVE_PROBE = {"analyzeduration": "1000000", "probesize": "500000"}
_URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class SourceError(VideoError):
    """A live source failed: cannot be opened, stalled, disconnected. str(err) = "<source>: <what is wrong>"."""


def source_kind(spec: str) -> str:
    """"stdin" for "-", "camera" for /dev/videoN, "url" for a network address, else "file"."""
    if spec == "-":
        return "stdin"
    if spec.startswith("/dev/video"):
        return "camera"
    if spec.lower().startswith(_URL_SCHEMES):
        return "url"
    return "file"


class _Interrupted(Exception):
    """Ctrl-C while PyAV waited for stdin: PyAV drops a KeyboardInterrupt raised in its read callback (it is not an
    Exception), so the guard hands it over as this and `VideoSource` raises KeyboardInterrupt again."""


class _StdinGuard:
    """File object PyAV reads stdin through: waits at most `timeout_s` for each chunk instead of blocking forever.

    An exception raised here surfaces from PyAV's open/demux call that asked for the data (verified with PyAV 18).
    """

    def __init__(self, stream: BinaryIO, timeout_s: float) -> None:
        self.stream, self.fd, self.timeout_s = stream, stream.fileno(), timeout_s  # keep the file object alive

    def read(self, size: int) -> bytes:
        try:
            ready, _, _ = select.select([self.fd], [], [], self.timeout_s)
        except KeyboardInterrupt as err:
            raise _Interrupted() from err
        if not ready:
            raise SourceError("-", f"no data on stdin for {self.timeout_s:g} s (stalled or disconnected)")
        return os.read(self.fd, size)


class VideoSource:
    """Iterate (stream time in seconds, uint8 frame (H, W, 3)); see the module doc. Use as a context manager."""

    def __init__(self, spec: str, *, sample_fps: float | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 short_side: int | None = None, stdin: BinaryIO | None = None) -> None:
        if sample_fps is not None and not sample_fps > 0:
            raise SourceError(spec, f"sampling rate must be > 0 frames/s, got {sample_fps}")
        self.spec, self.kind = spec, source_kind(spec)
        self.sample_fps, self.timeout_s, self.short_side = sample_fps, timeout_s, short_side
        self.decode_errors = 0  # packets skipped because they did not decode
        self.frames_decoded = 0
        self._container = self._open(stdin)
        if not self._container.streams.video:
            self.close()
            raise SourceError(spec, self._index_problem() or "no video stream in this source")
        self._stream = self._container.streams.video[0]
        self.fps = float(self._stream.average_rate or self._stream.guessed_rate or 0.0)  # 0.0: unknown

    def _open(self, stdin: BinaryIO | None) -> Any:
        kwargs: dict[str, Any] = {}
        target: Any = self.spec
        if self.kind == "file":
            check_file(Path(self.spec))  # "file not found" / "empty file" before any decoder sees it
        elif self.kind == "stdin":
            target = _StdinGuard(stdin or sys.stdin.buffer, self.timeout_s)
            kwargs = dict(options=_LIVE_PROBE)
        elif self.kind == "camera":
            kwargs = dict(format="v4l2", timeout=self.timeout_s)
        else:
            kwargs = dict(timeout=(self.timeout_s, self.timeout_s), options=dict(_LIVE_PROBE))
            if self.spec.lower().startswith("rtsp"):
                kwargs["options"]["rtsp_transport"] = "tcp"  # UDP drops packets silently behind NAT/firewalls
        try:
            return av.open(target, mode="r", **kwargs)
        except _Interrupted:
            raise KeyboardInterrupt from None
        except SourceError:
            raise
        except av.error.ExitError as err:
            raise SourceError(self.spec, f"no answer within {self.timeout_s:g} s ({err.strerror})") from err
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
            reason = f"cannot open as a video stream ({getattr(err, 'strerror', None) or err})"
            raise SourceError(self.spec, self._index_problem() or reason) from err

    def _index_problem(self) -> str | None:
        """For a file, what decode.py says of an MP4 cut off before its index (FFmpeg only says "invalid data")."""
        return mp4_index_problem(Path(self.spec)) if self.kind == "file" else None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()

    def _frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in order; a packet that fails to decode is logged and skipped."""
        try:
            for packet in self._container.demux(self._stream):
                try:
                    yield from packet.decode()
                except av.error.FFmpegError as err:
                    self.decode_errors += 1
                    log.warning("%s: skipped a packet that does not decode (%s)", self.spec, err.strerror or err)
        except _Interrupted:
            raise KeyboardInterrupt from None
        except SourceError:
            raise
        except av.error.ExitError as err:  # PyAV's read timeout
            raise SourceError(self.spec, f"no data for {self.timeout_s:g} s (stalled or disconnected)") from err
        except (av.error.FFmpegError, OSError) as err:
            if self.kind == "file":  # a truncated file: what decoded before is all there is, as in decode.py
                log.warning("%s: stream ends early (%s)", self.spec, getattr(err, "strerror", None) or err)
                return
            raise SourceError(self.spec, f"stream broke off ({getattr(err, 'strerror', None) or err})") from err

    def __iter__(self) -> Iterator[tuple[float, torch.Tensor]]:
        if self._container is None:
            raise SourceError(self.spec, "source is closed")
        step = 1.0 / (self.fps or 25.0)
        offset: float | None = None  # stream time = timestamp + offset: starts at 0, never goes back
        last = -step
        next_due = 0.0
        size: tuple[int, int] | None = None
        for i, frame in enumerate(self._frames()):
            self.frames_decoded += 1
            raw = float(frame.time) if frame.time is not None else i * step
            if offset is None or raw + offset <= last:  # first frame, or timestamps restarted (concatenated stream)
                offset = last + step - raw
            t = last = raw + offset
            if self.sample_fps is not None:
                if t + 1e-9 < next_due:
                    continue
                next_due = max(next_due + 1.0 / self.sample_fps, t)  # no burst after a gap in the stream
            if size is not None and (frame.height, frame.width) != size:
                log.warning("%s: frame size changed from %dx%d to %dx%d at %.2f s; each frame is resized to the "
                            "model's input on its own", self.spec, size[1], size[0], frame.width, frame.height, t)
            size = (frame.height, frame.width)
            yield t, torch.from_numpy(rgb_array(frame, self.short_side))  # (H, W, 3) uint8
        if self.frames_decoded == 0:  # ended (or was empty) before one frame: an error, never a silent success
            raise SourceError(self.spec, "no frame could be decoded (the stream ended before its first frame)")


def open_source(spec: str | Path, *, sample_fps: float | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                short_side: int | None = None) -> VideoSource:
    """A `VideoSource` for a file path, `/dev/videoN`, a URL (rtsp/http/...), or "-" (stdin)."""
    return VideoSource(str(spec), sample_fps=sample_fps, timeout_s=timeout_s, short_side=short_side)
