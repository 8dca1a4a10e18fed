"""bench/decode.py's last part: the training loader on prepared copies (`istpan data prepare`) against the raw files.

Two generated raw datasets, each of `videos` clips made from a real clip's frames (another start each): the Kinetics
shape (10 s of 340x256 H.264, a keyframe every 250 frames) and the UCF101 shape (7 s of 320x240 MPEG-4 part 2 in AVI
with B-frames). Each is prepared as mp4 (defaults) and as frames (JPEG quality 95). Then the real training loader
(`build_dataset(train=True)`: 8 segments, TSN multiscale crops to 224, flip, normalisation; `build_loader` with 1
worker, batch 2; the worker persists across epochs) runs whole epochs over each form: one untimed epoch first (the
worker's start, persistent index filled, files in the page cache), then `epochs` timed epochs per form, the forms
interleaved, each timed from its first batch on (steady state). clips/s = clips / seconds over the timed epochs.
"read ms" and "transform ms": the same clips read and transformed in the main process, timed apart (where the
loader's time goes: the transforms cost the same on every form and bound what a faster read can buy).
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


def _loader(data_cfg):
    from istpan.data import build_dataset, build_loader

    return build_loader(build_dataset(data_cfg, split="train", train=True), batch_size=2, train=True,
                        num_workers=1, seed=0)


def _epoch(loader, epoch: int) -> tuple[int, float]:
    """Clips and seconds of one epoch, the first batch not counted: what is timed is the steady state of the
    (persistent) worker, not the start of its prefetch, which would weigh more on the faster forms' short epochs."""
    loader.dataset.set_epoch(epoch) if hasattr(loader.dataset, "set_epoch") else None
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = sum(int(batch["video"].shape[0]) for batch in it)
    return n, time.perf_counter() - start


def _breakdown(data_cfg, rounds: int = 2) -> tuple[float, float]:
    """ms per clip of the read and of the training transforms, in this process: where a loader's time goes."""
    from istpan.data import build_dataset
    from istpan.data.decode import count_frames, read_frames
    from istpan.data.sampling import clip_generator, segment_indices

    dataset = build_dataset(data_cfg, split="train", train=True)
    read = transform = 0.0
    for r in range(rounds):
        for i, record in enumerate(dataset.records):
            n = count_frames(record.path, backend=dataset.backend)
            idx = segment_indices(n, data_cfg.num_frames, rng=clip_generator(r, i, 7))
            start = time.perf_counter()
            clip = read_frames(record.path, idx, backend=dataset.backend, short_side=data_cfg.short_side)
            middle = time.perf_counter()
            dataset.transform(clip.permute(0, 3, 1, 2))  # (K, 3, H, W)
            read, transform = read + middle - start, transform + time.perf_counter() - middle
    clips = rounds * len(dataset.records)
    return 1000 * read / clips, 1000 * transform / clips


def _bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def prepared_speedup(clips: Path, work: Path, *, videos: int = 12, epochs: int = 3) -> str:
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
    loaders = {(shape, form): _loader(data_cfg) for shape in forms for form, data_cfg in forms[shape].items()}
    for loader in loaders.values():
        _epoch(loader, 0)  # untimed: the worker's start, the index, the page cache
    total = {key: [0, 0.0] for key in loaders}
    for e in range(epochs):
        for shape in forms:
            names = list(forms[shape])
            for form in names[e % len(names):] + names[: e % len(names)]:
                n, seconds = _epoch(loaders[shape, form], e + 1)
                total[shape, form][0] += n
                total[shape, form][1] += seconds
    print(f"\n{'loader, 1 worker, training transforms':40s} {'clips/s':>8s} {'vs raw':>7s} {'disk':>9s} "
          f"{'vs raw':>7s} {'read ms':>8s} {'transform ms':>13s}")
    ratios = {}
    for (shape, form), (n, seconds) in total.items():
        rate = n / seconds
        raw_rate = total[shape, "raw"][0] / total[shape, "raw"][1]
        ratios[shape, form] = rate / raw_rate
        size = sizes[shape][form]
        read_ms, transform_ms = _breakdown(forms[shape][form])
        print(f"{shape + ' ' + form:40s} {rate:8.2f} {rate / raw_rate:6.2f}x {size / 2**20:7.1f}MB "
              f"{size / sizes[shape]['raw']:6.2f}x {read_ms:8.1f} {transform_ms:13.1f}")
    return f"{ratios['kinetics', 'mp4']:.2f}" if ("kinetics", "mp4") in ratios else "skipped"
