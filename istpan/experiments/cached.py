"""Train and test the IST-PAN layer + head on cached frozen-backbone features (`istpan.experiments.features`).

The model is the library's own `VideoClassifier` (built by `create_model` exactly as `istpan train` builds it); only
its backbone is skipped: the cached stage maps go through `frame_features_from_maps` and `forward_clip`, the two
halves `model(video)` is made of. The loss is the training loop's
(`engine.train.compute_losses`), the optimiser and schedule the engine's (`engine.optim`), the frame sampling the
data pipeline's (`data.sampling.segment_indices`: random within segments for training, centres for testing). So a
row here differs from `istpan train` with a frozen backbone only in where the maps come from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from istpan.experiments.features import FeatureCache

__all__ = ["CachedBudget", "build_cached_model", "predict_cached", "train_cached"]


@dataclass(frozen=True)
class CachedBudget:
    """Training budget of one row × seed on cached features; every row gets the same one."""

    epochs: int = 24
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    segments: int = 8  # K at training (and the default test K)
    dropout: float = 0.5
    input_size: int = 112


def build_cached_model(family: str, options: dict[str, Any], *, num_classes: int, budget: CachedBudget,
                       seed: int) -> nn.Module:
    """`{family}_mobilenetv2` with the row's options; the backbone is never run (its maps are cached) nor trained."""
    from istpan.models import create_model

    torch.manual_seed(seed)
    model = create_model(f"{family}_mobilenetv2", num_classes=num_classes, input_size=budget.input_size,
                         dropout=budget.dropout, **options)
    model.backbone.requires_grad_(False)
    return model


def _forward(model: nn.Module, cache: FeatureCache, videos: torch.Tensor, frames: torch.Tensor):
    """model(video) for videos (B,) at cached positions frames (B, K), from the cached stage maps."""
    feats = model.frame_features_from_maps(cache.maps(videos, frames))  # (B·K, ΣC_j, h, w)
    return model.forward_clip(feats.unflatten(0, tuple(frames.shape)))


def _batches(n: int, size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(size))


def eval_positions(cache: FeatureCache, segments: int) -> torch.Tensor:
    """Cached-frame positions (K,) of the test protocol: the centre frame of each of K segments."""
    from istpan.data.sampling import segment_indices

    return segment_indices(len(cache.frames), segments)


@torch.no_grad()
def predict_cached(model: nn.Module, cache: FeatureCache, *, segments: int, batch_size: int = 128,
                   with_attention: bool = False) -> dict[str, torch.Tensor]:
    """Scores (V, classes) of every cached video at test K = segments; with_attention also the per-frame heat maps
    (V, K, h, w) (`models.attention_maps`) and the fused attention rows' redundancy per video (V,)."""
    from istpan.experiments.runs import attention_redundancy
    from istpan.models import attention_maps

    model.eval()
    pos = eval_positions(cache, segments)  # (K,)
    scores, heats, redundancy = [], [], []
    for videos in _batches(len(cache), batch_size, None):
        frames = pos[None].expand(len(videos), -1)  # (B, K)
        out = _forward(model, cache, videos, frames)
        scores.append(out.logits.float())
        if with_attention and out.attn is not None:
            heats.append(attention_maps(out).float())  # (B, K, h, w)
            redundancy.append(attention_redundancy(out.attn))  # (B,)
    result = {"scores": torch.cat(scores), "positions": pos}
    if heats:
        result["heat"], result["redundancy"] = torch.cat(heats), torch.cat(redundancy)
    return result


def train_cached(model: nn.Module, train: FeatureCache, val: FeatureCache, *, budget: CachedBudget, beta: float,
                 gamma: float, seed: int, progress: bool = False) -> dict[str, Any]:
    """Train the layer + head for budget.epochs; return the validation top-1 after every epoch (the curve) and the
    seconds spent training (validation excluded). The model is left in its final state (no best-epoch pick: the
    number reported is the last epoch's, so no row is selected on the validation set)."""
    from tqdm import tqdm

    from istpan.config import OptimConfig
    from istpan.data.sampling import segment_indices
    from istpan.engine.optim import build_optimizer, build_scheduler
    from istpan.engine.train import compute_losses

    g = torch.Generator().manual_seed(seed)
    ocfg = OptimConfig(name="adamw", lr=budget.lr, weight_decay=budget.weight_decay, warmup_epochs=1.0)
    optimizer = build_optimizer(model, ocfg)
    steps = -(-len(train) // budget.batch_size)
    scheduler = build_scheduler(optimizer, ocfg, steps_per_epoch=steps, epochs=budget.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    curve, train_s = [], 0.0
    for _ in tqdm(range(budget.epochs), desc="epochs", disable=not progress, leave=False):
        start = time.perf_counter()
        model.train()
        for videos in _batches(len(train), budget.batch_size, g):
            frames = torch.stack([segment_indices(len(train.frames), budget.segments, rng=g) for _ in videos])
            out = _forward(model, train, videos, frames)  # frames: (B, K) cached positions
            losses = compute_losses(out, train.labels[videos], multi_label=False, beta=beta, gamma=gamma)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            nn.utils.clip_grad_norm_(params, ocfg.clip_grad_norm)
            optimizer.step()
            scheduler.step()
        train_s += time.perf_counter() - start
        scores = predict_cached(model, val, segments=budget.segments)["scores"]
        curve.append(100.0 * float((scores.argmax(1) == val.labels).float().mean()))
    return {"curve": curve, "train_s": train_s}
