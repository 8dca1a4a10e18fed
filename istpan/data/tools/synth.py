"""A procedurally generated action dataset that anyone can regenerate in a minute: istpan's default data.

Why it exists: UCF101, HMDB51 and Charades are tens of gigabytes; a new user should see IST-PAN train, and its
attention point at the actor, before fetching any of them. The videos are real H.264 MP4 files (PyAV) with list
annotations, so the demo goes through the same decode / sample / transform path as real data.

Why it is built like this (each ingredient of the paper has to matter):
- The class is defined by the actor's motion over time (direction of travel, rotation sense, growing or shrinking,
  periodic blinking or flashing). A typical single frame never tells the class. Three classes pairs are exact time
  reversals of each other (move left/right, grow/shrink, rotate cw/ccw): the two members see the same distribution of
  frame *sets*, so any model that is blind to frame order (TSN's average consensus, and an attention layer that
  treats the K·h·w positions as a set) is at chance within each pair. `REVERSAL_PAIRS` names them so that scores can
  also be reported with each pair merged.
- The actor (a bar with a white cap) is small, at a scale that varies 2.3× between videos and up to 3× within the
  grow/shrink classes, at a random place, among moving distractors (discs, squares, triangles in the same colours)
  and static clutter: attending to the right place matters and one fixed scale is not enough.
- `untrimmed=True` writes longer videos in which the action fills only one random span, with the actor idling
  (small jitter at its start pose) before and after: only part of the time axis carries the class.

Ground truth per video (`ground_truth.json`): class, the action's frame span [start, end), and the actor's box per
frame, normalised (x0, y0, x1, y1) in [0, 1], or null when the actor is invisible (blink). Every video is a pure
function of (seed, index), so a dataset regenerates byte for byte.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from istpan.data.tools.synth_actor import PALETTE as _PALETTE
from istpan.data.tools.synth_actor import actor_params as _actor_params
from istpan.data.tools.synth_actor import actor_pose as _actor_pose
from istpan.data.tools.synth_actor import bar_polygon as _bar_polygon
from istpan.errors import UserError

__all__ = [
    "CLASSES",
    "REVERSAL_PAIRS",
    "SCENES",
    "SynthSpec",
    "add_arguments",
    "generate",
    "load_ground_truth",
    "pair_of",
    "run",
]

log = logging.getLogger(__name__)

CLASSES = ["move_left", "move_right", "grow", "shrink", "rotate_cw", "rotate_ccw", "blink", "flash"]
REVERSAL_PAIRS = [("move_left", "move_right"), ("grow", "shrink"), ("rotate_cw", "rotate_ccw")]
GROUND_TRUTH = "ground_truth.json"



def pair_of(name: str) -> str:
    """The class with each reversal pair merged into one name (`move_left|move_right`), for order-blind scores."""
    for a, b in REVERSAL_PAIRS:
        if name in (a, b):
            return f"{a}|{b}"
    return name


@dataclass(frozen=True)
class SynthSpec:
    """Everything that determines the dataset's bytes; stored in ground_truth.json so a rerun can reuse it."""

    seed: int = 0
    num_videos: int = 320
    size: int = 96  # frame height = width, pixels
    num_frames: int = 32  # frames of the action
    fps: int = 16
    untrimmed: bool = False
    untrimmed_factor: int = 3  # untrimmed videos are this many times longer than the action
    val_fraction: float = 0.25
    num_distractors: tuple[int, int] = (2, 4)  # inclusive range per video
    scene: str = "simple"  # "cluttered": textured, jittering, small actor among other classes' motions
    version: int = 3  # bump when the drawing or encoding changes, so old datasets are not silently reused


