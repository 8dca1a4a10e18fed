"""Optical flow: computing it (TV-L1, DIS, Farneback) and its 8-bit encoding; `istpan data flow` writes whole datasets
with it (istpan/data/tools/flow.py).

The encoding is TSN's `dense_flow` one, so folders written here and folders written by TSN / MMAction2's
`denseflow` are interchangeable: each component is clipped to ±bound pixels (bound 20) and mapped linearly to
0..255, `u = round(255 · (v + bound) / (2 · bound))`, then stored as a grey JPEG (`flow_x_00001.jpg`,
`flow_y_00001.jpg`: the flow from frame 1 to frame 2, 1-based). One step is 2·bound/255 ≈ 0.157 px.

Why OpenCV: TV-L1 (Zach et al. 2007, `cv2.optflow.DualTVL1OpticalFlow`, the two-stream / TSN / I3D standard) is in
opencv-contrib only, and DIS (Kroeger et al. 2016) and Farneback are OpenCV's fast CPU methods; no other maintained
CPU library offers all three. OpenCV is the optional `istpan[opencv]` extra (opencv-contrib-python-headless), imported
lazily, so reading existing flow folders (`istpan.data.flow.frames`) never needs it.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np

from istpan.errors import UserError
from istpan.modality import FLOW_ALGORITHMS

__all__ = [
    "DEFAULT_BOUND",
    "FLOW_ALGORITHMS",
    "FlowEstimator",
    "dequantise",
    "flow_folder",
    "frames_flow",
    "quantise",
    "to_grey",
]

DEFAULT_BOUND = 20.0  # pixels; TSN / MMAction2's bound


def _cv2():
    try:
        import cv2
    except ImportError as err:
        raise UserError("optical flow needs OpenCV with its contrib modules: "
                        "pip install 'istpan[opencv]' (opencv-contrib-python-headless)") from err
    return cv2


class FlowEstimator:
    """`estimator(prev, next)`: dense flow float32 (H, W, 2) from prev to next, both grey uint8 (H, W).

    The OpenCV object is built once and reused for every pair (building TV-L1 costs as much as a small frame pair).
    Parameters are OpenCV's defaults (TV-L1 as in dense_flow; DIS "medium" preset; Farneback with the values of
    OpenCV's own sample: pyramid 0.5 x 3 levels, window 15, 3 iterations, poly_n 5, sigma 1.2).
    """

    def __init__(self, algorithm: str = "tvl1") -> None:
        if algorithm not in FLOW_ALGORITHMS:
            raise UserError(f"unknown flow algorithm '{algorithm}' (choose from {', '.join(FLOW_ALGORITHMS)})")
        cv2 = self._cv2 = _cv2()
        self.algorithm = algorithm
        self._impl = None
        if algorithm == "tvl1":
            if not hasattr(cv2, "optflow"):
                raise UserError("TV-L1 flow needs OpenCV's contrib modules (cv2.optflow): pip uninstall "
                                "opencv-python-headless && pip install opencv-contrib-python-headless")
            self._impl = cv2.optflow.DualTVL1OpticalFlow_create()
        elif algorithm == "dis":
            self._impl = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self.algorithm == "farneback":
            flow = self._cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        else:
            flow = self._impl.calc(prev, nxt, None)
        return np.asarray(flow, dtype=np.float32)  # (H, W, 2): (dx, dy)


@functools.cache
def _estimator(algorithm: str) -> FlowEstimator:
    """One estimator per algorithm and process, reused by on-the-fly flow (data loader workers are processes)."""
    return FlowEstimator(algorithm)


def quantise(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """float flow in pixels -> uint8, TSN's mapping: clip to ±bound, then round(255 · (v + bound) / (2 · bound))."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantise(code: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """uint8 -> float flow in pixels (the inverse of `quantise` up to half a step, 2·bound/255 / 2)."""
    return code.astype(np.float32) * (2.0 * bound / 255.0) - bound


def to_grey(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> grey uint8 (H, W) with ITU-R 601 weights (what cv2.cvtColor(RGB2GRAY) does)."""
    return np.rint(frame[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)


def frames_flow(frames: np.ndarray, *, algorithm: str = "tvl1", bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Flow between consecutive frames, encoded as stored on disk: RGB uint8 (T, H, W, 3) -> uint8 (T-1, 2, H, W).

    Used for on-the-fly flow (small datasets, predict): the same quantisation as the folders, so a model trained on
    folders sees the same values when flow is computed on the fly.
    """
    if len(frames) < 2:
        raise ValueError(f"flow needs at least 2 frames, got {len(frames)}")
    estimate = _estimator(algorithm)
    grey = [to_grey(np.asarray(f)) for f in frames]
    flows = [quantise(estimate(a, b), bound) for a, b in itertools.pairwise(grey)]  # (T-1) x (H, W, 2)
    return np.stack(flows).transpose(0, 3, 1, 2)  # (T-1, 2, H, W)


# ------------------------------------------------------------------------------------------- one video to disk
def flow_folder(video: str | Path, *, root: str | Path, out: str | Path) -> Path:
    """Where a video's flow goes: its path relative to `root`, without suffix, under `out` (MMAction2's layout:
    `out/<class>/<video name>/flow_x_00001.jpg` for UCF101's `<class>/<video>.avi`)."""
    video = Path(video)
    try:
        rel = video.relative_to(root) if root else Path(video.name)
    except ValueError:
        rel = Path(video.name)  # a video outside the root (absolute path in a list file): by its name
    return Path(out) / rel.with_suffix("")
