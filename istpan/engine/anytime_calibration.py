"""`istpan eval --anytime`: calibrate anytime inference on a checkpoint's validation split, and the file it writes.

Anytime inference (engine/anytime.py) stops once the top-1 margin after n frames reaches a threshold; the thresholds
are fit on labelled videos. This module runs that fit for a checkpoint: every validation video's probabilities after
1, 2, ..., N frames (`anytime_scores`: each frame through the backbone once), then `calibrate_thresholds` (one margin
per step, the fewest mean frames within `max_loss` points of fixed K = N). It reports what the rule costs and gains
next to fixed K = 1..N (each K's own segment centres, as `istpan eval data.test_segments=K` would) and writes it all
to a JSON file that `istpan predict --confidence FILE` reads back (thresholds, frame order and N in one place, so they
cannot drift apart).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from istpan.engine.anytime import (
    DEFAULT_ORDER,
    FRAME_ORDERS,
    anytime_scores,
    calibrate_thresholds,
    frame_order,
    stopping_point,
)
from istpan.errors import UserError

__all__ = ["Calibration", "calibrate_checkpoint", "format_report", "load_calibration", "resolve_confidence"]

FORMAT = "istpan-anytime-calibration/1"  # bump when a field's meaning changes


@dataclass
class Calibration:
    """What `istpan eval --anytime` measured and what `predict --confidence FILE` needs (all accuracies in %)."""

    thresholds: list[float]  # N - 1 margins, one per number of frames seen (above 1: never stop there)
    frame_order: str  # the rule's name (FRAME_ORDERS) ...
    order: list[int]  # ... and the permutation of the N candidates it gave, the one predict uses
    max_frames: int  # N
    max_loss: float  # target: top-1 points below fixed K = N
    accuracy: float  # top-1 of the calibrated rule on the calibration videos
    mean_frames: float  # its mean frames through the backbone per video
    full_accuracy: float  # fixed K = N (all N candidates): the reference the loss is measured from
    prefix_accuracy: list[float]  # top-1 after the first n frames of the order, n = 1..N
    fixed_k_accuracy: dict[int, float] = field(default_factory=dict)  # fixed K = k (its own segment centres)
    num_videos: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # which videos it was calibrated on
    checkpoint: str = ""
    format: str = FORMAT

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")
        return path


def load_calibration(path: str | Path) -> Calibration:
    """Read a file written by `istpan eval --anytime --json FILE`; any problem is one UserError line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: calibration file not found (write one with `istpan eval --anytime --json {path}`)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a calibration file: bad JSON ({err})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"{path}: not a calibration file of this version (expected \"format\": \"{FORMAT}\"; "
                        "write one with `istpan eval --anytime --json FILE`)")
    try:
        num = int(raw["max_frames"])
        thresholds = [float(t) for t in raw["thresholds"]]
        order = frame_order([int(k) for k in raw["order"]], num)  # a permutation of 0..N-1
        raw["fixed_k_accuracy"] = {int(k): float(v) for k, v in (raw.get("fixed_k_accuracy") or {}).items()}
        cal = Calibration(**{**raw, "thresholds": thresholds, "order": order, "max_frames": num})
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a calibration file: {type(err).__name__} {err}") from None
    if len(thresholds) != num - 1:
        raise UserError(f"{path}: {len(thresholds)} thresholds for max_frames {num}; expected {num - 1} (one per step)")
    if any(t < 0 for t in thresholds):
        raise UserError(f"{path}: thresholds are margins p1 - p2 >= 0, got {thresholds}")
    return cal


def resolve_confidence(
    confidence: float | Sequence[float] | str | Path | Calibration | None,
    max_frames: int | None,
    order: str | Sequence[int] | None,
) -> tuple[float | list[float] | None, int, str | list[int]]:
    """(thresholds, N, order) for `predict_anytime` from what the user gave: numbers need max_frames; a calibration
    (or its file's path) brings its own N and order, and an explicit max_frames / order must agree with it."""
    if isinstance(confidence, (str, Path)):
        confidence = load_calibration(confidence)
    if isinstance(confidence, Calibration):
        where = f"the calibration{f' ({confidence.checkpoint})' if confidence.checkpoint else ''}"
        if max_frames is not None and max_frames != confidence.max_frames:
            raise UserError(f"--max-frames {max_frames} does not match {where}: calibrated for "
                            f"{confidence.max_frames} frames (leave --max-frames out to use its own)")
        if order is not None and frame_order(order, confidence.max_frames) != confidence.order:
            raise UserError(f"--frame-order {order} does not match {where}: calibrated with the "
                            f"{confidence.frame_order} order {confidence.order} (leave --frame-order out)")
        return list(confidence.thresholds), confidence.max_frames, list(confidence.order)
    if max_frames is None:
        raise UserError("--confidence with numbers needs --max-frames N (a calibration file brings its own)")
    if isinstance(confidence, Sequence):
        confidence = [float(v) for v in confidence]
    return confidence, max_frames, order if order is not None else DEFAULT_ORDER


