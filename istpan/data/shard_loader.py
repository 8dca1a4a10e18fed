"""`data.format=webdataset`: stream clips from tar shards (local paths, http(s) URLs, `pipe:` commands).

Reading is WebDataset's (`tarfile_samples`: URL opening, tar parsing; `shuffle`: the shuffle buffer); what is ours
is how an epoch is cut between ranks and workers, because "every sample exactly once per epoch across the job" and
"the same number of steps on every rank" (or DDP hangs) do not follow from splitting whole shards:

* The manifest (`<split>.json`, written by `istpan data shard`) gives every shard's sample count. An epoch is the
  concatenation of the shards in an order drawn from (seed, epoch) (training) or in manifest order (evaluation).
* Rank r takes a contiguous range of that sequence, worker w of rank r a contiguous part of the rank's range; a
  range may start or end inside a shard (the samples before its start are read and dropped, never decoded). So
  uneven shard counts — fewer shards than ranks x workers, shards of different sizes — cost at most one partly read
  shard per worker and never unbalance the ranks: range sizes differ by at most one sample.
* Training pads every rank to ceil(N / world) samples by wrapping around to the epoch's first samples (the
  `DistributedSampler` rule: at most world - 1 repeats per epoch) and drops the last partial batch of each rank, as
  the file loader does. Evaluation neither pads nor drops: each sample is scored exactly once.
* A sample that cannot be used — its shard is truncated or corrupt, its URL fails, its video does not decode — is
  yielded as None: batches keep their count (ranks stay in step), `skipped` counts it, and one line names the shard
  and what went wrong.

Batches are formed in the main process from the workers' chunks of samples (workers are read round-robin, in
order), so no worker leaves a partial batch behind. That fixed order makes resuming mid-epoch exact
(`resume_plan`): each worker skips the samples it had already delivered, after the shuffle buffer and before
decoding (bytes are re-read, nothing is decoded). Shuffle randomness is a function of (seed, epoch, rank, worker);
augmentation of (seed, epoch, sample).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from istpan.data.datasets import VideoRecord
from istpan.data.decode import EncodedVideo, VideoError
from istpan.data.loader import collate_clips
from istpan.data.manifest import load_manifest
from istpan.errors import UserError

__all__ = ["ShardLoader", "ShardStream", "load_manifest", "rank_range", "resume_plan", "shard_urls"]

log = logging.getLogger(__name__)


def shard_urls(manifest: dict, manifest_path: str | Path, root: str = "") -> list[str]:
    """Where each shard is read from: `root` + name (a folder or URL prefix), `root` with `{}` replaced by the name
    (e.g. "pipe:aws s3 cp s3://bucket/k400/{} -"), or the manifest's folder when root is empty."""
    names = [s["name"] for s in manifest["shards"]]
    if not root:
        return [str(Path(manifest_path).parent / n) for n in names]
    if "{}" in root:
        return [root.replace("{}", n) for n in names]
    return [f"{root.rstrip('/')}/{n}" for n in names]


def rank_range(total: int, rank: int, world: int, *, pad: bool) -> tuple[int, int]:
    """[start, stop) of rank's part of an epoch of `total` samples; with pad, stop may pass total (wraps around)."""
    if pad:
        each = math.ceil(total / world)
        return rank * each, (rank + 1) * each
    return rank * total // world, (rank + 1) * total // world


def resume_plan(sizes: list[int], chunk: int, delivered: int) -> tuple[list[int], int]:
    """Where each worker restarts after the main process had received `delivered` samples: (samples each worker
    had delivered, which worker's chunk comes next).

    Workers send chunks of `chunk` consecutive samples of their own stream (one message per chunk, not per sample);
    DataLoader reads them round-robin in worker order and passes over a worker that has run out, and the main
    process batches the concatenated samples. On resume the worker whose chunk was next becomes DataLoader worker 0
    (workers are interchangeable: a logical worker's stream depends only on its number), so the order goes on as it
    was; a chunk cut by the resume point is re-sent from the cut."""
    skips = [0] * len(sizes)
    left, t = delivered, 0
    while t * chunk < max(sizes, default=0):
        for w, n in enumerate(sizes):
            size = min(chunk, n - t * chunk)
            if size <= 0:
                continue
            if left == 0:
                return skips, w
            take = min(size, left)
            skips[w] += take
            left -= take
            if take < size:
                return skips, w
        t += 1
    return skips, 0


