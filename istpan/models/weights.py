"""Strict loading of local checkpoint files into backbones, with one-line errors a user can act on.

Why not `module.load_state_dict(torch.load(path))` directly: a missing file, a truncated download or a checkpoint of
another architecture then surfaces as a traceback from deep inside torch. Here each of them is a `UserError` naming
the file and the first mismatched keys. Nothing is ever downloaded: `pretrained=` is a local path only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from istpan.errors import UserError

__all__ = ["load_state_dict_file", "load_strict"]

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_SHOW = 5  # how many mismatched keys an error message names


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `path` (unwrapping {'state_dict': ...} / {'model': ...}), or raise `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: pretrained checkpoint not found (pretrained= takes a local file path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt/truncated/non-torch files
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({reason}); re-download or re-save it") from err
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: checkpoint holds no state dict of tensors (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel/DDP prefixes


def _first(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_strict(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    path: str | Path,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Load `state_dict` into `module`, requiring every key and shape to match (keys under `ignore_prefixes`,
    e.g. an ImageNet classifier the backbone drops, are skipped); raise `UserError` naming the first mismatches."""
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    missing = own.keys() - state_dict.keys()
    unexpected = state_dict.keys() - own.keys()
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in sorted(own.keys() & state_dict.keys()) if own[k].shape != state_dict[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_first(shapes)}")
    if problems:
        raise UserError(f"{path}: does not match {type(module).__name__} ({'; '.join(problems)})")
    module.load_state_dict(state_dict, strict=True)
