"""One training run on the synthetic dataset, and what the demo and the ablation measure on it.

Both `istpan demo` and `istpan ablate` train many small models on the same generated data; they share this module
so that every variant gets the same data path, budget and measurements (only the model options differ). Training
and evaluation are the engine's (`istpan.training.train.train`, `istpan.evaluation.evaluate.evaluate`): the demo
exercises exactly what `istpan train` / `istpan eval` run.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from istpan.config import Config
from istpan.data.tools.synth import CLASSES, REVERSAL_PAIRS, pair_of

__all__ = [
    "Budget",
    "attention_redundancy",
    "glimpse_redundancy",
    "measure_speed",
    "order_blind_ceiling",
    "pair_merged_top1",
    "synth_config",
    "test_model",
    "train_variant",
]


@dataclass(frozen=True)
class Budget:
    """Data size and training budget of one run; every variant of a comparison gets the same one."""

    num_videos: int = 640  # synthetic videos (train + val), balanced over the classes
    size: int = 64  # frame size of the generated videos = the network's input (no crop: boxes stay exact)
    num_frames: int = 32  # frames per trimmed video
    epochs: int = 8
    batch_size: int = 16
    segments: int = 8  # K at training and test time
    lr: float = 3e-3
    max_steps_per_epoch: int = 0  # 0 = whole epoch
    num_workers: int = 2
    untrimmed_videos: int = 24  # size of the untrimmed set used for temporal localisation


def synth_config(
    data_root: str | Path,
    *,
    model: str,
    out_dir: str | Path,
    budget: Budget,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    device: str = "auto",
) -> Config:
    """The training config of one variant on a synthetic dataset at data_root.

    Why these settings: the tiny backbone trains from scratch, so its BatchNorm statistics must be learned (no
    partial BN); no horizontal flip, because it would turn move_left into move_right and rotate_cw into rotate_ccw;
    no crop augmentation, so the network sees the whole frame and the ground-truth boxes map one to one. Validation
    is left to the caller (`test_model`), which also needs the per-video scores.
    """
    root = Path(data_root)
    cfg = Config()
    d = cfg.data
    d.format, d.root = "list", str(root)
    d.train_annotations, d.val_annotations, d.classes = str(root / "train.txt"), "", str(root / "classes.txt")
    d.num_frames = d.test_num_frames = budget.segments
    d.sampling, d.input_size, d.short_side = "segment", budget.size, budget.size
    d.train_crop, d.flip, d.num_workers = "center", False, budget.num_workers
    cfg.model.name = model
    cfg.model.options = {"input_size": budget.size, "dropout": 0.2, **(options or {})}
    o = cfg.optim
    o.name, o.lr, o.weight_decay, o.schedule = "adamw", budget.lr, 0.01, "cosine"
    o.warmup_epochs, o.clip_grad_norm = 1.0, 5.0
    t = cfg.train
    t.epochs, t.batch_size, t.seed = budget.epochs, budget.batch_size, seed
    # β, γ: the training defaults (istpan.config.TrainConfig) unless a row of the ablation sets them
    t.beta = t.beta if beta is None else beta
    t.gamma = t.gamma if gamma is None else gamma
    t.partial_bn, t.tensorboard, t.out_dir, t.device = False, False, str(out_dir), device
    t.max_steps_per_epoch = budget.max_steps_per_epoch
    return cfg


def train_variant(cfg: Config, *, progress: bool) -> tuple[nn.Module, dict[str, Any], float]:
    """Train from scratch (never resumes: a rerun of the demo is a new measurement); return model, meta, seconds."""
    from istpan.files.load import load_model
    from istpan.training.train import train

    start = time.perf_counter()
    result = train(cfg, resume="never", progress=progress)
    seconds = time.perf_counter() - start
    model, meta = load_model(result["last_checkpoint"])
    return model, meta, seconds


def _val_loader(cfg: Config, *, test_num_frames: int | None = None, root: str | Path | None = None,
                val_list: str | Path | None = None):
    from istpan.data import build_dataset, build_loader

    d = dataclasses.replace(cfg.data)
    if root is not None:
        root = Path(root)
        d.root, d.train_annotations, d.classes = str(root), str(root / "train.txt"), str(root / "classes.txt")
    d.val_annotations = str(val_list or Path(d.root) / "val.txt")
    if test_num_frames is not None:
        d.test_num_frames = test_num_frames
    dataset = build_dataset(d, split="val", train=False)
    return build_loader(dataset, batch_size=cfg.train.batch_size, train=False, num_workers=d.num_workers, seed=0)


def pair_merged_top1(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 (percent) when each time-reversal pair counts as one class: what a frame-order-blind model can reach."""
    groups = [pair_of(c) for c in CLASSES]
    pred = scores.argmax(1).tolist()
    hits = sum(groups[p] == groups[y] for p, y in zip(pred, labels.tolist()))
    return 100.0 * hits / max(1, len(pred))


