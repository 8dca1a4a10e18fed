"""Optimiser, learning-rate schedule and TSN's partial BatchNorm.

The schedule is a per-step multiplier (linear warm-up, then cosine or step decay) so that resuming restores it
exactly from the step counter, and so that short runs (a few dozen steps) still warm up smoothly.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from istpan.config import OptimConfig

__all__ = ["apply_partial_bn", "build_optimizer", "build_scheduler", "lr_factor"]

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def _bns(module: nn.Module):
    return (m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def apply_partial_bn(model: nn.Module) -> int:
    """TSN's partial BN: every BatchNorm but the first (of each stream, in an RGB + flow model) keeps its ImageNet
    statistics and affine parameters.

    Why: with small video batches (B·K frames of few videos) re-estimating BN statistics overfits; TSN freezes all
    but the first BN layer. Call after every `model.train()` (which would switch them back to batch statistics).
    Returns how many layers were frozen.
    """
    frozen = 0
    bns = list(_bns(model))
    keep = {id(b) for b in bns[:1]}
    for module in model.modules():  # a two-stream backbone (RGB + flow): the first BN of each stream stays trainable
        for stream in getattr(module, "streams", []):
            keep.update(id(b) for b in itertools.islice(_bns(stream), 1))
    for bn in bns:
        if id(bn) in keep:
            continue
        bn.eval()
        for p in bn.parameters(recurse=False):
            p.requires_grad_(False)
        frozen += 1
    return frozen


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW; no weight decay on any 1-D parameter (biases, normalisation
    scales, ConvNeXt's layer-scale gammas, ...); the backbone's parameters (`model.backbone`) at
    `cfg.backbone_lr_mult` x the LR of the new layers.

    Why no decay there: decaying BN/LN scales and biases only fights the normalisation (standard since Goyal et al.
    2017), and a per-channel scale such as a layer-scale gamma is no weight matrix either: decay would pull a residual
    branch towards zero. The rule is timm's (`param_groups_weight_decay`: `ndim <= 1` or a bias), which also covers
    parameters a backbone adds later; norm layers are exempt whatever their shape. Why a backbone multiplier: a
    pretrained backbone needs smaller steps than the freshly initialised attention and head (the fine-tuning habit of
    MMAction2's `paramwise_cfg` and timm's layer decay); with the default 1.0 there are just the two groups of the
    plain recipe.
    The multiplier is kept in each group (`lr_mult`) and the schedule scales every group's own initial LR, so it holds
    through warm-up and decay.
    """
    backbone = getattr(model, "backbone", None)
    in_backbone = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    split = cfg.backbone_lr_mult != 1.0
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            decays = not (param.ndim <= 1 or name == "bias" or isinstance(module, _NORM_TYPES))
            groups.setdefault((split and id(param) in in_backbone, decays), []).append(param)
    param_groups = []
    for is_backbone, decays in sorted(groups, key=lambda k: (k[0], not k[1])):  # new layers first: logged LR
        mult = cfg.backbone_lr_mult if is_backbone else 1.0
        param_groups.append({"params": groups[is_backbone, decays], "weight_decay": cfg.weight_decay if decays else 0.0,
                             "lr": cfg.lr * mult, "lr_mult": mult})
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def lr_factor(step: int, *, cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base LR after `step` optimiser steps (pure function: the schedule has no hidden state)."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        return cfg.step_gamma ** sum(epoch >= e for e in cfg.step_epochs)
    total = max(epochs * steps_per_epoch - warmup, 1)
    progress = min((step - warmup) / total, 1.0)
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimiser step (not per epoch)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg=cfg, steps_per_epoch=steps_per_epoch, epochs=epochs)
    )