# ---------------------------------------------------------------------------------------------------------------
# Drawing one video


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Static clutter: smooth coloured noise plus faint random rectangles and lines. (size, size, 3) uint8."""
    coarse = rng.uniform(60, 150, size=(6, 6, 3))
    img = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(6, 12)):
        x0, y0 = rng.uniform(0, size, 2)
        w, h = rng.uniform(3, size / 4, 2)
        shade = tuple(int(v) for v in rng.uniform(70, 170, 3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=shade)
        else:
            draw.line([x0, y0, x0 + w * 2, y0 + h * 2], fill=shade, width=1)
    return np.asarray(img)


def _distractors(rng: np.random.Generator, size: int, count: int) -> list[dict]:
    """Moving clutter: same colours and sizes as the actor, constant velocity, bouncing off the borders."""
    out = []
    for _ in range(count):
        out.append(
            dict(
                kind=rng.choice(["disc", "square", "triangle"]),
                r=rng.uniform(0.04, 0.12) * size,
                x=rng.uniform(0, size),
                y=rng.uniform(0, size),
                vx=rng.uniform(-1.5, 1.5),
                vy=rng.uniform(-1.5, 1.5),
                colour=tuple(int(v) for v in _PALETTE[rng.integers(len(_PALETTE))]),
            )
        )
    return out


def _bounce(pos: float, vel: float, lo: float, hi: float) -> float:
    """Position after moving with constant velocity inside [lo, hi] with reflections (closed form, no state)."""
    span = hi - lo
    z = (pos - lo + vel) % (2 * span)
    return lo + (z if z <= span else 2 * span - z)


def _draw_frame(background: np.ndarray, distractors: list[dict], frame: int, pose: dict, colour: np.ndarray, size: int):
    """One RGB frame (size, size, 3) uint8 and the actor's normalised box (or None when invisible)."""
    img = Image.fromarray(background)
    draw = ImageDraw.Draw(img)
    for d in distractors:
        x = _bounce(d["x"], d["vx"] * frame, d["r"], size - d["r"])
        y = _bounce(d["y"], d["vy"] * frame, d["r"], size - d["r"])
        r = d["r"]
        if d["kind"] == "disc":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=d["colour"])
        elif d["kind"] == "square":
            draw.rectangle([x - r, y - r, x + r, y + r], fill=d["colour"])
        else:
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=d["colour"])
    if not pose["visible"]:
        return np.asarray(img), None
    body = (245, 245, 245) if pose["flash"] else tuple(int(v) for v in colour)
    corners = _bar_polygon(pose["cx"], pose["cy"], pose["length"], pose["angle"])
    draw.polygon(corners, fill=body, outline=(20, 20, 20))
    # the white cap marks one end, so the bar's orientation (and its rotation) is visible
    cap_r = pose["length"] / 6
    ex = pose["cx"] + math.cos(pose["angle"]) * pose["length"] / 2
    ey = pose["cy"] + math.sin(pose["angle"]) * pose["length"] / 2
    cap_fill = (30, 30, 30) if pose["flash"] else (250, 250, 250)
    draw.ellipse([ex - cap_r, ey - cap_r, ex + cap_r, ey + cap_r], fill=cap_fill, outline=(20, 20, 20))
    xs = [c[0] for c in corners] + [ex - cap_r, ex + cap_r]
    ys = [c[1] for c in corners] + [ey - cap_r, ey + cap_r]
    box = [max(0.0, min(xs)) / size, max(0.0, min(ys)) / size, min(size, max(xs)) / size, min(size, max(ys)) / size]
    return np.asarray(img), [round(v, 4) for v in box]


