"""What a run is built from: device, data (classes, loaders) and checks of the config, before any training.

Kept apart from the loop (`train.py`) so that `istpan eval` and the benchmark build data exactly as training does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from istpan.config import Config
from istpan.errors import UserError

__all__ = [
    "build_data",
    "check_data_paths",
    "class_names_of",
    "is_multi_label",
    "num_workers_for",
    "parse_views",
    "pick_device",
]

_noted_workers: set[int] = set()  # requests already capped with a note in this process


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def parse_views(text: str) -> tuple[int, int]:
    """'2x3' -> (2 clips, 3 crops)."""
    try:
        clips, crops = (int(v) for v in str(text).lower().split("x"))
        if clips < 1 or crops not in (1, 3, 10):
            raise ValueError
    except ValueError:
        raise UserError(f"views '{text}': expected CLIPSxCROPS with CROPS 1, 3 or 10, e.g. 1x1, 2x3, 10x1") from None
    return clips, crops


def is_multi_label(cfg: Config) -> bool:
    """Charades is multi-label whatever data.multi_label says (the data pipeline builds multi-hot targets for it)."""
    return bool(cfg.data.multi_label or cfg.data.format == "charades")


def check_data_paths(cfg: Config) -> None:
    """Fail before building anything when a dataset path is missing."""
    d = cfg.data
    for key in ("root", "train_annotations", "val_annotations", "classes"):
        if key == "root" and d.format == "webdataset":  # shards may be URLs or pipe: commands
            continue
        value = getattr(d, key)
        if value and not Path(value).exists():
            raise UserError(f"data.{key}: '{value}' does not exist; fix the path in the config or with data.{key}=...")


def num_workers_for(requested: int) -> int:
    """data.num_workers capped at the CPUs this process may use, with one note per process.

    Why: more decoding workers than CPUs only adds memory and context switches, and torch warns about it once per
    loader (twice per run: train and val) in a paragraph; one line says the same and the run goes on.
    """
    try:
        cpus = len(os.sched_getaffinity(0))  # what torch's own check uses: CPUs this process may run on
    except AttributeError:  # macOS / Windows
        cpus = os.cpu_count() or 1
    if requested <= cpus:
        return requested
    if requested not in _noted_workers:
        _noted_workers.add(requested)
        print(f"note: data.num_workers={requested} is more than the {cpus} CPUs available; using {cpus}",
              file=sys.stderr)
    return cpus


def build_data(cfg: Config, *, distributed: bool, class_names: list[str], mean, std):
    """Train loader (sharded under DDP) and val loader (each rank a disjoint, unpadded shard), or None without val."""
    from istpan.data import build_dataset, build_loader

    if cfg.data.format == "webdataset":
        return _shard_loaders(cfg, distributed=distributed, mean=mean, std=std)

    opts = {"mean": mean, "std": std, "seed": cfg.train.seed}
    train_set = build_dataset(cfg.data, split="train", train=True, augment=cfg.augment, **opts)
    # Without data.val_annotations, the synthetic and folder layouts have their val split under the root (load_split).
    d = cfg.data
    folder_val = d.format == "folder" and Path(d.root, "val").is_dir()
    has_val = bool(d.val_annotations) or d.format == "synthetic" or folder_val
    val_set = None
    if has_val:
        val_set = build_dataset(cfg.data, split="val", train=False, views=parse_views(cfg.train.eval_views), **opts)
        if list(val_set.class_names) != list(class_names):
            raise UserError(f"data.val_annotations: {len(val_set.class_names)} classes but the training split has "
                            f"{len(class_names)}; give both splits the same data.classes file")
    common = {"batch_size": cfg.train.batch_size, "num_workers": num_workers_for(cfg.data.num_workers),
              "seed": cfg.train.seed}
    train_loader = build_loader(train_set, train=True, distributed=distributed, **common)
    val_loader = None
    if val_set is not None and len(val_set) > 0:
        # Each rank scores a disjoint, unpadded shard: every validation video is counted exactly once.
        val_loader = build_loader(val_set, train=False, distributed=distributed, **common)
        val_loader.unreadable = train_loader.unreadable  # one run: a bad file in both splits is named once
    return train_loader, val_loader


def _shard_loaders(cfg: Config, *, distributed: bool, mean, std):
    """data.format=webdataset: streaming loaders over the shards of each manifest (istpan/data/shard_loader.py)."""
    from istpan.data.shard_loader import build_shard_loader
    from istpan.runtime.distributed import get_rank, get_world_size

    common = {"batch_size": cfg.train.batch_size, "num_workers": num_workers_for(cfg.data.num_workers),
              "seed": cfg.train.seed,
              "mean": mean, "std": std, "rank": get_rank() if distributed else 0,
              "world": get_world_size() if distributed else 1}
    train_loader = build_shard_loader(cfg.data, split="train", train=True, **common)
    val_loader = None
    if cfg.data.val_annotations:
        val_loader = build_shard_loader(cfg.data, split="val", train=False, views=parse_views(cfg.train.eval_views),
                                        **common)
        if list(val_loader.stream.template.class_names) != list(train_loader.stream.template.class_names):
            raise UserError(f"{cfg.data.val_annotations}: its classes differ from the training shards' classes")
    return train_loader, val_loader


def class_names_of(cfg: Config) -> list[str]:
    """Class names of the training split (parsing the annotations only, no video is opened)."""
    from istpan.data.video_dataset import load_split

    parsed = load_split(cfg.data, "train")
    if not parsed.records and cfg.data.format != "webdataset":
        where = cfg.data.train_annotations or cfg.data.root
        raise UserError(f"{where}: the training split has no usable videos (run `istpan data check` to see why)")
    return list(parsed.class_names)
