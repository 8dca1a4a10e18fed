"""`build_loader`: a DataLoader whose batches are dict(video=(B, K, 3, h, w), label, index, skipped).

The collate drops clips that failed to decode (None) and reports how many in `skipped`, so evaluation can say "scored
N videos, skipped M" instead of silently averaging over fewer. Orders are functions of (seed, epoch): the training
shuffle is re-drawn per `set_epoch`, so a resumed run sees the same batches as an uninterrupted one.

Unreadable videos are logged once per run by the process that iterates the loader, never by decoding workers: a
worker only notes the file and reason (`report_unreadable`), the collate takes the notes along with the batch, and
the loader logs each file the first time it meets it and keeps them in `loader.unreadable` (shared by the train and
val loaders of one run) for the run's summary. Logged by the workers, a bad file came out once per worker that met
it, and again from the validation loader's workers.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info
from torch.utils.data._utils.collate import default_collate

__all__ = ["EpochShuffleSampler", "ResumableSampler", "ShardSampler", "VideoLoader", "build_loader", "collate_clips",
           "report_unreadable"]

log = logging.getLogger(__name__)
_noted: dict[str, str] = {}  # this process: unreadable videos met since the last collate (path -> "path: reason")
_logged: set[str] = set()  # paths logged by this process outside workers (`dataset[i]`, num_workers=0)


def report_unreadable(path: str, message: str) -> None:
    """A dataset skipped a video it cannot read (`message`: "<path>: <reason>"). Noted for the batch being read; in
    the main process (`dataset[i]`, a loader without workers) also logged at once, once per process. In a worker it
    is the loader iterating the batches that logs it."""
    _noted[path] = message
    if get_worker_info() is None and path not in _logged:
        _logged.add(path)
        _warn(message)


def _warn(message: str) -> None:
    log.warning("skipping unreadable video %s (run `istpan data check` to list every problem)", message)


def collate_clips(items: Sequence[dict | None]) -> dict:
    """Stack the clips that decoded; `skipped` counts those that didn't (None, or replaced by another video);
    `unreadable` ({path: message}) names the videos that failed while this batch was read."""
    kept = [it for it in items if it is not None]
    skipped = len(items) - len(kept) + sum(int(it.get("skipped", 0)) for it in kept)
    unreadable = dict(_noted)
    _noted.clear()
    if not kept:  # every clip of this batch failed: an empty batch the loops know to skip
        return {"video": torch.empty(0), "label": torch.empty(0, dtype=torch.long),
                "index": torch.empty(0, dtype=torch.long), "skipped": skipped, "unreadable": unreadable}
    batch = default_collate([{k: it[k] for k in ("video", "label", "index")} for it in kept])
    batch.update(skipped=skipped, unreadable=unreadable)
    return batch  # video (B, K, 3, h, w) or (B, V, K, 3, h, w); label (B,) or (B, C); index (B,)


class VideoLoader(DataLoader):
    """A DataLoader that logs each unreadable video its workers name the first time it meets it, and keeps every
    unreadable video in `unreadable` ({path: message}, over every pass) for the run summary. Loaders of one run share
    that dict (`loader.unreadable = other.unreadable`), so a file in both splits is named once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unreadable: dict[str, str] = {}

    def __iter__(self) -> Iterator[dict]:
        if self.num_workers == 0:
            _noted.clear()  # items read outside a loader (`dataset[i]`) are not this loader's
        for batch in super().__iter__():
            for path, message in batch.get("unreadable", {}).items():
                if path not in self.unreadable:
                    self.unreadable[path] = message
                    if self.num_workers > 0:  # without workers `report_unreadable` has logged it already
                        _warn(message)
            yield batch


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch): same order for the same epoch, whoever iterates and how often."""

    def __init__(self, length: int, *, seed: int = 0):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


class ResumableSampler(Sampler[int]):
    """A training sampler whose next pass can start `skip(n)` indices in: resuming mid-epoch then neither decodes
    nor transforms the clips the checkpoint has already trained on (the order is a function of (seed, epoch), and
    each clip's augmentation of (seed, epoch, index), so what follows is unchanged)."""

    def __init__(self, sampler: Sampler[int]):
        self.sampler, self._skip = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def skip(self, n: int) -> None:
        self._skip = n  # applies to the next pass only

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return itertools.islice(iter(self.sampler), skip, None)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ... : disjoint shards with no padding, so every video is evaluated exactly once
    across ranks (DistributedSampler pads with repeats to even out the shards)."""

    def __init__(self, length: int, *, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _base(dataset: Dataset) -> Dataset:
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    num_workers: int,
    seed: int,
    distributed: bool = False,
    drop_last: bool | None = None,
) -> VideoLoader:
    """Training: shuffled per (seed, epoch) (DistributedSampler across ranks), last partial batch dropped.
    Evaluation: in order, nothing dropped; distributed=True shards without padding (`ShardSampler`).

    Workers are persistent (no per-epoch start-up, decoders' frame-count caches survive), memory is pinned when CUDA
    is available. The dataset's `seed` is set here so that sampling and augmentation follow the run's seed.
    """
    base = _base(dataset)
    if hasattr(base, "seed"):
        base.seed = seed
    n = len(dataset)
    if distributed:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if train:
            sampler: Sampler[int] = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        else:
            sampler = ShardSampler(n, rank=rank, world_size=world)
    else:
        sampler = EpochShuffleSampler(n, seed=seed) if train else ShardSampler(n, rank=0, world_size=1)
    if train:
        sampler = ResumableSampler(sampler)
    if drop_last is None:
        drop_last = train and len(sampler) >= batch_size  # a 1-clip batch breaks BatchNorm; never drop eval videos
    return VideoLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
        prefetch_factor=2 if num_workers > 0 else None,
    )

