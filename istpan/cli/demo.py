"""`istpan demo`: the synthetic dataset, IST-PAN vs TSN trained on it, a results table and an attention picture.

examples:
  istpan demo                      # ~4 minutes on 2 shared CPU cores; writes runs/demo/results.json
  istpan demo --quick --out /tmp/d # one-minute smoke run of the same path (numbers meaningless)
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="train IST-PAN and TSN on the built-in synthetic dataset and compare them",
        description=__doc__.split("\n\n")[0],
        epilog="\n".join(__doc__.split("\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output folder (data, checkpoints, results.json, picture)")
    p.add_argument("--quick", action="store_true", help="tiny data and one short epoch: checks the path in ~1 minute")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from istpan.experiments.demo import format_table, run_demo

    results = run_demo(args.out, quick=args.quick, seed=args.seed, progress=sys.stderr.isatty() or not args.quick)
    print(format_table(results))
    print(f"results: {args.out}/results.json ({results['elapsed_s']:.0f} s)")
    return 0
