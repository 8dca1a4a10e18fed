"""Train and test the IST-PAN layer + head on cached frozen-backbone features (`istpan.experiments.features`).

The model is the library's own `VideoClassifier` (built by `create_model` exactly as `istpan train` builds it); only
its backbone is skipped: the cached stage maps go through `frame_features_from_maps` and `forward_clip`, the two
halves `model(video)` is made of. The loss is the training loop's
(`training.train.compute_losses`), the optimiser and schedule the engine's (`training.optim`), the frame sampling the
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

__all__ = ["CachedBudget", "FrameFeatures", "build_cached_model", "predict_cached", "train_cached"]


@dataclass(frozen=True)
class CachedBudget:
    """Training budget of one row × seed on cached features; every row gets the same one."""

    epochs: int = 6  # CPU time on a shared machine; the validation curves (docs/ablation.md) show where this stops
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    segments: int = 8  # K at training (and the default test K)
    dropout: float = 0.5
    input_size: int = 112
    curve_every: int = 8  # the validation curve uses every n-th validation video (balanced: videos sorted by class)


def build_cached_model(family: str, options: dict[str, Any], *, num_classes: int, budget: CachedBudget,
                       seed: int) -> nn.Module:
    """`{family}_mobilenetv2` with the row's options; the backbone is never run (its maps are cached) nor trained."""
    from istpan.models import create_model

    torch.manual_seed(seed)
    model = create_model(f"{family}_mobilenetv2", num_classes=num_classes, input_size=budget.input_size,
                         dropout=budget.dropout, **options)
    model.backbone.requires_grad_(False)
    return model


