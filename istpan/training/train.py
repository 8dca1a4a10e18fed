"""`istpan train`: `train(cfg)` builds the run from a Config, resumes it, and fits it (epochs of `train_one_epoch`
+ `evaluate`, checkpoints after each).

Read top to bottom like torchvision's references: `build` (data, model, optimiser, schedule), `restore` (resume), `fit`
(the epochs). The epoch itself is in training/loop.py, a run's checkpoint state in training/resume.py. Single process:

    istpan train --config configs/ucf101.yaml optim.lr=0.005

Distributed data parallel (any number of processes / nodes; gloo on CPU, NCCL on GPU):

    torchrun --nproc_per_node 4 -m istpan.cli.main train --config configs/ucf101.yaml
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        -m istpan.cli.main train --config configs/ucf101.yaml

Reproducibility and exact resume: every source of randomness is a pure function of (seed, epoch, step, rank) —
the loader's order and augmentations through `set_epoch`, dropout and mixup/cutmix through a per-step
`torch.manual_seed` — so a run resumed from a checkpoint takes exactly the steps the uninterrupted run would have
taken (the EMA weights are saved beside the raw ones and continue too).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.config import Config, config_to_dict, save_config, validate
from istpan.data.build import build_data, check_data_paths, class_names_of, is_multi_label, pick_device
from istpan.errors import UserError
from istpan.evaluation.evaluate import evaluate, nothing_decoded
from istpan.files.checkpoint import build_meta, remove_stale_temp_files, save_checkpoint
from istpan.runtime.amp import check_amp, make_grad_scaler
from istpan.runtime.distributed import all_gather_objects, barrier, init_distributed, is_main_process
from istpan.training.interrupt import StopFlag
from istpan.training.loop import _step_seed as _step_seed  # imported from here by tests and older code
from istpan.training.loop import compute_losses, train_one_epoch
from istpan.training.mixing import BatchMix, FrameSubset
from istpan.training.optim import apply_partial_bn, build_optimizer, build_scheduler
from istpan.training.resume import RunState, find_resume, repair_run_dir, restore, training_state
from istpan.training.run_log import RunLog

__all__ = ["Run", "build", "compute_losses", "fit", "train", "train_one_epoch"]

_resume_from, _repair_run_dir = find_resume, repair_run_dir  # their names before training/resume.py


@dataclass
class Run:
    """Everything `build` makes and `fit` uses: one training run's objects."""

    model: nn.Module  # what the loop calls: the model under DDP / torch.compile when on
    bare: nn.Module  # the model itself: what checkpoints store
    train_loader: Any
    val_loader: Any  # None without validation annotations
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    mix: BatchMix
    subset: FrameSubset
    ema: Any  # timm ModelEmaV3, or None
    meta: dict  # what a checkpoint carries for inference
    class_names: list[str]
    multi_label: bool
    steps: int  # batches per epoch
    opt_steps: int  # optimiser steps per epoch: what the schedule, EMA and logs count
    device: torch.device

    @property
    def metric(self) -> str:
        return "mAP" if self.multi_label else "top1"


