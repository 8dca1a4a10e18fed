"""Checkpoints: written atomically, loaded with `weights_only=True`, and self-describing.

A checkpoint is a plain dict of tensors and built-in types (nothing that needs pickle's arbitrary code execution):

    model      state dict of the bare model (never the DDP / compiled wrapper)
    meta       what is needed to use the weights without the config: class names, model name and options,
               multi-label flag, preprocessing (`istpan.data.Preprocessing.to_dict()`: frames, resize, crop, mean/std)
    config     the resolved run config (dict), for resuming and for `istpan eval` to rebuild the val set
    epoch      number of finished epochs; optimizer / scheduler / scaler states; best metric so far

Why atomic: a run killed while writing (SIGKILL, full disk, pre-emption) must leave the previous `last.pt` intact,
so the file is written to a temp file in the same folder, flushed to disk and renamed over the old one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.errors import UserError

__all__ = ["build_meta", "check_compatible", "load_checkpoint", "load_model", "save_checkpoint"]


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


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; any problem is a one-line UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (give the path to a .pt file written by `istpan train`)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated file, not a torch file, pickled objects that weights_only refuses
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot read checkpoint ({first}); is it complete and written by istpan?") from err
    if not isinstance(state, dict) or "model" not in state or "meta" not in state:
        raise UserError(f"{path}: not an istpan checkpoint (no 'model'/'meta' entries); use one from istpan train")
    return state


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
    meta: dict[str, Any], *, model_name: str, num_classes: int, source: str | Path, class_names: list[str] | None = None
) -> None:
    """Refuse, with what to do, weights of another model, class count or class list (instead of a size-mismatch
    traceback, or worse, silently relabelled classes)."""
    if meta.get("model_name") != model_name or int(meta.get("num_classes", -1)) != num_classes:
        raise UserError(
            f"{source}: checkpoint is for model '{meta.get('model_name')}' with {meta.get('num_classes')} classes, "
            f"but this run uses '{model_name}' with {num_classes} classes; use a new train.out_dir or matching weights"
        )
    if class_names is not None and list(meta.get("class_names", [])) != list(class_names):
        first = next(i for i, (a, b) in enumerate(zip(meta["class_names"], class_names)) if a != b)
        raise UserError(
            f"{source}: checkpoint's class {first} is '{meta['class_names'][first]}' but this dataset's is "
            f"'{class_names[first]}'; use a new train.out_dir or the dataset the checkpoint was trained on"
        )


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
    try:
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as err:  # same keys, other shapes (e.g. a changed option)
        first = str(err).strip().splitlines()[-1].strip()
        raise UserError(f"{path}: weights do not fit model '{meta['model_name']}' ({first})") from err
    if missing or unexpected:
        keys = ", ".join((missing + unexpected)[:3])
        raise UserError(f"{path}: weights do not fit model '{meta['model_name']}' (first mismatched keys: {keys})")
    return model.to(device).eval(), meta
