"""`istpan ablate`: the paper's ablation table (TSN, single-scale, pyramid N, losses, R, F, test K, untrimmed) on the
synthetic dataset, mean ± std over seeds, one budget for every row.

examples:
  istpan ablate --out runs/ablation --seeds 3          # the whole table (long: every row is trained per seed)
  istpan ablate --quick --out /tmp/abl                 # tiny smoke run of every row (numbers meaningless)
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
    p.add_argument("--out", default="runs/ablation", help="output folder (data, runs, ablation.md, ablation.json)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per row (each with its own generated data)")
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

    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: need at least one seed")
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
