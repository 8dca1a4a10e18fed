"""`istpan predict --list` videos/s with 1 process and with 2 torchrun processes, on generated videos.

    .venv/bin/python bench/batch_predict.py [--videos 400] [--dir /tmp/istpan_bench_predict]

bench/video_index.py's small H.264 videos, an `istpan_tiny` checkpoint (64 px, K = 8, random weights: speed does not
depend on them), `--workers 0` (each process decodes and predicts: what is measured is how the list is shared). The
rate = what `istpan predict --list` reports for its prediction loop (all videos over the slowest rank's loop
time); the wall time of the whole command (start-up and merge included) is printed too. Each run starts from an empty
output.
Last line: `videos_per_s_1=<x> videos_per_s_2=<x> predict_scaling=<2 processes / 1>`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video_index import write_videos  # bench/ is not a package: a sibling script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=400)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/istpan_bench_predict"))
    args = parser.parse_args()

    from istpan.config import DataConfig
    from istpan.files.checkpoint import build_meta, save_checkpoint
    from istpan.models import create_model

    root = write_videos(args.dir, args.videos)
    (root / "list.txt").write_text("".join(f"videos/v{i:06d}.mp4\n" for i in range(args.videos)))
    model = create_model("istpan_tiny", num_classes=10, input_size=64)
    meta = build_meta(model, class_names=[f"c{i}" for i in range(10)],
                      data_cfg=DataConfig(input_size=64, short_side=64, test_num_frames=8))
    ckpt = save_checkpoint({"model": model.state_dict(), "meta": meta, "epoch": 1}, root / "model.pt")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = ["-m", "istpan.cli.main", "predict", "--list", str(root / "list.txt"), "--root", str(root),
           "--checkpoint", str(ckpt), "--workers", "0", "--batch-size", "8"]
    rates = {}
    for procs in (1, 2):
        out = root / f"preds{procs}.jsonl"
        out.unlink(missing_ok=True)
        shutil.rmtree(f"{out}.parts", ignore_errors=True)
        launcher = [sys.executable] if procs == 1 else [str(torchrun), "--standalone", "--nproc-per-node", "2"]
        start = time.perf_counter()
        proc = subprocess.run([*launcher, *cli, "--out", str(out)], env=env, check=True, capture_output=True,
                              text=True)
        wall = args.videos / (time.perf_counter() - start)
        rates[procs] = float(re.search(r"\(([0-9.]+) videos/s\)", proc.stderr).group(1))
        lines = out.read_text().count("\n")
        assert lines == args.videos, f"{out}: {lines} lines for {args.videos} videos"
        print(f"{procs} process(es): {rates[procs]:.1f} videos/s in the prediction loop, {wall:.1f} videos/s wall "
              f"(Python/torch start-up and merge included; {lines} predictions)")
    print(f"videos_per_s_1={rates[1]:.1f} videos_per_s_2={rates[2]:.1f} predict_scaling={rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
