"""bench/decode.py's last part: the training loader on prepared copies (`istpan data prepare`) against the raw files.

Two generated raw datasets, each of `videos` clips made from a real clip's frames (another start each): the Kinetics
shape (10 s of 340x256 H.264, a keyframe every 250 frames) and the UCF101 shape (7 s of 320x240 MPEG-4 part 2 in AVI
with B-frames). Each is prepared as mp4 (defaults) and as frames (JPEG quality 95). Then the real training loader
(`build_dataset(train=True)`: 8 segments, TSN multiscale crops to 224, flip, normalisation; `build_loader` with 1
worker, batch 4) runs whole epochs over each form: one untimed epoch first (persistent index filled, files in the page
cache), then `epochs` timed epochs per form, the forms interleaved. clips/s = clips / seconds over the timed epochs.
"""

from __future__ import annotations

import time
from pathlib import Path

from _decode_limit import kinetics_shape, ucf_shape

SHAPES = {"kinetics": ("kinetics_arm_wrestling.mp4", kinetics_shape, ".mp4"),
          "ucf101": ("ucf101_ApplyEyeMakeup_g01_c01.avi", ucf_shape, ".avi")}


def _raw_dataset(root: Path, clip: Path, make, suffix: str, videos: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(videos):
        make(root / f"v{i:02d}{suffix}", clip, shift=29 * i)
        lines.append(f"v{i:02d}{suffix} {i % 2}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("a\nb\n")
    return root


def _config(root: Path, **data):
    from istpan.config import load_config

    cfg = load_config(None, [f"data.root={root}", f"data.train_annotations={root}/train.txt",
                             f"data.classes={root}/classes.txt", "data.num_frames=8", "data.input_size=224",
                             "data.short_side=256", "data.train_crop=multiscale", "data.num_workers=1"])
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def _epoch(data_cfg) -> tuple[int, float]:
    from istpan.data import build_dataset, build_loader

    start = time.perf_counter()
    loader = build_loader(build_dataset(data_cfg, split="train", train=True), batch_size=4, train=True,
                          num_workers=1, seed=0)
    n = sum(int(batch["video"].shape[0]) for batch in loader)
    return n, time.perf_counter() - start


def _bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def prepared_speedup(clips: Path, work: Path, *, videos: int = 8, epochs: int = 3) -> str:
    """Print the table; return the Kinetics shape's prepared-mp4 clips/s over its raw clips/s."""
    import torch

    from istpan.config import load_config
    from istpan.data.tools.prepare import PrepareOptions, prepare_dataset

    torch.set_num_threads(1)
    forms: dict[str, dict[str, object]] = {}
    sizes: dict[str, dict[str, int]] = {}
    for shape, (clip, make, suffix) in SHAPES.items():
        if not (clips / clip).is_file():
            print(f"prepared: {clips / clip} not found, the {shape} shape is skipped")
            continue
        raw = _raw_dataset(work / f"raw_{shape}", clips / clip, make, suffix, videos)
        cfg = _config(raw)
        forms[shape] = {"raw": cfg.data}
        sizes[shape] = {"raw": _bytes(raw, f"*{suffix}")}
        for form in ("mp4", "frames"):
            out = work / f"prepared_{shape}_{form}"
            prepare_dataset(cfg, out, PrepareOptions(form=form), workers=2, progress=False)
            forms[shape][form] = load_config(out / "prepared.yaml").data
            sizes[shape][form] = _bytes(out / ("videos" if form == "mp4" else "frames"), "*.*")
    for shape in forms:
        for data_cfg in forms[shape].values():
            _epoch(data_cfg)  # untimed: the index, the page cache, the workers' imports
    total = {(s, f): [0, 0.0] for s in forms for f in forms[s]}
    for e in range(epochs):
        for shape in forms:
            names = list(forms[shape])
            for form in names[e % len(names):] + names[: e % len(names)]:
                n, seconds = _epoch(forms[shape][form])
                total[shape, form][0] += n
                total[shape, form][1] += seconds
    print(f"\n{'loader, 1 worker, training transforms':40s} {'clips/s':>8s} {'vs raw':>7s} {'disk':>9s} "
          f"{'vs raw':>7s}")
    ratios = {}
    for (shape, form), (n, seconds) in total.items():
        rate = n / seconds
        raw_rate = total[shape, "raw"][0] / total[shape, "raw"][1]
        ratios[shape, form] = rate / raw_rate
        size = sizes[shape][form]
        print(f"{shape + ' ' + form:40s} {rate:8.2f} {rate / raw_rate:6.2f}x {size / 2**20:7.1f}MB "
              f"{size / sizes[shape]['raw']:6.2f}x")
    return f"{ratios['kinetics', 'mp4']:.2f}" if ("kinetics", "mp4") in ratios else "skipped"