def _segments(counts: list[int], order: list[int], start: int, stop: int) -> list[tuple[int, int, int]]:
    """(shard, first sample in it, how many) covering positions [start, stop) of the epoch (wrapping around)."""
    total = sum(counts)
    out: list[tuple[int, int, int]] = []
    pos = start
    while pos < stop and total:
        p = pos % total
        acc = 0
        for s in order:
            if p < acc + counts[s]:
                take = min(acc + counts[s] - p, stop - pos)
                out.append((s, p - acc, take))
                pos += take
                break
            acc += counts[s]
    return out


class _Errors:
    """A WebDataset exception handler that keeps the first error and carries on (we report it once, our way)."""

    def __init__(self):
        self.first: Exception | None = None

    def __call__(self, exn: Exception) -> bool:
        self.first = self.first or exn
        return True


class ShardStream(IterableDataset):
    """Items of one (rank, worker) part of an epoch: dict(video, label, index) or None for a sample that failed.

    `template`: a VideoDataset without records (its transforms, sampling and seed are used per sample)."""

    def __init__(self, manifest: dict, urls: list[str], template, *, train: bool, rank: int = 0, world: int = 1,
                 shuffle_buffer: int = 100):
        self.counts = [int(s["samples"]) for s in manifest["shards"]]
        self.offsets = [sum(self.counts[:i]) for i in range(len(self.counts))]  # manifest-order index of each shard
        self.urls, self.template, self.train = urls, template, train
        self.rank, self.world, self.shuffle_buffer = rank, world, shuffle_buffer
        self.total = sum(self.counts)
        self._skip = torch.zeros((), dtype=torch.long).share_memory_()  # samples of this rank to skip (resume)
        self.num_workers = 0  # set by ShardLoader
        self.chunk = 1  # samples per message from a worker (ShardLoader: its batch size)

    @property
    def rank_samples(self) -> int:
        start, stop = rank_range(self.total, self.rank, self.world, pad=self.train)
        return stop - start

    def set_epoch(self, epoch: int) -> None:
        self.template.set_epoch(epoch)  # shared memory: reaches persistent workers

    def skip(self, n: int) -> None:
        """Start the next pass `n` samples in (resuming mid-epoch): exact, at the next batch, not a shard boundary."""
        if n > 0:
            log.info("resuming mid-epoch from shards: rank %d re-reads (without decoding) the %d samples it had done "
                     "and continues at the next batch; no sample of this epoch is repeated or lost", self.rank, n)
        self._skip.fill_(n)

    def _worker_sizes(self) -> list[int]:
        n, w = self.rank_samples, max(self.num_workers, 1)
        return [(i + 1) * n // w - i * n // w for i in range(w)]

    def __iter__(self) -> Iterator[list[dict | None]]:
        """Chunks (lists) of up to `chunk` items of this worker's part of the epoch."""
        info = get_worker_info()
        workers = max(self.num_workers, 1)
        sizes = self._worker_sizes()
        skips, rotation = resume_plan(sizes, self.chunk, int(self._skip))
        worker = ((info.id if info else 0) + rotation) % workers  # the logical worker this process plays
        epoch = self.template.epoch
        order = list(range(len(self.counts)))
        if self.train:
            order = torch.randperm(len(order), generator=torch.Generator().manual_seed(
                self.template.seed * 1_000_003 + epoch)).tolist()
        start, _ = rank_range(self.total, self.rank, self.world, pad=self.train)
        begin = start + sum(sizes[:worker])
        raw = self._raw(_segments(self.counts, order, begin, begin + sizes[worker]))
        if self.train and self.shuffle_buffer > 1:
            import webdataset as wds

            rng = random.Random(((self.template.seed * 1_000_003 + epoch) * 1_009 + self.rank) * 101 + worker)
            raw = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(raw)
        items: list[dict | None] = []
        for i, (index, sample) in enumerate(raw):
            if i < skips[worker]:
                continue  # delivered before the interruption: not decoded again
            items.append(self._decode(index, sample))
            if (i + 1) % self.chunk == 0:  # the chunk boundaries of an uninterrupted pass
                yield items
                items = []
        if items:
            yield items

    def _raw(self, segments: list[tuple[int, int, int]]) -> Iterator[tuple[int, dict | None]]:
        """(manifest-order index, raw sample or None) for every planned sample, in segment order."""
        import webdataset as wds

        for shard, first, take in segments:
            errors = _Errors()
            done: set[int] = set()
            samples = wds.tarfile_samples([{"url": self.urls[shard]}], handler=errors)
            try:
                for pos, sample in enumerate(samples):
                    if pos >= first + take:
                        break
                    if "json" not in sample or not any(k.startswith("video.") for k in sample):
                        errors(ValueError(f"sample {sample.get('__key__')} is incomplete"))  # cut mid-sample
                    elif pos >= first:
                        done.add(pos)
                        yield self.offsets[shard] + pos, sample
            except Exception as err:  # a pipe that fails on close, a stream that breaks: same as a bad shard
                errors(err)
            finally:
                samples.close()
            if len(done) < take:
                reason = errors.first or "ends early (fewer samples than the manifest says)"
                log.warning("skipping %d of %d samples of shard %s: %s", take - len(done), take, self.urls[shard],
                            _one_line(reason))
                for pos in range(first, first + take):
                    if pos not in done:
                        yield self.offsets[shard] + pos, None

    def _decode(self, index: int, sample: dict | None) -> dict | None:
        if sample is None:
            return None
        name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        try:
            doc = json.loads(sample["json"])
            data = next(v for k, v in sample.items() if k.startswith("video."))
            video = EncodedVideo(f"{name} ({doc['path']})", data, doc["index"])
            item = self.template.load_record(VideoRecord(video, doc["label"], doc.get("meta", {})), index)
            if get_worker_info() is not None:  # numpy crosses the worker queue as plain pickled bytes: for small
                item = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in item.items()}  # samples
            return item  # that is cheaper than a shared-memory segment per tensor
        except (KeyError, StopIteration, ValueError) as err:
            log.warning("skipping sample %s: not an istpan shard sample (%s)", name, _one_line(err))
        except VideoError as err:
            log.warning("skipping unreadable video %s", err)
        return None


