"""`istpan data shard`: a dataset split -> WebDataset tar shards, each video's encoded bytes unchanged.

Each sample is two tar members sharing a key: `<key>.video.<ext>` (the file's bytes, never re-encoded, so decoding
from the shard is bit-identical to decoding the file) and `<key>.json` (label(s), original path, meta and the video's
index entry: frame count, timestamps, keyframes — what `decode.EncodedVideo` needs to read sparse frames exactly and
seek, without scanning the video again). Videos are shuffled (seeded) before they are cut into shards: annotation
files are usually sorted by class, and a streaming shuffle buffer can't undo that.

Beside the shards, `<split>.json` (the manifest: classes, shards with their sample counts) is what
`data.format=webdataset` reads: sample counts fix the epoch length and let every rank and worker take its exact share
(istpan/data/shard_loader.py). Our choice: one small local JSON file instead of probing the shards (remote shards can't
be listed or counted without reading them).

Resumable: the plan (which video goes into which shard) is written first (`<split>.plan.json`) and reused, each shard
is written to `<name>.tmp` and renamed when complete, and a finished shard's sidecar (`<name>.done.json`) is what
the manifest is rebuilt from; a rerun writes only the missing shards. Shards are written in parallel processes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from istpan.data import index as video_index
from istpan.data.datasets import Annotations
from istpan.data.manifest import MANIFEST_VERSION
from istpan.errors import UserError

__all__ = ["MANIFEST_VERSION", "parse_size", "plan_shards", "sample_meta", "shard_dataset", "write_split"]

log = logging.getLogger(__name__)


def parse_size(text: str | int) -> int:
    """'1GB' -> 10**9, '512MiB' -> 2**29, '2e8' -> 200000000 (bytes)."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", str(text))
    if not m:
        raise UserError(f"--shard-size '{text}': expected a size like 1GB, 500MB or 256MiB")
    base = 1024 if m.group(3) else 1000
    value = float(m.group(1)) * base ** " KMGT".index((m.group(2) or " ").upper())
    if value < 1:
        raise UserError(f"--shard-size '{text}': must be at least one byte")
    return int(value)


def plan_shards(paths: list[str], sizes: list[int], *, shard_size: int, seed: int) -> list[list[int]]:
    """Record indices per shard: a seeded shuffle, then consecutive runs whose bytes stay under `shard_size` (a video
    larger than that gets a shard of its own)."""
    order = list(range(len(paths)))
    random.Random(seed).shuffle(order)
    shards: list[list[int]] = []
    current, used = [], 0
    for i in order:
        if current and used + sizes[i] > shard_size:
            shards.append(current)
            current, used = [], 0
        current.append(i)
        used += sizes[i]
    if current:
        shards.append(current)
    return shards


def sample_meta(path: str, label, meta: dict, entry: dict, root: str) -> dict:
    """The `<key>.json` member: everything a reader needs besides the bytes."""
    rel = os.path.relpath(path, root) if root else path
    return {"path": rel, "label": label, "meta": meta, "index": {
        "num_frames": int(entry["num_frames"]), "pts": np.asarray(entry["pts"]).tolist(),
        "keyframes": [int(k) for k in entry["keyframes"]], "seekable": bool(entry["seekable"]),
        "errors": list(entry["errors"])}}


def _write_shard(job: dict) -> dict:
    """Write one shard (runs in a worker process). Unreadable videos are left out and reported."""
    import webdataset as wds

    from istpan.data.decode import VideoError, index_entry

    video_index.use(job["index"])
    out = Path(job["out"])
    tmp = out.with_suffix(".tmp")
    written, skipped, size = 0, [], 0
    with open(tmp, "wb") as fh, wds.TarWriter(fh, encoder=False, mtime=0) as tar:
        for key, path, label, meta in job["items"]:
            try:
                entry = index_entry(path)
                data = Path(path).read_bytes()
            except (VideoError, OSError) as err:
                skipped.append({"path": path, "error": str(err)})
                continue
            if entry["num_frames"] == 0:
                skipped.append({"path": path, "error": f"{path}: no frame decodes"})
                continue
            ext = Path(path).suffix.lower().lstrip(".") or "bin"
            doc = sample_meta(path, label, meta, entry, job["root"])
            tar.write({"__key__": key, f"video.{ext}": data, "json": json.dumps(doc).encode()})
            written += 1
            size += len(data)
    os.replace(tmp, out)  # a shard exists only once complete: a rerun rewrites half-written ones
    info = {"name": out.name, "samples": written, "bytes": out.stat().st_size, "skipped": skipped}
    Path(job["done"]).write_text(json.dumps(info))
    return info


