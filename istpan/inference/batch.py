"""`istpan predict --list FILE --out preds.jsonl`: a trained model over millions of videos, resumable, on any number
of processes (`torchrun`). The model side is a `Predictor` (its `Preprocessing` decides what the model sees, its
`predict` runs batched forward passes), so results equal `istpan predict` / `Predictor.predict` on each file.

    istpan predict --list videos.txt --out preds.jsonl --checkpoint best.pt
    torchrun --nproc_per_node 8 -m istpan.cli.main predict --list videos.txt --out preds.jsonl --checkpoint best.pt

* The list (one video path per line; blank lines and `#` comments ignored) is streamed, never loaded whole: line i
  belongs to rank i % world, and within a rank to DataLoader worker (i // world) % workers, which decode in
  parallel while the main process runs the model on batches.
* Each rank appends one JSON line per video to its own part file (`<out>.parts/rank-NNNNN.jsonl`) and flushes it;
  when every rank is done, rank 0 appends the parts to `<out>` and removes them. A record is
  {"line", "path", "num_frames", "video_frames", "multi_label", "top"} or {"line", "path", "error"} (a bad video: logged
  in one line, counted, the job goes on).
* Resumable after anything, SIGKILL included: a rerun first reads `<out>` and any parts left behind and skips every
  (line, path) already there; a half-written last line (the process died mid-write) is cut off and that video done
  again. So nothing is lost and nothing is written twice, whatever the number of processes of either run. Done
  entries are kept as 64-bit hashes of "line<TAB>path" (8 bytes each: 80 MB for 10M videos; the chance that two of
  10M collide, which would skip one video, is about 3e-6).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.inference.results import error_record
from istpan.runtime.distributed import (
    all_gather_objects,
    barrier,
    get_rank,
    get_world_size,
    is_main_process,
    reduce_sum,
)

__all__ = ["iter_list", "predict_list", "read_done"]

log = logging.getLogger(__name__)


def _key(line: int, path: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{line}\t{path}".encode(), digest_size=8).digest(), "little")


def iter_list(list_file: str | Path, *, root: str | Path = "") -> Iterator[tuple[int, str]]:
    """(line number from 1, video path) for each non-blank, non-comment line, streamed."""
    with open(list_file, encoding="utf-8", errors="replace") as fh:
        for n, raw in enumerate(fh, 1):
            text = raw.strip()
            if text and not text.startswith("#"):
                yield n, str(Path(root) / text) if root else text


def _complete_lines(path: Path) -> Iterator[dict]:
    """Records of a JSONL file, cutting off a half-written last line (a process killed mid-write) in place."""
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            fh.truncate(end)
    for raw in data[:end].splitlines():
        if raw.strip():
            yield json.loads(raw)


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def read_done(out: str | Path) -> np.ndarray:
    """Sorted uint64 keys of the (line, path) pairs already in `out` or in parts left by an earlier run."""
    out = Path(out)
    files = [out, *sorted(_parts_dir(out).glob("rank-*.jsonl"))]
    keys = [_key(r["line"], r["path"]) for f in files for r in _complete_lines(f)]
    return np.unique(np.array(keys, dtype=np.uint64))


class _Share(IterableDataset):
    """This rank's lines not done yet, split between DataLoader workers; decodes each video as `pre` says."""

    def __init__(self, list_file: str, root: str, pre: Preprocessing, done: np.ndarray, rank: int, world: int):
        self.list_file, self.root, self.pre, self.done = list_file, root, pre, done
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for i, (line, path) in enumerate(iter_list(self.list_file, root=self.root)):
            if i % self.world != self.rank or (i // self.world) % workers != worker:
                continue
            key = np.uint64(_key(line, path))
            pos = np.searchsorted(self.done, key)
            if pos < len(self.done) and self.done[pos] == key:
                continue
            try:
                views, _, n = self.pre.read(path)  # (K, s, s, 3) uint8
                yield {"line": line, "path": path, "clip": self.pre.to_input(views), "frames": n}  # (K, 3, s, s)
            except UserError as err:  # VideoError: missing, unreadable, no decodable frame
                yield {"line": line, **error_record(path, err)}


def _identity(item):
    return item


@torch.no_grad()
def predict_list(
    predictor: Any,  # an istpan.inference.predictor.Predictor (which calls this: no import back)
    list_file: str | Path,
    out: str | Path,
    *,
    root: str | Path = "",
    topk: int = 5,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every video of `list_file` not yet in `out` (this rank's share under torch.distributed); rank 0
    merges the parts into `out`. Returns totals over all ranks: {"predicted", "failed", "skipped_done", "seconds"
    (the slowest rank's prediction loop)}."""
    if not Path(list_file).is_file():
        raise UserError(f"--list {list_file}: file not found")
    if next(iter_list(list_file), None) is None:  # reads up to the first entry: doing nothing is not a success
        raise UserError(f"--list {list_file}: lists no video (one path per line; blank lines and # comments are "
                        "ignored)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rank, world = get_rank(), get_world_size()
    done = read_done(out)
    barrier()  # every rank has read (and trimmed) the files before anyone appends
    part = _parts_dir(out) / f"rank-{rank:05d}.jsonl"
    part.parent.mkdir(parents=True, exist_ok=True)
    share = _Share(str(list_file), str(root), predictor.preprocessing, done, rank, world)
    loader = DataLoader(share, batch_size=None, num_workers=workers, collate_fn=_identity,
                        prefetch_factor=2 * batch_size if workers else None)
    predicted = failed = 0
    start = time.perf_counter()
    show = progress and is_main_process() and sys.stderr.isatty()
    with open(part, "a", encoding="utf-8") as fh, tqdm(desc="predict", unit="video", disable=not show) as bar:
        def write(records: list[dict]) -> None:
            fh.write("".join(json.dumps(r) + "\n" for r in records))
            fh.flush()  # a line is either complete in the file or cut off (trimmed by the next run)
            bar.update(len(records))

        def flush(batch: list[dict]) -> None:
            results = predictor.predict([b["clip"] for b in batch], topk=topk, batch_size=batch_size)
            write([{"line": b["line"], **r, "path": b["path"], "video_frames": b["frames"]}
                   for b, r in zip(batch, results)])

        batch: list[dict] = []
        for item in loader:
            if "error" in item:
                log.warning("skipping %s", item["error"])
                write([item])
                failed += 1
                continue
            batch.append(item)
            if len(batch) == batch_size:
                flush(batch)
                predicted += len(batch)
                batch = []
        if batch:
            flush(batch)
            predicted += len(batch)
    seconds = max(all_gather_objects(time.perf_counter() - start))  # the slowest rank's loop
    totals = reduce_sum([predicted, failed], predictor.device)
    barrier()
    if is_main_process():
        _merge(out)
    barrier()
    return {"predicted": int(totals[0]), "failed": int(totals[1]), "skipped_done": len(done), "seconds": seconds,
            "out": str(out)}


def _merge(out: Path) -> None:
    """Append every part to `out` (parts hold only videos `out` lacks), then remove them. A kill in between leaves
    parts whose lines are already in `out`: the next run's done-set holds them once, the merge then drops them."""
    parts = sorted(_parts_dir(out).glob("rank-*.jsonl"))
    already = read_done(out) if out.is_file() else np.zeros(0, dtype=np.uint64)
    with open(out, "a", encoding="utf-8") as dst:
        for part in parts:
            for record in _complete_lines(part):
                key = np.uint64(_key(record["line"], record["path"]))
                pos = np.searchsorted(already, key)
                if pos < len(already) and already[pos] == key:
                    continue
                dst.write(json.dumps(record) + "\n")
        dst.flush()
        os.fsync(dst.fileno())
    for part in parts:
        part.unlink()
    if not any(_parts_dir(out).iterdir()):
        _parts_dir(out).rmdir()
