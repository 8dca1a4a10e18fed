"""Does the attention find the action? Localisation scores on the synthetic dataset, whose ground truth is known.

`istpan data synth` writes, per video, the actor's box on every frame and the frame span of the action. With those:

    pointing game     on the K frames the model samples, is the hottest attention cell inside the actor's box?
                      Reported next to its chance level: the hit rate of a uniformly random cell on the same grid.
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

from istpan.viz._preprocess import Preprocessing, device_of

__all__ = ["evaluate_localization", "pointing_chance"]

log = logging.getLogger(__name__)


def pointing_chance(h: int, w: int, box: tuple[float, ...]) -> float:
    """Hit rate of a uniformly random cell of an h×w grid: the fraction of cell centres inside the box."""
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(w) + 0.5) / w
    inside_y = ((ys >= box[1]) & (ys <= box[3])).sum().item()
    inside_x = ((xs >= box[0]) & (xs <= box[2])).sum().item()
    return inside_y * inside_x / (h * w)


@torch.no_grad()
def _pointing(model: nn.Module, pre: Preprocessing, path: Path, video: dict[str, Any], tolerance: float
              ) -> tuple[int, int, float]:
    """(hits, frames scored, summed chance) over the model's K sampled frames of one video."""
    from istpan.data import read_frames, video_info
    from istpan.models import attention_maps
    from istpan.viz.localization import pointing_game

    info = video_info(path)
    indices = pre.indices(int(video["num_frames"]))
    views = pre.view(read_frames(path, indices, short_side=pre.short_side))  # (K, s, s, 3)
    out = model(pre.to_input(views)[None].to(device_of(model)))
    if out.attn is None:
        return 0, 0, 0.0
    heat = attention_maps(out)[0].float().cpu()  # (K, h, w)
    hits = frames = 0
    chance = 0.0
    for k, t in enumerate(indices):
        box = video["boxes"][t]
        box = pre.box_to_view(box, info.height, info.width) if box is not None else None
        if box is None:  # actor invisible (blink) or cropped away
            continue
        hits += pointing_game(heat[k], box, tolerance=tolerance)
        frames += 1
        chance += pointing_chance(heat.shape[1], heat.shape[2], box)
    return hits, frames, chance


def evaluate_localization(model: nn.Module, meta: dict[str, Any], root: str | Path, *, split: str = "val",
                          window: int | None = None, stride: int | None = None, threshold: float = 0.5,
                          tolerance: float = 0.0, max_videos: int | None = None) -> dict[str, Any]:
    """Localisation scores of `model` on the synthetic dataset at `root` (see module docstring).

    window / stride are in frames (default: the action length and half of it). Returns pointing_game and
    pointing_chance (percent of frames), frames; and on an untrimmed dataset also temporal_iou (mean, 0..1),
    frame_mAP and video_mAP (percent). Keys that do not apply are None.
    """
    from istpan.data.synth import load_ground_truth
    from istpan.engine.metrics import multilabel_metrics
    from istpan.viz.localization import frame_targets, localization_map, temporal_iou
    from istpan.viz.untrimmed import frame_scores, sliding_window_predict

    root = Path(root)
    gt = load_ground_truth(root)
    spec, num_classes = gt["spec"], len(gt["classes"])
    videos = [(rel, v) for rel, v in sorted(gt["videos"].items()) if v["split"] == split][:max_videos]
    pre = Preprocessing.from_meta(model, meta)
    model.eval()
    hits = frames = 0
    chance = 0.0
    ious, f_scores, f_targets, v_scores, v_targets = [], [], [], [], []
    window = window or int(spec["num_frames"])
    stride = stride or max(1, window // 2)
    for rel, video in videos:
        path = root / rel
        h, n, c = _pointing(model, pre, path, video, tolerance)
        hits, frames, chance = hits + h, frames + n, chance + c
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
    report: dict[str, Any] = {
        "videos": len(videos),
        "frames": frames,
        "pointing_game": 100.0 * hits / frames if frames else None,
        "pointing_chance": 100.0 * chance / frames if frames else None,
        "temporal_iou": float(torch.tensor(ious).mean()) if ious else None,
        "frame_mAP": localization_map(torch.stack(f_scores), torch.stack(f_targets))["mAP"] if f_scores else None,
        "video_mAP": multilabel_metrics(torch.stack(v_scores), torch.stack(v_targets))["mAP"] if v_scores else None,
    }
    log.info("localisation on %s (%s): %s", root, split, report)
    return report
