"""A training run's state in a checkpoint: what is saved, which file a run resumes from, and restoring it.

last.pt is written after every epoch (and on Ctrl-C, mid-epoch), best.pt before it when the epoch is the best so far;
both carry the run id, so `--resume auto` never mixes the files of two runs that shared a folder. Everything that
decides the next step is saved: weights (raw and EMA), optimiser, schedule, grad scaler, finished epochs and batches,
the best metric and the per-epoch history.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from istpan._version import __version__
from istpan.config import Config, config_to_dict
from istpan.errors import UserError
from istpan.files.checkpoint import check_compatible, load_checkpoint, load_weights, read_progress, save_checkpoint

__all__ = ["RunState", "find_resume", "repair_run_dir", "restore", "training_state"]


@dataclass
class RunState:
    """Where a run stands: what a checkpoint restores besides the weights and the optimiser."""

    epoch: int = 0  # finished epochs
    step_in_epoch: int = 0  # batches of the next epoch already trained (> 0 only after Ctrl-C)
    best: float | None = None  # best validation metric so far
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)  # one entry per finished epoch: train loss, val metrics
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # ties last.pt and best.pt to one run
    eval_weights: str = "model"  # which weights `load_model` uses: "model" (raw) or "model_ema", the better at val


def training_state(state: RunState, *, epoch: int, step_in_epoch: int, model: nn.Module, ema, optimizer,
                   scheduler, scaler, meta: dict, cfg: Config) -> dict[str, Any]:
    """The checkpoint of a run after `epoch` finished epochs and `step_in_epoch` batches of the next one."""
    return {
        "model": model.state_dict(),
        **({"model_ema": ema.module.state_dict()} if ema is not None else {}),
        "eval_weights": state.eval_weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,  # finished epochs
        "step_in_epoch": step_in_epoch,  # > 0 only for a checkpoint written on Ctrl-C
        "best_metric": state.best,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "meta": meta,
        "run_id": state.run_id,
        "config": config_to_dict(cfg),
        "istpan_version": __version__,
    }


def find_resume(resume: str | bool | None, run_dir: Path) -> tuple[Path, dict] | tuple[None, None]:
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


def restore(ckpt: Path, state: dict, *, cfg: Config, class_names: list[str], model: nn.Module, ema, optimizer,
            scheduler, scaler, say=print) -> RunState:
    """Load a checkpoint's weights and optimiser state into this run's objects; return where the run stands."""
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
    run = RunState(epoch=int(state["epoch"]), step_in_epoch=int(state.get("step_in_epoch", 0)),
                   best=state.get("best_metric"), best_epoch=state.get("best_epoch"),
                   history=list(state.get("history", [])),
                   eval_weights=state.get("eval_weights", "model") if ema is not None else "model")
    run.run_id = state.get("run_id") or run.run_id
    say(f"resuming from {ckpt} at epoch {run.epoch + 1}" + (f" step {run.step_in_epoch + 1}" if run.step_in_epoch
                                                              else ""), file=sys.stderr)
    return run


def repair_run_dir(path: Path, state: dict, run_dir: Path) -> None:
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
