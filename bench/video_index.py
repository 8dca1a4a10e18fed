"""The persistent video index: first vs second epoch on 5,000 small videos, and the index's memory for 650k videos.

    .venv/bin/python bench/video_index.py [--videos 5000] [--entries 650000] [--dir /tmp/istpan_bench_index]

Part 1 (epochs). 5,000 generated H.264 videos (250 frames = 10 s at 25 fps like a Kinetics clip, but only 48x64 px
to keep the files small; a keyframe every second) and a list file; each "run" is
a fresh Python process that builds the training dataset and loader (2 workers, batch 16) and reads one epoch:
- run 1 finds no index: every video is scanned once (a full decode) when it is first sampled, and stored;
- run 2 is a new process (empty memory caches) with the index from run 1: it must decode nothing but the sampled
  frames. Each run reports the time to its first batch, the whole epoch, and how many videos it scanned
  (a scan counter in every worker; run 2 must say 0).
Part 2 (memory). An index file with 650k simulated entries (Kinetics-like: 300 frames at constant frame rate,
a keyframe every 12), filled in bulk; then a fresh process looks up 20k random videos. Reported: file size, that
process's RSS growth, and what the in-memory per-process cache decode.py used alone (frame counts of every video
+ 2048 full indexes) costs for 650k videos, measured with tracemalloc.
Last line: `epoch_speedup=<run1/run2> first_batch_speedup=<x> scans_second=<n> index_mb_650k=<file MB>
lookup_rss_mb=<MB> dict_mb_650k=<MB>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

SIZE = (48, 64)


def _write_one(args: tuple[str, int, int]) -> None:
    import av

    path, seed, frames = args
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=3)
    h, w = SIZE
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23", "g": "25"}  # a keyframe every second
        for t in range(frames):
            img = np.full((h, w, 3), base, dtype=np.uint8)
            img[(t * 2) % (h - 8):(t * 2) % (h - 8) + 8, (t * 3) % (w - 8):(t * 3) % (w - 8) + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_videos(folder: Path, count: int, *, frames: int = 24, classes: int = 10, workers: int = 2) -> Path:
    """`count` small videos (48x64, `frames` frames at 25 fps) under folder/videos plus folder/train.txt
    ("path label"); reused when present (use a new folder for another frame count)."""
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    names = [f"v{i:06d}.mp4" for i in range(count)]
    todo = [(str(videos / n), i, frames) for i, n in enumerate(names) if not (videos / n).is_file()]
    if todo:
        print(f"writing {len(todo)} videos to {videos} ...", file=sys.stderr)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_one, todo, chunksize=64))
    (folder / "train.txt").write_text("".join(f"videos/{n} {i % classes}\n" for i, n in enumerate(names)))
    (folder / "classes.txt").write_text("".join(f"c{i}\n" for i in range(classes)))
    return folder


_EPOCH = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from istpan.config import load_config
from istpan.data import build_dataset, build_loader
from istpan.data import decode as decode_mod
root, workers = sys.argv[1], int(sys.argv[2])
counter = torch.zeros(1, dtype=torch.long).share_memory_()  # scans, summed over workers
real_scan = decode_mod._scan
def counted(path):
    counter.add_(1)
    return real_scan(path)
decode_mod._scan = counted
t0 = time.perf_counter()  # after the imports: what is measured is the data path's own start-up
cfg = load_config(None, ["data.format=list", f"data.root={root}", f"data.train_annotations={root}/train.txt",
                         f"data.classes={root}/classes.txt", "data.num_frames=4", "data.input_size=32",
                         "data.short_side=40", "data.train_crop=center"]).data
loader = build_loader(build_dataset(cfg, split="train", train=True), batch_size=16, train=True,
                      num_workers=workers, seed=0)
first = None
n = 0
for batch in loader:
    n += batch["video"].shape[0]
    if first is None:
        first = time.perf_counter() - t0
total = time.perf_counter() - t0
print(json.dumps({"first_batch_s": first, "epoch_s": total, "clips": n, "scans": int(counter)}))
"""


