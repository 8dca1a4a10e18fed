"""`istpan configs`: the configs shipped with istpan, usable by name from any directory.

    istpan configs                        # name, what it is for, where the file is
    istpan train --config ucf101          # same as --config <that file>
    istpan configs --show ucf101 > my.yaml   # copy one to edit
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("configs", help="list the packaged configs (use them by name: --config ucf101)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--show", metavar="NAME", help="print one config's YAML (to copy and edit)")
    p.set_defaults(run=run)


def run(args) -> int:
    from istpan.config import packaged_config_summary, packaged_configs, resolve_config

    if args.show:
        print(resolve_config(args.show).read_text(), end="")
        return 0
    shipped = packaged_configs()
    width = max(map(len, shipped), default=0)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {packaged_config_summary(path)}")
    folder = next(iter(shipped.values())).parent if shipped else "?"
    print(f"\nuse one by name (istpan train --config {next(iter(shipped), 'NAME')} key=value ...); files in {folder}")
    return 0
