"""Entry point of the `istpan` command.

Sub-commands live in their own modules (`istpan/cli/<name>.py`, each with `add_parser` and `run`) and are imported
only when the parser is built, so `istpan --help` stays fast and one broken optional dependency never hides the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from istpan._version import __version__
from istpan.errors import UserError

__all__ = ["build_parser", "main"]

# Order is the order shown in `istpan --help`.
SUBCOMMANDS = ["demo", "train", "eval", "predict", "serve", "export", "data", "configs", "ablate"]

EPILOG = """examples:
  istpan demo --quick                              # synthetic data, trains IST-PAN and TSN, prints a table
  istpan data check --config configs/ucf101.yaml   # scan a dataset for broken videos
  istpan train --config configs/ucf101.yaml optim.lr=0.001
  istpan eval --checkpoint runs/ucf101/best.pt --views 2x3
  istpan predict video.mp4 --checkpoint runs/ucf101/best.pt --explain out/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="istpan",
        description="Video action classification with Interaction-aware Spatio-Temporal Pyramid Attention.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"istpan.cli.{name}").add_parser(sub)
    for command in _subparsers(parser):
        _add_global_options(command, default=argparse.SUPPRESS)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    """`--version` and `-v`, on the top parser and (with SUPPRESS) on every sub-command.

    Like git, pip and hf, `istpan predict ... -v` works as well as `istpan -v predict ...`. A sub-command's default
    is SUPPRESS so that leaving the flag off after the sub-command keeps what was given before it.
    """
    parser.add_argument("--version", action="version", version=f"istpan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="debug logging and full tracebacks")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every sub-command's parser below `parser`, nested ones (`data check`) included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                found += [child, *_subparsers(child)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
