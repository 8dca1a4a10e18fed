"""Reading optical flow for a clip: L-stacks from flow folders (ours, TSN's, MMAction2's) or computed on the fly.

A flow folder holds two grey JPEGs per frame pair: `flow_x_00001.jpg` / `flow_y_00001.jpg` (TSN's dense_flow and
`istpan data flow`) or `x_00001.jpg` / `y_00001.jpg` (MMAction2's denseflow). Both use the same ±bound -> 0..255
encoding (istpan/data/flow/compute.py), so they read the same way.

A stack is L consecutive flow frames starting at s, interleaved as TSN stacks them: channels
(x_s, y_s, x_{s+1}, y_{s+1}, ..., x_{s+L-1}, y_{s+L-1}), i.e. uint8 (2L, H, W).

Bad input is one line naming the video (`VideoError`): a folder that does not exist, one with no flow frames,
flow_x and flow_y counts that differ (an extraction that died half-way by another tool), or a video with fewer flow
frames than L.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from istpan.data._backends import VideoError, resized_size
from istpan.data.flow.compute import DEFAULT_BOUND, frames_flow

__all__ = ["FLOW_PREFIXES", "count_flow", "flow_files", "read_flow_stacks", "stacks_from_video"]

FLOW_PREFIXES = (("flow_x_", "flow_y_"), ("x_", "y_"))  # TSN dense_flow / istpan, MMAction2 denseflow
_SUFFIXES = (".jpg", ".jpeg", ".png")


def flow_files(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """The x and y images of a flow folder, in frame order; VideoError when missing, empty or inconsistent."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a flow folder" if folder.exists() else "flow folder not found"
        raise VideoError(folder, f"{what} (write it with `istpan data flow`, or set data.flow_root='' for flow "
                                 "computed on the fly)")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(_SUFFIXES))
    for px, py in FLOW_PREFIXES:
        xs = [n for n in names if n.startswith(px)]
        ys = [n for n in names if n.startswith(py)]
        if xs or ys:
            if len(xs) != len(ys):
                raise VideoError(folder, f"{len(xs)} {px}* but {len(ys)} {py}* images: an incomplete flow "
                                         "extraction; delete the folder and run `istpan data flow` again")
            return [folder / n for n in xs], [folder / n for n in ys]
    raise VideoError(folder, "no flow images (flow_x_00001.jpg / flow_y_00001.jpg or x_00001.jpg / y_00001.jpg)")


def count_flow(folder: str | Path) -> int:
    """Number of flow frames (pairs of x/y images) in a flow folder."""
    return len(flow_files(folder)[0])


def _load_grey(file: Path, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(file) as img:
            img = img.convert("L")
            if size is not None and (img.height, img.width) != size:
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.array(img)  # (H, W) uint8
    except (OSError, UnidentifiedImageError) as err:
        raise VideoError(file, f"cannot read flow image ({err})") from err


def _check_length(where: str | Path, available: int, length: int) -> None:
    if available < length:
        raise VideoError(where, f"{available} flow frames, too short for a stack of L={length} "
                                f"(needs at least {length + 1} video frames)")


def read_flow_stacks(
    folder: str | Path,
    starts: torch.Tensor,
    *,
    length: int,
    short_side: int | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Flow stacks starting at `starts` (K,) (0-based flow frame indices): uint8 (K, 2L, H, W).

    Each image is read once even when stacks overlap; `short_side` resizes them (bilinear, aspect kept), `size`
    (H, W) to exactly that (onto the RGB frames of an rgb+flow clip, whatever size another tool wrote). The flow
    values are not rescaled with the image (TSN's habit: a stack is treated as an image).
    """
    xs, ys = flow_files(folder)
    _check_length(folder, len(xs), length)
    wanted = sorted({int(s) + j for s in starts.tolist() for j in range(length)})
    if wanted and (wanted[0] < 0 or wanted[-1] >= len(xs)):
        raise VideoError(folder, f"flow frame {wanted[-1]} requested but the folder holds {len(xs)}")
    if size is None and short_side is not None:
        with Image.open(xs[0]) as first:
            size = resized_size(first.height, first.width, short_side)
    cache = {i: np.stack([_load_grey(xs[i], size), _load_grey(ys[i], size)]) for i in wanted}  # i -> (2, H, W)
    shapes = {a.shape for a in cache.values()}
    if len(shapes) > 1:
        raise VideoError(folder, f"flow images of different sizes {sorted(shapes)}")
    stacks = [np.concatenate([cache[int(s) + j] for j in range(length)]) for s in starts.tolist()]  # K x (2L, H, W)
    return torch.from_numpy(np.stack(stacks))  # (K, 2L, H, W)


def stacks_from_video(
    path: str | Path,
    starts: torch.Tensor,
    *,
    length: int,
    video_frames: int,
    short_side: int | None = None,
    algorithm: str = "dis",
    bound: float = DEFAULT_BOUND,
) -> torch.Tensor:
    """Flow stacks computed from the video itself (no folders): uint8 (K, 2L, H, W), encoded as the folders are.

    Stack s needs video frames s..s+L; each distinct frame is decoded once and each distinct pair's flow computed
    once. `video_frames` is the video's decodable frame count (flow frames = video_frames - 1).
    """
    from istpan.data.decode import read_frames

    _check_length(path, video_frames - 1, length)
    pairs = sorted({int(s) + j for s in starts.tolist() for j in range(length)})  # flow frame i: frames i -> i+1
    frame_idx = sorted({i for p in pairs for i in (p, p + 1)})
    frames = read_frames(path, torch.tensor(frame_idx), short_side=short_side).numpy()  # (F, H, W, 3)
    pos = {f: n for n, f in enumerate(frame_idx)}
    flows = {p: frames_flow(frames[[pos[p], pos[p + 1]]], algorithm=algorithm, bound=bound)[0] for p in pairs}
    stacks = [np.concatenate([flows[int(s) + j] for j in range(length)]) for s in starts.tolist()]
    return torch.from_numpy(np.stack(stacks))  # (K, 2L, H, W)

