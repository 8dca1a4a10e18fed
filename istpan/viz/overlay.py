"""Attention heatmaps drawn over video frames, and frames laid out in labelled grids.

The model's attention lives on the top feature map (h×w cells per frame, e.g. 7×7), far coarser than the frames. We
upsample it bilinearly to the frame size so the picture shows where the mass is without blocky cell edges, colour it
with a matplotlib colormap, and alpha-blend it over the frames. The heat is normalised jointly over the whole clip
(not per frame) because the IST-PAN softmax runs over all K·h·w positions: a frame the model ignores should look
cold, not be stretched to full range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

__all__ = ["colorize", "frame_grid", "overlay_heatmap", "upsample_heat"]


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def upsample_heat(heat: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of heat (K, h, w) to (K, H, W), each cell's value centred on the pixels it covers."""
    heat = torch.as_tensor(_as_numpy(heat), dtype=torch.float32)
    if heat.ndim != 3:
        raise ValueError(f"heat must be (K, h, w), got shape {tuple(heat.shape)}")
    # align_corners=False keeps cell i's centre at pixel (i + 0.5) * H / h, where the cell really is.
    return F.interpolate(heat[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]  # (K, H, W)


def colorize(heat: torch.Tensor | np.ndarray, *, cmap: str = "jet", vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """Colour a heat array (...,) into uint8 RGB (..., 3); vmin/vmax default to the array's own min and max."""
    from matplotlib import colormaps  # lazy: keeps `import istpan.viz.overlay` light

    h = _as_numpy(heat).astype(np.float32)
    lo = float(h.min()) if vmin is None else vmin
    hi = float(h.max()) if vmax is None else vmax
    scaled = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    rgba = colormaps[cmap](np.clip(scaled, 0.0, 1.0))  # (..., 4) float in [0, 1]
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay_heatmap(frames: torch.Tensor | np.ndarray, heat: torch.Tensor | np.ndarray, *, alpha: float = 0.5,
                    cmap: str = "jet", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Blend coloured attention over frames: uint8 (K, H, W, 3) + heat (K, h, w) -> uint8 (K, H, W, 3).

    The heat is normalised over the whole clip (pass vmin/vmax to share a scale across clips, e.g. the frames of a
    video written in chunks). `alpha` is the weight of the heatmap colour.
    """
    frames = _as_numpy(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (K, H, W, 3), got shape {frames.shape}")
    heat = _as_numpy(heat)
    if heat.ndim != 3 or heat.shape[0] != frames.shape[0]:
        raise ValueError(f"heat must be (K, h, w) with K={frames.shape[0]}, got shape {heat.shape}")
    lo = float(heat.min()) if vmin is None else vmin
    hi = float(heat.max()) if vmax is None else vmax
    big = upsample_heat(heat, frames.shape[1:3]).numpy()  # (K, H, W)
    colour = colorize(big, cmap=cmap, vmin=lo, vmax=hi).astype(np.float32)  # (K, H, W, 3)
    out = (1.0 - alpha) * frames.astype(np.float32) + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def frame_grid(images: torch.Tensor | np.ndarray | Sequence[np.ndarray], *, ncols: int | None = None,
               col_labels: Sequence[str] | None = None, row_labels: Sequence[str] | None = None,
               pad: int = 2, background: int = 255) -> Image.Image:
    """Tile uint8 images (N, H, W, 3) into rows of `ncols` (default: all in one row) as one PIL image.

    Column labels go above the first row (e.g. timestamps), row labels left of each row (e.g. "fused", "level 1"),
    so a pyramid-level comparison reads as a table: one row per attention map, one column per sampled frame.
    """
    arr = np.stack([_as_numpy(im) for im in images]) if isinstance(images, Sequence) else _as_numpy(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"images must be uint8 (N, H, W, 3) with N >= 1, got shape {arr.shape}")
    n, h, w, _ = arr.shape
    ncols = n if ncols is None else max(1, ncols)
    nrows = -(-n // ncols)
    font = ImageFont.load_default()
    line = 12 + pad  # the default bitmap font is ~11 px high
    top = line if col_labels else 0
    left = (max(len(s) for s in row_labels) * 7 + 2 * pad) if row_labels else 0
    grid = Image.new("RGB", (left + ncols * (w + pad) + pad, top + nrows * (h + pad) + pad), (background,) * 3)
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        r, c = divmod(i, ncols)
        x, y = left + pad + c * (w + pad), top + pad + r * (h + pad)
        grid.paste(Image.fromarray(np.ascontiguousarray(arr[i], dtype=np.uint8)), (x, y))
    for c, text in enumerate(list(col_labels or [])[:ncols]):
        draw.text((left + pad + c * (w + pad), 1), str(text), fill=(0, 0, 0), font=font)
    for r, text in enumerate(list(row_labels or [])[:nrows]):
        draw.text((pad, top + pad + r * (h + pad) + h // 2 - 6), str(text), fill=(0, 0, 0), font=font)
    return grid
