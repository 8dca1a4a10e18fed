"""The `cluttered` scene of the synthetic dataset: the paper's regime, where the action is a small part of a busy frame.

Why a second scene: on the `simple` scene (istpan/data/tools/synth.py) the actor is big and the distractors move without
meaning, so averaging over the whole frame (TSN) loses little. Here every ingredient makes "where to look" the
thing that separates the classes:

- a procedural texture that changes per video (oriented gratings + coloured low-frequency noise + clutter strokes),
  so no fixed background model helps;
- light camera jitter: the whole scene shifts by a smooth, bounded offset per frame (a few pixels), so even static
  pixels move and frame differencing is not a shortcut;
- an actor (the bar with a white cap) whose box covers at most ~5 % of the frame;
- distractors that *perform the motions of other classes* (a triangle moving right, an ellipse rotating, a
  blinking triangle, ...): averaged over the frame, the evidence of several classes is mixed, and only the actor's
  motion tells the label. Distractors are drawn as other shapes, so the actor can be found by its appearance.

Everything is a pure function of (seed, index), like the simple scene; the actor's motions are the simple scene's
(`synth_actor.actor_pose`), so the classes and the time-reversal pairs are unchanged.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from istpan.data.tools.synth_actor import actor_params, actor_pose, bar_polygon

__all__ = ["ACTOR_LENGTH", "JITTER", "render_cluttered"]

ACTOR_LENGTH = (0.14, 0.24)  # bar length / frame size: its box stays under ~5 % of the frame even at 1.5× (grow)
JITTER = 3  # camera jitter amplitude, pixels (each axis)
NUM_PERFORMERS = (3, 5)  # distractors performing other classes' motions, inclusive range


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A per-video background (size, size, 3) uint8: gratings + coloured low-frequency noise + clutter strokes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size, 3))
    for _ in range(3):  # oriented gratings, each with its own colour
        theta, period = rng.uniform(0, math.pi), rng.uniform(6, 28)
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period + phase)  # (S, S)
        img += wave[..., None] * rng.uniform(5, 22, size=3)
    coarse = rng.uniform(50, 170, size=(5, 5, 3)).astype(np.uint8)
    img += np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float64)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(10, 20))):  # static clutter strokes and patches
        x0, y0 = rng.uniform(0, size, 2)
        w, h = rng.uniform(2, size / 6, 2)
        shade = tuple(int(v) for v in rng.uniform(40, 200, 3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=shade)
        else:
            draw.line([x0, y0, x0 + w * 2, y0 + h * 2], fill=shade, width=int(rng.integers(1, 3)))
    return np.asarray(out)


def _camera_path(rng: np.random.Generator, total: int) -> np.ndarray:
    """Integer offsets (total, 2) in [-JITTER, JITTER]: two slow sines per axis plus a little shake."""
    t = np.arange(total, dtype=np.float64)
    path = np.zeros((total, 2))
    for axis in range(2):
        for _ in range(2):
            path[:, axis] += rng.uniform(0.3, 0.6) * JITTER * np.sin(2 * math.pi * t / rng.uniform(10, 40)
                                                                       + rng.uniform(0, 2 * math.pi))
    path += rng.uniform(-0.5, 0.5, size=path.shape)
    return np.clip(np.rint(path), -JITTER, JITTER).astype(int)


def _shape(kind: str, pose: dict) -> list[tuple[float, float]]:
    """Outline of a distractor: an isosceles triangle (apex shows orientation) or a 12-gon ellipse, rotated."""
    cx, cy, length, angle = pose["cx"], pose["cy"], pose["length"], pose["angle"]
    if kind == "triangle":
        local = [(length / 2, 0.0), (-length / 2, -length / 4), (-length / 2, length / 4)]
    else:
        local = [(length / 2 * math.cos(a), length / 5 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 13)[:-1]]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in local]


def _pose_at(cls: str, f: int, start: int, length: int, params: dict, jitter: np.ndarray) -> dict:
    """Pose at frame f: the class's motion inside [start, start + length), idle (small jitter) outside."""
    if start <= f < start + length:
        return actor_pose(cls, (f - start) / max(1, length - 1), params)
    pose = actor_pose(cls, 0.0 if f < start else 1.0, params)
    pose.update(cx=pose["cx"] + jitter[f, 0], cy=pose["cy"] + jitter[f, 1], visible=True, flash=False)
    return pose


