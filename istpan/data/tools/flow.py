"""`istpan data flow`: a whole dataset's optical flow into TSN/MMAction2 `flow_x_`/`flow_y_` folders.

A dataset is written with one worker process per core, each video into a hidden temporary folder that is renamed
into place only when complete: a finished video is skipped by a rerun, a video killed half-way (SIGKILL, power loss)
leaves only its temporary folder, which the rerun deletes and redoes. A video that cannot be decoded is logged and
skipped; the run goes on. The flow itself and its encoding are istpan/data/flow/compute.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from istpan.data._backends import VideoError
from istpan.data.flow.compute import DEFAULT_BOUND, FlowEstimator, _cv2, flow_folder, quantise, to_grey
from istpan.errors import UserError

__all__ = ["FlowJob", "extract_flow", "flow_folder", "save_flow_frame", "write_video_flow"]

JPEG_QUALITY = 95  # dense_flow's (OpenCV's default) quality
PARTIAL_PREFIX = ".partial-"  # temporary folder of a video being written; deleted and redone by a rerun

log = logging.getLogger(__name__)


def save_flow_frame(folder: str | Path, number: int, code: np.ndarray) -> None:
    """Write encoded flow uint8 (H, W, 2) as `flow_x_%05d.jpg` / `flow_y_%05d.jpg` (number is 1-based)."""
    cv2 = _cv2()
    for axis, name in ((0, "flow_x"), (1, "flow_y")):
        file = Path(folder) / f"{name}_{number:05d}.jpg"
        if not cv2.imwrite(str(file), np.ascontiguousarray(code[..., axis]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"cannot write {file}")


def write_video_flow(
    video: str | Path,
    folder: str | Path,
    *,
    algorithm: str = "tvl1",
    bound: float = DEFAULT_BOUND,
    short_side: int | None = 256,
) -> int:
    """Compute and write one video's flow folder atomically; returns the number of flow frames (frames - 1).

    Frames are streamed (flat memory for any length), resized to `short_side` (aspect kept; TSN resizes to 340x256
    whatever the aspect) and turned grey; each pair's flow goes to `flow_x_%05d.jpg` / `flow_y_%05d.jpg` in a
    temporary folder beside `folder`, renamed to `folder` at the end.
    """
    from istpan.data.decode import iter_frames  # PyAV, only in the processes that decode

    folder = Path(folder)
    tmp = folder.parent / f"{PARTIAL_PREFIX}{folder.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run: redo it
    tmp.mkdir(parents=True)
    estimate = FlowEstimator(algorithm)
    prev, count = None, 0
    try:
        for _, frame in iter_frames(video, short_side=short_side):
            grey = to_grey(frame.numpy())
            if prev is not None:
                count += 1
                save_flow_frame(tmp, count, quantise(estimate(prev, grey), bound))
            prev = grey
        if count == 0:
            raise VideoError(video, "fewer than 2 frames decode: no optical flow")
        os.replace(tmp, folder)  # atomic on one file system: the folder exists only when complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


# ------------------------------------------------------------------------------------------- a whole dataset
@dataclass(frozen=True)
class FlowJob:
    """One video to convert: where it is read and where its folder goes."""

    video: str
    folder: str


def _init_worker() -> None:
    """One thread per worker process: the parallelism is across videos (OpenCV and torch would oversubscribe)."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(UserError):
        _cv2().setNumThreads(1)


def _run_job(job: FlowJob, algorithm: str, bound: float, short_side: int | None) -> tuple[str, int, str]:
    """(video, flow frames, error message or "") — never raises for a bad video, so one file cannot stop the pool."""
    try:
        return job.video, write_video_flow(job.video, job.folder, algorithm=algorithm, bound=bound,
                                           short_side=short_side), ""
    except VideoError as err:
        return job.video, 0, str(err)
    except (OSError, ValueError, RuntimeError) as err:  # a decoder failure that slipped past decode.py's checks
        return job.video, 0, f"{job.video}: {type(err).__name__}: {err}"


def extract_flow(
    jobs: Sequence[FlowJob],
    *,
    algorithm: str = "tvl1",
    bound: float = DEFAULT_BOUND,
    short_side: int | None = 256,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write the flow folders of `jobs`; returns dict(written, skipped (already complete), frames, failed=[lines]).

    A folder that exists is complete (it only appears by rename), so it is skipped. Partial folders are removed
    when their video is redone.
    """
    FlowEstimator(algorithm)  # fail fast (missing OpenCV contrib, unknown algorithm) before any process starts
    todo = [j for j in jobs if not Path(j.folder).is_dir()]
    result = dict(written=0, skipped=len(jobs) - len(todo), frames=0, failed=[])
    bar = dict(total=len(todo), desc=f"flow ({algorithm})", unit="video", disable=not progress, dynamic_ncols=True)
    args = ([algorithm] * len(todo), [bound] * len(todo), [short_side] * len(todo))
    if workers <= 1 or len(todo) <= 1:
        _init_worker()
        outcomes = map(_run_job, todo, *args)
        return _collect(tqdm(outcomes, **bar), result)
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        return _collect(tqdm(pool.map(_run_job, todo, *args), **bar), result)


def _collect(outcomes, result: dict) -> dict:
    for _video, frames, error in outcomes:
        if error:
            log.warning("skipping %s", error)
            result["failed"].append(error)
        else:
            result["written"] += 1
            result["frames"] += frames
    return result
