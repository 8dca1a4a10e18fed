"""Checkpoints: written atomically, loaded with `weights_only=True`, and self-describing.

A checkpoint is a plain dict of tensors and built-in types (nothing that needs pickle's arbitrary code execution):

    model      state dict of the bare model (never the DDP / compiled wrapper)
    model_ema  (with train.ema_decay > 0) the EMA of the weights; `eval_weights` says which of the two validated
               better ("model" or "model_ema"): that one is what `load_model` (eval, predict, export) uses
    meta       what is needed to use the weights without the config: class names, model name and options,
               multi-label flag, preprocessing (`istpan.data.Preprocessing.to_dict()`: frames, resize, crop, mean/std,
               decode backend)
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
from istpan.models.weights import load_tensors

__all__ = [
    "build_meta",
    "check_compatible",
    "load_checkpoint",
    "load_model",
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
    """Read a checkpoint written by `save_checkpoint`, or a model folder in the Hugging Face layout / a Hub repo id
    (`files.pretrained`: same dict, without optimiser state); any problem is a one-line UserError naming the file.
    mmap=True maps the file: its tensors are read from disk only when used (`read_progress`)."""
    path = Path(path)
    if path.is_dir() or (not path.exists() and str(path).count("/") == 1 and path.suffix not in (".pt", ".pth")):
        from istpan.files.pretrained import read_pretrained  # a model folder or a Hub repo id "user/name"

        return read_pretrained(path)
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
    """Everything `predict`/`export` need besides the weights, in built-in types only."""
    from istpan.data.preprocess import Preprocessing

    pre = dict(getattr(model, "pretrained_cfg", {}) or {})
    return {
        "model_name": model.model_name,
        "model_options": dict(model.model_options),
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "multi_label": bool(getattr(model, "multi_label", False)),
        # what the model sees at test time, as a plain dict (weights_only loads it); Preprocessing.from_meta reads it
        "preprocessing": Preprocessing.from_data_config(data_cfg, mean=pre.get("mean"), std=pre.get("std")).to_dict(),
    }


def check_compatible(
    meta: dict[str, Any],
    *,
    model_name: str,
    num_classes: int,
    source: str | Path,
    class_names: list[str] | None = None,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Refuse, with what to do, weights of another model, class count, class list or model options (instead of a
    size-mismatch traceback, or worse, silently relabelled classes).

    model_options: the resolved `model.model_options` of the model about to receive the weights.
    """
    if meta.get("model_name") != model_name or int(meta.get("num_classes", -1)) != num_classes:
        raise UserError(
            f"{source}: checkpoint is for model '{meta.get('model_name')}' with {meta.get('num_classes')} classes, "
            f"but this run uses '{model_name}' with {num_classes} classes; use a new train.out_dir or matching weights"
        )
    if model_options is not None and "model_options" in meta:
        theirs, ours = dict(meta["model_options"]), dict(model_options)
        changed = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
        if changed:
            diff = ", ".join(f"{k}={theirs.get(k)} (this run: {ours.get(k)})" for k in changed)
            raise UserError(
                f"{source}: checkpoint was trained with model.options {diff}; start a new run with another "
                "train.out_dir (or --resume never to overwrite this one), or drop those overrides to continue it"
            )
    if class_names is not None and list(meta.get("class_names", [])) != list(class_names):
        first = next(i for i, (a, b) in enumerate(zip(meta["class_names"], class_names)) if a != b)
        raise UserError(
            f"{source}: checkpoint's class {first} is '{meta['class_names'][first]}' but this dataset's is "
            f"'{class_names[first]}'; use a new train.out_dir or the dataset the checkpoint was trained on"
        )


def _eval_weights(state: dict[str, Any]) -> str:
    """The key of the weights to use for inference: the EMA when it validated better, else the raw weights."""
    key = state.get("eval_weights", "model")
    return key if key in ("model", "model_ema") and key in state else "model"


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with, load its weights, and return it in eval mode with its meta."""
    from istpan.models import create_model  # model registry; imported here so checkpoint I/O stays light

    state = load_checkpoint(path, device="cpu")
    meta = state["meta"]
    try:  # the weights come from this checkpoint: no `pretrained` backbone file
        model = create_model(meta["model_name"], num_classes=int(meta["num_classes"]), **meta.get("model_options", {}))
    except (KeyError, UserError) as err:  # incomplete meta, or a model name / option of another istpan version
        name = meta.get("model_name")
        raise UserError(f"{path}: checkpoint needs model {name!r}, unknown to this istpan ({err})") from err
    load_weights(model, state[_eval_weights(state)], source=path, model_name=meta["model_name"])
    return model.to(device).eval(), _with_run_backend(meta, state)


def _with_run_backend(meta: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before `Preprocessing.backend` existed: the decode backend of the run config they carry
    (a model trained on rawframes then predicts folders of frames by default, as a new checkpoint does)."""
    pre = meta.get("preprocessing")
    backend = ((state.get("config") or {}).get("data") or {}).get("backend")
    if not isinstance(pre, dict) or "backend" in pre or not backend:
        return meta
    return {**meta, "preprocessing": {**pre, "backend": backend}}


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
