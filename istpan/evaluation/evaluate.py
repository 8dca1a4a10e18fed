"""Evaluation over a loader: per-video scores averaged over views, then metrics computed once on the whole set.

Exactly-once counting under DDP: every rank scores its own shard, the per-video scores are gathered with their
dataset index, duplicates (e.g. from a padding sampler) are dropped by index, and all ranks compute the same metrics
from the same full set. Videos that fail to decode are counted in `skipped` (summed over ranks), never silently lost.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from istpan.errors import UserError
from istpan.evaluation.metrics import multilabel_metrics, single_label_metrics
from istpan.files.description import ModelDescription
from istpan.inference.predict import probabilities
from istpan.runtime.amp import autocast
from istpan.runtime.distributed import all_gather_objects, is_main_process, reduce_sum

__all__ = ["eval_config", "evaluate", "evaluate_checkpoint", "nothing_decoded", "val_loader", "video_scores"]


def nothing_decoded(failed: int, *, split: str) -> UserError:
    """The one line for a split of which no clip decoded: metrics (or weights) from zero clips mean nothing."""
    if not failed:
        return UserError(f"{split}: the split has no videos to use; run `istpan data check` to see why")
    return UserError(f"{split}: no clip could be decoded: {failed} of {failed} failed; see the 'skipping unreadable "
                     "video' lines above, or run `istpan data check` for every problem")


def video_scores(model: nn.Module, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits averaged over views and the matching probabilities.

    video: (B, K, 3, h, w) or, with multi-clip x multi-crop views, (B, V, K, 3, h, w).
    Returns (logits (B, C), probs (B, C)); probabilities are softmax (single-label) or sigmoid (multi-label) of each
    view, averaged over views (TSN's score averaging), so a confident view cannot be cancelled by a logit scale.
    """
    multi_label = bool(getattr(_unwrap(model), "multi_label", False))
    if video.dim() == 5:
        video = video.unsqueeze(1)  # (B, 1, K, 3, h, w)
    b, v = video.shape[:2]
    logits = model(video.flatten(0, 1)).logits.float()  # (B·V, C)
    logits = logits.unflatten(0, (b, v))  # (B, V, C)
    probs = probabilities(logits, multi_label=multi_label)  # (B, V, C)
    return logits.mean(1), probs.mean(1)


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    multi_label: bool,
    device: str | torch.device = "cpu",
    amp: str = "none",
    progress: bool = False,
    return_scores: bool = False,
) -> dict:
    """Score every video of `loader` once and return metrics.

    Single-label: top1, top5, mean_class_acc (percent), confusion (C x C, rows = true class), loss.
    Multi-label: mAP, wAP (percent, Charades definition), classes_without_positives, per_class_ap, loss.
    Always: num_videos (scored), skipped (failed to decode). With `return_scores`: scores (N, C) probabilities,
    labels and indices, sorted by dataset index.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    scores, labels, indices = [], [], []
    skipped = 0
    show = progress and is_main_process() and sys.stderr.isatty()  # no bar in logs, CI or notebooks' captured output
    bar = tqdm(loader, desc="eval", leave=False, disable=not show, dynamic_ncols=True)
    for batch in bar:
        skipped += int(batch.get("skipped", 0))
        if batch["video"].shape[0] == 0:  # every clip of this batch failed to decode
            continue
        video = batch["video"].to(device, non_blocking=True)  # (B, [V,] K, 3, h, w)
        with autocast(amp, device):
            _, probs = video_scores(model, video)  # (B, C)
        scores.append(probs.float().cpu())
        labels.append(batch["label"].cpu())
        indices.append(batch["index"].cpu())
    model.train(was_training)

    # Gather every rank's videos, then keep one score per dataset index (exactly-once, whatever the sampler did).
    local = (_cat(scores), _cat(labels), _cat(indices))
    parts = [p for p in all_gather_objects(local) if p[2].numel()]
    (skipped,) = reduce_sum([skipped], device)
    if not parts:
        return {"num_videos": 0, "skipped": int(skipped)}
    all_scores = torch.cat([p[0] for p in parts])
    all_labels = torch.cat([p[1] for p in parts])
    all_indices = torch.cat([p[2] for p in parts])
    order = _first_occurrence_sorted(all_indices)
    all_scores, all_labels, all_indices = all_scores[order], all_labels[order], all_indices[order]

    eps = 1e-12
    if multi_label:
        result = multilabel_metrics(all_scores, all_labels)
        loss = F.binary_cross_entropy(all_scores.clamp(eps, 1 - eps), all_labels.float()).item()
    else:
        result = single_label_metrics(all_scores, all_labels.long())
        loss = F.nll_loss(all_scores.clamp_min(eps).log(), all_labels.long()).item()
    result.update(loss=loss, num_videos=len(all_indices), skipped=int(skipped))
    if return_scores:
        result.update(scores=all_scores, labels=all_labels, indices=all_indices)
    return result


def evaluate_checkpoint(checkpoint: str, *, views: str = "1x1", batch_size: int | None = None,
                        overrides: list[str] | tuple[str, ...] = (), progress: bool = False,
                        return_scores: bool = False) -> dict | None:
    """`istpan eval`: a checkpoint on the validation split of the dataset it was trained on (its stored config, then
    `key=value` overrides), with the checkpoint's normalisation (`Preprocessing.mean/std`) and CLIPSxCROPS `views`.

    Returns the metrics of `evaluate` plus views, class_names, multi_label on the main process, None on the other
    DDP ranks (under torchrun). Raises UserError when the checkpoint has no config, the classes differ, or no clip
    could be decoded.
    """
    from istpan.data.build import check_data_paths, parse_views, pick_device
    from istpan.files.load import load
    from istpan.runtime import distributed as dist

    clips_crops = parse_views(views)
    loaded = load(checkpoint)  # the one read of the file: model, description and run config
    cfg = eval_config(loaded, overrides, source=checkpoint, what="evaluate")
    device = pick_device(cfg.train.device)
    distributed = dist.init_distributed(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (LOCAL_RANK)
    try:
        check_data_paths(cfg)
        model, description = loaded.model.to(device), loaded.description
        loader, dataset = val_loader(cfg, model, description, source=checkpoint, views=clips_crops,
                                     batch_size=batch_size, distributed=distributed)
        multi_label = description.multi_label
        result = evaluate(model, loader, multi_label=multi_label, device=device, amp=cfg.train.amp,
                          progress=progress, return_scores=return_scores)
        if not dist.is_main_process():
            return None
    finally:
        dist.cleanup_distributed()
    if result["num_videos"] == 0:  # metrics of zero videos would be made up
        raise nothing_decoded(result["skipped"], split=f"{checkpoint}: validation")
    result.update(views=views, class_names=list(description.class_names), multi_label=multi_label,
                  videos=[r.path for r in dataset.records])  # what the dataset indices refer to (late fusion)
    return result


def eval_config(loaded: Any, overrides: Sequence[str], *, source: str, what: str) -> Any:
    """The config a checkpoint is evaluated with: its run config (the data it was trained on), the test-time view of
    its description (K, short side, crop, sampling: what predict uses too), then the user's `key=value` overrides."""
    from istpan.config import apply_overrides, config_from_dict

    if loaded.run_config is None:
        raise UserError(f"{source}: checkpoint has no stored config; {what} with the training run's own")
    cfg = config_from_dict(loaded.run_config)
    pre = loaded.description.preprocessing
    data = dataclasses.replace(cfg.data, test_num_frames=pre.num_frames, short_side=pre.short_side,
                               input_size=pre.input_size, sampling=pre.sampling, frame_stride=pre.frame_stride)
    return apply_overrides(dataclasses.replace(cfg, data=data), list(overrides))


