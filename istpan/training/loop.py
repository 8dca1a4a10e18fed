"""One epoch of training: `train_one_epoch` and the step it repeats (forward, losses, backward, optimiser step).

Gradient accumulation (`train.accumulate_steps` = A): A batches are forwarded and backwarded one after the other,
each loss weighted by its share of the group's clips, then one optimiser step; under DDP the first A-1 backward passes
run in `no_sync()`, so gradients are all-reduced once per optimiser step. The schedule, the EMA and the logs count
optimiser steps; a checkpoint's `step_in_epoch` counts batches and always ends a group.

Every random draw of a step (dropout, mixup/cutmix, frame subsets) comes from `torch.manual_seed(_step_seed(...))`, a
pure function of (seed, epoch, batch, rank): a run resumed mid-epoch takes exactly the steps the uninterrupted run
would have taken.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from istpan.config import Config
from istpan.data.build import is_multi_label
from istpan.errors import UserError
from istpan.runtime.amp import autocast
from istpan.runtime.distributed import get_rank, get_world_size, is_main_process, reduce_sum
from istpan.training.interrupt import StopFlag
from istpan.training.mixing import BatchMix, FrameSubset
from istpan.training.optim import apply_partial_bn
from istpan.training.prefix_loss import forward_with_prefixes, prefix_ce, prefix_sizes
from istpan.training.run_log import RunLog

__all__ = ["compute_losses", "train_one_epoch", "unwrap"]

Group = list[tuple[int, dict]]  # (batch index in the epoch, batch) of the batches one optimiser step accumulates


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    *,
    cfg: Config,
    epoch: int,
    steps: int,
    start_step: int = 0,
    device: torch.device,
    log: RunLog,
    progress: bool,
    stop: StopFlag | None = None,
    mix: BatchMix | None = None,
    subset: FrameSubset | None = None,
    ema=None,
) -> dict:
    """One pass over `loader` (at most `steps` batches, skipping the first `start_step` when resuming mid-epoch).

    Every `train.accumulate_steps` batches (and at the end of the epoch) make one optimiser step. `mix` mixes each
    batch and softens its targets (mixup / cutmix / label smoothing); `subset` keeps a random frame subset of each
    batch (train.frame_subset_min); `ema` (timm's ModelEmaV3) follows the weights after every optimiser step. Returns
    the epoch's mean losses (over all ranks), clips/s, and `steps_done` (< steps when `stop` was raised by Ctrl-C: the
    loop ends between two optimiser steps, so the state it leaves is a consistent one to save).
    """
    tcfg = cfg.train
    accum = max(int(tcfg.accumulate_steps), 1)
    opt_steps = math.ceil(steps / accum)
    multi_label = is_multi_label(cfg)
    model.train()
    if tcfg.partial_bn:
        apply_partial_bn(model)
    meter = EpochMeter(prefix=tcfg.prefix_loss > 0)
    show = progress and is_main_process() and sys.stderr.isatty()
    bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{tcfg.epochs}", disable=not show,
               dynamic_ncols=True, leave=False)
    steps_done = start_step
    for step, group in _accumulation_groups(loader, meter, epoch=epoch, steps=steps, start_step=start_step,
                                            accum=accum):
        steps_done = step + 1
        if not group:  # every clip of these batches failed to decode (logged by the dataset): nothing to learn
            bar.update(steps_done - bar.n)
            continue
        optimizer.zero_grad(set_to_none=True)
        group_sums, group_clips = forward_backward(model, group, scaler, cfg=cfg, epoch=epoch, device=device,
                                                   multi_label=multi_label, keys=meter.keys, mix=mix, subset=subset)
        global_step = epoch * opt_steps + step // accum + 1  # optimiser steps so far
        optimizer_step(model, optimizer, scheduler, scaler, clip_grad_norm=cfg.optim.clip_grad_norm, ema=ema,
                       global_step=global_step)
        values = meter.add(group_sums, group_clips)
        if tcfg.log_every > 0 and (step // accum + 1) % tcfg.log_every == 0:
            log_step(log, values, optimizer, epoch=epoch, global_step=global_step, device=device)
        bar.set_postfix(loss=f"{values['loss']:.4f}", clips_s=f"{meter.clips_per_s():.1f}")
        bar.update(steps_done - bar.n)
        if stop is not None and stop.requested(device) and steps_done < steps:
            break
    bar.close()
    return meter.epoch_stats(device, steps_done=steps_done)


def compute_losses(out: Any, target: torch.Tensor, *, multi_label: bool, beta: float, gamma: float) -> dict:
    """CE (or BCE) + β·l_interactive + γ·l_attn; each term returned on its own so it can be logged separately."""
    from istpan.losses import attention_losses, classification_loss

    ce = classification_loss(out.logits, target, multi_label=multi_label)
    if getattr(out, "attn", None) is not None and (beta or gamma):
        att = attention_losses(out)
        interactive, attn = att["interactive"], att["attn"]
    else:  # TSN (no attention) or both weights 0: skip the extra work
        interactive = attn = ce.new_zeros(())
    total = ce + beta * interactive + gamma * attn
    return {"loss": total, "ce": ce, "interactive": interactive, "attn": attn}


def forward_backward(model: nn.Module, group: Group, scaler: torch.amp.GradScaler, *, cfg: Config, epoch: int,
                     device: torch.device, multi_label: bool, keys: tuple[str, ...], mix: BatchMix | None = None,
                     subset: FrameSubset | None = None) -> tuple[dict[str, float], int]:
    """Forward, losses and backward of each batch of a group; gradients all-reduced (DDP) on the last one only.

    Returns the group's loss terms summed over its clips, and its number of clips."""
    tcfg = cfg.train
    group_clips = sum(int(b["video"].shape[0]) for _, b in group)
    group_sums = dict.fromkeys(keys, 0.0)
    no_sync = getattr(model, "no_sync", None)
    for i, (step, batch) in enumerate(group):
        video = batch["video"].to(device, non_blocking=True)  # (B, K, 3, h, w)
        target = batch["label"].to(device, non_blocking=True)  # (B,) or (B, classes)
        torch.manual_seed(_step_seed(tcfg.seed, epoch, step, get_rank()))  # dropout, mixing, subsets: resumable
        times = None
        if subset is not None:
            video, times = subset(video)  # (B, n, 3, h, w), times (n,) or None when off
        if mix is not None:
            video, target = mix(video, target)  # target (B, classes) soft when mixing / smoothing
        n = video.shape[0]
        last = i == len(group) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            with autocast(tcfg.amp, device):
                losses = _losses(model, video, target, times, cfg=cfg, multi_label=multi_label)
            if not torch.isfinite(losses["loss"]):
                raise UserError(f"loss is {losses['loss'].item()} at epoch {epoch + 1} step {step + 1}; "
                                "lower optim.lr, keep optim.clip_grad_norm > 0 or try train.amp=none")
            # each batch weighs by its clips: the group's gradient is that of one batch of all its clips
            scaler.scale(losses["loss"] * (n / group_clips)).backward()
        for k, v in losses.items():
            group_sums[k] += v.item() * n
    return group_sums, group_clips


