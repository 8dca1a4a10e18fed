"""`istpan train`: train a model from a YAML config plus dotted overrides."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]

EXAMPLES = """examples:
  istpan train --config configs/ucf101.yaml model.pretrained=weights/bn_inception.pth
  istpan train --config configs/hmdb51.yaml data.split=2 train.out_dir=runs/hmdb51_s2
  istpan train --config configs/synthetic.yaml train.epochs=3 optim.lr=1e-3 train.amp=bf16
  istpan train --config runs/ucf101_split1/config.yaml           # auto-resumes from runs/.../last.pt
  torchrun --nproc_per_node 4 -m istpan.cli.main train --config configs/ucf101.yaml   # DDP
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a model (config file + key=value overrides)",
        description="Train a model. Defaults live in istpan/config.py, the YAML file goes on top, key=value overrides "
        "last. The resolved config, metrics.jsonl, TensorBoard logs and last.pt/best.pt go to train.out_dir.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.001")
    p.add_argument("--resume", default="auto",
                   help="auto (continue from <out_dir>/last.pt if present, default), never, or a checkpoint path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or epoch lines")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from istpan.config import load_config
    from istpan.runtime.distributed import cleanup_distributed
    from istpan.training.train import train

    cfg = load_config(args.config, args.overrides)
    try:
        result = train(cfg, resume=args.resume, progress=not args.no_progress)
    finally:
        cleanup_distributed()
    if not args.no_progress:
        best = ""
        if result["best"] is not None:
            best = f"best {result['metric']} {result['best']:.2f} (epoch {result['best_epoch']}), "
        print(f"done: {best}checkpoints in {result['run_dir']}")
        if result["unreadable"]:
            print(f"skipped {len(result['unreadable'])} unreadable videos (each named once above; "
                  "`istpan data check` lists every problem)")
    return 0