def render_cluttered(spec, index: int, cls: str, classes: list[str]) -> tuple[np.ndarray, list, tuple[int, int]]:
    """All frames (T, S, S, 3) uint8 of cluttered video `index`, the actor's per-frame boxes and the action span.

    Distractors perform their motions over the whole video (they are not the action); the actor performs its class
    over the span (the whole video when trimmed) and idles outside it, as in the simple scene.
    """
    rng = np.random.default_rng([spec.seed, index, 1])  # stream 1: never the simple scene's random numbers
    size, margin = spec.size, JITTER
    canvas = size + 2 * margin
    background = _texture(rng, canvas)
    total = spec.num_frames * (spec.untrimmed_factor if spec.untrimmed else 1)
    start = int(rng.integers(0, total - spec.num_frames + 1))
    actor = actor_params(cls, rng, size, length_range=ACTOR_LENGTH)
    others = [c for c in classes if c != cls]
    performers = []
    for _ in range(int(rng.integers(NUM_PERFORMERS[0], NUM_PERFORMERS[1] + 1))):
        other = others[int(rng.integers(len(others)))]
        params = actor_params(other, rng, size, length_range=(ACTOR_LENGTH[0] * 1.2, ACTOR_LENGTH[1] * 1.3))
        performers.append((other, params, "triangle" if rng.random() < 0.5 else "ellipse"))
    camera = _camera_path(rng, total)
    idle = rng.uniform(-1.0, 1.0, size=(total, 2))
    frames, boxes = [], []
    for f in range(total):
        dx, dy = camera[f]
        img = Image.fromarray(background)
        draw = ImageDraw.Draw(img)
        shift = (margin, margin)  # objects live in world (canvas) coordinates; the camera crop moves them all
        for other, params, kind in performers:
            pose = actor_pose(other, f / max(1, total - 1), params)
            if not pose["visible"]:
                continue
            body = (245, 245, 245) if pose["flash"] else tuple(int(v) for v in params["colour"])
            pts = [(x + shift[0], y + shift[1]) for x, y in _shape(kind, pose)]
            draw.polygon(pts, fill=body, outline=(20, 20, 20))
        pose = _pose_at(cls, f, start, spec.num_frames, actor, idle)
        box = None
        if pose["visible"]:
            body = (245, 245, 245) if pose["flash"] else tuple(int(v) for v in actor["colour"])
            corners = bar_polygon(pose["cx"], pose["cy"], pose["length"], pose["angle"])
            draw.polygon([(x + shift[0], y + shift[1]) for x, y in corners], fill=body, outline=(20, 20, 20))
            cap_r = pose["length"] / 6
            ex = pose["cx"] + math.cos(pose["angle"]) * pose["length"] / 2
            ey = pose["cy"] + math.sin(pose["angle"]) * pose["length"] / 2
            cap = (30, 30, 30) if pose["flash"] else (250, 250, 250)
            draw.ellipse([ex - cap_r + shift[0], ey - cap_r + shift[1], ex + cap_r + shift[0], ey + cap_r + shift[1]],
                         fill=cap, outline=(20, 20, 20))
            # the box in frame coordinates: the drawing's extent minus the camera offset (what the viewer sees)
            xs = [c[0] for c in corners] + [ex - cap_r, ex + cap_r]
            ys = [c[1] for c in corners] + [ey - cap_r, ey + cap_r]
            x0, x1 = min(xs) - dx, max(xs) - dx
            y0, y1 = min(ys) - dy, max(ys) - dy
            box = [round(min(max(v, 0.0), size) / size, 4) for v in (x0, y0, x1, y1)]
        frame = np.asarray(img)[margin + dy: margin + dy + size, margin + dx: margin + dx + size]
        frames.append(frame)
        boxes.append(box)
    return np.stack(frames), boxes, (start, start + spec.num_frames)