def train(cfg: Config, *, resume: str | bool | None = "auto", progress: bool = True) -> dict:
    """Train (and validate every `train.eval_every` epochs); return final/best metrics and the checkpoint paths.

    resume: "auto" continues from `<out_dir>/last.pt` when it exists, "never" starts over, a path resumes from that
    checkpoint. progress=False prints nothing (for programmatic use, e.g. many short ablation runs).
    """
    validate(cfg)  # a Config built in Python gets the checks a YAML file gets
    if cfg.train.epochs < 1:
        raise UserError(f"train.epochs={cfg.train.epochs}: nothing to train and no checkpoint to write; set "
                        "train.epochs to 1 or more")
    threads_before = torch.get_num_threads()
    if cfg.train.num_threads > 0:  # small models on busy CPUs: fewer threads can be much faster (docs/training.md)
        torch.set_num_threads(cfg.train.num_threads)
    try:
        return _train(cfg, resume=resume, progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: Config, *, resume: str | bool | None, progress: bool) -> dict:
    device, distributed = _start_runtime(cfg)
    main = is_main_process()
    say = print if (progress and main) else (lambda *a, **k: None)
    run = build(cfg, device=device, distributed=distributed)
    run_dir = Path(cfg.train.out_dir)
    ckpt, saved = find_resume(resume, run_dir)
    state = RunState() if ckpt is None else restore(
        ckpt, saved, cfg=cfg, class_names=run.class_names, model=run.bare, ema=run.ema, optimizer=run.optimizer,
        scheduler=run.scheduler, scaler=run.scaler, say=say)
    if distributed:
        run.model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        run.model = torch.compile(run.model)
    if main:  # rank 0 writes the run folder
        _prepare_run_dir(cfg, run_dir, ckpt, saved, say)
    del saved  # the weights live in the model now
    start_epoch = state.epoch
    val = fit(cfg, run, state, run_dir=run_dir, resumed=ckpt is not None, progress=progress, say=say)

    # every unreadable video the run skipped (each logged once, when first met), over all ranks
    loaders = (run.train_loader, run.val_loader)
    unreadable = {p: m for loader in loaders for p, m in getattr(loader, "unreadable", {}).items()}
    unreadable = dict(sorted({p: m for part in all_gather_objects(unreadable) for p, m in part.items()}.items()))
    final = {k: v for k, v in val.items() if k not in ("confusion", "per_class_ap")}
    if not final and state.history:  # nothing left to train (resumed a finished run): report its last validation
        final = {k[len("val_"):]: v for k, v in state.history[-1].items() if k.startswith("val_")}
        if start_epoch >= cfg.train.epochs:
            say(f"{run_dir}: already trained for {cfg.train.epochs} epochs (resume=never starts over)",
                file=sys.stderr)
    best_path = run_dir / "best.pt"
    return {
        "run_dir": str(run_dir),
        "last_checkpoint": str(run_dir / "last.pt"),
        "best_checkpoint": str(best_path) if best_path.is_file() else None,
        "metric": run.metric,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "final": final,
        "history": state.history,
        "steps_per_epoch": run.steps,
        "class_names": run.class_names,
        "unreadable": unreadable,  # {path: "path: reason"}
    }


