"""`istpan eval --anytime`: calibrate anytime inference on a checkpoint's validation split, and the file it writes.

Anytime inference (inference/anytime.py) stops after n frames when a rule says so; the rule is fit on labelled videos.
This module runs that fit for a checkpoint: every validation video's probabilities after 1, 2, ..., N frames
(`anytime_scores`: each frame through the backbone once), then one of RULES:

    gain    (default) a per-step model of the top-1 gain of waiting for all N frames and one threshold on it
            (`anytime_gain.calibrate_gain`, threshold chosen on cross-fitted predictions)
    margin  one top-1 margin threshold per step (`anytime.calibrate_thresholds`), the issue's first rule

both the fewest mean frames whose loss bound (loss + z * SE vs fixed K = N, z = 2 by default) stays within
`max_loss` points. It reports what the rule costs and gains next to fixed K = 1..N (each K's own segment centres, as
`istpan eval data.test_num_frames=K` would) and writes it all to a JSON file that `istpan predict --confidence FILE`
reads back (rule, thresholds, gain model, frame order and N in one place, so they cannot drift apart).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from istpan.errors import UserError
from istpan.inference.anytime import (
    DEFAULT_ORDER,
    FRAME_ORDERS,
    anytime_scores,
    calibrate_thresholds,
    frame_order,
    stopping_point,
)
from istpan.inference.anytime_gain import GainModel, calibrate_gain, loss_bound, stopped_correct
from istpan.inference.calibration_file import (
    DEFAULT_RULE,
    DEFAULT_Z,
    RULES,
    Calibration,
    load_calibration,
    resolve_confidence,
)

__all__ = ["DEFAULT_RULE", "RULES", "Calibration", "calibrate_checkpoint", "calibrate_scores", "format_report",
           "load_calibration", "resolve_confidence"]

def calibrate_scores(
    scores: torch.Tensor, labels: torch.Tensor, *, rule: str = DEFAULT_RULE, max_loss: float = 1.0,
    z: float = DEFAULT_Z, order: str | Sequence[int] = DEFAULT_ORDER,
) -> Calibration:
    """Fit `rule` on probabilities after 1..N frames, scores (V, N, C) taken in `order`, labels (V,): the
    Calibration `calibrate_checkpoint` writes, without its data, checkpoint and fixed-K fields. What the bench
    calls on generated sets too, so the figures in docs/latency.md are the product's own calibration."""
    if rule not in RULES:
        raise UserError(f"--rule {rule}: one of {', '.join(RULES)}")
    if z < 0:
        raise UserError(f"--z must be >= 0 (standard errors added to the loss), got {z}")
    num = scores.shape[1]
    correct = scores.argmax(-1) == labels[:, None]  # (V, N)
    gain = None
    if rule == "gain":
        model, threshold, bound = calibrate_gain(scores, labels, max_loss=max_loss, z=z)
        thresholds, gain = [float(threshold)] * (num - 1), model.to_dict()
    else:
        thresholds = [float(t) for t in calibrate_thresholds(scores, labels, max_loss=max_loss, z=z)[0]]
    used = stopping_point(scores, thresholds, None if gain is None else GainModel(**gain))  # (V,)
    if rule == "margin":
        loss, se, upper = loss_bound(correct, used, z)
        bound = {"loss": loss, "se": se, "bound": upper}
    name = order if isinstance(order, str) else "custom"
    return Calibration(
        thresholds=thresholds, frame_order=name, order=frame_order(order, num), max_frames=num,
        max_loss=float(max_loss), accuracy=100.0 * stopped_correct(correct, used).float().mean().item(),
        mean_frames=used.float().mean().item(), full_accuracy=100.0 * correct[:, -1].float().mean().item(),
        prefix_accuracy=(100.0 * correct.float().mean(0)).tolist(), num_videos=len(labels), rule=rule, gain=gain,
        z=float(z), bound={k: float(v) for k, v in bound.items()},
    )


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
    rule: str = DEFAULT_RULE,
    z: float = DEFAULT_Z,
) -> Calibration:
    """A stopping rule (RULES) for a checkpoint, fit on its validation split (stored config + `key=value`
    overrides, e.g. `data.val_annotations=heldout.txt`) so that the loss bound loss + z * SE stays within max_loss.
    N = max_frames or the checkpoint's K. With fixed_k, fixed K = 1..N are evaluated too (each K's own frames: K
    more passes over the split, for the comparison only)."""
    from istpan.data.build import check_data_paths, pick_device
    from istpan.evaluation.evaluate import eval_config, evaluate, val_loader
    from istpan.files.load import load

    if order not in FRAME_ORDERS:
        raise UserError(f"--frame-order {order}: one of {', '.join(FRAME_ORDERS)}")
    if max_loss < 0:
        raise UserError(f"--max-loss must be >= 0 (top-1 points below fixed K), got {max_loss}")
    if rule not in RULES:
        raise UserError(f"--rule {rule}: one of {', '.join(RULES)}")
    if z < 0:
        raise UserError(f"--z must be >= 0 (standard errors added to the loss), got {z}")
    loaded = load(checkpoint)  # the one read of the file: model, description and run config
    cfg = eval_config(loaded, overrides, source=checkpoint, what="calibrate")
    if cfg.data.format == "webdataset":
        raise UserError("--anytime calibrates on a list or folder dataset (labelled video files), not on shards")
    device = pick_device(cfg.train.device)
    model, description = loaded.model.to(device), loaded.description
    if description.multi_label:
        raise UserError(f"{checkpoint}: anytime calibration measures top-1; this checkpoint is multi-label")
    num = int(max_frames or cfg.data.test_num_frames)  # the description's K unless data.test_num_frames= overrides it
    if num < 2:
        raise UserError(f"--max-frames must be >= 2 to stop early, got {num}")
    check_data_paths(cfg)
    cfg.data.test_num_frames = num
    loader, dataset = val_loader(cfg, model, description, source=checkpoint, batch_size=batch_size)
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
        from istpan.evaluation.evaluate import nothing_decoded

        raise nothing_decoded(0, split=f"{checkpoint}: validation")
    all_scores, all_labels = torch.cat(scores), torch.cat(labels).long()  # (V, N, C), (V,)
    cal = calibrate_scores(all_scores, all_labels, rule=rule, max_loss=max_loss, z=z, order=order)
    fixed: dict[int, float] = {}
    if fixed_k:
        for k in tqdm(range(1, num + 1), desc="fixed K", disable=not progress, leave=False):
            cfg_k = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_num_frames=k))
            loader_k, _ = val_loader(cfg_k, model, description, source=checkpoint, batch_size=batch_size)
            fixed[k] = float(evaluate(model, loader_k, multi_label=False, device=device)["top1"])
    return dataclasses.replace(
        cal, fixed_k_accuracy=fixed, checkpoint=str(checkpoint),
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
    if cal.rule == "gain":
        rule = (f"gain rule: stop when the predicted top-1 gain of waiting for all {cal.max_frames} frames <= "
                f"{cal.thresholds[0]:.3g} points")
    else:
        rule = f"one margin per step {','.join(f'{t:g}' for t in cal.thresholds)}"
    lines.append(f"calibrated ({rule}): top-1 {cal.accuracy:.2f} % with {cal.mean_frames:.2f} frames on average "
                 f"(fixed K = {cal.max_frames}: {cal.full_accuracy:.2f} % with {cal.max_frames}); measured on the "
                 "videos it was fit on: report on other videos")
    if cal.bound:
        how = ""
        if "mean_frames" in cal.bound:  # the gain rule: each video judged by a model fit without it
            how = f"cross-fitted, each video by a model fit without it: {cal.bound['mean_frames']:.2f} frames, "
        lines.append(f"loss bound ({how}{cal.num_videos} videos): loss {cal.bound['loss']:.2f} points, SE "
                     f"{cal.bound['se']:.2f}, loss + {cal.z:g} SE = {cal.bound['bound']:.2f} <= {cal.max_loss:g}")
    return "\n".join(lines)