def _losses(model: nn.Module, video: torch.Tensor, target: torch.Tensor, times: torch.Tensor | None, *, cfg: Config,
            multi_label: bool) -> dict[str, torch.Tensor]:
    """The model's forward and the loss terms: `compute_losses`, plus the prefix loss when train.prefix_loss > 0."""
    tcfg = cfg.train
    if tcfg.prefix_loss > 0:  # the K frames and prefixes of the anytime order, one backbone pass
        out, prefix_logits = forward_with_prefixes(model, video, prefix_sizes(tcfg.prefix_sizes, video.shape[1]))
    else:
        out = model(video) if times is None else model(video, times=times)
    losses = compute_losses(out, target, multi_label=multi_label, beta=tcfg.beta, gamma=tcfg.gamma)
    if tcfg.prefix_loss > 0:
        full = out.logits if tcfg.prefix_target == "final" else None
        losses["prefix"] = prefix_ce(prefix_logits, target, multi_label=multi_label, full_logits=full)
        losses["loss"] = losses["loss"] + tcfg.prefix_loss * losses["prefix"]
    return losses


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler, *,
                   clip_grad_norm: float, ema=None, global_step: int) -> None:
    """Clip the accumulated gradients, step the optimiser and the schedule, move the EMA weights."""
    if clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    if ema is not None:
        ema.update(unwrap(model), step=global_step)


