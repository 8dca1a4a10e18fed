"""Options every command means the same way: `--json [FILE]` and `--device auto|cpu|cuda[:N]`.

`--json FILE` writes the command's JSON document to FILE; `-` (or `--json` with nothing after it) writes it to stdout,
alone, so that `istpan eval ... --json - | jq` and `istpan predict ... --json -` parse; the human-readable text then
goes to stderr. FILE must end in .json: `--json` takes an optional value, so `predict --json a.mp4 b.mp4` would
otherwise read a.mp4 as FILE and write over the video.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["STDOUT", "add_device_option", "add_json_option", "check_json_target", "pick_device", "text_stream",
           "write_json"]

STDOUT = "-"


def add_json_option(parser: argparse.ArgumentParser | Any, what: str) -> None:
    parser.add_argument("--json", nargs="?", const=STDOUT, metavar="FILE",
                        help=f"write {what} as JSON to FILE (.json), or to stdout with - or no FILE (the text then "
                        "goes to stderr)")


def check_json_target(target: str | None) -> None:
    """One UserError line for a --json value that is not `-` or a .json file (see the module docstring)."""
    from istpan.errors import UserError

    if target is None or target == STDOUT or target.lower().endswith(".json"):
        return
    raise UserError(f"--json {target}: FILE must end in .json (or be - for stdout); to print JSON put --json after "
                    "the other arguments or write --json -")


def write_json(document: Any, target: str) -> str:
    """Write `document` to `target` (a path, or `-` for stdout); returns what was written, for a 'wrote' line."""
    text = json.dumps(document, indent=1, default=_plain)
    if target == STDOUT:
        print(text, flush=True)
        return "stdout"
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return str(path)


def _plain(value: Any) -> Any:
    """numpy / torch scalars as numbers, anything else as its string."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def text_stream(target: str | None):
    """Where the human-readable text goes: stderr when the JSON takes stdout."""
    return sys.stderr if target == STDOUT else sys.stdout


def add_device_option(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("--device", default="auto", help="auto (a GPU when one is visible, else the CPU; what "
                        "training does), cpu, cuda or cuda:N")


def pick_device(name: str) -> str:
    """`auto` -> "cuda" when CUDA is visible, else "cpu"; an unavailable cuda is one UserError line."""
    import torch

    from istpan.errors import UserError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} but no CUDA device is visible; use --device cpu (or auto)")
    return name
