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
    p.add_argument("--per-class", type=int, default=64,
                   help="finetune: training videos per class (default 64; the backbone's backward is the cost)")
    p.add_argument("--weights", help="ImageNet MobileNetV2 checkpoint (torchvision's mobilenet_v2-b0353104.pth)")
    p.add_argument("--cache", help="pretrained regime: folder for the generated data and cached features "
                   "(default: --out; about 3 GB for the full run)")
    p.add_argument("--processes", type=int, default=1,
                   help="pretrained regime: rows trained at once, one thread each (default 1)")
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

    from istpan.experiments.finetune import run_finetune

    if not args.weights:
        raise UserError("--regime finetune needs --weights PATH (ImageNet MobileNetV2, mobilenet_v2-b0353104.pth)")
    data = Path(args.cache or args.out) / "data"
    if not (data / "ground_truth.json").is_file():
        raise UserError(f"{data}: no cluttered dataset here; run --regime pretrained with the same --cache first")
    result = run_finetune(Path(args.out) / "finetune", data_root=data, pretrained=args.weights,
                          seeds=args.seeds or 1, epochs=args.epochs or 4, train_per_class=args.per_class,
                          rows=tuple(args.only) if args.only else None)
    for r in result["runs"]:
        curve = " ".join(f"{v:.1f}" for v in r["curve"] if v is not None)
        print(f"{r['name']} (seed {r['seed']}): top-1 {r['top1']:.1f}; curve {curve}; {r['seconds'] / 60:.1f} min")
    print(f"written: {args.out}/finetune/finetune.json")
    return 0
