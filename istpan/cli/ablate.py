"""`istpan ablate`: the paper's ablation table (TSN, single-scale, pyramid N, losses, R, F, d, β, γ, test K), one
budget for every row, in two regimes.

--regime pretrained: the paper's regime. The frozen ImageNet MobileNetV2 (--weights, a local file) on the cluttered
synthetic scene (small actor, textured jittering background, distractors doing other classes' motions), features
cached once, 5 seeds, 95 % intervals and paired differences to TSN and N=3, verdict per claim (docs/ablation.md).
--regime synthetic: the tiny CNN trained from scratch on the simple scene (mean ± std over seeds).

examples:
  istpan ablate --regime pretrained --weights mobilenet_v2-b0353104.pth --out runs/abl --cache /data/abl-cache
  istpan ablate --regime pretrained --weights W.pth --quick --out /tmp/abl   # smoke run, seconds
  istpan ablate --out runs/ablation --seeds 3          # the synthetic-regime table (every row trained per seed)
  istpan ablate --only "TSN" "N=3" --epochs 4          # some rows, other budget
"""

from __future__ import annotations

import argparse
import dataclasses

from istpan.errors import UserError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ablate",
        help="reproduce the paper's ablations on the synthetic dataset (writes ablation.md + ablation.json)",
        description=__doc__.split("\n\n")[0],
        epilog="\n".join(__doc__.split("\n")[3:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--regime", choices=("synthetic", "pretrained", "finetune"), default="synthetic",
                   help="pretrained: frozen ImageNet MobileNetV2 on the cluttered scene (needs --weights); finetune: "
                   "the main rows with the whole backbone trained (partial BN) on the data in --cache")
    p.add_argument("--per-class", type=int,
                   help="finetune: training videos per class (default 96; the backbone's backward is the cost)")
    p.add_argument("--val-per-class", type=int,
                   help="finetune: validation videos per class of the per-epoch curve (default 32; the final "
                   "evaluation of the last checkpoint always takes every validation video)")
    p.add_argument("--train-num-frames", "--train-segments", type=int, dest="train_segments",
                   help="finetune: K while training (default 4; tested at K = 8)")
    p.add_argument("--lr", type=float, help="finetune: lr of the new layers (default 1e-3)")
    p.add_argument("--backbone-lr-mult", type=float, help="finetune: the backbone's lr relative to --lr (default 0.01)")
    p.add_argument("--weights", help="ImageNet MobileNetV2 checkpoint (torchvision's mobilenet_v2-b0353104.pth)")
    p.add_argument("--cache", help="pretrained regime: folder for the generated data and cached features "
                   "(default: --out; about 3 GB for the full run)")
    p.add_argument("--processes", type=int, default=1,
                   help="pretrained / finetune regimes: rows trained at once, one thread each (default 1; on a "
                   "busy 2-core CPU, 2 processes of 1 thread beat 1 of 2 threads several times over)")
    p.add_argument("--out", default="runs/ablation", help="output folder (data, runs, ablation.md, ablation.json)")
    p.add_argument("--seeds", type=int, help="seeds per row (default 3; 5 in the pretrained regime)")
    p.add_argument("--quick", action="store_true", help="tiny data and one short epoch per row: checks the path")
    p.add_argument("--only", nargs="+", metavar="PREFIX", help="run only the rows whose name starts with PREFIX")
    p.add_argument("--epochs", type=int, help="override the per-row epoch budget")
    p.add_argument("--num-videos", type=int, help="override the number of synthetic videos per seed")
    p.add_argument("--beta", type=float, default=0.1, help="weight of l_interactive in the rows that use it")
    p.add_argument("--gamma", type=float, default=0.01, help="weight of l_attn in the rows that use it")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from istpan.experiments.ablation import ABLATION, QUICK_ABLATION, format_markdown, run_ablation

    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: need at least one seed")
    if args.regime == "pretrained":
        return _run_pretrained(args)
    if args.regime == "finetune":
        return _run_finetune(args)
    args.seeds = args.seeds or 3
    budget = QUICK_ABLATION if args.quick else ABLATION
    if args.epochs is not None:
        budget = dataclasses.replace(budget, epochs=args.epochs)
    if args.num_videos is not None:
        budget = dataclasses.replace(budget, num_videos=args.num_videos)
    result = run_ablation(
        args.out,
        seeds=args.seeds,
        budget=budget,
        only=args.only,
        beta=args.beta,
        gamma=args.gamma,
        progress=not args.quick,
    )
    print(format_markdown(result))
    print(f"written: {args.out}/ablation.md, {args.out}/ablation.json")
    return 0


def _run_pretrained(args: argparse.Namespace) -> int:
    from istpan.experiments.pretrained_ablation import PRETRAINED, QUICK_PRETRAINED, run_pretrained_ablation
    from istpan.experiments.pretrained_report import format_markdown

    if not args.weights:
        raise UserError("--regime pretrained needs --weights PATH (ImageNet MobileNetV2, mobilenet_v2-b0353104.pth)")
    setup = QUICK_PRETRAINED if args.quick else PRETRAINED
    if args.epochs is not None:
        setup = dataclasses.replace(setup, budget=dataclasses.replace(setup.budget, epochs=args.epochs))
    if args.num_videos is not None:
        setup = dataclasses.replace(setup, num_videos=args.num_videos)
    result = run_pretrained_ablation(
        args.out, pretrained=args.weights, cache_dir=args.cache, seeds=args.seeds or (2 if args.quick else 5),
        setup=setup, only=args.only, beta=args.beta, gamma=args.gamma, processes=args.processes,
        progress=not args.quick,
    )
    print(format_markdown(result))
    print(f"written: {args.out}/pretrained_ablation.md, {args.out}/pretrained_ablation.json")
    return 0


def _run_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from istpan.data.tools import synth
    from istpan.experiments.finetune import FINETUNE, QUICK_FINETUNE, run_finetune

    if not args.weights:
        raise UserError("--regime finetune needs --weights PATH (ImageNet MobileNetV2, mobilenet_v2-b0353104.pth)")
    setup = QUICK_FINETUNE if args.quick else FINETUNE
    changes = {"epochs": args.epochs, "train_per_class": args.per_class, "curve_per_class": args.val_per_class,
               "train_segments": args.train_segments, "lr": args.lr, "backbone_lr_mult": args.backbone_lr_mult}
    setup = dataclasses.replace(setup, **{k: v for k, v in changes.items() if v is not None})
    data = Path(args.cache or args.out) / "data"
    if args.quick:  # a tiny cluttered set of its own: the smoke run checks the path, not the numbers
        data = synth.generate(Path(args.out) / "data", seed=13, num_videos=32, size=64, num_frames=8,
                              scene="cluttered")
    run_finetune(Path(args.out) / "finetune", data_root=data, pretrained=args.weights,
                 seeds=args.seeds or (1 if args.quick else 3), setup=setup,
                 rows=tuple(args.only) if args.only else None, processes=args.processes, progress=not args.quick)
    print((Path(args.out) / "finetune" / "finetune.md").read_text())
    print(f"written: {args.out}/finetune/finetune.md, {args.out}/finetune/finetune.json")
    return 0