def val_loader(cfg: Any, model: nn.Module, description: ModelDescription, *, source: str,
               views: tuple[int, int] = (1, 1), batch_size: int | None = None, distributed: bool = False
               ) -> tuple[Any, Any]:
    """(loader, dataset) of cfg's validation split as a checkpoint sees it (its normalisation, `views` CLIPSxCROPS),
    after checking the classes match the checkpoint's; what `istpan eval` and anytime calibration read."""
    from istpan.data import build_dataset, build_loader
    from istpan.data.build import num_workers_for
    from istpan.files.checkpoint import check_compatible
    from istpan.runtime import distributed as dist

    pre = description.preprocessing
    common = dict(batch_size=batch_size or cfg.train.batch_size, num_workers=num_workers_for(cfg.data.num_workers),
                  seed=cfg.train.seed)
    if cfg.data.format == "webdataset":  # streamed from shards: each rank reads its exact share
        from istpan.data.shard_loader import build_shard_loader

        loader = build_shard_loader(cfg.data, split="val", train=False, views=views, mean=pre.mean,
                                    std=pre.std, rank=dist.get_rank(), world=dist.get_world_size(), **common)
        dataset = loader.stream.template  # class names; its records are empty (they stream)
    else:
        dataset = build_dataset(cfg.data, split="val", train=False, views=views, mean=pre.mean,
                                std=pre.std, seed=cfg.train.seed)
        loader = build_loader(dataset, train=False, distributed=distributed, **common)
    check_compatible(description, model_name=description.model_name, num_classes=len(dataset.class_names),
                     source=source, class_names=list(dataset.class_names))
    return loader, dataset


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors) if tensors else torch.empty(0)


def _first_occurrence_sorted(indices: torch.Tensor) -> torch.Tensor:
    """Positions that keep the first occurrence of each dataset index, ordered by index."""
    order = torch.sort(indices, stable=True).indices
    sorted_idx = indices[order]
    keep = torch.ones_like(sorted_idx, dtype=torch.bool)
    keep[1:] = sorted_idx[1:] != sorted_idx[:-1]
    return order[keep]