def write_split(
    ann: Annotations,
    *,
    out: str | Path,
    split: str,
    shard_size: int,
    root: str = "",
    multi_label: bool = False,
    workers: int = 1,
    seed: int = 0,
    index: str | None = None,
    progress: bool = True,
) -> dict:
    """Shard one split into `out` and write its manifest `<out>/<split>.json`; returns the manifest.

    `index`: the persistent video index file (entries are read from it, or scanned and stored)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = ann.records
    plan_file = out / f"{split}.plan.json"
    paths = [r.path for r in records]
    plan = json.loads(plan_file.read_text()) if plan_file.is_file() else None
    if plan is None or plan.get("paths") != paths or plan.get("shard_size") != shard_size or plan.get("seed") != seed:
        sizes = [os.path.getsize(p) if os.path.isfile(p) else 0 for p in paths]
        plan = {"paths": paths, "shard_size": shard_size, "seed": seed,
                "shards": plan_shards(paths, sizes, shard_size=shard_size, seed=seed)}
        for stale in out.glob(f"{split}-*"):  # a different plan: shards of the old one must not be mixed in
            stale.unlink()
        plan_file.write_text(json.dumps(plan))
    jobs, done = [], {}
    offset = 0
    for s, members in enumerate(plan["shards"]):
        name = f"{split}-{s:06d}.tar"
        sidecar = out / f"{split}-{s:06d}.done.json"
        if sidecar.is_file() and (out / name).is_file():
            done[s] = json.loads(sidecar.read_text())
        else:
            items = [(f"{offset + j:09d}", records[i].path, records[i].label, records[i].meta)
                     for j, i in enumerate(members)]
            jobs.append((s, {"out": str(out / name), "done": str(sidecar), "items": items, "root": root,
                             "index": index}))
        offset += len(members)
    total = sum(len(m) for m in plan["shards"])
    bar = tqdm(total=total, initial=total - sum(len(j[1]["items"]) for j in jobs), desc=f"sharding {split}",
               unit="video", disable=not progress, dynamic_ncols=True)
    if jobs and workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_write_shard, job): (s, len(job["items"])) for s, job in jobs}
            for fut in as_completed(futures):
                s, n = futures[fut]
                done[s] = fut.result()
                bar.update(n)
    else:
        for s, job in jobs:
            done[s] = _write_shard(job)
            bar.update(len(job["items"]))
    bar.close()
    shards = [done[s] for s in range(len(plan["shards"]))]
    manifest = {
        "format": MANIFEST_VERSION,
        "split": split,
        "classes": list(ann.class_names),
        "multi_label": bool(multi_label),
        "samples": sum(s["samples"] for s in shards),
        "shards": [{k: s[k] for k in ("name", "samples", "bytes")} for s in shards],
        "skipped": [item for s in shards for item in s["skipped"]],
        "annotation_problems": list(ann.problems),
    }
    (out / f"{split}.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def shard_dataset(data_cfg, *, out: str | Path, shard_size: int, workers: int = 1, seed: int = 0,
                  progress: bool = True) -> dict[str, dict]:
    """Shard every split the config names (train, and val when it has one): {split: manifest}."""
    from istpan.data.video_dataset import has_split, load_split

    d = data_cfg
    if d.format == "webdataset":
        raise UserError("data shard: the config already reads shards (data.format=webdataset); give the config of "
                        "the video files")
    index = video_index.index_path_for(d.index, root=d.root, annotations=d.train_annotations)
    manifests = {}
    for split in ("train", "val"):
        if not has_split(d, split):
            continue
        if split == "val" and d.format == "folder" and not d.val_annotations and not Path(d.root, "val").is_dir():
            continue
        ann = load_split(d, split)
        manifests[split] = write_split(ann, out=out, split=split, shard_size=shard_size, root=d.root,
                                       multi_label=d.multi_label or d.format == "charades", workers=workers,
                                       seed=seed, index=str(index) if index else None, progress=progress)
    if not manifests:
        raise UserError("data shard: no annotations to shard; set data.train_annotations (or data.root)")
    return manifests