def run_epoch(root: Path, workers: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _EPOCH, str(root), str(workers)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


_LOOKUP = r"""
import json, os, random, resource, sys
from istpan.data.index import VideoIndex
import numpy as np
index, n = VideoIndex(sys.argv[1]), int(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rng = random.Random(0)
for _ in range(20000):
    i = rng.randrange(n)
    assert index.get(os.path.join(os.path.dirname(sys.argv[1]), f"k400/{i:07d}.mp4"), i, i)["num_frames"] == 300
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_growth_mb": (after - base) / 1024, "rss_mb": after / 1024}))
"""


def index_memory(folder: Path, entries: int) -> dict:
    from istpan.data.index import VideoIndex

    db = folder / "index650k" / "istpan_index.sqlite"
    if db.exists():
        shutil.rmtree(db.parent)
    index = VideoIndex(db)
    pts = np.arange(300, dtype=np.int64) * 512  # 300 frames, 25 fps in a 1/12800 time base
    entry = {"num_frames": 300, "pts": pts, "keyframes": tuple(range(0, 300 * 512, 12 * 512)), "seekable": True,
             "errors": ()}
    start = time.perf_counter()
    for lo in range(0, entries, 50_000):
        rows = [(str(db.parent / f"k400/{i:07d}.mp4"), i, i, entry) for i in range(lo, min(entries, lo + 50_000))]
        index.put_many(rows)
    fill = time.perf_counter() - start
    index.close()
    out = subprocess.run([sys.executable, "-c", _LOOKUP, str(db), str(entries)], capture_output=True, text=True,
                         check=True)
    lookup = json.loads(out.stdout.strip().splitlines()[-1])

    import tracemalloc

    tracemalloc.start()
    counts = {(f"/data/k400/train/{i:07d}.mp4", i, i * 1000): 300 for i in range(entries)}  # decode._counts
    cached = {i: (pts.copy(), entry["keyframes"]) for i in range(2048)}  # decode._index_cache (capped)
    dict_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del counts, cached
    size_mb = sum(f.stat().st_size for f in db.parent.iterdir()) / 2**20
    return {"fill_s": fill, "file_mb": size_mb, **lookup, "dict_mb": dict_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=5000)
    parser.add_argument("--entries", type=int, default=650_000)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of each run")
    parser.add_argument("--frames", type=int, default=250, help="frames per video")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/istpan_bench_index250"))
    args = parser.parse_args()

    root = write_videos(args.dir, args.videos, frames=args.frames)
    (root / "istpan_index.sqlite").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{root / 'istpan_index.sqlite'}{suffix}").unlink(missing_ok=True)
    first = run_epoch(root, args.workers)
    second = run_epoch(root, args.workers)
    for name, r in (("run 1 (no index)", first), ("run 2 (index)", second)):
        print(f"{name}: first batch {r['first_batch_s']:.2f} s, epoch {r['epoch_s']:.1f} s "
              f"({r['clips']} clips), videos scanned {r['scans']}")
    mem = index_memory(args.dir, args.entries)
    print(f"index of {args.entries} entries: {mem['file_mb']:.1f} MB on disk (filled in {mem['fill_s']:.1f} s); "
          f"a process looking up 20k of them grows by {mem['rss_growth_mb']:.1f} MB RSS; the per-process dicts "
          f"alone would hold {mem['dict_mb']:.0f} MB in every worker")
    print(f"epoch_speedup={first['epoch_s'] / second['epoch_s']:.2f} "
          f"first_batch_speedup={first['first_batch_s'] / second['first_batch_s']:.2f} "
          f"scans_second={second['scans']} index_mb_650k={mem['file_mb']:.1f} "
          f"lookup_rss_mb={mem['rss_growth_mb']:.1f} dict_mb_650k={mem['dict_mb']:.0f}")


if __name__ == "__main__":
    main()
