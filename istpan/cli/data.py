"""`istpan data check` (scan a dataset for broken videos and annotation problems), `istpan data flow` (optical flow
folders) and `istpan data synth`.

    istpan data check --config configs/ucf101.yaml                       # both splits of a configured dataset
    istpan data check --format hmdb51 --root data/hmdb51/videos \\
        --annotations data/hmdb51/testTrainMulti_7030_splits --split 2    # no config needed
    istpan data check --format list --annotations my/train.txt --classes my/classes.txt --out check/
    istpan data shard --config configs/kinetics.yaml --out shards/k400 --shard-size 1GB   # WebDataset shards
    istpan data prepare --config configs/kinetics.yaml --out data/k400_prepared          # a copy for sparse reads

Exit status: 0 when everything is usable, 1 when a problem was found (report in --out), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

from istpan.data.tools import synth
from istpan.errors import UserError

FLOW_HELP = """Compute the optical flow of every video of a dataset config (both splits) into the TSN / MMAction2
layout: OUT/<video path relative to data.root, without suffix>/flow_x_00001.jpg, flow_y_00001.jpg, ... (the flow
from frame i to i+1, clipped to ±bound pixels and mapped to 0..255 as TSN's dense_flow). Resumable: finished videos
are skipped; a video interrupted half-way is redone. A video that cannot be decoded is reported and skipped (exit
status 1).

    istpan data flow --config configs/ucf101_flow.yaml --out data/ucf101/flow                # TV-L1, all cores
    istpan data flow --config configs/synthetic_flow.yaml --out data/synthetic/flow --algorithm dis
"""

PREPARE_HELP = """Write a copy of the dataset made for sparse training reads (docs/data.md, "Preparing a dataset"):
H.264 MP4 resized to --short-side with a keyframe every --gop frames (frame i of the copy is frame i of the source),
or the TSN / MMAction2 img_00001.jpg layout. Writes OUT/train.txt, val.txt, classes.txt and OUT/prepared.yaml, the
config that trains from the copy. Parallel, resumable (rerun the same command), a rerun rewrites nothing, a source
changed since is redone. Videos that cannot be read are listed and left out (exit status 1).

    istpan data prepare --config configs/ucf101.yaml --out data/ucf101_prepared
    istpan train --config data/ucf101_prepared/prepared.yaml
"""

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="dataset tools: check, shard, prepare, optical flow, the synthetic dataset",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run, _data_parser=p)
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    c = sub.add_parser("check", help="decode every video once; report missing/broken videos and annotation problems")
    c.add_argument("--config", help="YAML config; its data section says where the dataset is")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.split=2")
    c.add_argument("--format", help="ucf101 | hmdb51 | charades | kinetics | folder | list | synthetic")
    c.add_argument("--root", help="folder the video paths are relative to")
    c.add_argument("--annotations", help="split folder (UCF101, HMDB51), CSV or list file of the split(s) to check")
    c.add_argument("--val-annotations", help="a second annotation file checked as the 'val' split")
    c.add_argument("--classes", help="class-name file (classInd.txt, Charades_v1_classes.txt, one name per line)")
    c.add_argument("--split", type=int, help="UCF101 / HMDB51 official split 1-3 (default 1)")
    c.add_argument("--backend", choices=["pyav", "opencv", "frames"], help="decoder (default: the config's, or pyav)")
    c.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel processes")
    c.add_argument("--out", default="data_check", help="folder for report.json and summary.txt (default data_check)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    h = sub.add_parser("shard", help="write WebDataset tar shards (videos' bytes unchanged + labels + index entry)",
                       description="Write each split of the configured dataset as WebDataset shards plus a manifest "
                       "<split>.json; train from them with data.format=webdataset data.train_annotations=DIR/train.json"
                       " (see docs/scale.md). Resumable: rerun the same command after an interruption.")
    h.add_argument("--config", required=True, help="YAML config of the video dataset")
    h.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.root=...")
    h.add_argument("--out", required=True, help="folder for the shards and manifests")
    h.add_argument("--shard-size", default="1GB", help="target bytes per shard (default 1GB; e.g. 500MB, 256MiB)")
    h.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel processes")
    h.add_argument("--seed", type=int, default=0, help="seed of the shuffle before sharding")
    h.add_argument("--no-progress", action="store_true", help="no progress bar")
    f = sub.add_parser("flow", help="compute optical flow of every video into TSN/MMAction2 flow_x_/flow_y_ folders",
                       description=FLOW_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--config", required=True, help="YAML config; its data section says which videos")
    f.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.split=2")
    f.add_argument("--out", help="folder for the flow folders (default: the config's data.flow_root, where training "
                   "reads them; else train with data.flow_root=OUT)")
    f.add_argument("--algorithm", choices=["tvl1", "dis", "farneback"],
                   help="tvl1 (TSN's, slow), dis or farneback (fast); default: the config's data.flow_algorithm")
    f.add_argument("--bound", type=float, help="flow clipped to ±bound pixels (default: data.flow_bound, 20)")
    f.add_argument("--short-side", type=int, help="resize frames to this short side first (default data.short_side)")
    f.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: cores)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = sub.add_parser("prepare", help="write a copy of the dataset made for sparse training reads (short-GOP "
                       "H.264 or JPEG frames)", description=PREPARE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--config", required=True, help="YAML config of the video dataset")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.root=...")
    r.add_argument("--out", required=True, help="folder for the copy (outside the dataset's folder)")
    r.add_argument("--format", default="mp4", choices=["mp4", "frames"], dest="form",
                   help="mp4: H.264, a keyframe every --gop frames (default); frames: img_00001.jpg folders")
    r.add_argument("--short-side", type=int, default=256, help="resize the short side to this (never up; default 256)")
    r.add_argument("--gop", type=int, default=None, help="frames per keyframe (mp4; default: measured, docs/data.md)")
    r.add_argument("--crf", type=int, default=23, help="x264 constant quality (mp4; default 23, x264's; lower is "
                   "better and bigger)")
    r.add_argument("--no-fastdecode", action="store_true", help="mp4: without x264's fastdecode tune (smaller copies, "
                   "slower reads)")
    r.add_argument("--quality", type=int, default=95, help="JPEG quality (frames; default 95)")
    r.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: cores)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("synth", help="generate the synthetic action dataset (real H.264 videos, list files)")
    synth.add_arguments(s)
    s.set_defaults(_data_run=synth.run)


def _data_config(args):
    from istpan.config import load_config, validate

    flags = {"format": args.format, "root": args.root, "classes": args.classes, "split": args.split,
             "backend": args.backend}
    if args.config:
        full = load_config(args.config, args.overrides)
    elif args.format and (args.annotations or args.format == "synthetic" or (args.format == "folder" and args.root)):
        full = load_config(None, args.overrides)
    else:
        raise UserError("data check: give --config FILE, or --format and --annotations (see `istpan data check -h`)")
    cfg = full.data
    for key, value in flags.items():
        if value is not None:
            setattr(cfg, key, value)
    validate(full)  # the flags above are config fields too (--split 0, --format typo)
    if args.annotations:
        cfg.train_annotations = args.annotations
        # The UCF101 / HMDB51 split folder holds both subsets; other formats check one file unless told otherwise.
        cfg.val_annotations = args.annotations if cfg.format in ("ucf101", "hmdb51") else ""
    if args.val_annotations:
        cfg.val_annotations = args.val_annotations
    return cfg


def run_check(args) -> int:
    from istpan.data.tools.check import check_dataset, write_report
    from istpan.data.video_dataset import has_split, load_split

    cfg = _data_config(args)
    splits = {split: load_split(cfg, split) for split in ("train", "val") if has_split(cfg, split)}
    if not splits:
        raise UserError("data check: no annotations to check; set data.train_annotations / --annotations")
    total = sum(len(a.records) for a in splits.values())
    if total == 0:  # a report saying "no problems found" about zero videos would be a lie by omission
        problems = [p for a in splits.values() for p in a.problems]
        skipped = f"; {len(problems)} annotation lines skipped, first: {problems[0]}" if problems else ""
        raise UserError(f"data check: nothing to check: the annotations list no video ({', '.join(splits)}){skipped}")
    print(f"checking {total} videos ({', '.join(f'{k}: {len(v.records)}' for k, v in splits.items())}) "
          f"with {args.workers} workers", file=sys.stderr)
    from istpan.data.index import index_path_for

    index = index_path_for(cfg.index, root=cfg.root, annotations=cfg.train_annotations)
    report = check_dataset(splits, backend=cfg.backend, workers=args.workers, progress=not args.no_progress,
                           index=str(index) if index else None)
    report["dataset"] = {"format": cfg.format, "root": cfg.root, "train_annotations": cfg.train_annotations,
                         "val_annotations": cfg.val_annotations, "classes": cfg.classes, "split": cfg.split}
    json_path, _, summary = write_report(report, args.out)
    print(summary, end="")
    print(f"report: {json_path} (and summary.txt beside it)")
    return 0 if report["clean"] else 1


def run_shard(args) -> int:
    from istpan.config import load_config
    from istpan.data.tools.shards import parse_size, shard_dataset

    cfg = load_config(args.config, args.overrides)
    manifests = shard_dataset(cfg.data, out=args.out, shard_size=parse_size(args.shard_size), workers=args.workers,
                              seed=args.seed, progress=not args.no_progress)
    for split, m in manifests.items():
        print(f"{split}: {m['samples']} videos in {len(m['shards'])} shards -> {os.path.join(args.out, split)}.json"
              + (f"; {len(m['skipped'])} unreadable videos left out (listed in the manifest)" if m["skipped"] else ""))
    return 1 if any(m["skipped"] for m in manifests.values()) else 0


def run_flow(args) -> int:
    from istpan.config import load_config
    from istpan.data.tools.flow import FlowJob, extract_flow, flow_folder
    from istpan.data.video_dataset import has_split, load_split

    cfg = load_config(args.config, args.overrides).data
    videos: dict[str, None] = {}  # both splits, each video once, in order
    for split in ("train", "val"):
        if has_split(cfg, split):
            videos.update(dict.fromkeys(r.path for r in load_split(cfg, split).records))
    if not videos:
        raise UserError("data flow: no annotations; set data.train_annotations / data.val_annotations in the config")
    out = args.out or cfg.flow_root
    if not out:
        raise UserError("data flow: give --out DIR (or set data.flow_root in the config)")
    jobs = [FlowJob(v, str(flow_folder(v, root=cfg.root, out=out))) for v in videos]
    algorithm = args.algorithm or cfg.flow_algorithm
    bound = args.bound if args.bound is not None else cfg.flow_bound
    short_side = args.short_side if args.short_side is not None else (cfg.short_side or None)
    print(f"optical flow ({algorithm}, bound {bound:g}, short side {short_side}) of {len(jobs)} videos into "
          f"{out} with {args.workers} workers", file=sys.stderr)
    result = extract_flow(jobs, algorithm=algorithm, bound=bound, short_side=short_side, workers=args.workers,
                          progress=not args.no_progress)
    print(f"written {result['written']}, already done {result['skipped']}, failed {len(result['failed'])} "
          f"({result['frames']} flow frames written); train with data.modality=flow data.flow_root={out}")
    for line in result["failed"]:
        print(f"error: {line}", file=sys.stderr)
    return 1 if result["failed"] else 0


def run_prepare(args) -> int:
    from istpan.config import load_config
    from istpan.data.tools.prepare import DEFAULT_GOP, PrepareOptions, prepare_dataset

    opts = PrepareOptions(form=args.form, short_side=args.short_side, gop=DEFAULT_GOP if args.gop is None else
                          args.gop, crf=args.crf, quality=args.quality, fastdecode=not args.no_fastdecode)
    opts.check()  # before the config: a bad flag is one line whatever the config holds
    cfg = load_config(args.config, args.overrides)
    print(f"preparing into {args.out} ({opts.form}, short side {opts.short_side}"
          + (f", a keyframe every {opts.gop} frames" if opts.form == "mp4" else f", JPEG quality {opts.quality}")
          + f") with {args.workers} workers", file=sys.stderr)
    result = prepare_dataset(cfg, args.out, opts, workers=args.workers, progress=not args.no_progress)
    ratio = result["bytes_out"] / max(result["bytes_in"], 1)
    print(f"written {result['written']}, already done {result['already']}"
          f" of {result['videos']} videos; failed {len(result['failed'])}; "
          f"{result['bytes_out'] / 1e6:.1f} MB for {result['bytes_in'] / 1e6:.1f} MB of sources ({ratio:.2f}x)")
    if opts.short_side < cfg.data.short_side:
        print(f"note: the copy's short side is {opts.short_side} but data.short_side={cfg.data.short_side}: training "
              f"from it upscales; set data.short_side={opts.short_side} or prepare with --short-side "
              f"{cfg.data.short_side}", file=sys.stderr)
    if result["unlisted"]:
        print(f"note: {result['unlisted']} videos without any label are prepared but not listed (the list format "
              "cannot say 'no label')", file=sys.stderr)
    for line in result["failed"]:
        print(f"error: {line}", file=sys.stderr)
    print(f"config: {result['config']}\ntrain with: istpan train --config {result['config']}")
    return 1 if result["failed"] else 0


def run(args) -> int:
    command = getattr(args, "data_command", None)
    if command == "prepare":
        return run_prepare(args)
    if command == "check":
        return run_check(args)
    if command == "shard":
        return run_shard(args)
    if command == "flow":
        return run_flow(args)
    if command == "synth":
        return int(args._data_run(args) or 0)
    args._data_parser.print_help()
    return 2
