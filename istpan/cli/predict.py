"""`istpan predict`: class names and scores for video files, with optional attention overlays or sliding windows.

Parses and calls: every mode is a method of `istpan.inference.predictor.Predictor` (whole videos, --explain, --window,
--max-frames/--confidence, --list, --stream; several --checkpoint: `predict_fused`), with one result schema
(`istpan.inference.results`). In every mode a video that cannot be read is reported on its own line and the others
are still predicted; the exit status is 1 when any video failed.
"""

from __future__ import annotations

import argparse
import json
import sys

from istpan.cli.output import STDOUT, add_device_option, add_json_option, check_json_target, pick_device, write_json

__all__ = ["add_parser", "run"]

EXAMPLES = """examples:
  istpan predict clip.mp4 other.avi --checkpoint runs/ucf101_split1/best.pt
  istpan predict clip.mp4 --checkpoint runs/ucf101_split1 --topk 3 --num-frames 25 --json -   # a run folder; JSON
  istpan predict a.mp4 b.avi --checkpoint best.pt --json preds.json    # the text on screen, the results in a file
  istpan predict clip.mp4 --checkpoint best.pt --explain out/          # attention overlays + HTML report
  istpan predict rawframes/v_Archery_g01_c01 --checkpoint best.pt --backend frames   # a folder of frame images
  istpan predict long.mp4 --checkpoint best.pt --window 4 --stride 2 --unit seconds   # untrimmed video
  istpan predict clip.mp4 --checkpoint rgb.pt --checkpoint flow.pt --fuse-weights 1 1.5   # RGB + flow late fusion
  istpan predict --list videos.txt --out preds.jsonl --checkpoint best.pt   # millions of videos, resumable
  torchrun --nproc_per_node 4 -m istpan.cli.main predict --list videos.txt --out preds.jsonl --checkpoint best.pt
  istpan predict clip.mp4 --checkpoint best.pt --max-frames 8 --confidence 0.4    # anytime: stop when clear
  istpan predict clip.mp4 --checkpoint best.pt --max-frames 8 --confidence 0.9,0.9,0.2,2,2,2,0   # one per step
  istpan predict clip.mp4 --checkpoint best.pt --confidence anytime.json   # from `istpan eval --anytime --json`
  istpan predict --stream rtsp://camera/live --checkpoint best.pt --sample-fps 8     # one JSON line per decision
  istpan predict --stream /dev/video0 --checkpoint best.pt --every-seconds 1
  ffmpeg -i in.mp4 -f mpegts - | istpan predict --stream - --checkpoint best.pt
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict", help="classify video files with a checkpoint",
        description="Classify videos of any length with a trained checkpoint: K frames at the centres of K equal "
        "segments (the checkpoint's K unless --num-frames), preprocessed as stored in the checkpoint.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", nargs="*", metavar="VIDEO")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a .pt file written by istpan train, or a model folder / Hub repo id (export --format hf); "
                   "give it twice or more to fuse the models' scores (e.g. RGB and flow, docs/flow.md)")
    p.add_argument("--fuse-weights", type=float, nargs="+", metavar="W",
                   help="with several --checkpoint: one weight each, in order (default equal; RGB + flow: 1 1.5)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--num-frames", type=int, default=None, dest="num_frames",
                   help="K frames per video, or per window with --window (default: the checkpoint's)")
    p.add_argument("--num-segments", "--segments", type=int, dest="num_frames", help=argparse.SUPPRESS)  # old names
    add_json_option(p, "the results (one dict per video)")
    add_device_option(p)
    p.add_argument("--backend", choices=("pyav", "opencv", "frames"), help="how VIDEO paths are decoded: frames reads "
                   "a folder of extracted frame images (img_00001.jpg, ...); default: the checkpoint's data.backend")
    p.add_argument("--explain", metavar="OUTDIR", help="write attention overlays and a report to OUTDIR")
    p.add_argument("--levels", action="store_true", help="with --explain: also each pyramid level's attention")
    p.add_argument("--window", type=float, help="sliding-window length for untrimmed videos (see --unit)")
    p.add_argument("--stride", type=float, help="with --window: sliding-window step (default: half the window)")
    p.add_argument("--unit", choices=("frames", "seconds"), default="seconds")
    p.add_argument("--reduce", choices=("mean", "max"), default="mean", help="how window scores make a video score")
    b = p.add_argument_group("batch inference over a list (docs/scale.md)")
    b.add_argument("--list", metavar="FILE", help="a file with one video path per line (streamed); needs --out")
    b.add_argument("--out", metavar="JSONL", help="with --list: predictions, one JSON line per video; a rerun "
                   "skips the videos already there")
    b.add_argument("--root", default="", help="with --list: folder the listed paths are relative to")
    b.add_argument("--workers", type=int, default=2, help="with --list: decoding processes per rank")
    b.add_argument("--batch-size", type=int, default=8, help="with --list: videos per forward pass")
    a = p.add_argument_group("anytime (fewer frames)")
    a.add_argument("--max-frames", type=int, help="look at up to N frames, coarse to fine (see --frame-order)")
    a.add_argument("--confidence", type=_margins, metavar="X|X1,...|FILE",
                   help="stop once the top-1 margin p1 - p2 after n frames reaches X, or X_n of a comma list "
                   "X_1,...,X_{N-1} (one per step; above 1: never stop there), both with --max-frames; or FILE, "
                   "written by `istpan eval --anytime --json FILE` (its thresholds, N, order): docs/latency.md")
    a.add_argument("--frame-order", choices=("spread", "dyadic"),
                   help="the order frames are taken in: spread (default: every prefix covers the whole video) or "
                   "dyadic (middle, quarters, eighths); a calibration FILE brings its own")
    s = p.add_argument_group("live streams")
    s.add_argument("--stream", metavar="SOURCE", help="classify a stream: a file, /dev/videoN, an rtsp/http URL or - "
                   "(an encoded stream on stdin); prints one JSON line per decision")
    s.add_argument("--sample-fps", type=float, help="frames per second fed to the backbone (default: every frame)")
    s.add_argument("--every-frames", type=int, default=1, help="a decision every N sampled frames (default 1)")
    s.add_argument("--every-seconds", type=float, help="a decision every S seconds of stream time instead")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds without data before a stream is given up")
    p.set_defaults(run=run)
    return p


def _run_list(args: argparse.Namespace) -> int:
    """--list: the Predictor does the work (istpan.inference.batch); this only checks flags and reports."""
    import torch

    from istpan.errors import UserError
    from istpan.inference.predictor import Predictor
    from istpan.runtime.distributed import cleanup_distributed, init_distributed, is_main_process

    if args.videos or args.explain or args.window is not None:
        raise UserError("--list predicts the listed videos: give no VIDEO arguments, --explain or --window with it")
    if not args.out:
        raise UserError("--list needs --out FILE.jsonl (where predictions are appended; reruns resume from it)")
    if args.workers < 0 or args.batch_size < 1:
        raise UserError("--workers must be >= 0 and --batch-size >= 1")
    device = torch.device(args.device)
    distributed = init_distributed(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=device, num_frames=args.num_frames,
                                              backend=args.backend)
        summary = predictor.predict_list(args.list, args.out, root=args.root, topk=args.topk,
                                         batch_size=args.batch_size, workers=args.workers)
    finally:
        cleanup_distributed()
    if is_main_process() or not distributed:
        rate = summary["predicted"] / max(summary["seconds"], 1e-9)
        print(f"{summary['predicted']} videos predicted ({rate:.1f} videos/s), {summary['failed']} failed "
              f"(recorded with their error), {summary['skipped_done']} already in {args.out}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _print_windows(results: list[dict], reduce: str, topk: int) -> None:
    for w in results:
        if "error" in w:
            continue
        top = _top_line(w["top"][:topk])
        print(f"{w['path']}: {len(w['windows'])} windows ({reduce}): {top}")
        for seg in w["segments"]:
            print(f"  {seg['class']}: {seg['start_s']:.1f}s - {seg['end_s']:.1f}s (peak {seg['peak']:.3f})")


def _stream(args: argparse.Namespace) -> int:
    """One JSON line per decision on stdout (flushed); a summary line on stderr at the end or on Ctrl-C."""
    from istpan.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, num_frames=args.num_frames)
    every_frames = None if args.every_seconds is not None else args.every_frames
    decisions, how = 0, "end of stream"
    try:
        for decision in predictor.stream(args.stream, every_frames=every_frames, every_seconds=args.every_seconds,
                                         sample_fps=args.sample_fps, timeout_s=args.timeout, topk=args.topk):
            print(json.dumps(decision), flush=True)
            decisions += 1
    except KeyboardInterrupt:
        how = "stopped (Ctrl-C)"
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        sys.stderr.close()
        return 0
    print(f"{args.stream}: {how} after {decisions} decisions", file=sys.stderr)
    return 0


def _top_line(top: list[dict]) -> str:
    """`label 0.912  other 0.051`: the one-line top-k every mode prints."""
    return "  ".join(f"{t['class']} {t['score']:.3f}" for t in top)


def _exit_code(results: list[dict]) -> int:
    """The `N of M videos failed` line every whole-video mode ends with; exit code 1 when any failed."""
    failed = sum("error" in r for r in results)
    if failed:
        print(f"{failed} of {len(results)} videos failed", file=sys.stderr)
    return 1 if failed else 0


def _fused(args: argparse.Namespace) -> list[dict]:
    """Late fusion of several checkpoints' scores, whole videos only."""
    from istpan.errors import UserError
    from istpan.inference.predictor import Predictor, predict_fused

    if len(args.checkpoint) < 2:
        raise UserError("--fuse-weights needs two or more --checkpoint (late fusion of their scores)")
    if args.list or args.stream or args.window is not None or args.explain or args.max_frames is not None \
            or args.confidence is not None:
        raise UserError("several --checkpoint fuse whole-video predictions only: not with --list, --stream, --window, "
                        "--explain or --max-frames")
    if not args.videos:
        raise UserError("give at least one VIDEO")
    predictors = [Predictor.from_checkpoint(c, device=args.device, num_frames=args.num_frames, backend=args.backend)
                  for c in args.checkpoint]
    return predict_fused(predictors, args.videos, weights=args.fuse_weights, topk=args.topk, names=args.checkpoint)