def _start_runtime(cfg: Config) -> tuple[torch.device, bool]:
    """The device, the process group under torchrun, and the checks that depend on them."""
    device = pick_device(cfg.train.device)
    distributed = init_distributed(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    check_amp(cfg.train.amp, device)
    if cfg.train.prefix_loss > 0 and distributed:
        raise UserError("train.prefix_loss runs the model's two halves itself, which DDP does not see; train "
                        "single-process, or set train.prefix_loss=0")
    return device, distributed


def build(cfg: Config, *, device: torch.device, distributed: bool = False) -> Run:
    """Classes (parsing the annotations only), the model, the data, the optimiser and schedule, the recipe's batch
    mixing and weight EMA: a run's objects before any resume. The model's preprocessing decides the transforms."""
    from istpan.models import create_model

    tcfg = cfg.train
    check_data_paths(cfg)
    class_names = class_names_of(cfg)
    torch.manual_seed(tcfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
    options = dict(cfg.model.options)
    multi_label = is_multi_label(cfg)
    if multi_label:
        options.setdefault("multi_label", True)
    for key in ("modality", "flow_length"):  # the model's input channels follow the data (docs/flow.md)
        options.setdefault(key, getattr(cfg.data, key))
    model = create_model(cfg.model.name, num_classes=len(class_names), pretrained=cfg.model.pretrained or None,
                         **options)
    model.to(device)
    if tcfg.partial_bn:
        apply_partial_bn(model)  # before the optimiser: frozen BN parameters are not optimised at all

    pre = getattr(model, "pretrained_cfg", {}) or {}
    train_loader, val_loader = build_data(cfg, distributed=distributed, class_names=class_names,
                                           mean=pre.get("mean"), std=pre.get("std"))
    steps = len(train_loader) if tcfg.max_steps_per_epoch <= 0 else min(len(train_loader), tcfg.max_steps_per_epoch)
    opt_steps = math.ceil(steps / max(int(tcfg.accumulate_steps), 1))

    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=opt_steps, epochs=tcfg.epochs)
    meta = build_meta(model, class_names=class_names, data_cfg=cfg.data)
    ema = None
    if tcfg.ema_decay > 0:
        from timm.utils import ModelEmaV3

        # warm-up: the decay grows with the step count up to ema_decay, so short runs are not stuck near the init
        ema = ModelEmaV3(model, decay=tcfg.ema_decay, use_warmup=True)
    return Run(model=model, bare=model, train_loader=train_loader, val_loader=val_loader, optimizer=optimizer,
               scheduler=scheduler, scaler=make_grad_scaler(tcfg.amp, device),
               mix=BatchMix(cfg.augment, num_classes=len(class_names), multi_label=multi_label),
               subset=FrameSubset(tcfg.frame_subset_min), ema=ema, meta=meta, class_names=class_names,
               multi_label=multi_label, steps=steps, opt_steps=opt_steps, device=device)


def _prepare_run_dir(cfg: Config, run_dir: Path, ckpt: Path | None, saved: dict | None, say) -> None:
    """Rank 0, before training: the folder, partial checkpoint files cleared, last/best repaired, config.yaml."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temp_files(run_dir):  # left by a run killed while writing a checkpoint
        say(f"removed {stale} (partial checkpoint of an interrupted write)", file=sys.stderr)
    if ckpt is not None and ckpt.parent.resolve() == run_dir.resolve():
        repair_run_dir(ckpt, saved, run_dir)
    save_config(cfg, run_dir / "config.yaml")


def _open_log(cfg: Config, run: Run, state: RunState, run_dir: Path, *, resumed: bool) -> RunLog:
    """metrics.jsonl, TensorBoard and W&B (rank 0); a resumed run continues its logs after its last step."""
    tcfg = cfg.train
    wandb = None
    if tcfg.wandb:  # the run id is the checkpoint's: a resumed training continues the same W&B run
        wandb = dict(project=tcfg.wandb_project, name=tcfg.wandb_run or run_dir.name, id=state.run_id,
                     config=config_to_dict(cfg))
    accum = max(int(tcfg.accumulate_steps), 1)
    resume_step = state.epoch * run.opt_steps + state.step_in_epoch // accum if resumed else None
    return RunLog(run_dir, enabled=is_main_process(), tensorboard=tcfg.tensorboard, resume_step=resume_step,
                  wandb=wandb)


def fit(cfg: Config, run: Run, state: RunState, *, run_dir: Path, resumed: bool = False, progress: bool = True,
        say=print) -> dict:
    """The epochs from `state.epoch` on: train, validate, log, checkpoint (last.pt, and best.pt when best).

    Ctrl-C (StopFlag) saves last.pt where the loop stopped and raises KeyboardInterrupt. Returns the last
    validation's metrics ({} when no epoch was left to train)."""
    tcfg = cfg.train
    main = is_main_process()
    log = _open_log(cfg, run, state, run_dir, resumed=resumed)
    start_epoch, start_step = state.epoch, state.step_in_epoch
    val: dict = {}
    with StopFlag() as stop:
        try:
            for epoch in range(start_epoch, tcfg.epochs):
                stats = train_one_epoch(
                    run.model, run.train_loader, run.optimizer, run.scheduler, run.scaler, cfg=cfg, epoch=epoch,
                    steps=run.steps, start_step=start_step if epoch == start_epoch else 0, device=run.device,
                    log=log, progress=progress, stop=stop, mix=run.mix, subset=run.subset, ema=run.ema,
                )
                if stats["steps_done"] < run.steps:  # Ctrl-C mid-epoch: save where the loop stopped
                    if main:
                        _save(cfg, run, state, run_dir / "last.pt", epoch=epoch, step_in_epoch=stats["steps_done"])
                    _say_resume(run_dir, epoch, stats["steps_done"], main)
                    raise KeyboardInterrupt
                if stats["clips"] == 0:  # every clip failed to decode: an untrained model is not worth a checkpoint
                    raise nothing_decoded(stats["skipped"], split="training")
                val = _validate(cfg, run, state, epoch, progress=progress)
                is_best = _record_epoch(cfg, run, state, log, epoch, stats, val)
                if main:  # best.pt first: a kill between the two writes leaves it one epoch ahead, never behind
                    if is_best:
                        _save(cfg, run, state, run_dir / "best.pt", epoch=epoch + 1, step_in_epoch=0)
                    _save(cfg, run, state, run_dir / "last.pt", epoch=epoch + 1, step_in_epoch=0)
                barrier()
                if run.val_loader is not None and val and val.get("num_videos", 0) == 0:  # after the save
                    raise nothing_decoded(val.get("skipped", 0), split="validation")
                say(_epoch_line(cfg, run, epoch, stats, val), file=sys.stderr)
                if stop.requested(run.device) and epoch + 1 < tcfg.epochs:  # Ctrl-C during validation
                    _say_resume(run_dir, epoch + 1, 0, main)
                    raise KeyboardInterrupt
        finally:
            log.close()
    return val


def _validate(cfg: Config, run: Run, state: RunState, epoch: int, *, progress: bool) -> dict:
    """The validation metrics after `epoch` ({} when this epoch is not validated); with EMA, both weights are
    scored and the better one is reported and becomes the one `load_model` uses (state.eval_weights)."""
    tcfg, metric = cfg.train, run.metric
    if run.val_loader is None or ((epoch + 1) % max(tcfg.eval_every, 1) and epoch + 1 != tcfg.epochs):
        return {}
    val = evaluate(run.model, run.val_loader, multi_label=run.multi_label, device=run.device, amp=tcfg.amp,
                   progress=progress)
    if run.ema is None:
        return val
    val_ema = evaluate(run.ema.module, run.val_loader, multi_label=run.multi_label, device=run.device, amp=tcfg.amp,
                       progress=progress)
    scores = {f"raw_{metric}": val[metric], f"ema_{metric}": val_ema[metric]}
    state.eval_weights = "model_ema" if val_ema[metric] > val[metric] else "model"
    return {**(val_ema if state.eval_weights == "model_ema" else val), **scores,
            "weights": "ema" if state.eval_weights == "model_ema" else "raw"}


def _record_epoch(cfg: Config, run: Run, state: RunState, log: RunLog, epoch: int, stats: dict, val: dict) -> bool:
    """Best metric, history and the `epoch` log record of a finished epoch; True when it is the best so far."""
    value = val.get(run.metric)
    is_best = value is not None and (state.best is None or value > state.best)
    if is_best:
        state.best, state.best_epoch = value, epoch + 1
    summary = {k: v for k, v in val.items() if k not in ("confusion", "per_class_ap")}
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    state.history.append({"epoch": epoch + 1, "train_loss": stats["loss"],
                          **{f"val_{k}": v for k, v in numbers.items()}})
    step = (epoch + 1) * run.opt_steps
    log.log({"type": "epoch", "epoch": epoch + 1, "global_step": step, "lr": run.optimizer.param_groups[0]["lr"],
             "train": stats, "val": summary},
            step=step, scalars={
                **{f"epoch/train_{k}": stats[k] for k in ("loss", "ce", "interactive", "attn", "prefix") if k in stats},
                "epoch/clips_per_s": stats["clips_per_s"], **{f"val/{k}": v for k, v in numbers.items()},
            })
    state.epoch, state.step_in_epoch = epoch + 1, 0
    return is_best


def _save(cfg: Config, run: Run, state: RunState, path: Path, *, epoch: int, step_in_epoch: int) -> None:
    save_checkpoint(training_state(state, epoch=epoch, step_in_epoch=step_in_epoch, model=run.bare, ema=run.ema,
                                   optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
                                   meta=run.meta, cfg=cfg), path)


def _epoch_line(cfg: Config, run: Run, epoch: int, stats: dict, val: dict) -> str:
    """The one line printed after each epoch: losses, validation metric (raw and EMA), clips/s, skipped videos."""
    metric, value = run.metric, val.get(run.metric)
    val_text = f" val {metric} {value:.2f}" if value is not None else ""
    if "weights" in val:
        val_text += f" ({val['weights']}; raw {val[f'raw_{metric}']:.2f} ema {val[f'ema_{metric}']:.2f})"
    skipped = stats["skipped"] + val.get("skipped", 0)
    prefix_text = f" prefix {stats['prefix']:.4f}" if cfg.train.prefix_loss > 0 else ""
    return (f"epoch {epoch + 1}/{cfg.train.epochs}: loss {stats['loss']:.4f} (ce {stats['ce']:.4f} "
            f"inter {stats['interactive']:.4f} attn {stats['attn']:.4f}{prefix_text}){val_text} "
            f"{stats['clips_per_s']:.1f} clips/s" + (f" skipped {skipped}" if skipped else ""))


def _say_resume(run_dir: Path, epoch: int, step: int, main: bool) -> None:
    if main:
        print(f"interrupted at epoch {epoch + 1} step {step}: saved {run_dir / 'last.pt'}\n"
              f"resume with: istpan train --config {run_dir / 'config.yaml'}   (continues from last.pt)",
              file=sys.stderr)
