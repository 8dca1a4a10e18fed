"""Does the attention find the action? Localisation scores on the synthetic dataset, whose ground truth is known.

`istpan data synth` writes, per video, the actor's box on every frame and the frame span of the action. With those:

    pointing game     on the K frames the model samples, is the hottest attention cell inside the actor's box?
                      Reported next to its chance level: the hit rate of a uniformly random cell on the same grid.
    mass in box       the share of each frame's attention inside the actor's box, next to the box's area share
                      (what a map blind to the actor would put there).
    temporal IoU      (untrimmed set) sliding windows, the segments where the true class scores above the threshold,
                      IoU of their union with the true span; mean over videos.
    frame mAP         (untrimmed set) Charades-style per-frame localisation mAP at 25 time points per video,
                      beside the video-level mAP of the same sliding-window run (mean of window scores).

The numbers here are what `istpan demo` and the README report; they need only a model, its meta and the dataset root.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.data.preprocess import Preprocessing
from istpan.files.description import ModelDescription
from istpan.inference.predict import device_of

__all__ = ["evaluate_localization", "mass_in_box", "model_view", "pointing_chance"]

log = logging.getLogger(__name__)


def pointing_chance(h: int, w: int, box: tuple[float, ...]) -> float:
    """Hit rate of a uniformly random cell of an h×w grid: the fraction of cell centres inside the box."""
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(w) + 0.5) / w
    inside_y = ((ys >= box[1]) & (ys <= box[3])).sum().item()
    inside_x = ((xs >= box[0]) & (xs <= box[2])).sum().item()
    return inside_y * inside_x / (h * w)


def mass_in_box(heat: torch.Tensor, box: tuple[float, ...], size: int) -> float:
    """Fraction of one frame's attention (h, w) that falls inside the box, on the heat upsampled to size×size.

    Compare with the box's area share: a map that ignores the actor puts about that fraction inside it.
    """
    from istpan.viz.overlay import upsample_heat

    big = upsample_heat(heat[None], (size, size))[0].clamp_min(0)  # (size, size) as drawn in the overlay
    x0, y0, x1, y1 = (round(v * size) for v in box)
    total = float(big.sum())
    return float(big[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0


@torch.no_grad()
def model_view(model: nn.Module, pre: Preprocessing, path: Path, video: dict[str, Any]
               ) -> tuple[torch.Tensor, Any, list[tuple[float, ...] | None]]:
    """One synthetic video as the model sees it: uint8 views (K, s, s, 3), the model's output on them, and the
    actor's box on each sampled frame in view coordinates (None: actor invisible (blink) or cropped away)."""
    from istpan.data import read_frames, video_info

    info = video_info(path)
    indices = pre.indices(int(video["num_frames"]))
    views = pre.view(read_frames(path, indices, short_side=pre.decode_short_side))  # (K, s, s, 3)
    out = model(pre.to_input(views)[None].to(device_of(model)))
    boxes = [video["boxes"][t] for t in indices]
    return views, out, [pre.box_to_view(b, info.height, info.width) if b is not None else None for b in boxes]


def _pointing(model: nn.Module, pre: Preprocessing, path: Path, video: dict[str, Any], tolerance: float
              ) -> dict[str, float]:
    """Sums over the model's K sampled frames of one video: hits, frames, chance, mass in box, box area share."""
    from istpan.evaluation.localization import pointing_game
    from istpan.models import attention_maps

    sums = dict(hits=0.0, frames=0.0, chance=0.0, mass=0.0, area=0.0)
    _, out, boxes = model_view(model, pre, path, video)
    if out.attn is None:  # TSN: no attention to score
        return sums
    heat = attention_maps(out)[0].float().cpu()  # (K, h, w)
    for k, box in enumerate(boxes):
        if box is None:
            continue
        sums["hits"] += pointing_game(heat[k], box, tolerance=tolerance)
        sums["frames"] += 1
        sums["chance"] += pointing_chance(heat.shape[1], heat.shape[2], box)
        sums["mass"] += mass_in_box(heat[k], box, pre.input_size)
        x0, y0, x1, y1 = (round(v * pre.input_size) for v in box)
        sums["area"] += (x1 - x0) * (y1 - y0) / pre.input_size**2
    return sums


def evaluate_localization(model: nn.Module, meta: dict[str, Any], root: str | Path, *, split: str = "val",
                          window: int | None = None, stride: int | None = None, threshold: float = 0.5,
                          tolerance: float = 0.0, max_videos: int | None = None) -> dict[str, Any]:
    """Localisation scores of `model` on the synthetic dataset at `root` (see module docstring).

    window / stride are in frames (default: the action length and half of it). Returns videos, frames (scored
    frames: actor visible), pointing_game, pointing_chance, mass_in_box, box_area_share (percent, mean over frames);
    and on an untrimmed dataset also temporal_iou (mean, 0..1), frame_mAP and video_mAP (percent). Keys that do not
    apply are None.
    """
    from istpan.data.tools.synth import load_ground_truth
    from istpan.evaluation.localization import frame_targets, localization_map, temporal_iou
    from istpan.evaluation.metrics import multilabel_metrics
    from istpan.inference.windows import frame_scores, sliding_window_predict

    root = Path(root)
    gt = load_ground_truth(root)
    spec, num_classes = gt["spec"], len(gt["classes"])
    videos = [(rel, v) for rel, v in sorted(gt["videos"].items()) if v["split"] == split][:max_videos]
    pre = ModelDescription.from_dict(meta, model=model).preprocessing
    model.eval()
    sums = dict(hits=0.0, frames=0.0, chance=0.0, mass=0.0, area=0.0)
    ious, f_scores, f_targets, v_scores, v_targets = [], [], [], [], []
    window = window or int(spec["num_frames"])
    stride = stride or max(1, window // 2)
    for rel, video in videos:
        path = root / rel
        for key, value in _pointing(model, pre, path, video, tolerance).items():
            sums[key] += value
        if not spec.get("untrimmed"):
            continue
        result = sliding_window_predict(model, meta, path, window=window, stride=stride, unit="frames",
                                        threshold=threshold)
        fps = result["fps"] or float(spec["fps"])
        span = (video["span"][0] / fps, video["span"][1] / fps)
        label = int(video["label"])
        ious.append(temporal_iou([(s["start_s"], s["end_s"]) for s in result["segments"] if s["index"] == label],
                                 span))
        f_scores.append(frame_scores(result))  # (25, C)
        f_targets.append(frame_targets([(label, *span)], result["duration_s"], num_classes))
        v_scores.append(torch.tensor(result["scores"]))
        v_targets.append(torch.nn.functional.one_hot(torch.tensor(label), num_classes).float())
    frames = sums["frames"]

    def pct(total: float) -> float | None:
        return 100.0 * total / frames if frames else None

    report: dict[str, Any] = {
        "videos": len(videos),
        "frames": int(frames),
        "pointing_game": pct(sums["hits"]),
        "pointing_chance": pct(sums["chance"]),
        "mass_in_box": pct(sums["mass"]),
        "box_area_share": pct(sums["area"]),
        "temporal_iou": float(torch.tensor(ious).mean()) if ious else None,
        "frame_mAP": localization_map(torch.stack(f_scores), torch.stack(f_targets))["mAP"] if f_scores else None,
        "video_mAP": multilabel_metrics(torch.stack(v_scores), torch.stack(v_targets))["mAP"] if v_scores else None,
    }
    log.info("localisation on %s (%s): %s", root, split, report)
    return report
