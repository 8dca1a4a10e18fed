"""What optical flow costs: frames/s per CPU core for each algorithm at 340x256, and disk per hour of video.

    .venv/bin/python bench/flow_speed.py [--clips ../shared/clips] [--frames 16]

For every clip, the first `--frames` frames are decoded once and resized to 340x256 (TSN's flow resolution), then
each algorithm (`istpan.data.flow.FlowEstimator`: tvl1, dis, farneback) computes the flow of every consecutive pair on
ONE thread (cv2.setNumThreads(1): `istpan data flow` runs one such process per core, so this is the per-core rate,
measured in CPU time so that other jobs sharing the machine do not count; wall clock printed beside it),
and the flow is encoded and written as `istpan data flow` writes it (grey JPEGs, quality 95) to measure its size.
Disk per hour = mean bytes per flow frame (x + y images) x the clip's frame rate x 3600.
Last line: `<alg>_fps=... <alg>_gb_per_hour=...` for each algorithm and `dis_vs_tvl1=` / `farneback_vs_tvl1=`
(speed ratios measured in this run).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from istpan.data.decode import iter_frames, video_info
from istpan.data.flow.compute import FlowEstimator, quantise, to_grey
from istpan.data.tools.flow import save_flow_frame
from istpan.modality import FLOW_ALGORITHMS

DEFAULT_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "clips"
SIZE = (340, 256)  # (width, height), TSN's


def load_pairs(path: Path, frames: int) -> list[np.ndarray]:
    grey = []
    for i, frame in iter_frames(path):
        if i >= frames:
            break
        grey.append(to_grey(cv2.resize(frame.numpy(), SIZE, interpolation=cv2.INTER_LINEAR)))
    return grey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (frames - 1 flow pairs)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    clips = sorted(p for p in args.clips.iterdir() if p.suffix in (".avi", ".mp4"))
    videos = [(p, load_pairs(p, args.frames), video_info(p).fps or 25.0) for p in clips]
    results = {}
    for algorithm in FLOW_ALGORITHMS:
        estimate = FlowEstimator(algorithm)
        estimate(videos[0][1][0], videos[0][1][1])  # warm-up
        seconds, cpu, pairs, per_hour = 0.0, 0.0, 0, []
        for path, grey, fps in videos:
            with tempfile.TemporaryDirectory() as tmp:
                start, start_cpu = time.perf_counter(), time.process_time()
                flows = [estimate(a, b) for a, b in itertools.pairwise(grey)]
                seconds += time.perf_counter() - start
                cpu += time.process_time() - start_cpu
                pairs += len(flows)
                for n, flow in enumerate(flows, 1):
                    save_flow_frame(tmp, n, quantise(flow))
                size = sum(f.stat().st_size for f in Path(tmp).iterdir()) / len(flows)  # bytes per flow frame
            per_hour.append(size * fps * 3600 / 1e9)
            print(f"{algorithm:9s} {path.name[:50]:50s} {fps:5.1f} fps  {size / 1024:6.1f} KiB/flow frame")
        results[algorithm] = (pairs / cpu, statistics.mean(per_hour))
        print(f"{algorithm}: {pairs / cpu:.1f} flow frames/s per core (CPU time; {pairs / seconds:.1f}/s wall clock), "
              f"{statistics.mean(per_hour):.2f} GB per hour of video at 340x256")
    fields = [f"{a}_fps={fps:.2f} {a}_gb_per_hour={gb:.2f}" for a, (fps, gb) in results.items()]
    tvl1 = results["tvl1"][0]
    print(" ".join([*fields, f"dis_vs_tvl1={results['dis'][0] / tvl1:.1f}",
                    f"farneback_vs_tvl1={results['farneback'][0] / tvl1:.1f}"]))


if __name__ == "__main__":
    main()
