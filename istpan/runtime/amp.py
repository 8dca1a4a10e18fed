"""Mixed precision behind one flag: `train.amp = none | bf16 | fp16`.

bf16 needs no loss scaling and runs on CPU and recent GPUs; fp16 is CUDA-only and uses a GradScaler.
"""

from __future__ import annotations

import contextlib

import torch

from istpan.errors import UserError

__all__ = ["autocast", "check_amp", "make_grad_scaler"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: torch.device) -> None:
    if amp not in ("none", *_DTYPES):
        raise UserError(f"train.amp: unknown value {amp!r} (choose none, bf16 or fp16)")
    if amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 on CPU")


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast context for the forward pass (and loss), or a no-op when amp is 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[amp])


def make_grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """Enabled only for fp16 on CUDA; a disabled scaler is a transparent pass-through (and has a state dict)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")
