"""What the server trusts and what it does not: clients (bearer token) and media (containers, stream sources).

- The token is compared in constant time (`hmac.compare_digest`), so response timing says nothing about it.
- Media is untrusted. FFmpeg can open other files or URLs named inside a file (HLS playlists, concat lists, MOV
  external references) and probes by content, so an upload named clip.mp4 may be a playlist. `probe_media` opens a
  file with a demuxer whitelist (plain video containers only) and the `file` protocol only before anything decodes it:
  FFmpeg then refuses a playlist or concat list instead of following it.
- A stream source is a URL of an allowed scheme (rtsp, rtsps, http, https), a V4L2 camera (/dev/videoN or
  v4l2:///dev/videoN), or a file that resolves (symlinks followed) inside --media-root; anything else is refused
  before FFmpeg sees it.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path

import av

from istpan.data._backends import VideoError
from istpan.data.pyav_source import SAFE_DEMUXERS, mp4_index_problem
from istpan.errors import UserError

__all__ = ["ALLOWED_DEMUXERS", "STREAM_SCHEMES", "SourceRefused", "UnsupportedMedia", "check_source", "probe_media",
           "token_matches"]

ALLOWED_DEMUXERS = SAFE_DEMUXERS  # the data path's list of plain video containers: one list for both
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
_CAMERA = re.compile(r"/dev/video[0-9]{1,3}")


class UnsupportedMedia(UserError):
    """Bytes that are not a video container this server decodes (415)."""


class SourceRefused(UserError):
    """A stream source outside what the server may open (400), or outside --media-root (403 when `forbidden`)."""

    def __init__(self, message: str, *, forbidden: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.forbidden, self.missing = forbidden, missing


def token_matches(expected: str, authorization: str | None) -> bool:
    """Whether an Authorization header carries `Bearer <expected>`, compared in constant time."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[len("Bearer "):].strip().encode(), expected.encode())


def probe_media(path: str | Path, *, name: str | None = None) -> str:
    """Open a local file the way only plain video containers open; return the demuxer's name.

    Raises UnsupportedMedia (one line, naming `name` or the file) for anything else: text, images of other kinds,
    playlists and concat lists (their demuxers are not whitelisted, and only the `file` protocol is), no video stream;
    VideoError for an MP4 cut off before its index (a damaged video, said as decode.py says it).
    """
    shown = name or str(path)
    options = {"format_whitelist": ",".join(ALLOWED_DEMUXERS), "protocol_whitelist": "file"}
    try:
        with av.open(str(path), mode="r", options=options) as container:
            if not container.streams.video:
                raise UnsupportedMedia(f"{shown}: no video stream in this file")
            return str(container.format.name)
    except UnsupportedMedia:
        raise
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        problem = mp4_index_problem(Path(path))
        if problem:
            raise VideoError(shown, problem) from err
        reason = getattr(err, "strerror", None) or str(err)
        raise UnsupportedMedia(f"{shown}: not a video file this server accepts ({reason})") from err


def check_source(spec: str, media_root: str | Path | None) -> str:
    """The source string to open for a stream request, or SourceRefused saying why not.

    URLs keep their text; cameras become /dev/videoN; a file becomes its resolved absolute path, which must be a
    regular file inside the resolved media root (no `..` escape, no symlink pointing out, no absolute path elsewhere).
    """
    spec = spec.strip()
    if not spec or "\x00" in spec or len(spec) > 2048:
        raise SourceRefused("source: give a URL (rtsp, rtsps, http, https), /dev/videoN or a file under --media-root")
    if "://" in spec:
        scheme, rest = spec.split("://", 1)
        scheme = scheme.lower()
        if scheme in STREAM_SCHEMES:
            return spec
        if scheme == "v4l2" and _CAMERA.fullmatch(rest):
            return rest
        raise SourceRefused(f"source scheme {scheme!r} is not allowed: rtsp, rtsps, http, https, v4l2 "
                            "(/dev/videoN) or a file under --media-root")
    if _CAMERA.fullmatch(spec):
        return spec
    if spec.startswith("/dev/"):
        raise SourceRefused(f"{spec}: only V4L2 cameras /dev/videoN are allowed under /dev")
    if media_root is None:
        raise SourceRefused(f"{spec}: file sources need the server started with --media-root", forbidden=True)
    root = Path(media_root).resolve()
    try:
        target = (root / spec).resolve(strict=True)  # an absolute spec replaces root: checked like any other
    except (FileNotFoundError, NotADirectoryError):
        raise SourceRefused(f"{spec}: no such file under the media root", missing=True) from None
    except (OSError, RuntimeError) as err:  # a symlink loop, a name too long
        raise SourceRefused(f"{spec}: cannot be resolved ({err})") from None
    if not target.is_relative_to(root):
        raise SourceRefused(f"{spec}: outside the media root", forbidden=True)
    if not target.is_file():
        raise SourceRefused(f"{spec}: not a file")
    try:
        probe_media(target, name=spec)
    except UnsupportedMedia as err:
        raise SourceRefused(str(err)) from None
    return str(target)


