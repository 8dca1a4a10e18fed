"""Drawing one explained video: the pictures of `istpan predict --explain`, from a forward pass already made.

Per video, in its folder:
    attention.png       the K sampled frames (top row) and the same frames with the fused attention overlaid
    levels.png          (levels=True) one row per pyramid level's own attention softmax(Y_j), beside the fused one
    attention.mp4       the whole video (what the model sees: resized and centre-cropped) with the heat overlaid
    attention_mass.png  how the attention mass is spread over the K sampled frames

Nothing here runs the model: `draw_explanation` takes the `istpan.inference.predict.Inference` of the prediction that is
printed (its uint8 views and its ModelOutput), so the picture explains exactly that prediction. Only the overlay
video decodes the file again, to show every frame (not just the K the model saw); see `istpan.inference.explain` for the
run over many videos and the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from istpan.data.preprocess import Preprocessing

__all__ = ["MAX_VIDEO_FRAMES", "draw_explanation"]

MAX_VIDEO_FRAMES = 600  # longer inputs are subsampled in time for the overlay video (keeps files small)


def _views(path: Path, pre: Preprocessing, step: int) -> Iterator[tuple[int, np.ndarray]]:
    from istpan.data import iter_frames

    for t, frame in iter_frames(path, short_side=pre.decode_short_side, step=step, backend=pre.backend):
        yield t, pre.view(frame).numpy()


def _level_grid(views: np.ndarray, out: Any, labels: list[str], path: Path) -> Path:
    """Rows: fused attention, then each pyramid level (shallow -> deep); columns: the sampled frames."""
    from istpan.models import attention_maps
    from istpan.viz.overlay import frame_grid, overlay_heatmap

    rows, names = [], []
    for level in [None, *range(len(out.scale_attn))]:
        heat = attention_maps(out, level=level)[0].cpu()  # (K, h, w)
        rows.append(overlay_heatmap(views, heat))
        names.append("fused" if level is None else f"level {level + 1}")
    frame_grid(np.concatenate(rows), ncols=len(views), col_labels=labels, row_labels=names).save(path)
    return path


def draw_explanation(inference: Any, pre: Preprocessing, vdir: str | Path, *, fps: float, levels: bool = False,
                     video_format: str = "mp4") -> dict[str, Any]:
    """Draw one inference into folder `vdir`; returns {grid, levels_grid, video, timeline, note} (paths or None).

    `fps` (> 0) places the sampled frames in time. A TSN model (no attention) gets the sampled frames only.
    """
    from istpan.models import attention_maps
    from istpan.viz.overlay import frame_grid, overlay_heatmap
    from istpan.viz.timeline import plot_attention_mass
    from istpan.viz.video import write_attention_video

    vdir, path, out = Path(vdir), Path(inference.path), inference.output
    indices = inference.indices
    drawn: dict[str, Any] = {"grid": None, "levels_grid": None, "video": None, "timeline": None}
    vdir.mkdir(parents=True, exist_ok=True)
    views_np = inference.views.numpy()  # (K, s, s, 3)
    labels = [f"t={i / fps:.1f}s" for i in indices]
    if out.attn is None:  # TSN: nothing to overlay, still show what was sampled
        drawn["note"] = "this model has no attention (TSN baseline): frames shown without heatmap"
        drawn["grid"] = str(vdir / "frames.png")
        frame_grid(views_np, col_labels=labels).save(drawn["grid"])
        return drawn

    heat = attention_maps(out)[0].float()  # (K, h, w), sums to 1 over the clip
    drawn["grid"] = str(vdir / "attention.png")
    grid = np.concatenate([views_np, overlay_heatmap(views_np, heat)])  # (2K, s, s, 3): frames row, overlay row
    frame_grid(grid, ncols=len(indices), col_labels=labels, row_labels=["frames", "attention"]).save(drawn["grid"])
    if levels and out.scale_attn:
        drawn["levels_grid"] = str(_level_grid(views_np, out, labels, vdir / "levels.png"))
    step = max(1, math.ceil(inference.video_frames / MAX_VIDEO_FRAMES))
    drawn["video"] = str(write_attention_video(vdir / f"attention.{video_format}", _views(path, pre, step), heat,
                                               indices, fps=fps / step))
    drawn["timeline"] = str(plot_attention_mass([i / fps for i in indices], heat.sum((1, 2)),
                                                vdir / "attention_mass.png",
                                                title=f"attention mass over time: {path.name}"))
    return drawn
