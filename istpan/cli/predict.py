"""`istpan predict`: class names and scores for video files, with optional attention overlays or sliding windows."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run"]

EXAMPLES = """examples:
  istpan predict clip.mp4 other.avi --checkpoint runs/ucf101_split1/best.pt
  istpan predict clip.mp4 --checkpoint best.pt --topk 3 --num-segments 25 --json
  istpan predict clip.mp4 --checkpoint best.pt --explain out/          # attention overlays + HTML report
  istpan predict long.mp4 --checkpoint best.pt --window 4 --stride 2 --unit seconds   # untrimmed video
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict", help="classify video files with a checkpoint",
        description="Classify videos of any length with a trained checkpoint: K frames at the centres of K equal "
        "segments (the checkpoint's K unless --num-segments), preprocessed as stored in the checkpoint.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--checkpoint", required=True, help="a .pt file written by istpan train")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--num-segments", type=int, default=None, help="K frames per video (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--explain", metavar="OUTDIR", help="write attention overlays and a report to OUTDIR")
    p.add_argument("--levels", action="store_true", help="with --explain: also each pyramid level's attention")
    p.add_argument("--window", type=float, help="sliding-window length for untrimmed videos (see --unit)")
    p.add_argument("--stride", type=float, help="sliding-window step (default: half the window)")
    p.add_argument("--unit", choices=("frames", "seconds"), default="seconds")
    p.add_argument("--reduce", choices=("mean", "max"), default="mean", help="how window scores make a video score")
    p.set_defaults(run=run)
    return p


def _viz(module: str, name: str):
    """Functions of the visualisation package, imported only when asked for."""
    import importlib

    from istpan.errors import UserError

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise UserError(f"{module}.{name} is not available in this istpan installation ({err})") from err


def run(args: argparse.Namespace) -> int:
    from istpan.engine.checkpoint import load_model
    from istpan.engine.predict import predict_videos
    from istpan.errors import UserError

    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")
    if args.num_segments is not None and args.num_segments < 1:
        raise UserError(f"--num-segments must be >= 1, got {args.num_segments}")
    model, meta = load_model(args.checkpoint, device=args.device)

    if args.window is not None:
        sliding = _viz("istpan.viz.untrimmed", "sliding_window_predict")
        stride = args.stride if args.stride is not None else args.window / 2
        windows = [sliding(model, meta, path, window=args.window, stride=stride, unit=args.unit, reduce=args.reduce,
                           outdir=args.explain) for path in args.videos]
        if args.explain:
            _viz("istpan.viz.report", "write_report")(args.explain, windows)
        if args.json:
            print(json.dumps(windows, indent=1, default=str))
            return 0
        for w in windows:
            top = "  ".join(f"{t['label']} {t['score']:.3f}" for t in w["topk"][: args.topk])
            print(f"{w['path']}: {len(w['windows'])} windows ({args.reduce}): {top}")
            for seg in w["segments"]:
                print(f"  {seg['label']}: {seg['start_s']:.1f}s - {seg['end_s']:.1f}s (peak {seg['peak']:.3f})")
        return 0

    results = predict_videos(model, meta, args.videos, topk=args.topk, num_segments=args.num_segments)
    if args.explain:
        explain = _viz("istpan.viz.explain", "explain_videos")
        readable = [r["path"] for r in results if "error" not in r]
        explain(model, meta, readable, args.explain, levels=args.levels, topk=args.topk, num_segments=args.num_segments)
    failed = [r for r in results if "error" in r]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            if "error" in r:
                continue
            top = "  ".join(f"{t['class']} {t['score']:.3f}" for t in r["top"])
            print(f"{r['path']}: {top}")
    for r in failed:
        print(f"error: {r['error']}", file=sys.stderr)
    if args.explain:
        print(f"attention overlays written to {args.explain}", file=sys.stderr)
    return 1 if failed else 0
