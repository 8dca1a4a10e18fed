"""The two non-default decoding backends (OpenCV, a folder of extracted frames) and what all backends share.

Kept apart from decode.py so that the PyAV path, the one that has to be frame-exact and fast, reads top to bottom.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from istpan.errors import UserError

__all__ = ["VideoError", "check_file", "frame_files", "frames_errors", "frames_read", "iter_other", "opencv_count",
           "opencv_read", "resized_size"]

_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


class VideoError(UserError):
    """A video that cannot be read (or not at the requested frames). `str(err)` is "<path>: <what is wrong>"."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the short side equal to `short_side` and the aspect ratio kept (rounded to whole pixels)."""
    if short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def check_file(path: Path) -> None:
    """The reasons a path can't be a video that are worth a precise message before any decoder sees it."""
    if not path.exists():
        dangling = path.is_symlink()
        raise VideoError(path, "missing: link target does not exist" if dangling else "file not found")
    if path.is_dir():
        raise VideoError(path, "is a directory, not a video file (a folder of frame images is read by backend "
                         "'frames': --backend frames, or data.backend=frames in a config)")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")


# ------------------------------------------------------------------------------------------- folder of frames
def frame_files(folder: Path) -> list[Path]:
    """Frame images of a folder in order. `img_00001.jpg` (TSN/MMAction2) first; any other image names sort as is."""
    if not folder.exists():
        raise VideoError(folder, "frame folder not found")
    if not folder.is_dir():
        raise VideoError(folder, "not a folder of frames (backend 'frames' expects img_00001.jpg, ...; a video file "
                         "is read by backend pyav or opencv)")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(_FRAME_SUFFIXES))
    tsn = [n for n in names if n.startswith("img_")]
    return [folder / n for n in (tsn or names)]


_EXIF_ORIENTATION = 0x0112


def _load_image(file: Path, short_side: int | None) -> np.ndarray:
    """uint8 (H, W, 3) upright: frames saved by a phone or camera keep the sensor's pictures and an EXIF Orientation
    tag, which viewers (and the video backends, for a video's display matrix) apply."""
    try:
        with Image.open(file) as img:
            if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # exif_transpose copies even when there is nothing to do
                img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
            if short_side is not None:
                h, w = resized_size(img.height, img.width, short_side)
                img = img.resize((w, h), Image.BILINEAR)
            return np.array(img)  # a writable copy: torch.from_numpy warns on read-only arrays
    except (OSError, UnidentifiedImageError) as err:
        raise VideoError(file, f"cannot read frame image ({err})") from err


def frames_errors(folder: Path) -> list[str]:
    """Why frame images of a folder cannot be read ("img_00003.jpg: reason"), [] when all decode: `data check` of a
    folder, like `decode_errors` of a video. Opening is not enough (a truncated JPEG opens and fails when decoded),
    so each image is decoded; JPEGs at 1/8 scale (`draft`), which is several times faster and still reads every byte."""
    errors = []
    for file in frame_files(folder):
        try:
            with Image.open(file) as img:
                img.draft("RGB", (1, 1))
                img.load()
        except (OSError, UnidentifiedImageError, SyntaxError) as err:  # PIL raises SyntaxError for some bad headers
            errors.append(f"{file.name}: {err}")
    return errors


def frames_read(folder: Path, wanted: list[int], short_side: int | None) -> dict[int, np.ndarray]:
    files = frame_files(folder)
    if wanted and wanted[-1] >= len(files):
        raise VideoError(folder, f"frame {wanted[-1]} requested but the folder holds {len(files)} frames")
    return {i: _load_image(files[i], short_side) for i in wanted}


# ------------------------------------------------------------------------------------------------------ OpenCV
def _cv2():
    # OpenCV's bundled FFmpeg prints every decoding error of a damaged file to stderr (dozens of "[h264 @ 0x...]"
    # lines per file); VideoError already says what is wrong in one line. Read at the first capture; a user's own
    # setting wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        import cv2
    except ImportError as err:
        raise UserError("OpenCV is not installed: pip install 'istpan[opencv]' "
                        "(opencv-contrib-python-headless)") from err
    return cv2


def _capture(path: Path):
    check_file(path)
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(path, "OpenCV cannot open it as a video")
    # upright like the other backends (the display matrix of phone videos): the default changed between OpenCV
    # releases (off in 4.11, opencv/opencv#26795), so it is asked for
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return cv2, cap


def _cv_rgb(cv2, bgr: np.ndarray, short_side: int | None) -> np.ndarray:
    if short_side is not None:
        h, w = resized_size(bgr.shape[0], bgr.shape[1], short_side)
        bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def opencv_count(path: Path) -> int:
    _, cap = _capture(path)
    try:
        n = 0
        while cap.grab():  # grab decodes without converting: an honest count, not CAP_PROP_FRAME_COUNT's guess
            n += 1
        return n
    finally:
        cap.release()


def opencv_read(path: Path, wanted: list[int], short_side: int | None) -> dict[int, np.ndarray]:
    cv2, cap = _capture(path)
    want, out = set(wanted), {}
    try:
        for i in range(wanted[-1] + 1):
            if not cap.grab():
                raise VideoError(path, f"frame {wanted[-1]} requested but only {i} frames decode")
            if i in want:
                ok, bgr = cap.retrieve()
                if not ok:
                    raise VideoError(path, f"OpenCV could not convert frame {i}")
                out[i] = _cv_rgb(cv2, bgr, short_side)
        return out
    finally:
        cap.release()


def iter_other(path: Path, backend: str, short_side: int | None, step: int) -> Iterator[tuple[int, torch.Tensor]]:
    """`iter_frames` for the opencv and frames backends."""
    if backend == "frames":
        for i, file in enumerate(frame_files(path)):
            if i % step == 0:
                yield i, torch.from_numpy(_load_image(file, short_side))
        return
    cv2, cap = _capture(path)
    try:
        i = 0
        while cap.grab():
            if i % step == 0:
                ok, bgr = cap.retrieve()
                if ok:
                    yield i, torch.from_numpy(_cv_rgb(cv2, bgr, short_side))
            i += 1
    finally:
        cap.release()
