"""The training loop: `train(cfg)` builds everything from a Config and runs `train_one_epoch` + `evaluate` per epoch.

Read top to bottom like torchvision's references: data, model, optimiser, resume, then the epoch loop. Single process:

    istpan train --config configs/ucf101.yaml optim.lr=0.005

Distributed data parallel (any number of processes / nodes; gloo on CPU, NCCL on GPU):

    torchrun --nproc_per_node 4 -m istpan.cli.main train --config configs/ucf101.yaml
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        -m istpan.cli.main train --config configs/ucf101.yaml

Reproducibility and exact resume: every source of randomness is a pure function of (seed, epoch, step, rank) —
the loader's order and augmentations through `set_epoch`, dropout and mixup/cutmix through a per-step
`torch.manual_seed` — so a run resumed from a checkpoint takes exactly the steps the uninterrupted run would have
taken (the EMA weights are saved beside the raw ones and continue too).

Gradient accumulation (`train.accumulate_steps` = A): A batches are forwarded and backwarded one after the other,
each loss weighted by its share of the group's clips, then one optimiser step; under DDP the first A-1 backward passes
run in `no_sync()`, so gradients are all-reduced once per optimiser step. The schedule, the EMA and the logs count
optimiser steps; a checkpoint's `step_in_epoch` counts batches and always ends a group.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from istpan._version import __version__
from istpan.config import Config, config_to_dict, save_config
from istpan.data.build import build_data, check_data_paths, class_names_of, is_multi_label, pick_device
from istpan.errors import UserError
from istpan.evaluation.evaluate import evaluate, nothing_decoded
from istpan.files.checkpoint import (
    build_meta,
    check_compatible,
    load_checkpoint,
    load_weights,
    read_progress,
    remove_stale_temp_files,
    save_checkpoint,
)
from istpan.runtime.amp import autocast, check_amp, make_grad_scaler
from istpan.runtime.distributed import (
    all_gather_objects,
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    reduce_sum,
)
from istpan.training.interrupt import StopFlag
from istpan.training.mixing import BatchMix, FrameSubset
from istpan.training.optim import apply_partial_bn, build_optimizer, build_scheduler
from istpan.training.prefix_loss import forward_with_prefixes, prefix_ce, prefix_sizes
from istpan.training.run_log import RunLog

__all__ = ["compute_losses", "train", "train_one_epoch"]


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


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return (((seed * 1_000_003 + epoch) * 1_000_003 + step) * 1_009 + rank) % (2**63)


def _set_epoch(loader, epoch: int) -> None:
    """Tell the sampler / batch sampler / dataset which epoch it is: data order and augmentation depend on it."""
    for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                getattr(loader, "dataset", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def _bare(model: nn.Module) -> nn.Module:
    """The module under the DDP / torch.compile wrappers (what the EMA follows and checkpoints store)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


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
    batch (train.frame_subset_min); `ema` (timm's ModelEmaV3) follows the weights
    after every optimiser step. Returns the epoch's mean losses (over all ranks), clips/s, and `steps_done` (< steps
    when `stop` was raised by Ctrl-C: the loop ends between two optimiser steps, so the state it leaves is a
    consistent one to save).
    """
    tcfg = cfg.train
    accum = max(int(tcfg.accumulate_steps), 1)
    opt_steps = math.ceil(steps / accum)
    multi_label = is_multi_label(cfg)
    model.train()
    if tcfg.partial_bn:
        apply_partial_bn(model)
    _set_epoch(loader, epoch)
    if start_step and hasattr(loader.sampler, "skip"):  # resuming mid-epoch: start the pass after the done batches
        loader.sampler.skip(start_step * loader.batch_size)
        batches = enumerate(loader, start=start_step)
    else:
        batches = enumerate(loader)
    sums = {"loss": 0.0, "ce": 0.0, "interactive": 0.0, "attn": 0.0}
    if tcfg.prefix_loss > 0:
        sums["prefix"] = 0.0  # logged only when on: the logs of a run without it stay as they were
    clips = 0
    skipped = 0
    show = progress and is_main_process() and sys.stderr.isatty()
    bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{tcfg.epochs}", disable=not show,
               dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    steps_done = start_step
    group: list[tuple[int, dict]] = []  # (step, batch) of the optimiser step being accumulated
    for step, batch in batches:
        if step >= steps:
            break
        if step < start_step:  # a loader that cannot skip: same order, so drop what the checkpoint already contains
            continue
        skipped += int(batch.get("skipped", 0))
        if batch["video"].shape[0] > 0:  # a batch whose clips all failed to decode (logged by the dataset) adds nothing
            group.append((step, batch))
        if (step + 1) % accum and step + 1 < steps:
            continue  # more batches to accumulate
        steps_done = step + 1
        if not group:
            bar.update(steps_done - bar.n)
            continue
        group_clips = sum(int(b["video"].shape[0]) for _, b in group)

        # -- forward, losses and backward for each batch of the group; gradients all-reduced on the last one only
        optimizer.zero_grad(set_to_none=True)
        group_sums = dict.fromkeys(sums, 0.0)
        for i, (s, batch) in enumerate(group):
            video = batch["video"].to(device, non_blocking=True)  # (B, K, 3, h, w)
            target = batch["label"].to(device, non_blocking=True)  # (B,) or (B, classes)
            torch.manual_seed(_step_seed(tcfg.seed, epoch, s, get_rank()))  # dropout, mixing, subsets: resumable
            times = None
            if subset is not None:
                video, times = subset(video)  # (B, n, 3, h, w), times (n,) or None when off
            if mix is not None:
                video, target = mix(video, target)  # target (B, classes) soft when mixing / smoothing
            n = video.shape[0]
            last = i == len(group) - 1
            no_sync = getattr(model, "no_sync", None)
            with nullcontext() if last or no_sync is None else no_sync():
                with autocast(tcfg.amp, device):
                    if tcfg.prefix_loss > 0:  # the K frames and prefixes of the anytime order, one backbone pass
                        sizes = prefix_sizes(tcfg.prefix_sizes, video.shape[1])
                        out, prefix_logits = forward_with_prefixes(model, video, sizes)
                    else:
                        out = model(video) if times is None else model(video, times=times)
                    losses = compute_losses(out, target, multi_label=multi_label, beta=tcfg.beta, gamma=tcfg.gamma)
                    if tcfg.prefix_loss > 0:
                        full = out.logits if tcfg.prefix_target == "final" else None
                        losses["prefix"] = prefix_ce(prefix_logits, target, multi_label=multi_label, full_logits=full)
                        losses["loss"] = losses["loss"] + tcfg.prefix_loss * losses["prefix"]
                if not torch.isfinite(losses["loss"]):
                    raise UserError(
                        f"loss is {losses['loss'].item()} at epoch {epoch + 1} step {s + 1}; "
                        "lower optim.lr, keep optim.clip_grad_norm > 0 or try train.amp=none"
                    )
                # each batch weighs by its clips: the group's gradient is that of one batch of all its clips
                scaler.scale(losses["loss"] * (n / group_clips)).backward()
            for k, v in losses.items():
                group_sums[k] += v.item() * n

        # -- clip, step, EMA
        if cfg.optim.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        global_step = epoch * opt_steps + step // accum + 1  # optimiser steps so far
        if ema is not None:
            ema.update(_bare(model), step=global_step)

        # -- bookkeeping
        clips += group_clips
        values = {k: v / group_clips for k, v in group_sums.items()}
        for k in sums:
            sums[k] += group_sums[k]
        group = []
        if tcfg.log_every > 0 and (step // accum + 1) % tcfg.log_every == 0:
            reduced = reduce_sum([values[k] for k in sums], device)  # mean over ranks: the loss of the global batch
            means = {k: v / get_world_size() for k, v in zip(sums, reduced)}
            lr = optimizer.param_groups[0]["lr"]
            log.log(
                {"type": "step", "epoch": epoch + 1, "global_step": global_step, **means, "lr": lr},
                scalars={**{f"train/{k}": v for k, v in means.items()}, "train/lr": lr},
                step=global_step,
            )
        bar.set_postfix(loss=f"{values['loss']:.4f}", clips_s=f"{clips / (time.perf_counter() - start):.1f}")
        bar.update(steps_done - bar.n)
        if stop is not None and stop.requested(device) and steps_done < steps:
            break
    bar.close()

    elapsed = time.perf_counter() - start
    totals = reduce_sum([*sums.values(), clips, skipped], device)
    n_sums = len(sums)
    clips_all = max(totals[n_sums], 1.0)
    stats = {k: v / clips_all for k, v in zip(sums, totals[:n_sums])}
    stats.update(clips=int(totals[n_sums]), skipped=int(totals[n_sums + 1]),
                 clips_per_s=totals[n_sums] / max(elapsed, 1e-9), steps_done=steps_done)
    return stats


def _resume_from(resume: str | bool | None, run_dir: Path) -> tuple[Path, dict] | tuple[None, None]:
    """The checkpoint to continue from and its state, or (None, None) for a fresh start.

    "auto" takes the newer of last.pt and best.pt of the same run: best.pt is written before last.pt, so a kill
    between the two writes leaves best.pt one epoch ahead, and that epoch is not trained twice.
    """
    if resume in (None, False, "never", "no", ""):
        return None, None
    if resume not in (True, "auto"):
        path = Path(str(resume))
        if not path.is_file():
            raise UserError(f"--resume {path}: checkpoint not found")
        return path, load_checkpoint(path, device="cpu")
    # only the progress entries of both files are read; the chosen one is then loaded whole
    found = [(p, read_progress(p)) for p in (run_dir / "last.pt", run_dir / "best.pt") if p.is_file()]
    if len(found) == 2:
        last_id, best_id = found[0][1].get("run_id"), found[1][1].get("run_id")
        if best_id is None or best_id != last_id:
            found = found[:1]  # best.pt of an earlier run in this folder (or of an istpan without run ids)
    if not found:
        return None, None
    path, _ = max(found, key=lambda f: (int(f[1].get("epoch", 0)), int(f[1].get("step_in_epoch", 0))))
    return path, load_checkpoint(path, device="cpu")


def _repair_run_dir(path: Path, state: dict, run_dir: Path) -> None:
    """Make last.pt and best.pt agree with the checkpoint a run resumes from (rank 0, before training).

    last.pt: replaced by best.pt when that is newer (killed between the two writes). best.pt: rewritten when the
    resumed state says its own epoch is the best one but best.pt holds another (or none): files of an istpan that
    wrote last.pt first. So after any interruption best.pt holds the epoch the run log calls best.
    """
    last, best = run_dir / "last.pt", run_dir / "best.pt"
    if path.resolve() == best.resolve() and last.resolve() != best.resolve():
        save_checkpoint(state, last)
    done, best_epoch = int(state.get("epoch", 0)), state.get("best_epoch")
    if best_epoch is None or best_epoch != done or int(state.get("step_in_epoch", 0)):
        return
    held = read_progress(best) if best.is_file() else {}
    if held.get("epoch") != done or held.get("run_id") != state.get("run_id"):
        save_checkpoint(state, best)


def _say_resume(run_dir: Path, last_path: Path, epoch: int, step: int, main: bool) -> None:
    if main:
        print(f"interrupted at epoch {epoch + 1} step {step}: saved {last_path}\n"
              f"resume with: istpan train --config {run_dir / 'config.yaml'}   (continues from last.pt)",
              file=sys.stderr)


def train(cfg: Config, *, resume: str | bool | None = "auto", progress: bool = True) -> dict:
    """Train (and validate every `train.eval_every` epochs); return final/best metrics and the checkpoint paths.

    resume: "auto" continues from `<out_dir>/last.pt` when it exists, "never" starts over, a path resumes from that
    checkpoint. progress=False prints nothing (for programmatic use, e.g. many short ablation runs).
    """
    tcfg = cfg.train
    threads_before = torch.get_num_threads()
    if tcfg.num_threads > 0:  # small models on busy CPUs: fewer threads can be much faster (docs/training.md)
        torch.set_num_threads(tcfg.num_threads)
    try:
        return _train(cfg, resume=resume, progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: Config, *, resume: str | bool | None, progress: bool) -> dict:
    tcfg = cfg.train
    if tcfg.epochs < 1:
        raise UserError(f"train.epochs={tcfg.epochs}: nothing to train and no checkpoint to write; set train.epochs "
                        "to 1 or more")
    device = pick_device(tcfg.device)
    distributed = init_distributed(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    check_amp(tcfg.amp, device)
    if tcfg.prefix_loss > 0 and tcfg.frame_subset_min > 0:
        raise UserError("train.prefix_loss and train.frame_subset_min are two ways to train anytime inference; set "
                        "one of them to 0")
    if tcfg.prefix_loss > 0 and (distributed or tcfg.compile):
        raise UserError("train.prefix_loss runs the model's two halves itself, which DDP and train.compile do not "
                        "see; train single-process without train.compile, or set train.prefix_loss=0")
    run_dir = Path(tcfg.out_dir)
    main = is_main_process()
    say = print if (progress and main) else (lambda *a, **k: None)

    # -- classes (parsing the annotations only), then the model: its preprocessing decides the data transforms
    from istpan.models import create_model

    check_data_paths(cfg)
    class_names = class_names_of(cfg)
    torch.manual_seed(tcfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
    options = dict(cfg.model.options)
    multi_label = is_multi_label(cfg)
    if multi_label:
        options.setdefault("multi_label", True)
    for key in ("modality", "flow_length"):  # the model's input channels follow the data (docs/flow.md)
        value = getattr(cfg.data, key)
        if options.setdefault(key, value) != value:
            raise UserError(f"model.options.{key}={options[key]!r} but data.{key}={value!r}; set only data.{key}")
    model = create_model(cfg.model.name, num_classes=len(class_names), pretrained=cfg.model.pretrained or None,
                         **options)
    model.to(device)
    if tcfg.partial_bn:
        apply_partial_bn(model)  # before the optimiser: frozen BN parameters are not optimised at all

    # -- data
    pre = getattr(model, "pretrained_cfg", {}) or {}
    train_loader, val_loader = build_data(cfg, distributed=distributed, class_names=class_names,
                                           mean=pre.get("mean"), std=pre.get("std"))
    steps = len(train_loader) if tcfg.max_steps_per_epoch <= 0 else min(len(train_loader), tcfg.max_steps_per_epoch)
    accum = max(int(tcfg.accumulate_steps), 1)
    opt_steps = math.ceil(steps / accum)  # optimiser steps per epoch: what the schedule, EMA and logs count

    # -- optimiser, schedule, mixed precision, the recipe's batch mixing and weight EMA
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=opt_steps, epochs=tcfg.epochs)
    scaler = make_grad_scaler(tcfg.amp, device)
    meta = build_meta(model, class_names=class_names, data_cfg=cfg.data)
    mix = BatchMix(cfg.augment, num_classes=len(class_names), multi_label=multi_label)
    subset = FrameSubset(tcfg.frame_subset_min)
    ema = None
    if tcfg.ema_decay > 0:
        from timm.utils import ModelEmaV3

        # warm-up: the decay grows with the step count up to ema_decay, so short runs are not stuck near the init
        ema = ModelEmaV3(model, decay=tcfg.ema_decay, use_warmup=True)

    # -- resume
    start_epoch, start_step, best, best_epoch, history = 0, 0, None, None, []
    run_id = uuid.uuid4().hex  # ties last.pt and best.pt to one run (see _resume_from)
    eval_weights = "model"  # which weights `load_model` uses: "model" (raw) or "model_ema", the better at validation
    ckpt, state = _resume_from(resume, run_dir)
    if ckpt is not None:
        check_compatible(state["meta"], model_name=cfg.model.name, num_classes=len(class_names), source=ckpt,
                         class_names=class_names, model_options=model.model_options)
        load_weights(model, state["model"], source=ckpt, model_name=cfg.model.name)
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as err:
            raise UserError(f"{ckpt}: optimiser state does not fit this run's optim settings ({err}); start a new "
                            "run with another train.out_dir, or --resume never") from err
        if ema is not None:
            if "model_ema" not in state:
                raise UserError(f"{ckpt}: checkpoint has no EMA weights but train.ema_decay > 0; resume with "
                                "train.ema_decay=0 or start a new train.out_dir")
            load_weights(ema.module, state["model_ema"], source=ckpt, model_name=cfg.model.name)
        eval_weights = state.get("eval_weights", "model") if ema is not None else "model"
        start_epoch, start_step = int(state["epoch"]), int(state.get("step_in_epoch", 0))
        best, best_epoch, history = state.get("best_metric"), state.get("best_epoch"), list(state.get("history", []))
        run_id = state.get("run_id") or run_id
        say(f"resuming from {ckpt} at epoch {start_epoch + 1}" + (f" step {start_step + 1}" if start_step else ""),
            file=sys.stderr)

    model_without_ddp = model
    if distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg.compile:
        model = torch.compile(model)

    # -- run directory (rank 0 writes)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temp_files(run_dir):  # left by a run killed while writing a checkpoint
            say(f"removed {stale} (partial checkpoint of an interrupted write)", file=sys.stderr)
        if ckpt is not None and ckpt.parent.resolve() == run_dir.resolve():
            _repair_run_dir(ckpt, state, run_dir)
        save_config(cfg, run_dir / "config.yaml")
    del state  # the weights live in the model now
    wandb = None
    if tcfg.wandb:  # the run id is the checkpoint's: a resumed training continues the same W&B run
        wandb = dict(project=tcfg.wandb_project, name=tcfg.wandb_run or run_dir.name, id=run_id,
                     config=config_to_dict(cfg))
    log = RunLog(run_dir, enabled=main, tensorboard=tcfg.tensorboard,
                 resume_step=start_epoch * opt_steps + start_step // accum if ckpt is not None else None, wandb=wandb)
    metric_name = "mAP" if multi_label else "top1"
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    def checkpoint(epoch: int, step_in_epoch: int) -> dict:
        return {
            "model": model_without_ddp.state_dict(),
            **({"model_ema": ema.module.state_dict()} if ema is not None else {}),
            "eval_weights": eval_weights,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,  # finished epochs
            "step_in_epoch": step_in_epoch,  # > 0 only for a checkpoint written on Ctrl-C
            "best_metric": best,
            "best_epoch": best_epoch,
            "history": history,
            "meta": meta,
            "run_id": run_id,
            "config": config_to_dict(cfg),
            "istpan_version": __version__,
        }

    # -- epochs
    val: dict = {}
    with StopFlag() as stop:
        try:
            for epoch in range(start_epoch, tcfg.epochs):
                stats = train_one_epoch(
                    model, train_loader, optimizer, scheduler, scaler, cfg=cfg, epoch=epoch, steps=steps,
                    start_step=start_step if epoch == start_epoch else 0, device=device, log=log,
                    progress=progress, stop=stop, mix=mix, subset=subset, ema=ema,
                )
                if stats["steps_done"] < steps:  # Ctrl-C mid-epoch: save where the loop stopped
                    if main:
                        save_checkpoint(checkpoint(epoch, stats["steps_done"]), last_path)
                    _say_resume(run_dir, last_path, epoch, stats["steps_done"], main)
                    raise KeyboardInterrupt
                if stats["clips"] == 0:  # every clip failed to decode: an untrained model is not worth a checkpoint
                    raise nothing_decoded(stats["skipped"], split="training")

                # -- validate, keep last and best
                val = {}
                if val_loader is not None and ((epoch + 1) % max(tcfg.eval_every, 1) == 0 or epoch + 1 == tcfg.epochs):
                    val = evaluate(model, val_loader, multi_label=multi_label, device=device, amp=tcfg.amp,
                                   progress=progress)
                    if ema is not None:  # both weights scored; the better one is reported and used by load_model
                        val_ema = evaluate(ema.module, val_loader, multi_label=multi_label, device=device,
                                           amp=tcfg.amp, progress=progress)
                        scores = {f"raw_{metric_name}": val[metric_name], f"ema_{metric_name}": val_ema[metric_name]}
                        eval_weights = "model_ema" if val_ema[metric_name] > val[metric_name] else "model"
                        val = {**(val_ema if eval_weights == "model_ema" else val), **scores,
                               "weights": "ema" if eval_weights == "model_ema" else "raw"}
                value = val.get(metric_name)
                is_best = value is not None and (best is None or value > best)
                if is_best:
                    best, best_epoch = value, epoch + 1
                summary = {k: v for k, v in val.items() if k not in ("confusion", "per_class_ap")}
                numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
                history.append({"epoch": epoch + 1, "train_loss": stats["loss"], **{f"val_{k}": v for k, v in
                                                                                     numbers.items()}})
                log.log({"type": "epoch", "epoch": epoch + 1, "global_step": (epoch + 1) * opt_steps,
                         "lr": optimizer.param_groups[0]["lr"], "train": stats, "val": summary},
                        step=(epoch + 1) * opt_steps, scalars={
                            **{f"epoch/train_{k}": stats[k] for k in ("loss", "ce", "interactive", "attn", "prefix")
                               if k in stats},
                            "epoch/clips_per_s": stats["clips_per_s"], **{f"val/{k}": v for k, v in numbers.items()},
                        })
                if main:  # best.pt first: a kill between the two writes leaves it one epoch ahead, never behind
                    if is_best:
                        save_checkpoint(checkpoint(epoch + 1, 0), best_path)
                    save_checkpoint(checkpoint(epoch + 1, 0), last_path)
                barrier()
                if val_loader is not None and val and val.get("num_videos", 0) == 0:  # after the save: keep training
                    raise nothing_decoded(val.get("skipped", 0), split="validation")
                val_text = f" val {metric_name} {value:.2f}" if value is not None else ""
                if "weights" in val:
                    val_text += (f" ({val['weights']}; raw {val[f'raw_{metric_name}']:.2f} "
                                 f"ema {val[f'ema_{metric_name}']:.2f})")
                skipped = stats["skipped"] + val.get("skipped", 0)
                prefix_text = f" prefix {stats['prefix']:.4f}" if tcfg.prefix_loss > 0 else ""
                say(f"epoch {epoch + 1}/{tcfg.epochs}: loss {stats['loss']:.4f} (ce {stats['ce']:.4f} "
                    f"inter {stats['interactive']:.4f} attn {stats['attn']:.4f}{prefix_text}){val_text} "
                    f"{stats['clips_per_s']:.1f} clips/s" + (f" skipped {skipped}" if skipped else ""),
                    file=sys.stderr)
                if stop.requested(device) and epoch + 1 < tcfg.epochs:  # Ctrl-C during validation
                    _say_resume(run_dir, last_path, epoch + 1, 0, main)
                    raise KeyboardInterrupt
        finally:
            log.close()

    # every unreadable video the run skipped (each logged once, when first met), over all ranks
    unreadable = {p: m for loader in (train_loader, val_loader) for p, m in getattr(loader, "unreadable", {}).items()}
    unreadable = dict(sorted({p: m for part in all_gather_objects(unreadable) for p, m in part.items()}.items()))
    final = {k: v for k, v in val.items() if k not in ("confusion", "per_class_ap")}
    if not final and history:  # nothing left to train (resumed a finished run): report its last validation
        final = {k[len("val_"):]: v for k, v in history[-1].items() if k.startswith("val_")}
        if start_epoch >= tcfg.epochs:
            say(f"{run_dir}: already trained for {tcfg.epochs} epochs (resume=never starts over)", file=sys.stderr)
    return {
        "run_dir": str(run_dir),
        "last_checkpoint": str(last_path),
        "best_checkpoint": str(best_path) if best_path.is_file() else None,
        "metric": metric_name,
        "best": best,
        "best_epoch": best_epoch,
        "final": final,
        "history": history,
        "steps_per_epoch": steps,
        "class_names": class_names,
        "unreadable": unreadable,  # {path: "path: reason"}
    }
