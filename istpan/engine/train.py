"""The training loop: `train(cfg)` builds everything from a Config and runs `train_one_epoch` + `evaluate` per epoch.

Read top to bottom like torchvision's references: data, model, optimiser, resume, then the epoch loop. Single process:

    istpan train --config configs/ucf101.yaml optim.lr=0.005

Distributed data parallel (any number of processes / nodes; gloo on CPU, NCCL on GPU):

    torchrun --nproc_per_node 4 -m istpan.cli.main train --config configs/ucf101.yaml
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        -m istpan.cli.main train --config configs/ucf101.yaml

Reproducibility and exact resume: every source of randomness is a pure function of (seed, epoch, step, rank) —
the loader's order and augmentations through `set_epoch`, dropout through a per-step `torch.manual_seed` — so a run
resumed from a checkpoint takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from istpan import __version__
from istpan.config import Config, config_to_dict, save_config
from istpan.engine.amp import autocast, check_amp, make_grad_scaler
from istpan.engine.checkpoint import build_meta, check_compatible, load_checkpoint, save_checkpoint
from istpan.engine.distributed import (
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    reduce_sum,
)
from istpan.engine.evaluate import evaluate
from istpan.engine.optim import apply_partial_bn, build_optimizer, build_scheduler
from istpan.engine.run_log import RunLog
from istpan.errors import UserError

__all__ = [
    "check_data_paths",
    "compute_losses",
    "is_multi_label",
    "parse_views",
    "pick_device",
    "train",
    "train_one_epoch",
]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def parse_views(text: str) -> tuple[int, int]:
    """'2x3' -> (2 clips, 3 crops)."""
    try:
        clips, crops = (int(v) for v in str(text).lower().split("x"))
        if clips < 1 or crops not in (1, 3, 10):
            raise ValueError
    except ValueError:
        raise UserError(f"views '{text}': expected CLIPSxCROPS with CROPS 1, 3 or 10, e.g. 1x1, 2x3, 10x1") from None
    return clips, crops


def is_multi_label(cfg: Config) -> bool:
    """Charades is multi-label whatever data.multi_label says (the data pipeline builds multi-hot targets for it)."""
    return bool(cfg.data.multi_label or cfg.data.format == "charades")


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
    stop: _StopFlag | None = None,
) -> dict:
    """One pass over `loader` (at most `steps` batches, skipping the first `start_step` when resuming mid-epoch).

    Returns the epoch's mean losses (over all ranks), clips/s, and `steps_done` (< steps when `stop` was raised by
    Ctrl-C: the loop ends between two optimiser steps, so the state it leaves is a consistent one to save).
    """
    tcfg = cfg.train
    multi_label = is_multi_label(cfg)
    model.train()
    if tcfg.partial_bn:
        apply_partial_bn(model)
    _set_epoch(loader, epoch)
    sums = {"loss": 0.0, "ce": 0.0, "interactive": 0.0, "attn": 0.0}
    clips = 0
    skipped = 0
    show = progress and is_main_process() and sys.stderr.isatty()
    bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{tcfg.epochs}", disable=not show,
               dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    steps_done = start_step
    for step, batch in enumerate(loader):
        if step >= steps:
            break
        if step < start_step:  # resuming mid-epoch: same order, so skip what the checkpoint already contains
            continue
        # -- inputs
        skipped += int(batch.get("skipped", 0))
        if batch["video"].shape[0] == 0:  # every clip of the batch failed to decode (already logged by the dataset)
            steps_done = step + 1
            bar.update(1)
            continue
        video = batch["video"].to(device, non_blocking=True)  # (B, K, 3, h, w)
        target = batch["label"].to(device, non_blocking=True)  # (B,) or (B, classes)
        torch.manual_seed(_step_seed(tcfg.seed, epoch, step, get_rank()))  # dropout etc., resumable

        # -- forward and losses
        with autocast(tcfg.amp, device):
            out = model(video)
            losses = compute_losses(out, target, multi_label=multi_label, beta=tcfg.beta, gamma=tcfg.gamma)
        if not torch.isfinite(losses["loss"]):
            raise UserError(
                f"loss is {losses['loss'].item()} at epoch {epoch + 1} step {step + 1}; "
                "lower optim.lr, keep optim.clip_grad_norm > 0 or try train.amp=none"
            )

        # -- backward, clip, step
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if cfg.optim.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        # -- bookkeeping
        n = video.shape[0]
        clips += n
        values = {k: v.item() for k, v in losses.items()}
        for k, v in values.items():
            sums[k] += v * n
        global_step = epoch * steps + step + 1
        steps_done = step + 1
        if tcfg.log_every > 0 and (step + 1) % tcfg.log_every == 0:
            reduced = reduce_sum([values[k] for k in sums], device)  # mean over ranks: the loss of the global batch
            means = {k: v / get_world_size() for k, v in zip(sums, reduced)}
            lr = optimizer.param_groups[0]["lr"]
            log.log(
                {"type": "step", "epoch": epoch + 1, "global_step": global_step, **means, "lr": lr},
                scalars={**{f"train/{k}": v for k, v in means.items()}, "train/lr": lr},
                step=global_step,
            )
        bar.set_postfix(loss=f"{values['loss']:.4f}", clips_s=f"{clips / (time.perf_counter() - start):.1f}")
        bar.update(1)
        if stop is not None and stop.requested(device) and steps_done < steps:
            break
    bar.close()

    elapsed = time.perf_counter() - start
    totals = reduce_sum([*sums.values(), clips, skipped], device)
    clips_all = max(totals[4], 1.0)
    stats = {k: v / clips_all for k, v in zip(sums, totals[:4])}
    stats.update(clips=int(totals[4]), skipped=int(totals[5]), clips_per_s=totals[4] / max(elapsed, 1e-9),
                 steps_done=steps_done)
    return stats


class _StopFlag:
    """Ctrl-C asks the loop to stop after the current step (a second Ctrl-C stops at once, without saving).

    Why not just catch KeyboardInterrupt: it can land inside `optimizer.step()`, leaving half-updated weights that
    would be saved as if they were a real state. Under DDP every rank must stop at the same step, so the flag is
    OR-reduced over ranks.
    """

    def __init__(self) -> None:
        self._flag = False
        self._previous = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        self._flag = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C interrupts immediately
        if is_main_process():
            print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)",
                  file=sys.stderr)

    def requested(self, device: torch.device) -> bool:
        if get_world_size() > 1:
            return reduce_sum([float(self._flag)], device)[0] > 0
        return self._flag


def check_data_paths(cfg: Config) -> None:
    """Fail before building anything when a dataset path is missing."""
    d = cfg.data
    for key in ("root", "train_annotations", "val_annotations", "classes"):
        value = getattr(d, key)
        if value and not Path(value).exists():
            raise UserError(f"data.{key}: '{value}' does not exist; fix the path in the config or with data.{key}=...")


def _build_data(cfg: Config, *, distributed: bool, class_names: list[str], mean, std):
    """Train loader (sharded under DDP) and val loader (each rank a disjoint, unpadded shard), or None without val."""
    from istpan.data import build_dataset, build_loader

    opts = {"mean": mean, "std": std, "seed": cfg.train.seed}
    train_set = build_dataset(cfg.data, split="train", train=True, **opts)
    has_val = bool(cfg.data.val_annotations) or cfg.data.format == "synthetic"
    val_set = None
    if has_val:
        val_set = build_dataset(cfg.data, split="val", train=False, views=parse_views(cfg.train.eval_views), **opts)
        if list(val_set.class_names) != list(class_names):
            raise UserError(f"data.val_annotations: {len(val_set.class_names)} classes but the training split has "
                            f"{len(class_names)}; give both splits the same data.classes file")
    common = {"batch_size": cfg.train.batch_size, "num_workers": cfg.data.num_workers, "seed": cfg.train.seed}
    train_loader = build_loader(train_set, train=True, distributed=distributed, **common)
    val_loader = None
    if val_set is not None and len(val_set) > 0:
        # Each rank scores a disjoint, unpadded shard: every validation video is counted exactly once.
        val_loader = build_loader(val_set, train=False, distributed=distributed, **common)
    return train_loader, val_loader


def _class_names(cfg: Config, parse_annotations) -> list[str]:
    d = cfg.data
    ann = d.train_annotations or (f"{d.root}/train.txt" if d.format == "synthetic" else "")
    classes = d.classes or (f"{d.root}/classes.txt" if d.format == "synthetic" and d.root else "")
    if not ann:
        raise UserError(f"data.train_annotations: not set; point it at the {d.format} annotations for 'train'")
    parsed = parse_annotations(d.format, ann, root=d.root, subset="train", split=d.split, classes=classes or None)
    if not parsed.records:
        raise UserError(f"{ann}: the training split has no usable videos (run `istpan data check` to see why)")
    return list(parsed.class_names)


def _resume_path(resume: str | bool | None, run_dir: Path) -> Path | None:
    if resume in (None, False, "never", "no", ""):
        return None
    if resume in (True, "auto"):
        last = run_dir / "last.pt"
        return last if last.is_file() else None
    path = Path(str(resume))
    if not path.is_file():
        raise UserError(f"--resume {path}: checkpoint not found")
    return path


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
    device = pick_device(tcfg.device)
    distributed = init_distributed(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    check_amp(tcfg.amp, device)
    run_dir = Path(tcfg.out_dir)
    main = is_main_process()
    say = print if (progress and main) else (lambda *a, **k: None)

    # -- classes (parsing the annotations only), then the model: its preprocessing decides the data transforms
    from istpan.data.datasets import parse_annotations
    from istpan.models import create_model

    check_data_paths(cfg)
    class_names = _class_names(cfg, parse_annotations)
    torch.manual_seed(tcfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
    options = dict(cfg.model.options)
    multi_label = is_multi_label(cfg)
    if multi_label:
        options.setdefault("multi_label", True)
    model = create_model(cfg.model.name, num_classes=len(class_names), pretrained=cfg.model.pretrained or None,
                         **options)
    model.to(device)
    if tcfg.partial_bn:
        apply_partial_bn(model)  # before the optimiser: frozen BN parameters are not optimised at all

    # -- data
    pre = getattr(model, "pretrained_cfg", {}) or {}
    train_loader, val_loader = _build_data(cfg, distributed=distributed, class_names=class_names,
                                           mean=pre.get("mean"), std=pre.get("std"))
    steps = len(train_loader) if tcfg.max_steps_per_epoch <= 0 else min(len(train_loader), tcfg.max_steps_per_epoch)

    # -- optimiser, schedule, mixed precision
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=steps, epochs=tcfg.epochs)
    scaler = make_grad_scaler(tcfg.amp, device)
    meta = build_meta(model, class_names=class_names, data_cfg=cfg.data)

    # -- resume
    start_epoch, start_step, best, best_epoch, history = 0, 0, None, None, []
    ckpt = _resume_path(resume, run_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt, device="cpu")
        check_compatible(state["meta"], model_name=cfg.model.name, num_classes=len(class_names), source=ckpt,
                         class_names=class_names)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, start_step = int(state["epoch"]), int(state.get("step_in_epoch", 0))
        best, best_epoch, history = state.get("best_metric"), state.get("best_epoch"), list(state.get("history", []))
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
        save_config(cfg, run_dir / "config.yaml")
    log = RunLog(run_dir, enabled=main, tensorboard=tcfg.tensorboard,
                 resume_step=start_epoch * steps + start_step if ckpt is not None else None)
    metric_name = "mAP" if multi_label else "top1"
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    def checkpoint(epoch: int, step_in_epoch: int) -> dict:
        return {
            "model": model_without_ddp.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,  # finished epochs
            "step_in_epoch": step_in_epoch,  # > 0 only for a checkpoint written on Ctrl-C
            "best_metric": best,
            "best_epoch": best_epoch,
            "history": history,
            "meta": meta,
            "config": config_to_dict(cfg),
            "istpan_version": __version__,
        }

    # -- epochs
    val: dict = {}
    with _StopFlag() as stop:
        try:
            for epoch in range(start_epoch, tcfg.epochs):
                stats = train_one_epoch(
                    model, train_loader, optimizer, scheduler, scaler, cfg=cfg, epoch=epoch, steps=steps,
                    start_step=start_step if epoch == start_epoch else 0, device=device, log=log,
                    progress=progress, stop=stop,
                )
                if stats["steps_done"] < steps:  # Ctrl-C mid-epoch: save where the loop stopped
                    if main:
                        save_checkpoint(checkpoint(epoch, stats["steps_done"]), last_path)
                    _say_resume(run_dir, last_path, epoch, stats["steps_done"], main)
                    raise KeyboardInterrupt

                # -- validate, keep last and best
                val = {}
                if val_loader is not None and ((epoch + 1) % max(tcfg.eval_every, 1) == 0 or epoch + 1 == tcfg.epochs):
                    val = evaluate(model, val_loader, multi_label=multi_label, device=device, amp=tcfg.amp,
                                   progress=progress)
                value = val.get(metric_name)
                is_best = value is not None and (best is None or value > best)
                if is_best:
                    best, best_epoch = value, epoch + 1
                summary = {k: v for k, v in val.items() if k not in ("confusion", "per_class_ap")}
                numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
                history.append({"epoch": epoch + 1, "train_loss": stats["loss"], **{f"val_{k}": v for k, v in
                                                                                     numbers.items()}})
                log.log({"type": "epoch", "epoch": epoch + 1, "global_step": (epoch + 1) * steps,
                         "lr": optimizer.param_groups[0]["lr"], "train": stats, "val": summary},
                        step=(epoch + 1) * steps, scalars={
                            **{f"epoch/train_{k}": stats[k] for k in ("loss", "ce", "interactive", "attn")},
                            "epoch/clips_per_s": stats["clips_per_s"], **{f"val/{k}": v for k, v in numbers.items()},
                        })
                if main:
                    save_checkpoint(checkpoint(epoch + 1, 0), last_path)
                    if is_best:
                        save_checkpoint(checkpoint(epoch + 1, 0), best_path)
                barrier()
                val_text = f" val {metric_name} {value:.2f}" if value is not None else ""
                skipped = stats["skipped"] + val.get("skipped", 0)
                say(f"epoch {epoch + 1}/{tcfg.epochs}: loss {stats['loss']:.4f} (ce {stats['ce']:.4f} "
                    f"inter {stats['interactive']:.4f} attn {stats['attn']:.4f}){val_text} "
                    f"{stats['clips_per_s']:.1f} clips/s" + (f" skipped {skipped}" if skipped else ""),
                    file=sys.stderr)
                if stop.requested(device) and epoch + 1 < tcfg.epochs:  # Ctrl-C during validation
                    _say_resume(run_dir, last_path, epoch + 1, 0, main)
                    raise KeyboardInterrupt
        finally:
            log.close()

    final = {k: v for k, v in val.items() if k not in ("confusion", "per_class_ap")}
    if not final and history:  # nothing left to train (resumed a finished run): report its last validation
        final = {k[len("val_"):]: v for k, v in history[-1].items() if k.startswith("val_")}
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
    }
