"""Sparse frame reading vs full sequential decode on real clips, for 8-segment TSN training sampling.

    .venv/bin/python bench/decode.py [--clips ../shared/clips] [--rounds 3] [--samples 4]

For every clip and every random TSN sampling (seeded), both ways run back to back in the same process:
- full: what a naive loader does: decode every frame to RGB, keep them, index the 8 wanted ones;
- sparse (istpan): `read_frames(path, indices)` with the frame count already known (`count_frames` is cached per file,
  so from the second epoch on that is the whole cost); "cold" adds the first `count_frames` call.
Exact = the 8 frames are bit-identical to the full decode's frames at the same indices.
Last line: `sparse_speedup=<x> exact=<fraction>` (x = full time / sparse time over all clips, warm cache).
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import av
import numpy as np

from istpan.data import count_frames, read_frames
from istpan.data import decode as decode_mod
from istpan.data.sampling import clip_generator, segment_indices

DEFAULT_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "clips"


def full_decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of the whole workload")
    parser.add_argument("--samples", type=int, default=4, help="random TSN samplings per clip and round")
    parser.add_argument("--segments", type=int, default=8)
    args = parser.parse_args()
    clips = sorted(p for p in args.clips.iterdir() if p.suffix in (".avi", ".mp4"))
    if not clips:
        raise SystemExit(f"no .avi/.mp4 clips in {args.clips}")

    t_full = {c.name: 0.0 for c in clips}
    t_sparse = {c.name: 0.0 for c in clips}
    t_cold = {c.name: 0.0 for c in clips}
    exact = total = 0
    for r in range(args.rounds):
        for c in clips:
            decode_mod._index_cache.clear()  # cold: the first touch of this file in a run
            decode_mod._counts.clear()
            start = time.perf_counter()
            n = count_frames(c)
            t_cold[c.name] += time.perf_counter() - start
            for s in range(args.samples):
                idx = segment_indices(n, args.segments, rng=clip_generator(r, s, zlib.crc32(c.name.encode()))).tolist()
                start = time.perf_counter()
                frames = full_decode(c)
                reference = np.stack([frames[i] for i in idx])
                t_full[c.name] += time.perf_counter() - start
                del frames

                start = time.perf_counter()
                got = read_frames(c, idx).numpy()
                elapsed = time.perf_counter() - start
                t_sparse[c.name] += elapsed
                t_cold[c.name] += elapsed
                exact += int(np.array_equal(got, reference))
                total += 1

    per_clip = args.rounds * args.samples
    print(f"{'clip':60s} {'frames':>6s} {'full clips/s':>12s} {'sparse':>8s} {'cold':>8s} {'speedup':>8s}")
    for c in clips:
        n = count_frames(c)
        full, sparse, cold = (per_clip / t[c.name] for t in (t_full, t_sparse, t_cold))
        print(f"{c.name[:60]:60s} {n:6d} {full:12.1f} {sparse:8.1f} {cold:8.1f} {sparse / full:7.2f}x")
    full_all, sparse_all, cold_all = (sum(t.values()) for t in (t_full, t_sparse, t_cold))
    seekable = [c.name for c in clips if decode_mod._index(c, scan=True).seekable]
    print(f"all clips: full {total / full_all:.1f} clips/s, sparse {total / sparse_all:.1f} clips/s "
          f"(cold, first count included: {total / cold_all:.1f} clips/s, {full_all / cold_all:.2f}x)")
    print(f"keyframe seeking used for: {', '.join(seekable) or 'none'} (others: sequential decode, stop early)")
    print(f"sparse_speedup={full_all / sparse_all:.2f} exact={exact / total:.3f}")


if __name__ == "__main__":
    main()
