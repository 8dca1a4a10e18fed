"""`istpan eval`: multi-clip x multi-crop evaluation of a checkpoint on its validation set.

Prints the metrics and the confusion matrix (single-label; the most frequent confusions when there are more than
`_MAX_PRINTED` classes); `--json FILE` writes every number to FILE and the matrix as a PNG beside it, `--json -`
prints the JSON alone on stdout (the text then goes to stderr), as `predict --json` does.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from istpan.cli.output import STDOUT, add_json_option, check_json_target, text_stream, write_json

__all__ = ["add_parser", "run"]

_MAX_PRINTED = 20  # classes up to which the whole matrix fits a terminal

EXAMPLES = """examples:
  istpan eval --checkpoint runs/ucf101_split1/best.pt                      # 1 clip x 1 crop
  istpan eval --checkpoint runs/ucf101_split1/best.pt --views 2x3 data.test_num_frames=25
  istpan eval --checkpoint runs/charades/best.pt --json charades_eval.json  # mAP / wAP, per-class AP
  istpan eval --checkpoint best.pt --json eval.json    # + eval.confusion.png (single-label datasets)
  istpan eval --checkpoint best.pt data.root=/mnt/ucf101/UCF-101           # data moved since training
  istpan eval --checkpoint rgb/best.pt --checkpoint flow/best.pt --fuse-weights 1 1.5   # two-stream late fusion
  istpan eval --checkpoint best.pt --anytime --max-loss 1.0 --json anytime.json   # then predict --confidence FILE
  istpan eval --checkpoint best.pt --anytime data.val_annotations=heldout.txt   # calibrate on other videos
  istpan eval --checkpoint best.pt --anytime --rule margin --z 0 --json anytime.json   # the margin rule, point loss
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint (top-1/top-5/mean class acc, or mAP/wAP)",
        description="Evaluate a checkpoint on the validation split of the dataset it was trained on (from the config "
        "stored in the checkpoint; change it with key=value overrides). Scores of all views are averaged per video.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a .pt file written by istpan train, or a model folder / Hub repo id (export --format hf); "
                   "give it twice or more for late fusion of the models' scores (e.g. RGB and flow, docs/flow.md)")
    p.add_argument("--fuse-weights", type=float, nargs="+", metavar="W",
                   help="one weight per --checkpoint, in order (default equal; TSN's RGB + flow: 1 1.5)")
    p.add_argument("--views", default="1x1", help="CLIPSxCROPS, e.g. 1x1, 2x3, 10x1 (crops: 1, 3 or 10)")
    p.add_argument("--batch-size", type=int, default=None, help="videos per batch (default: the training batch size)")
    add_json_option(p, "all metrics (confusion matrix / per-class AP included; with FILE also the matrix as "
                    "<FILE stem>.confusion.png beside it)")
    a = p.add_argument_group("anytime calibration (docs/latency.md)")
    a.add_argument("--anytime", action="store_true", help="calibrate anytime inference instead: the stopping rule "
                   "with the fewest mean frames whose loss bound stays within --max-loss of fixed K = N; prints "
                   "accuracy vs frames (fixed K = 1..N and the rule) and, with --json FILE, writes what predict "
                   "--confidence FILE reads")
    a.add_argument("--rule", choices=("gain", "margin"),
                   help="with --anytime: gain (default): stop when the top-1 gain of waiting for all N frames, "
                   "predicted by a per-step model fit on these videos, is <= one threshold; margin: stop when the "
                   "top-1 margin p1 - p2 reaches a per-step threshold (docs/latency.md)")
    a.add_argument("--z", type=float, help="with --anytime: keep loss + Z standard errors within --max-loss, "
                   "not the loss itself (default 2; 1 stops earlier on a small validation set at more risk; 0: the "
                   "point estimate)")
    a.add_argument("--max-loss", type=float, default=1.0, help="with --anytime: top-1 points the rule may lose vs "
                   "fixed K = N (default 1)")
    a.add_argument("--max-frames", type=int, help="with --anytime: N, the most frames per video (default: the "
                   "checkpoint's K)")
    a.add_argument("--frame-order", choices=("spread", "dyadic"), default="spread",
                   help="with --anytime: the order frames are taken in (default spread)")
    a.add_argument("--no-fixed-k", action="store_true", help="with --anytime: skip evaluating fixed K = 1..N "
                   "(N more passes over the split, for comparison only)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=...")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from istpan.errors import UserError
    from istpan.evaluation.evaluate import evaluate_checkpoint
    from istpan.evaluation.fusion import evaluate_fused

    check_json_target(args.json)
    if args.anytime:
        return _anytime(args)
    if args.max_frames is not None or args.no_fixed_k or args.rule is not None or args.z is not None:
        raise UserError("--max-frames, --no-fixed-k, --rule and --z go with --anytime (calibration of anytime "
                        "inference)")
    if len(args.checkpoint) > 1:
        result = evaluate_fused(args.checkpoint, weights=args.fuse_weights, views=args.views,
                                batch_size=args.batch_size, overrides=args.overrides, progress=sys.stderr.isatty())
    elif args.fuse_weights:
        raise UserError("--fuse-weights needs two or more --checkpoint (late fusion of their scores)")
    else:
        result = evaluate_checkpoint(args.checkpoint[0], views=args.views, batch_size=args.batch_size,
                                     overrides=args.overrides, progress=sys.stderr.isatty())
    if result is None:  # another DDP rank: the main process prints
        return 0
    class_names = result["class_names"]
    result.pop("videos", None)
    with contextlib.redirect_stdout(text_stream(args.json)):  # --json -: the JSON alone on stdout
        _print_metrics(args, result, class_names)
    if args.json == STDOUT:
        write_json(result, STDOUT)
    elif args.json:
        print(f"wrote {write_json(result, args.json)}")
        if result.get("confusion"):
            from istpan.viz.confusion import plot_confusion

            png = Path(args.json).with_suffix(".confusion.png")
            plot_confusion(result["confusion"], class_names, png,
                           title=f"{', '.join(Path(c).name for c in args.checkpoint)}, views {args.views}")
            print(f"wrote {png}")
    return 0