def _render_video(spec: SynthSpec, index: int, cls: str) -> tuple[np.ndarray, list, tuple[int, int]]:
    """All frames (T, size, size, 3) uint8 of video `index`, its per-frame boxes and the action span."""
    if spec.scene == "cluttered":
        from istpan.data.tools.synth_scenes import render_cluttered

        return render_cluttered(spec, index, cls, CLASSES)
    rng = np.random.default_rng([spec.seed, index])
    size = spec.size
    background = _background(rng, size)
    distractors = _distractors(rng, size, int(rng.integers(spec.num_distractors[0], spec.num_distractors[1] + 1)))
    params = _actor_params(cls, rng, size)
    total = spec.num_frames * (spec.untrimmed_factor if spec.untrimmed else 1)
    start = int(rng.integers(0, total - spec.num_frames + 1))
    end = start + spec.num_frames
    jitter = rng.uniform(-1.0, 1.0, size=(total, 2))  # idle motion outside the action span
    frames, boxes = [], []
    for f in range(total):
        if start <= f < end:
            pose = _actor_pose(cls, (f - start) / max(1, spec.num_frames - 1), params)
        else:
            pose = _actor_pose(cls, 0.0 if f < start else 1.0, params)
            pose.update(cx=pose["cx"] + jitter[f, 0], cy=pose["cy"] + jitter[f, 1], visible=True, flash=False)
        frame, box = _draw_frame(background, distractors, f, pose, params["colour"], size)
        frames.append(frame)
        boxes.append(box)
    return np.stack(frames), boxes, (start, end)


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """H.264 yuv420p MP4 whose bytes are a pure function of the frames (same seed, same bytes, any output path).

    Three things make x264 reproducible: one encoder thread, no threaded lookahead, and no macroblock-tree rate
    control. mbtree's propagation runs in floating-point SIMD, and its AVX-512 version made the output depend on
    memory contents: the same frames gave different bytes from run to run, and whenever the heap layout changed
    (a longer output path was enough; 5 of 48 videos differed by up to 30 grey levels). x264's own checks let
    these float kernels differ from C, so it is also what would differ between CPUs. Without mbtree the rate
    control is plain CRF, which costs nothing that matters for these small synthetic clips.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # see the docstring: each of these is needed for reproducible bytes
        stream.codec_context.thread_count = 1
        stream.options = {
            "crf": "18",
            "preset": "veryfast",
            "threads": "1",
            "g": str(2 * fps),
            "x264-params": "threads=1:lookahead-threads=1:sync-lookahead=0:mbtree=0",
        }
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ---------------------------------------------------------------------------------------------------------------
# The dataset


SCENES = ("simple", "cluttered")


def _make_video(spec: SynthSpec, out: Path, index: int) -> tuple[str, dict]:
    """Render and write video `index`; return its relative path and ground truth (runs in a worker process)."""
    cls = _class_of(index)
    frames, boxes, span = _render_video(spec, index, cls)
    rel = f"videos/{cls}/{index:05d}.mp4"
    _write_mp4(out / rel, frames, spec.fps)
    split = "val" if _is_val(index, spec) else "train"
    return rel, dict(
        label=CLASSES.index(cls), class_name=cls, split=split, num_frames=len(frames), span=list(span), boxes=boxes
    )


def _class_of(index: int) -> str:
    return CLASSES[index % len(CLASSES)]


def _is_val(index: int, spec: SynthSpec) -> bool:
    """Balanced split: within each class, the first val_fraction of its videos go to val."""
    per_class = math.ceil(spec.num_videos / len(CLASSES))
    n_val = round(per_class * spec.val_fraction)
    if 0 < spec.val_fraction < 1:  # keep both splits non-empty for every class
        n_val = min(max(n_val, 1), per_class - 1)
    return index // len(CLASSES) < n_val


def load_ground_truth(root: str | Path) -> dict:
    """The ground-truth JSON written by `generate` (spec, classes, and per video: class, span, boxes)."""
    path = Path(root) / GROUND_TRUTH
    if not path.is_file():
        raise UserError(f"{path}: no synthetic ground truth here; create it with `istpan data synth --out {root}`")
    return json.loads(path.read_text())


def generate(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_videos: int = 320,
    size: int = 96,
    num_frames: int = 32,
    fps: int = 16,
    untrimmed: bool = False,
    val_fraction: float = 0.25,
    scene: str = "simple",
    workers: int = 1,
    reuse: bool = True,
    progress: bool = False,
) -> Path:
    """Write the synthetic dataset into out_dir and return out_dir.

    Layout: `videos/<class>/<index>.mp4`, `train.txt` / `val.txt` (`<relative path> <class name>` per line),
    `classes.txt` (one name per line) and `ground_truth.json`. With reuse=True an existing dataset made from the same
    spec is kept as it is (the demo calls this every time). `workers` > 1 renders and encodes videos in that many
    processes; every video is a pure function of (spec, index), so the bytes do not depend on it.
    """
    if num_videos < len(CLASSES):
        raise UserError(f"--num-videos {num_videos}: need at least one video per class ({len(CLASSES)})")
    if size < 32 or size % 2:
        raise UserError(f"--size {size}: frame size must be even and at least 32 pixels")
    if num_frames < 2:
        raise UserError(f"--frames {num_frames}: need at least 2 frames per action")
    if scene not in SCENES:
        raise UserError(f"--scene {scene}: one of {', '.join(SCENES)}")
    spec = SynthSpec(
        seed=seed,
        num_videos=num_videos,
        size=size,
        num_frames=num_frames,
        fps=fps,
        untrimmed=untrimmed,
        val_fraction=val_fraction,
        scene=scene,
    )
    out = Path(out_dir)
    gt_path = out / GROUND_TRUTH
    if reuse and gt_path.is_file():
        try:
            if json.loads(gt_path.read_text()).get("spec") == json.loads(json.dumps(asdict(spec))):
                log.info("reusing the synthetic dataset in %s", out)
                return out
        except json.JSONDecodeError:
            pass
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    gt_path.unlink(missing_ok=True)  # written last: its presence means the dataset is complete

    videos, lines = {}, {"train": [], "val": []}
    bar = dict(desc="synth videos", disable=None if progress else True, unit="video", total=num_videos)
    make = partial(_make_video, spec, out)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            made = list(tqdm(pool.map(make, range(num_videos), chunksize=8), **bar))
    else:
        made = [make(index) for index in tqdm(range(num_videos), **bar)]
    for rel, video in made:  # in index order either way
        lines[video["split"]].append(f"{rel} {video['class_name']}")
        videos[rel] = video
    for split, rows in lines.items():
        (out / f"{split}.txt").write_text("\n".join(rows) + "\n")
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    gt = dict(spec=asdict(spec), classes=CLASSES, reversal_pairs=REVERSAL_PAIRS, videos=videos)
    gt_path.write_text(json.dumps(gt, separators=(",", ":")))
    return out


# ---------------------------------------------------------------------------------------------------------------
# `istpan data synth` (registered by istpan/cli/data.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write the dataset into")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    parser.add_argument("--num-videos", type=int, default=320, help="total videos, balanced over the 8 classes")
    parser.add_argument("--size", type=int, default=96, help="frame width = height in pixels (default 96)")
    parser.add_argument("--frames", type=int, default=32, help="frames of the action (default 32)")
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--untrimmed", action="store_true", help="3x longer videos, the action fills one random span")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--scene", choices=SCENES, default="simple",
                        help="cluttered: textured per-video background, camera jitter, a small actor among "
                        "distractors that perform other classes' motions (docs/synthetic.md)")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering videos (same bytes for any)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the same dataset is already there")


def run(args: argparse.Namespace) -> int:
    out = generate(
        args.out,
        seed=args.seed,
        num_videos=args.num_videos,
        size=args.size,
        num_frames=args.frames,
        fps=args.fps,
        untrimmed=args.untrimmed,
        val_fraction=args.val_fraction,
        scene=args.scene,
        workers=args.workers,
        reuse=not args.force,
        progress=True,
    )
    gt = load_ground_truth(out)
    counts = {s: sum(v["split"] == s for v in gt["videos"].values()) for s in ("train", "val")}
    print(
        f"wrote {len(gt['videos'])} videos ({counts['train']} train, {counts['val']} val, {len(CLASSES)} classes) "
        f"to {out}; train with data.format=list data.root={out} data.train_annotations={out}/train.txt "
        f"data.val_annotations={out}/val.txt data.classes={out}/classes.txt"
    )
    return 0