def _one_line(err: object) -> str:
    text = str(err.args[0]) if isinstance(err, Exception) and err.args else str(err)
    return " ".join(text.split(" @ ")[0].split())[:300]  # WebDataset appends " @ <stream object>"


def _identity(item):
    return item


class ShardLoader:
    """Batches dict(video, label, index, skipped) from a `ShardStream`, like `build_loader`'s, with `len()` steps.

    `loader.sampler` is the stream (set_epoch, skip): the training loop's resume and epoch hooks find it there."""

    def __init__(self, stream: ShardStream, *, batch_size: int, num_workers: int, train: bool):
        self.stream = self.sampler = stream
        stream.num_workers, stream.chunk = num_workers, batch_size
        self.batch_size = batch_size
        n = stream.rank_samples
        self.drop_last = train and n >= batch_size
        self._len = n // batch_size if self.drop_last else math.ceil(n / batch_size)
        self.loader = DataLoader(stream, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                                 pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
                                 prefetch_factor=2 if num_workers > 0 else None)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[dict]:
        items: list = []
        try:
            for chunk in self.loader:
                for item in chunk:
                    if item is not None:
                        item = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in item.items()}
                    items.append(item)
                    if len(items) == self.batch_size:
                        yield collate_clips(items)
                        items = []
            if items and not self.drop_last:
                yield collate_clips(items)
        finally:
            self.stream.skip(0)  # a resume skip applies to one pass only (every worker has read it by now)


def build_shard_loader(data_cfg, *, split: str, train: bool, batch_size: int, num_workers: int, seed: int,
                       views=(1, 1), mean=None, std=None, rank: int = 0, world: int = 1) -> ShardLoader:
    """The loader `build_data` uses for data.format=webdataset."""
    from istpan.data.video_dataset import build_dataset

    d = data_cfg
    manifest_path = d.train_annotations if split == "train" else d.val_annotations
    manifest = load_manifest(manifest_path)
    if manifest.get("multi_label") and not d.multi_label:
        raise UserError(f"{manifest_path}: the shards are multi-label; set data.multi_label=true")
    template = build_dataset(d, split=split, train=train, views=views, mean=mean, std=std, seed=seed)
    stream = ShardStream(manifest, shard_urls(manifest, manifest_path, d.root), template, train=train, rank=rank,
                         world=world, shuffle_buffer=d.shuffle_buffer)
    return ShardLoader(stream, batch_size=batch_size, num_workers=num_workers, train=train)