def order_blind_ceiling() -> float:
    """Best top-1 (percent) of a model that cannot see frame order: perfect except 50 % within each reversal pair."""
    return 100.0 * (len(CLASSES) - len(REVERSAL_PAIRS)) / len(CLASSES)


@torch.no_grad()
def test_model(
    model: nn.Module,
    cfg: Config,
    *,
    test_num_frames: int | None = None,
    root: str | Path | None = None,
    val_list: str | Path | None = None,
    redundancy: bool = False,
    with_correct: bool = False,
) -> dict[str, Any]:
    """Validation metrics of a trained model: the engine's (top1, top5, mean class accuracy, skipped) plus top-1
    with reversal pairs merged and, for attention models when asked, the glimpse redundancy. val_list: another list
    file than `val.txt` of the root; with_correct: also `correct`, "1"/"0" per video in list order (for paired
    comparisons of two models on the same videos)."""
    from istpan.evaluation.evaluate import evaluate

    loader = _val_loader(cfg, test_num_frames=test_num_frames, root=root, val_list=val_list)
    res = evaluate(model, loader, multi_label=False, device="cpu", return_scores=True)
    out = {k: res[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "skipped") if k in res}
    out["top1_pairs_merged"] = pair_merged_top1(res["scores"], res["labels"])
    if with_correct:
        out["correct"] = "".join("1" if c else "0" for c in (res["scores"].argmax(1) == res["labels"]).tolist())
    if redundancy and getattr(model, "attention", None) is not None:
        out["redundancy"] = glimpse_redundancy(model, loader)
    return out


@torch.no_grad()
def glimpse_redundancy(model: nn.Module, loader, *, max_batches: int = 4) -> float:
    """Mean off-diagonal |A Aᵀ| over validation videos: how alike the d glimpses are (0 = orthogonal, 1 = identical).

    A is the fused attention with L2-normalised rows, the matrix whose off-diagonal Gram entries l_interactive
    penalises; this is the number that term is meant to drive down.
    """
    model.eval()
    values = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        values.append(attention_redundancy(model(batch["video"]).attn))
    return float(torch.cat(values).mean()) if values else float("nan")


def attention_redundancy(attn: torch.Tensor) -> torch.Tensor:
    """Per video, mean off-diagonal |A Aᵀ| of the fused attention attn (B, d, ...) with L2-normalised rows: (B,)."""
    A = F.normalize(attn.flatten(2).float(), dim=-1)  # (B, d, K·h·w)
    gram = (A @ A.transpose(1, 2)).abs()  # (B, d, d)
    d = gram.shape[-1]
    off = gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)
    return off / max(1, d * (d - 1))


@torch.no_grad()
def measure_speed(model: nn.Module, *, segments: int, size: int, batch: int = 8, repeats: int = 3) -> dict[str, float]:
    """Parameters, FLOPs of one clip, and inference clips/s (median of `repeats` forwards of a batch, on CPU)."""
    from istpan.models.profile import count_flops, count_params

    model.eval()
    clip = torch.zeros(1, segments, 3, size, size)
    flops = count_flops(model, clip)
    video = torch.randn(batch, segments, 3, size, size)
    model(video)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(video)
        times.append(time.perf_counter() - start)
    return {"params": count_params(model), "flops": flops, "clips_per_s": batch / statistics.median(times)}