def _print_metrics(args: argparse.Namespace, result: dict, class_names: list[str]) -> None:
    """The metrics as text: per stream (late fusion), the summary line, the confusions."""
    for stream, weight in zip(result.get("streams", []), result.get("fuse_weights", [])):
        metric = (f"mAP {stream['mAP']:.2f}" if result["multi_label"] else
                  f"top1 {stream['top1']:.2f}  top5 {stream['top5']:.2f}")
        print(f"{stream['checkpoint']} (weight {weight:g}): {metric}  videos {stream['num_videos']}")
    if "streams" in result:
        print("late fusion:")
    if result["multi_label"]:
        print(f"mAP {result['mAP']:.2f}  wAP {result['wAP']:.2f}  "
              f"(classes without positives: {result['classes_without_positives']}, left out of mAP)")
    else:
        print(f"top1 {result['top1']:.2f}  top5 {result['top5']:.2f}  mean class acc {result['mean_class_acc']:.2f}")
    print(f"videos {result['num_videos']}  skipped {result['skipped']} (failed to decode)  views {args.views}")
    if result.get("confusion"):
        print(_confusion_text(result["confusion"], class_names, json_given=args.json not in (None, STDOUT)))


def _anytime(args: argparse.Namespace) -> int:
    """--anytime: calibrate, print the table, write the file `predict --confidence FILE` reads."""
    from istpan.errors import UserError
    from istpan.evaluation.calibration import DEFAULT_RULE, DEFAULT_Z, calibrate_checkpoint, format_report

    if len(args.checkpoint) > 1 or args.fuse_weights or args.views != "1x1":
        raise UserError("--anytime calibrates one checkpoint with one view: not with several --checkpoint, "
                        "--fuse-weights or --views")
    if args.json == STDOUT:
        raise UserError("--anytime --json writes the calibration file that predict --confidence reads: give a FILE "
                        "(.json), not -")
    cal = calibrate_checkpoint(args.checkpoint[0], max_frames=args.max_frames, max_loss=args.max_loss,
                               order=args.frame_order, fixed_k=not args.no_fixed_k, batch_size=args.batch_size,
                               overrides=args.overrides, progress=sys.stderr.isatty(),
                               rule=DEFAULT_RULE if args.rule is None else args.rule,
                               z=DEFAULT_Z if args.z is None else args.z)
    print(format_report(cal))
    if args.json:
        print(f"wrote {cal.save(args.json)}: istpan predict VIDEO --checkpoint {args.checkpoint[0]} "
              f"--confidence {args.json}")
    elif cal.rule == "gain":
        print("the gain rule's model lives in the calibration file: rerun with --json FILE, then "
              f"istpan predict VIDEO --checkpoint {args.checkpoint[0]} --confidence FILE")
    else:
        print(f"use: istpan predict VIDEO --checkpoint {args.checkpoint[0]} --max-frames {cal.max_frames} "
              f"--frame-order {cal.frame_order} --confidence {','.join(f'{t:g}' for t in cal.thresholds)}")
    return 0


def _confusion_text(confusion: list[list[int]], class_names: list[str], *, json_given: bool) -> str:
    """The matrix as a table (rows = true class, columns = predicted class number), or its largest off-diagonal
    cells when there are too many classes for a terminal."""
    c = len(confusion)
    if c > _MAX_PRINTED:
        cells = sorted(((n, i, j) for i, row in enumerate(confusion) for j, n in enumerate(row) if i != j and n),
                       reverse=True)[:10]
        pairs = ", ".join(f"{class_names[i]} -> {class_names[j]} ({n})" for n, i, j in cells) or "none"
        where = "in the --json file and its .confusion.png" if json_given else "with --json FILE (+ a PNG beside it)"
        return f"most frequent confusions (true -> predicted): {pairs}\nfull {c}x{c} confusion matrix {where}"
    width = max(3, len(str(max(max(row) for row in confusion))) + 1, len(str(c - 1)) + 1)
    label = max(len(n) for n in class_names) + len(str(c - 1)) + 1
    lines = ["confusion matrix (rows: true class, columns: predicted class number)",
             " " * label + "".join(f"{j:>{width}}" for j in range(c))]
    for i, row in enumerate(confusion):
        lines.append(f"{i:>{len(str(c - 1))}} {class_names[i]:<{label - len(str(c - 1)) - 1}}"
                     + "".join(f"{n:>{width}}" for n in row))
    return "\n".join(lines)