@torch.no_grad()
def calibrate_checkpoint(
    checkpoint: str,
    *,
    max_frames: int | None = None,
    max_loss: float = 1.0,
    order: str = DEFAULT_ORDER,
    fixed_k: bool = True,
    batch_size: int | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
) -> Calibration:
    """Per-step margin thresholds for a checkpoint, fit on its validation split (stored config + `key=value`
    overrides, e.g. `data.val_annotations=heldout.txt`). N = max_frames or the checkpoint's K. With fixed_k, fixed
    K = 1..N are evaluated too (each K's own frames: K more passes over the split, for the comparison only)."""
    from istpan.config import apply_overrides, config_from_dict
    from istpan.engine.builders import check_data_paths, pick_device
    from istpan.engine.checkpoint import load_checkpoint, load_model
    from istpan.engine.evaluate import evaluate, val_loader

    if order not in FRAME_ORDERS:
        raise UserError(f"--frame-order {order}: one of {', '.join(FRAME_ORDERS)}")
    if max_loss < 0:
        raise UserError(f"--max-loss must be >= 0 (top-1 points below fixed K), got {max_loss}")
    state = load_checkpoint(checkpoint)
    if "config" not in state:
        raise UserError(f"{checkpoint}: checkpoint has no stored config; calibrate with the training run's own")
    cfg = apply_overrides(config_from_dict(state["config"]), list(overrides))
    if cfg.data.format == "webdataset":
        raise UserError("--anytime calibrates on a list or folder dataset (labelled video files), not on shards")
    device = pick_device(cfg.train.device)
    model, meta = load_model(checkpoint, device=device)
    if meta.get("multi_label"):
        raise UserError(f"{checkpoint}: anytime calibration measures top-1; this checkpoint is multi-label")
    num = int(max_frames or (meta.get("preprocessing") or {}).get("num_segments") or cfg.data.test_segments)
    if num < 2:
        raise UserError(f"--max-frames must be >= 2 to stop early, got {num}")
    check_data_paths(cfg)
    cfg.data.test_segments = num
    loader, dataset = val_loader(cfg, model, meta, source=checkpoint, batch_size=batch_size)
    taken = frame_order(order, num)
    scores, labels = [], []
    for batch in tqdm(loader, desc=f"anytime scores (1..{num} frames)", disable=not progress, leave=False):
        video = batch["video"]
        if video.shape[0] == 0:  # every clip of this batch failed to decode (logged by the dataset)
            continue
        if video.dim() == 6:  # (B, 1, N, 3, S, S): one view
            video = video[:, 0]
        scores.append(anytime_scores(model, video.to(device), order=taken).cpu())  # (B, N, C)
        labels.append(batch["label"])
    if not scores:
        from istpan.engine.evaluate import nothing_decoded

        raise nothing_decoded(0, split=f"{checkpoint}: validation")
    all_scores, all_labels = torch.cat(scores), torch.cat(labels).long()  # (V, N, C), (V,)
    thresholds, accuracy, frames = calibrate_thresholds(all_scores, all_labels, max_loss=max_loss)
    correct = all_scores.argmax(-1) == all_labels[:, None]  # (V, N)
    fixed: dict[int, float] = {}
    if fixed_k:
        for k in tqdm(range(1, num + 1), desc="fixed K", disable=not progress, leave=False):
            cfg_k = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_segments=k))
            loader_k, _ = val_loader(cfg_k, model, meta, source=checkpoint, batch_size=batch_size)
            fixed[k] = float(evaluate(model, loader_k, multi_label=False, device=device)["top1"])
    used = stopping_point(all_scores, thresholds)
    assert abs(used.float().mean().item() - frames) < 1e-6  # the search's own bookkeeping agrees
    return Calibration(
        thresholds=[float(t) for t in thresholds], frame_order=order, order=taken, max_frames=num,
        max_loss=float(max_loss), accuracy=float(accuracy), mean_frames=float(frames),
        full_accuracy=100.0 * correct[:, -1].float().mean().item(),
        prefix_accuracy=(100.0 * correct.float().mean(0)).tolist(), fixed_k_accuracy=fixed,
        num_videos=len(all_labels), checkpoint=str(checkpoint),
        data={"root": cfg.data.root, "val_annotations": cfg.data.val_annotations, "format": cfg.data.format,
              "overrides": list(overrides), "skipped": len(dataset) - len(all_labels)},
    )


def format_report(cal: Calibration) -> str:
    """The table `istpan eval --anytime` prints: fixed K, the order's prefixes, and the calibrated rule."""
    lines = [f"anytime calibration on {cal.num_videos} videos, frame order {cal.frame_order} {cal.order}, "
             f"up to {cal.max_frames} frames, target <= {cal.max_loss:g} points below fixed K = {cal.max_frames}",
             f"{'frames':>8} {'fixed K top-1 %':>16} {'first n of the order %':>23}"]
    for n in range(1, cal.max_frames + 1):
        fixed = cal.fixed_k_accuracy.get(n)
        lines.append(f"{n:>8} {'-' if fixed is None else f'{fixed:.2f}':>16} {cal.prefix_accuracy[n - 1]:>23.2f}")
    thr = ",".join(f"{t:g}" for t in cal.thresholds)
    lines.append(f"calibrated (one margin per step {thr}): top-1 {cal.accuracy:.2f} % with {cal.mean_frames:.2f} "
                 f"frames on average (fixed K = {cal.max_frames}: {cal.full_accuracy:.2f} % with "
                 f"{cal.max_frames}); measured on the videos it was fit on: report on other videos")
    return "\n".join(lines)