class FrameFeatures:
    """`frame_features` of every cached frame for one sampling function R, computed once: (V, T, ΣC_j, h, w) float16.

    Why: gathering the raw stage maps and resizing them per batch is most of a cached step's time, and it is the
    same for every row that shares R. They are computed by an N = len(cache.stages) model's own
    `frame_features_from_maps`; a model with fewer scales uses the last channels (the scales are stacked shallow ->
    deep), and TSN its own `frame_features_from_maps` of the top map's channels.
    """

    def __init__(self, cache: FeatureCache, *, reduce: str = "avg", chunk: int = 128) -> None:
        from istpan.models import create_model

        self.cache, self.reduce = cache, reduce
        ref = create_model("istpan_mobilenetv2", num_classes=1, num_scales=len(cache.stages), reduce=reduce)
        parts = []
        with torch.no_grad():
            for videos in torch.arange(len(cache)).split(chunk):
                frames = torch.arange(len(cache.frames)).expand(len(videos), -1)  # (B, T)
                feats = ref.frame_features_from_maps(cache.maps(videos, frames))  # (B·T, ΣC, h, w)
                parts.append(feats.unflatten(0, tuple(frames.shape)).half())
        self.features = torch.cat(parts)  # (V, T, ΣC, h, w)
        self.top_channels = ref.frame_channels[-1]

    def serves(self, model: nn.Module) -> bool:
        return model.attention is None or model.attention.reduce == self.reduce

    def clip(self, model: nn.Module, videos: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The features model.forward_clip takes for videos (B,) at cached positions frames (B, K)."""
        x = self.features[videos[:, None], frames].float()  # (B, K, ΣC, h, w)
        if model.attention is not None:
            return x[:, :, -sum(model.frame_channels):]
        top = x[:, :, -self.top_channels:].flatten(0, 1)  # (B·K, C_top, h, w)
        maps: list[torch.Tensor | None] = [None] * self.cache.num_stages
        maps[self.cache.stages[-1]] = top
        return model.frame_features_from_maps(maps).unflatten(0, tuple(frames.shape))


def _forward(model: nn.Module, src: FeatureCache | FrameFeatures, videos: torch.Tensor, frames: torch.Tensor):
    """model(video) for videos (B,) at cached positions frames (B, K), from precomputed frame features when they
    fit the model, else from the cached stage maps."""
    if isinstance(src, FrameFeatures) and src.serves(model):
        return model.forward_clip(src.clip(model, videos, frames))
    cache = src.cache if isinstance(src, FrameFeatures) else src
    feats = model.frame_features_from_maps(cache.maps(videos, frames))  # (B·K, ΣC_j, h, w)
    return model.forward_clip(feats.unflatten(0, tuple(frames.shape)))


def _cache_of(src: FeatureCache | FrameFeatures) -> FeatureCache:
    return src.cache if isinstance(src, FrameFeatures) else src


def _batches(n: int, size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(size))


def eval_positions(cache: FeatureCache, segments: int) -> torch.Tensor:
    """Cached-frame positions (K,) of the test protocol: the centre frame of each of K segments."""
    from istpan.data.sampling import segment_indices

    return segment_indices(len(_cache_of(cache).frames), segments)


@torch.no_grad()
def predict_cached(model: nn.Module, cache: FeatureCache | FrameFeatures, *, segments: int, batch_size: int = 128,
                   with_attention: bool = False, videos: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Scores (V, classes) of every cached video at test K = segments; with_attention also the per-frame heat maps
    (V, K, h, w) (`models.attention_maps`) and the fused attention rows' redundancy per video (V,). `videos`: a
    subset (indices) instead of all."""
    from istpan.experiments.runs import attention_redundancy
    from istpan.models import attention_maps

    model.eval()
    pos = eval_positions(cache, segments)  # (K,)
    scores, heats, redundancy = [], [], []
    subset = torch.arange(len(_cache_of(cache))) if videos is None else videos
    for batch in subset.split(batch_size):
        frames = pos[None].expand(len(batch), -1)  # (B, K)
        out = _forward(model, cache, batch, frames)
        scores.append(out.logits.float())
        if with_attention and out.attn is not None:
            heats.append(attention_maps(out).float())  # (B, K, h, w)
            redundancy.append(attention_redundancy(out.attn))  # (B,)
    result = {"scores": torch.cat(scores), "positions": pos}
    if heats:
        result["heat"], result["redundancy"] = torch.cat(heats), torch.cat(redundancy)
    return result


def train_cached(model: nn.Module, train: FeatureCache | FrameFeatures, val: FeatureCache | FrameFeatures, *,
                 budget: CachedBudget, beta: float, gamma: float, seed: int, progress: bool = False
                 ) -> dict[str, Any]:
    """Train the layer + head for budget.epochs; return the validation top-1 after every epoch (the curve, on every
    budget.curve_every-th validation video) and the seconds spent training (validation excluded). The model is left
    in its final state (no best-epoch pick: the number reported is the last epoch's, so no row is selected on the
    validation set)."""
    from tqdm import tqdm

    from istpan.config import OptimConfig
    from istpan.data.sampling import segment_indices
    from istpan.training.optim import build_optimizer, build_scheduler
    from istpan.training.train import compute_losses

    g = torch.Generator().manual_seed(seed)
    ocfg = OptimConfig(name="adamw", lr=budget.lr, weight_decay=budget.weight_decay, warmup_epochs=1.0)
    optimizer = build_optimizer(model, ocfg)
    train_cache, val_cache = _cache_of(train), _cache_of(val)
    steps = -(-len(train_cache) // budget.batch_size)
    curve_videos = torch.arange(0, len(val_cache), max(1, budget.curve_every))
    scheduler = build_scheduler(optimizer, ocfg, steps_per_epoch=steps, epochs=budget.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    curve, train_s = [], 0.0
    for _ in tqdm(range(budget.epochs), desc="epochs", disable=not progress, leave=False):
        start = time.perf_counter()
        model.train()
        for videos in _batches(len(train_cache), budget.batch_size, g):
            frames = torch.stack([segment_indices(len(train_cache.frames), budget.segments, rng=g) for _ in videos])
            out = _forward(model, train, videos, frames)  # frames: (B, K) cached positions
            losses = compute_losses(out, train_cache.labels[videos], multi_label=False, beta=beta, gamma=gamma)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            nn.utils.clip_grad_norm_(params, ocfg.clip_grad_norm)
            optimizer.step()
            scheduler.step()
        train_s += time.perf_counter() - start
        scores = predict_cached(model, val, segments=budget.segments, videos=curve_videos)["scores"]
        curve.append(100.0 * float((scores.argmax(1) == val_cache.labels[curve_videos]).float().mean()))
    return {"curve": curve, "train_s": train_s}
