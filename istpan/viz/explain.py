"""`istpan predict --explain OUTDIR`: for each video, what the model predicts and where in space and time it looks.

Per video, in OUTDIR/<nn>_<name>/:
    attention.png       the K sampled frames (top row) and the same frames with the fused attention overlaid
    levels.png          (levels=True) one row per pyramid level's own attention softmax(Y_j), beside the fused one
    attention.mp4       the whole video (what the model sees: resized and centre-cropped) with the heat overlaid
    attention_mass.png  how the attention mass is spread over the K sampled frames
and OUTDIR/index.html showing all of it, plus OUTDIR/results.json with the numbers.

The model is run once per video on K segment-centre frames (TSN test sampling, the checkpoint's own K), i.e. the
same forward as a plain prediction, so the picture explains the prediction that is printed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from istpan.errors import UserError
from istpan.viz._preprocess import (
    Preprocessing,
    class_names,
    device_of,
    probabilities,
    slug,
)
from istpan.viz._preprocess import (
    topk as topk_of,
)

__all__ = ["explain_video", "explain_videos"]

log = logging.getLogger(__name__)

MAX_VIDEO_FRAMES = 600  # longer inputs are subsampled in time for the overlay video (keeps files small)


def _views(path: Path, pre: Preprocessing, step: int) -> Iterator[tuple[int, np.ndarray]]:
    from istpan.data import iter_frames

    for t, frame in iter_frames(path, short_side=pre.short_side, step=step):
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


@torch.no_grad()
def explain_video(model: nn.Module, meta: dict[str, Any], path: str | Path, vdir: str | Path, *,
                  levels: bool = False, topk: int = 5, video_format: str = "mp4") -> dict[str, Any]:
    """Explain one video into folder `vdir`; returns its entry (see `explain_videos`). Raises VideoError."""
    from istpan.data import count_frames, read_frames, video_info
    from istpan.models import attention_maps
    from istpan.viz.overlay import frame_grid, overlay_heatmap
    from istpan.viz.timeline import plot_attention_mass
    from istpan.viz.video import write_attention_video

    path, vdir = Path(path), Path(vdir)
    pre = Preprocessing.from_meta(model, meta)
    info = video_info(path)
    total = count_frames(path)
    if total == 0:
        raise UserError(f"{path}: no frame could be decoded; is it a video file?")
    fps = info.fps if info.fps > 0 else 25.0
    indices = pre.indices(total)
    views = pre.view(read_frames(path, indices, short_side=pre.short_side))  # (K, s, s, 3) what the model sees

    model.eval()
    out = model(pre.to_input(views)[None].to(device_of(model)))  # (1, K, 3, s, s) -> ModelOutput
    probs = probabilities(model, out.logits, meta)[0].cpu()  # (C,)
    names = class_names(meta, probs.shape[0])
    entry: dict[str, Any] = {
        "path": str(path), "name": path.name, "fps": info.fps, "num_frames": total, "frame_indices": indices,
        "topk": topk_of(probs, names, topk), "attention_mass": None,
        "grid": None, "levels_grid": None, "video": None, "timeline": None, "error": None,
    }
    vdir.mkdir(parents=True, exist_ok=True)
    views_np = views.numpy()
    labels = [f"t={i / fps:.1f}s" for i in indices]
    if out.attn is None:  # TSN: nothing to overlay, still show what was sampled
        entry["note"] = "this model has no attention (TSN baseline): frames shown without heatmap"
        entry["grid"] = str(vdir / "frames.png")
        frame_grid(views_np, col_labels=labels).save(entry["grid"])
        return entry

    heat = attention_maps(out)[0].float().cpu()  # (K, h, w), sums to 1 over the clip
    mass = heat.sum((1, 2))  # (K,)
    entry["attention_mass"] = mass.tolist()
    entry["grid"] = str(vdir / "attention.png")
    grid = np.concatenate([views_np, overlay_heatmap(views_np, heat)])  # (2K, s, s, 3): frames row, overlay row
    frame_grid(grid, ncols=len(indices), col_labels=labels, row_labels=["frames", "attention"]).save(entry["grid"])
    if levels and out.scale_attn:
        entry["levels_grid"] = str(_level_grid(views_np, out, labels, vdir / "levels.png"))
    step = max(1, math.ceil(total / MAX_VIDEO_FRAMES))
    entry["video"] = str(write_attention_video(vdir / f"attention.{video_format}", _views(path, pre, step), heat,
                                               indices, fps=fps / step))
    entry["timeline"] = str(plot_attention_mass([i / fps for i in indices], mass, vdir / "attention_mass.png",
                                                title=f"attention mass over time: {path.name}"))
    return entry


def explain_videos(model: nn.Module, meta: dict[str, Any], paths: Sequence[str | Path], outdir: str | Path, *,
                   levels: bool = False, topk: int = 5, num_segments: int | None = None) -> list[dict[str, Any]]:
    """Explain each video and write OUTDIR/index.html (offline) and OUTDIR/results.json; returns one dict per video.

    `num_segments` overrides the checkpoint's K (the model takes any K), as `istpan predict --num-segments` does.

    Entry keys: path, name, fps, num_frames, frame_indices (the K sampled frames), topk ([{label, index, score}]),
    attention_mass ([K] or None for TSN), grid / levels_grid / video / timeline (file paths or None), error (None,
    or the one-line reason a broken video was skipped: one bad file does not stop the others).
    """
    from istpan.viz.report import write_report

    if num_segments is not None:  # K of segment sampling and of a dense clip alike, as in `load_clip`
        k = int(num_segments)
        meta = {**meta, "preprocessing": {**(meta.get("preprocessing") or {}), "num_segments": k, "clip_len": k}}
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, p in enumerate(paths):
        p = Path(p)
        try:
            entries.append(explain_video(model, meta, p, outdir / f"{i:02d}_{slug(p.stem)}", levels=levels,
                                         topk=topk))
        except UserError as err:  # VideoError is a UserError: unreadable or missing file
            log.warning("skipping %s", err)
            entries.append({"path": str(p), "name": p.name, "error": str(err)})
    write_report(outdir, entries)
    (outdir / "results.json").write_text(json.dumps(entries, indent=2))
    return entries
