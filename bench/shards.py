"""Training loader throughput from WebDataset shards vs from the same videos as files; a throttled "remote" source.

    .venv/bin/python bench/shards.py [--videos 600] [--rounds 2] [--dir /tmp/istpan_bench_shards]

The same generated H.264 videos (bench/video_index.py's, 24 frames of 48x64), as files (list format, the persistent
index already filled, so files are at their best) and as shards written by `istpan data shard` (~256 kB each). One
epoch of the training loader (batch 16, K = 4, 32 px crops) is read for each source with 1 and 2 DataLoader workers,
`--rounds` times alternating, best time kept; clips/s are compared in this one run.

"Remote": the same shards through `pipe:curl -s --limit-rate R file://...` (WebDataset reads http shards through
curl too), R = the bytes/s at which one worker decodes them: with no worker (no prefetching) transfer and decoding
add up; with workers, shards download while others are decoded.
Last line: `shard_speedup=<min over 1 and 2 workers of shards/files> shard_speedup_w1=<x> shard_speedup_w2=<x>
remote_prefetch=<clips/s with 2 workers / with 0 workers on the throttled source>`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video_index import write_videos  # bench/ is not a package: a sibling script


def _config(videos: Path, **data):
    from istpan.config import load_config

    cfg = load_config(None, [f"data.root={videos}", f"data.train_annotations={videos}/train.txt",
                             f"data.classes={videos}/classes.txt", "data.num_frames=4", "data.input_size=32",
                             "data.short_side=40", "data.train_crop=center", "data.shuffle_buffer=32"])
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg.data


def epoch_rate(make_loader) -> float:
    """clips/s of one epoch, loader start-up included (the same for both sources)."""
    start = time.perf_counter()
    loader = make_loader()
    n = sum(int(batch["video"].shape[0]) for batch in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/istpan_bench_shards"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)

    from istpan.data import build_dataset, build_loader
    from istpan.data import index as video_index
    from istpan.data.shard_loader import build_shard_loader
    from istpan.data.tools.check import check_dataset
    from istpan.data.tools.shards import shard_dataset
    from istpan.data.video_dataset import load_split

    root = write_videos(args.dir, args.videos)
    files_cfg = _config(root)
    index = video_index.index_path_for("auto", root=str(root))
    check_dataset({"train": load_split(files_cfg, "train")}, workers=2, progress=False, index=str(index))
    shards = args.dir / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    manifest = shard_dataset(files_cfg, out=shards, shard_size=256_000, workers=2, progress=False)["train"]
    shard_cfg = _config(root, format="webdataset", train_annotations=str(shards / "train.json"), root="")
    total_bytes = sum(s["bytes"] for s in manifest["shards"])
    print(f"{manifest['samples']} videos, {len(manifest['shards'])} shards, {total_bytes / 2**20:.1f} MB",
          file=sys.stderr)

    def files(workers: int):
        return lambda: build_loader(build_dataset(files_cfg, split="train", train=True), batch_size=16, train=True,
                                    num_workers=workers, seed=0)

    def from_shards(workers: int, cfg=shard_cfg):
        return lambda: build_shard_loader(cfg, split="train", train=True, batch_size=16, num_workers=workers, seed=0)

    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for workers in (1, 2):
            for name, make in ((f"files_w{workers}", files(workers)), (f"shards_w{workers}", from_shards(workers))):
                best[name] = max(best.get(name, 0.0), epoch_rate(make))
    rate = total_bytes * best["shards_w1"] / manifest["samples"]  # bytes/s one worker decodes
    remote = f"pipe:curl -s --limit-rate {rate:.0f} file://{shards.resolve()}/{{}}"  # what http shards go through
    remote_cfg = _config(root, format="webdataset", train_annotations=str(shards / "train.json"), root=remote)
    for _ in range(args.rounds):
        for workers in (0, 2):
            name = f"remote_w{workers}"
            best[name] = max(best.get(name, 0.0), epoch_rate(from_shards(workers, remote_cfg)))

    for name, value in best.items():
        print(f"{name:>10}: {value:7.1f} clips/s")
    print(f"(remote: shards piped at {rate / 2**20:.2f} MB/s, the rate one worker decodes them)")
    w1, w2 = best["shards_w1"] / best["files_w1"], best["shards_w2"] / best["files_w2"]
    print(f"shard_speedup={min(w1, w2):.2f} shard_speedup_w1={w1:.2f} shard_speedup_w2={w2:.2f} "
          f"remote_prefetch={best['remote_w2'] / best['remote_w0']:.2f}")


if __name__ == "__main__":
    main()
