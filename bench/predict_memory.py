"""Peak memory of sliding-window prediction: a 10-minute video and a 1080p clip against a 30-second video.

    .venv/bin/python bench/predict_memory.py                  # istpan_tiny, 2 s windows every 1 s
    .venv/bin/python bench/predict_memory.py --model istpan_mobilenetv2 --minutes 12

Goal (issue 7): peak RSS(10-minute video) / peak RSS(30-second video) <= 1.2, and the same for 1080p, because
`sliding_window_predict` streams the decode (one decoded frame + a ring buffer of cropped frames for one window).

Each prediction runs in its own fresh subprocess, so each peak RSS (ru_maxrss) belongs to that video alone; the
parent prints the peaks and their ratios measured in this one run. The videos are synthetic and generated on the fly
with PyAV (a gradient with a moving square, H.264 ultrafast): the 30-second and the long video are 320x240 at
25 fps, the 1080p clip is 1920x1080 at 25 fps for 10 seconds. Simple content keeps generation fast; decoding
cost per frame depends on resolution, not on what is drawn, and memory is what is measured here.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_long_video(path: Path, *, seconds: float, size: tuple[int, int], fps: int = 25) -> Path:
    """Encode a synthetic video frame by frame (never more than one frame in memory)."""
    h, w = size
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    background = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 96)], -1).astype(np.uint8)  # (H, W, 3)
    side = max(8, h // 6)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28", "g": str(fps * 2)}
        for t in range(round(seconds * fps)):
            frame = background.copy()
            y0 = (t * 3) % (h - side)
            x0 = (t * 5) % (w - side)
            frame[y0 : y0 + side, x0 : x0 + side] = (255, 255, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def child(args: argparse.Namespace) -> None:
    """Predict one video with sliding windows; print peak RSS (MiB) as JSON."""
    import torch

    from istpan.inference.windows import sliding_window_predict
    from istpan.models import create_model

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10).eval()
    size = model.pretrained_cfg["input_size"]
    meta = {"class_names": [f"c{i}" for i in range(10)],
            "preprocessing": {"input_size": size, "short_side": round(size * 256 / 224), "num_segments": 8}}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = sliding_window_predict(model, meta, args.child, window=args.window, stride=args.stride, unit="seconds")
    print(json.dumps({
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "before_mib": before,
        "seconds": time.perf_counter() - start,
        "frames": result["num_frames"],
        "windows": len(result["windows"]),
    }))


def measure(video: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(video), "--model", args.model,
           "--window", str(args.window), "--stride", str(args.stride)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="istpan_tiny")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long video")
    parser.add_argument("--window", type=float, default=2.0, help="seconds")
    parser.add_argument("--stride", type=float, default=1.0, help="seconds")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="istpan-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        videos = {
            "30 s, 320x240": make_long_video(tmp / "short.mp4", seconds=30, size=(240, 320)),
            f"{args.minutes:g} min, 320x240": make_long_video(tmp / "long.mp4", seconds=60 * args.minutes,
                                                              size=(240, 320)),
            "10 s, 1920x1080": make_long_video(tmp / "hd.mp4", seconds=10, size=(1080, 1920)),
        }
        print(f"generated {len(videos)} videos in {time.perf_counter() - t0:.0f} s "
              f"(model {args.model}, windows {args.window:g} s every {args.stride:g} s)")
        rows = {name: measure(path, args) for name, path in videos.items()}

    base = rows["30 s, 320x240"]["peak_mib"]
    print(f"{'video':<20}{'frames':>8}{'windows':>9}{'time s':>8}{'RSS before MiB':>16}{'peak RSS MiB':>14}"
          f"{'peak / 30 s':>13}")
    for name, r in rows.items():
        print(f"{name:<20}{r['frames']:>8}{r['windows']:>9}{r['seconds']:>8.1f}{r['before_mib']:>16.0f}"
              f"{r['peak_mib']:>14.0f}{r['peak_mib'] / base:>13.3f}")
    print("goal: peak / 30 s <= 1.2")


if __name__ == "__main__":
    main()
