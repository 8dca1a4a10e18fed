"""Sparse frame reading against a full decode, against its limit and against decord / torchcodec, for 8-segment TSN
training sampling; then the training loader on prepared copies (`istpan data prepare`) against the raw files.

    .venv/bin/python bench/decode.py [--clips ../shared/clips] [--rounds 3] [--samples 4] [--dir DIR] [--no-prepared]

Clips: every clip of ../shared/clips plus a generated long-GOP clip (10 s of 340x256 H.264, one keyframe per 250
frames: the Kinetics shape, made from the Kinetics clip's frames). For every clip and every random TSN sampling
(seeded), all readers run back to back in the same process:
- full: what a naive loader does: decode every frame to RGB, keep them, index the 8 wanted ones;
- sparse (istpan): `read_frames(path, indices)` with the frame count already known (`count_frames` is cached per file,
  so from the second epoch on that is the whole cost); "cold" adds the first `count_frames` call;
- limit: only the frames that must be decoded, from the keyframe before each wanted frame, reference frames and the
  wanted ones, each once (bench/_decode_limit.py); `limit_ratio` = sparse time / limit time (1.0 = no waste);
- decord and torchcodec (`seek_mode="exact"`), a fresh decoder per read, one decoding thread each (istpan's PyAV
  decodes single-slice H.264 on one thread too); optional, bench only: `pip install decord torchcodec` (torchcodec
  also needs the system's FFmpeg libraries); each one missing is said in one line and its columns read `skipped`.
Exact = istpan's 8 frames are bit-identical to the full decode's frames at the same indices; an anchor is "right" when
every frame it returns is the full decode's frame at that index up to colour conversion (bench/_decode_limit.py).
prepared_speedup (bench/_prepared.py): the real training loader (1 worker, training transforms) on generated
Kinetics-shape and UCF101-shape datasets, raw against prepared mp4 and frames, with the disk size of each form.
Last line: `sparse_speedup=<x> exact=<fraction> limit_ratio=<worst clip> vs_decord=<x> vs_torchcodec=<x|skipped>
prepared_speedup=<x>` (x = time of the other / istpan's time over all clips, warm cache; prepared_speedup: clips/s of
the Kinetics shape's prepared mp4 over its raw files).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _decode_limit import kinetics_shape, limit_plan, load_anchors, read_limit, right_frames

from istpan.data import count_frames, read_frames
from istpan.data import decode as decode_mod
from istpan.data.sampling import clip_generator, segment_indices

DEFAULT_CLIPS = Path(os.environ.get("ISTPAN_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "clips"
KINETICS_CLIP = "kinetics_arm_wrestling.mp4"


def full_decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def measure(clips: list[Path], args, readers: dict) -> dict:
    """Seconds per reader per clip over all samplings, istpan's exact count and each anchor's right count."""
    names = ["full", "sparse", "cold", "limit", *readers]
    t = {n: {c.name: 0.0 for c in clips} for n in names}
    right = {n: {c.name: 0 for c in clips} for n in readers}
    exact = total = 0
    plans = {c.name: limit_plan(c) for c in clips}  # untimed: what the limit needs to know
    for r in range(args.rounds):
        for c in clips:
            decode_mod._index_cache.clear()  # cold: the first touch of this file in a run
            decode_mod._counts.clear()
            start = time.perf_counter()
            n = count_frames(c)
            t["cold"][c.name] += time.perf_counter() - start
            for s in range(args.samples):
                idx = segment_indices(n, args.segments, rng=clip_generator(r, s, zlib.crc32(c.name.encode()))).tolist()
                start = time.perf_counter()
                frames = full_decode(c)
                reference = np.stack([frames[i] for i in idx])
                t["full"][c.name] += time.perf_counter() - start

                start = time.perf_counter()
                got = read_frames(c, idx).numpy()
                elapsed = time.perf_counter() - start
                t["sparse"][c.name] += elapsed
                t["cold"][c.name] += elapsed
                exact += int(np.array_equal(got, reference))
                total += 1

                start = time.perf_counter()
                read_limit(c, plans[c.name], idx)
                t["limit"][c.name] += time.perf_counter() - start

                for name, read in readers.items():
                    start = time.perf_counter()
                    got = read(c, idx)
                    t[name][c.name] += time.perf_counter() - start
                    right[name][c.name] += int(right_frames(got, frames, idx))
                del frames
    return {"t": t, "right": right, "exact": exact, "total": total}


def report(clips: list[Path], res: dict, args, readers: dict, notes: list[str]) -> dict[str, str]:
    """Print the tables; return the last line's figures."""
    t, per_clip = res["t"], args.rounds * args.samples
    print(f"{'clip':52s} {'frames':>6s} {'full':>6s} {'sparse':>7s} {'cold':>6s} {'speedup':>7s} {'limit':>6s} "
          f"{'limit_ratio':>11s}   (clips/s)")
    ratios = {}
    for c in clips:
        rate = {k: per_clip / t[k][c.name] for k in ("full", "sparse", "cold", "limit")}
        ratios[c.name] = t["sparse"][c.name] / t["limit"][c.name]
        print(f"{c.name[:52]:52s} {count_frames(c):6d} {rate['full']:6.1f} {rate['sparse']:7.1f} {rate['cold']:6.1f} "
              f"{rate['sparse'] / rate['full']:6.2f}x {rate['limit']:6.1f} {ratios[c.name]:11.2f}")
    total = res["total"]
    full_all, sparse_all, cold_all = (sum(t[k].values()) for k in ("full", "sparse", "cold"))
    seekable = [c.name for c in clips if decode_mod._index(c, scan=True).seekable]
    print(f"all clips: full {total / full_all:.1f} clips/s, sparse {total / sparse_all:.1f} clips/s "
          f"(cold, first count included: {total / cold_all:.1f} clips/s, {full_all / cold_all:.2f}x)")
    print(f"keyframe seeking used for: {', '.join(seekable) or 'none'} (others: sequential decode, stop early)")
    over = [f"{name} ({r:.2f})" for name, r in ratios.items() if r > 1.25]
    print(f"limit_ratio over the 1.25 goal: {', '.join(over) or 'none'}")

    print(f"\n{'anchor (fresh decoder per read)':52s} " + " ".join(f"{n:>22s}" for n in ("decord", "torchcodec")))
    for c in clips:
        cells = []
        for name in ("decord", "torchcodec"):
            if name not in readers:
                cells.append(f"{'skipped':>22s}")
                continue
            speed, right = t[name][c.name] / t["sparse"][c.name], res["right"][name][c.name]
            cells.append(f"{per_clip / t[name][c.name]:6.1f}/s ist {speed:4.2f}x {right:2d}/{per_clip:<2d}")
        print(f"{c.name[:52]:52s} " + " ".join(cells))
    for line in notes:
        print(line)
    figures = {"limit_ratio": f"{max(ratios.values()):.2f}"}
    for name in ("decord", "torchcodec"):
        if name in readers:
            right = sum(res["right"][name].values())
            figures[f"vs_{name}"] = f"{sum(t[name].values()) / sparse_all:.2f}"
            print(f"{name}: istpan {figures[f'vs_{name}']}x its speed over all clips; right frames in {right}/{total} "
                  f"reads (istpan: {res['exact']}/{total} bit-exact)")
        else:
            figures[f"vs_{name}"] = "skipped"
    figures["sparse_speedup"] = f"{full_all / sparse_all:.2f}"
    figures["exact"] = f"{res['exact'] / total:.3f}"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of the whole workload")
    parser.add_argument("--samples", type=int, default=4, help="random TSN samplings per clip and round")
    parser.add_argument("--num-frames", "--segments", type=int, default=8, dest="segments")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/istpan_bench_decode"), help="generated clips")
    parser.add_argument("--videos", type=int, default=12, help="clips per generated dataset of the prepared part")
    parser.add_argument("--no-prepared", action="store_true", help="skip the prepared-copy loader part")
    args = parser.parse_args()
    clips = sorted(p for p in args.clips.iterdir() if p.suffix in (".avi", ".mp4"))
    if not clips:
        raise SystemExit(f"no .avi/.mp4 clips in {args.clips}")
    if (args.clips / KINETICS_CLIP).is_file():
        clips.append(kinetics_shape(args.dir / "generated_340x256_gop250.mp4", args.clips / KINETICS_CLIP))

    readers, notes = load_anchors()
    res = measure(clips, args, readers)
    figures = report(clips, res, args, readers, notes)
    figures["prepared_speedup"] = "skipped"
    if not args.no_prepared:
        from _prepared import prepared_speedup

        figures["prepared_speedup"] = prepared_speedup(args.clips, args.dir, videos=args.videos)
    print(" ".join(f"{k}={figures[k]}" for k in ("sparse_speedup", "exact", "limit_ratio", "vs_decord",
                                                  "vs_torchcodec", "prepared_speedup")))


if __name__ == "__main__":
    main()