def _margins(text: str) -> float | list[float] | str:
    """--confidence: one number, a comma list (one threshold per number of frames seen), or a calibration file's path
    (anything that is not numbers; the engine reads it and says what is wrong with it)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return text
    return values[0] if len(values) == 1 else values


def _check(args: argparse.Namespace, anytime: bool) -> None:
    """The flag combinations refused before any file is read."""
    from istpan.errors import UserError

    if args.num_frames is not None and args.num_frames < 1:
        raise UserError(f"--num-frames must be >= 1, got {args.num_frames}")
    if args.stream is not None:
        if args.videos or args.window is not None or args.explain or anytime:
            raise UserError("--stream takes no VIDEO, --window, --explain or --max-frames: it classifies one source")
        if args.backend not in (None, "pyav"):
            raise UserError(f"--stream decodes a live source with PyAV: --backend {args.backend} is for VIDEO paths "
                            "(a folder of frames: istpan predict FOLDER --backend frames)")
        return
    if not args.videos:
        raise UserError("give at least one VIDEO, or --list FILE --out FILE.jsonl, or --stream SOURCE")
    if args.confidence is not None and args.max_frames is None and not isinstance(args.confidence, str):
        raise UserError("--confidence with numbers needs --max-frames (anytime prediction); a calibration file "
                        "brings its own")
    if args.frame_order is not None and not anytime:
        raise UserError("--frame-order needs --max-frames or --confidence (anytime prediction)")
    if anytime and (args.window is not None or args.explain):
        raise UserError("--max-frames / --confidence work on whole videos: not with --window or --explain")
    if args.stride is not None and args.window is None:
        raise UserError("--stride needs --window (sliding windows); without --window the whole video is one clip")
    if args.window is not None:
        from istpan.inference.windows import check_window_args

        check_window_args(window=args.window, stride=args.stride, unit=args.unit, reduce=args.reduce)


def _videos(args: argparse.Namespace, anytime: bool) -> list[dict]:
    """Whole videos, windows, anytime or explain of one checkpoint, through its Predictor."""
    from istpan.errors import UserError
    from istpan.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, num_frames=args.num_frames,
                                          backend=args.backend)
    pre = predictor.preprocessing
    if pre.backend == "frames" and args.window is not None and args.unit == "seconds":
        raise UserError("a folder of frames has no frame rate: give --window (and --stride) in frames, --unit frames")
    if pre.modality != "rgb" and (args.explain or args.window is not None or anytime):
        raise UserError(f"{args.checkpoint}: a {pre.modality} checkpoint predicts whole videos (and --list); "
                        "--explain, --window and --max-frames take RGB checkpoints (docs/flow.md)")
    if anytime:
        return predictor.predict_anytime(args.videos, max_frames=args.max_frames, confidence=args.confidence,
                                         order=args.frame_order, topk=args.topk)
    if args.window is not None:
        return predictor.predict_windows(args.videos, window=args.window, stride=args.stride, unit=args.unit,
                                         reduce=args.reduce, topk=args.topk, outdir=args.explain)
    # one video per forward pass, as before: the scores are those of `predict_videos` bit for bit
    return predictor.predict_videos(args.videos, topk=args.topk, explain=args.explain, levels=args.levels)


def _print(args: argparse.Namespace, results: list[dict]) -> None:
    """--json - (or bare --json): one JSON document alone on stdout; else one line per video (windows: their segments
    too), and with --json FILE the document written to FILE."""
    if args.json == STDOUT:
        write_json(results, STDOUT)
        return
    if args.window is not None:
        _print_windows(results, args.reduce, args.topk)
    else:
        for r in results:
            if "error" not in r:
                used = f"  ({r['num_frames']} of {r['max_frames']} frames)" if "max_frames" in r else ""
                print(f"{r['path']}: {_top_line(r['top'])}{used}")
    if args.json is not None:
        print(f"wrote {write_json(results, args.json)}")


def run(args: argparse.Namespace) -> int:
    from istpan.errors import UserError

    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")
    check_json_target(args.json)
    args.device = pick_device(args.device)
    if len(args.checkpoint) > 1 or args.fuse_weights:
        results = _fused(args)
    else:
        args.checkpoint = args.checkpoint[0]
        if args.list:
            return _run_list(args)
        anytime = args.max_frames is not None or args.confidence is not None
        _check(args, anytime)
        if args.stream is not None:
            return _stream(args)
        results = _videos(args, anytime)
    _print(args, results)
    for r in results:
        if "error" in r:
            print(f"error: {r['error']}", file=sys.stderr)
    if args.explain:
        print(f"report written to {args.explain}/index.html", file=sys.stderr)
    return _exit_code(results)