def log_step(log: RunLog, values: dict[str, float], optimizer: torch.optim.Optimizer, *, epoch: int,
             global_step: int, device: torch.device) -> None:
    """One `step` record (metrics.jsonl, TensorBoard, W&B): the global batch's mean losses and the LR."""
    reduced = reduce_sum(list(values.values()), device)  # mean over ranks: the loss of the global batch
    means = {k: v / get_world_size() for k, v in zip(values, reduced)}
    lr = optimizer.param_groups[0]["lr"]
    log.log(
        {"type": "step", "epoch": epoch + 1, "global_step": global_step, **means, "lr": lr},
        scalars={**{f"train/{k}": v for k, v in means.items()}, "train/lr": lr},
        step=global_step,
    )


class EpochMeter:
    """Loss sums over the epoch's clips, clips, skipped videos and the clock: the epoch's statistics."""

    def __init__(self, *, prefix: bool) -> None:
        # the prefix loss is logged only when on: the logs of a run without it stay as they were
        self.keys = ("loss", "ce", "interactive", "attn", *(("prefix",) if prefix else ()))
        self.sums = dict.fromkeys(self.keys, 0.0)
        self.clips = 0
        self.skipped = 0
        self.start = time.perf_counter()

    def add(self, group_sums: dict[str, float], group_clips: int) -> dict[str, float]:
        """Count one optimiser step's group; return its mean loss terms."""
        self.clips += group_clips
        for k in self.keys:
            self.sums[k] += group_sums[k]
        return {k: v / group_clips for k, v in group_sums.items()}

    def clips_per_s(self) -> float:
        return self.clips / (time.perf_counter() - self.start)

    def epoch_stats(self, device: torch.device, *, steps_done: int) -> dict:
        """Mean losses over every rank's clips, clips, skipped videos, clips/s and `steps_done`."""
        elapsed = time.perf_counter() - self.start
        n = len(self.keys)
        totals = reduce_sum([*self.sums.values(), self.clips, self.skipped], device)
        clips_all = max(totals[n], 1.0)
        stats: dict[str, Any] = {k: v / clips_all for k, v in zip(self.keys, totals[:n])}
        stats.update(clips=int(totals[n]), skipped=int(totals[n + 1]), clips_per_s=totals[n] / max(elapsed, 1e-9),
                     steps_done=steps_done)
        return stats


def _accumulation_groups(loader, meter: EpochMeter, *, epoch: int, steps: int, start_step: int,
                         accum: int) -> Iterator[tuple[int, Group]]:
    """(index of the group's last batch, its batches) per optimiser step; videos that failed to decode are counted
    in `meter.skipped` as their batches arrive.

    A group ends every `accum` batches and at batch `steps`; batches whose clips all failed to decode are left
    out (a group may come out empty). Mid-epoch resume starts after the first `start_step` batches."""
    _set_epoch(loader, epoch)
    if start_step and hasattr(loader.sampler, "skip"):  # resuming mid-epoch: start the pass after the done batches
        loader.sampler.skip(start_step * loader.batch_size)
        batches = enumerate(loader, start=start_step)
    else:
        batches = enumerate(loader)
    group: Group = []
    for step, batch in batches:
        if step >= steps:
            break
        if step < start_step:  # a loader that cannot skip: same order, so drop what the checkpoint already contains
            continue
        meter.skipped += int(batch.get("skipped", 0))
        if batch["video"].shape[0] > 0:
            group.append((step, batch))
        if (step + 1) % accum and step + 1 < steps:
            continue  # more batches to accumulate
        yield step, group
        group = []


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return (((seed * 1_000_003 + epoch) * 1_000_003 + step) * 1_009 + rank) % (2**63)


def _set_epoch(loader, epoch: int) -> None:
    """Tell the sampler / batch sampler / dataset which epoch it is: data order and augmentation depend on it."""
    for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                getattr(loader, "dataset", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under the DDP / torch.compile wrappers (what the EMA follows and checkpoints store)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
