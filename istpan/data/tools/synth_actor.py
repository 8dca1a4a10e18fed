"""The synthetic dataset's actor: its per-video parameters and its pose over the action's time.

Shared by both scenes (`synth.py`'s simple one, `synth_scenes.py`'s cluttered one), so that the classes and the
time-reversal pairs are defined once.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PALETTE", "actor_params", "actor_pose", "bar_polygon"]

PALETTE = np.array(
    [[230, 60, 50], [50, 170, 70], [60, 90, 230], [235, 200, 40], [200, 70, 200], [40, 200, 210], [240, 140, 40]],
    dtype=np.float64,
)


def bar_polygon(cx: float, cy: float, length: float, angle: float) -> list[tuple[float, float]]:
    """Corners of the actor's bar (length × length/3) centred at (cx, cy), rotated by angle (radians, y down)."""
    hl, hw = length / 2, length / 6
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in ((-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw))]


def actor_pose(cls: str, t: float, p: dict) -> dict:
    """Actor state at action time t in [0, 1]: centre, bar length, angle, visible, flash (white body)."""
    cx, cy, length, angle = p["cx"], p["cy"], p["length"], p["angle"]
    visible, flash = True, False
    if cls in ("move_left", "move_right"):
        sign = 1.0 if cls == "move_right" else -1.0
        cx = p["cx"] + sign * (t - 0.5) * p["travel"]
    elif cls in ("grow", "shrink"):
        u = t if cls == "grow" else 1.0 - t
        length = p["length"] * (p["small"] + (p["big"] - p["small"]) * u)
    elif cls in ("rotate_cw", "rotate_ccw"):
        # y points down in image coordinates, so a growing angle turns clockwise on screen
        sign = 1.0 if cls == "rotate_cw" else -1.0
        angle = p["angle"] + sign * (t - 0.5) * p["turn"]
    elif cls in ("blink", "flash"):
        on = math.floor(t * p["cycles"] * 2 + p["phase"]) % 2 == 0
        visible = on if cls == "blink" else True
        flash = (not on) if cls == "flash" else False
    return dict(cx=cx, cy=cy, length=length, angle=angle, visible=visible, flash=flash)


def actor_params(
    cls: str, rng: np.random.Generator, size: int, *, length_range: tuple[float, float] = (0.18, 0.42)
) -> dict:
    """Random per-video actor parameters, chosen so the whole motion stays inside the frame.

    length_range: bar length as a fraction of the frame size (the cluttered scene uses a smaller actor)."""
    length = rng.uniform(*length_range) * size
    p = dict(length=length, angle=0.0, small=0.5, big=1.5, travel=0.0, turn=0.0, cycles=0.0, phase=0.0)
    if cls in ("rotate_cw", "rotate_ccw"):
        p["angle"] = rng.uniform(0, 2 * math.pi)  # random start, so the two senses see the same set of angles
        p["turn"] = rng.uniform(1.0, 1.5) * math.pi
    if cls in ("blink", "flash"):
        p["cycles"] = float(rng.uniform(2.0, 3.5))
        p["phase"] = float(rng.uniform(0, 2))
    reach = length * (p["big"] if cls in ("grow", "shrink") else 1.0) / 2 + 2
    if cls in ("move_left", "move_right"):
        p["travel"] = rng.uniform(0.3, 0.5) * size
        margin_x = reach + p["travel"] / 2
    else:
        margin_x = reach
    margin_x = min(margin_x, size / 2 - 1)
    margin_y = min(reach if cls.startswith("rotate") or cls in ("grow", "shrink") else length / 6 + 4, size / 2 - 1)
    p["cx"] = rng.uniform(margin_x, size - margin_x)
    p["cy"] = rng.uniform(margin_y, size - margin_y)
    p["colour"] = PALETTE[rng.integers(len(PALETTE))]
    return p
