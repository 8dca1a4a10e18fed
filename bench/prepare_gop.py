"""How the GOP of a prepared copy sets the cost of a sparse read and the copy's size: the measurement behind
`istpan data prepare`'s default --gop.

    .venv/bin/python bench/prepare_gop.py [--clips ../shared/clips] [--videos 4] [--reads 16] [--dir DIR]

Sources: generated 10 s 340x256 H.264 clips with a keyframe every 250 frames (the Kinetics shape, bench/decode.py's,
made from the Kinetics clip's frames, each from another start). Each is prepared at every GOP with the defaults
otherwise (preset veryfast, short side 256: no resize here), then read with istpan's `read_frames` at random
8-segment TSN samplings (persistent index filled, as in training after the first epoch), all GOPs interleaved in one
run. Printed per GOP: sparse reads/s, the copy's size against the source, and the encoding time per video.
At crf 18 and 23 (x264's default, the default of `prepare`) with x264's fastdecode tune (prepare's default), crf 23
without it, and the raw sources as the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _decode_limit import kinetics_shape

from istpan.data import count_frames, read_frames
from istpan.data.sampling import clip_generator, segment_indices
from istpan.data.tools.prepare import PrepareOptions, prepare_video

DEFAULT_CLIPS = Path(os.environ.get("ISTPAN_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "clips"
GOPS = (1, 4, 8, 16, 32, 250)
VARIANTS = ((18, True), (23, True), (23, False))  # (crf, x264 fastdecode tune)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--reads", type=int, default=16, help="sparse reads per video and GOP")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/istpan_bench_gop"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    sources = [kinetics_shape(args.dir / "raw" / f"k{i}.mp4", args.clips / "kinetics_arm_wrestling.mp4", shift=37 * i)
               for i in range(args.videos)]
    variants = [(gop, crf, fast) for crf, fast in VARIANTS for gop in GOPS]
    copies: dict[tuple, list[Path]] = {"raw": sources}
    encode_s: dict[tuple, float] = {"raw": 0.0}
    for gop, crf, fast in variants:
        opts = PrepareOptions(gop=gop, crf=crf, fastdecode=fast)
        copies[gop, crf, fast], start = [], time.perf_counter()
        for src in sources:
            out = args.dir / f"gop{gop}_crf{crf}{'_fastdecode' if fast else ''}" / src.name
            if not out.is_file():
                result = prepare_video({"src": str(src), "out": str(out), "options": vars(opts), "index": None})
                assert "error" not in result, result
            copies[gop, crf, fast].append(out)
        encode_s[gop, crf, fast] = (time.perf_counter() - start) / len(sources)
    names = list(copies)
    for name in names:
        for c in copies[name]:
            count_frames(c)  # the index, as after the first epoch
    elapsed = dict.fromkeys(names, 0.0)
    for r in range(args.reads):
        for v, src in enumerate(sources):
            n = count_frames(src)
            idx = segment_indices(n, 8, rng=clip_generator(r, v, zlib.crc32(src.name.encode()))).tolist()
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotated: none always runs first
                start = time.perf_counter()
                read_frames(copies[name][v], idx)
                elapsed[name] += time.perf_counter() - start
    raw = sum(s.stat().st_size for s in sources)
    reads = args.reads * len(sources)
    rates = {name: reads / elapsed[name] for name in names}
    print(f"{'GOP':>5s} {'crf':>4s} {'tune':>10s} {'reads/s':>8s} {'vs raw':>7s} {'size vs raw':>12s} "
          f"{'encode s/video':>15s}")
    for name in names:
        size = sum(c.stat().st_size for c in copies[name]) / raw
        gop, crf, fast = name if name != "raw" else ("raw", "", False)
        print(f"{gop:>5} {crf:>4} {'fastdecode' if fast else '-':>10s} {rates[name]:8.1f} "
              f"{rates[name] / rates['raw']:6.2f}x {size:11.2f}x {encode_s[name]:15.2f}")


if __name__ == "__main__":
    main()
