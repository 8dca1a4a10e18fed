"""Checkpoints: written atomically, loaded with `weights_only=True`, and self-describing.

A checkpoint is a plain dict of tensors and built-in types (nothing that needs pickle's arbitrary code execution):

    model      state dict of the bare model (never the DDP / compiled wrapper)
    model_ema  (with train.ema_decay > 0) the EMA of the weights; `eval_weights` says which of the two validated
               better ("model" or "model_ema"): that one is what `istpan.files.load.load_model` (eval, predict,
               export) uses
    meta       what is needed to use the weights without the config: `ModelDescription.to_dict()` (class names,
               model name and options, multi-label flag, preprocessing: frames, resize, crop, mean/std, backend)
    config     the resolved run config (dict), for resuming and for `istpan eval` to rebuild the val set
    epoch      number of finished epochs; optimizer / scheduler / scaler states; best metric so far

Why atomic: a run killed while writing (SIGKILL, full disk, pre-emption) must leave the previous `last.pt` intact,
so the file is written to a temp file in the same folder, flushed to disk and renamed over the old one. A kill during
the write leaves that temp file (`.last.pt.XXXXXXXX.tmp`) behind; `remove_stale_temp_files` clears them on the next
start.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.errors import UserError
from istpan.files.description import ModelDescription
from istpan.models.weights import load_tensors

__all__ = [
    "build_meta",
    "check_compatible",
    "load_checkpoint",
    "load_weights",
    "read_progress",
    "remove_stale_temp_files",
    "save_checkpoint",
]

_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what tempfile.mkstemp(prefix=".NAME.", suffix=".tmp") makes


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files `save_checkpoint` leaves when killed mid-write; return what was removed.

    Only the run's owner (rank 0, before it writes anything) calls this, so no live write is ever removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMP_NAME.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint file written by `save_checkpoint`; any problem is a one-line UserError naming the file.
    mmap=True maps the file: its tensors are read from disk only when used (`read_progress`). Model folders, run
    folders and Hub repo ids: `istpan.files.load`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (give the path to a .pt file written by `istpan train`)")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: checkpoint is empty (0 bytes); was its run killed before the first save?")
    try:
        # a pickled object is refused in one line, never run
        state = load_tensors(path, map_location=device, instead="a checkpoint written by `istpan train`", mmap=mmap)
    except UserError:
        raise
    except Exception as err:  # truncated file, not a torch file
        first = str(err).strip().split(". ")[0].splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot read checkpoint ({first}); is it complete and written by istpan?") from err
    if not isinstance(state, dict) or "model" not in state or "meta" not in state:
        raise UserError(f"{path}: not an istpan checkpoint (no 'model'/'meta' entries); use one from istpan train")
    return state


_PROGRESS_KEYS = ("epoch", "step_in_epoch", "run_id", "best_epoch", "best_metric")


def read_progress(path: str | Path) -> dict[str, Any]:
    """Where the run of a checkpoint stood (epoch, step_in_epoch, run_id, best_epoch, best_metric, those present),
    without loading its tensors: the file is mapped and only its small pickled part is read, so comparing last.pt
    with best.pt before resuming costs kilobytes instead of two copies of model and optimiser state in memory."""
    state = load_checkpoint(path, device="cpu", mmap=True)
    return {k: state[k] for k in _PROGRESS_KEYS if k in state}


def build_meta(model: nn.Module, *, class_names: list[str], data_cfg: Any) -> dict[str, Any]:
    """What a checkpoint stores as "meta": the `ModelDescription` training writes (`describe_model`), as its dict."""
    from istpan.files.description import describe_model

    return describe_model(model, class_names=class_names, data_cfg=data_cfg).to_dict()


def check_compatible(
    meta: ModelDescription | dict[str, Any],
    *,
    model_name: str,
    num_classes: int,
    source: str | Path,
    class_names: list[str] | None = None,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Refuse, with what to do, weights of another model, class count, class list or model options (instead of a
    size-mismatch traceback, or worse, silently relabelled classes).

    meta: the description of the weights (or a checkpoint's "meta" dict); model_options: the resolved
    `model.model_options` of the model about to receive the weights.
    """
    meta = ModelDescription.from_dict(meta)
    if meta.model_name != model_name or meta.num_classes != num_classes:
        raise UserError(
            f"{source}: checkpoint is for model '{meta.model_name}' with {meta.num_classes} classes, "
            f"but this run uses '{model_name}' with {num_classes} classes; use a new train.out_dir or matching weights"
        )
    if model_options is not None and meta.model_options:
        theirs, ours = dict(meta.model_options), dict(model_options)
        changed = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
        if changed:
            diff = ", ".join(f"{k}={theirs.get(k)} (this run: {ours.get(k)})" for k in changed)
            raise UserError(
                f"{source}: checkpoint was trained with model.options {diff}; start a new run with another "
                "train.out_dir (or --resume never to overwrite this one), or drop those overrides to continue it"
            )
    if class_names is not None and list(meta.class_names) != list(class_names):
        first = next(i for i, (a, b) in enumerate(zip(meta.class_names, class_names)) if a != b)
        raise UserError(
            f"{source}: checkpoint's class {first} is '{meta.class_names[first]}' but this dataset's is "
            f"'{class_names[first]}'; use a new train.out_dir or the dataset the checkpoint was trained on"
        )


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], *, source: str | Path, model_name: str) -> None:
    """`model.load_state_dict(weights)`, with a one-line UserError naming the file when they do not fit (a file whose
    weights do not match the model its meta names: edited, or written by another istpan version)."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # same keys, other shapes (e.g. a changed option)
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        first = lines[1] if len(lines) > 1 else (lines[0] if lines else type(err).__name__)
        more = f" and {len(lines) - 2} more" if len(lines) > 2 else ""
        raise UserError(f"{source}: weights do not fit model '{model_name}' ({first.rstrip('.')}{more})") from err
    if missing or unexpected:
        keys = ", ".join((missing + unexpected)[:3])
        raise UserError(f"{source}: weights do not fit model '{model_name}' (first mismatched keys: {keys})")
