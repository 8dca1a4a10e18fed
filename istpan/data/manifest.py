"""The WebDataset shard manifest's format: written by `istpan data shard` (data/tools/shards.py), read by the shard
loader and by `load_split` (the manifest knows the classes). One owner for its version string.
"""

from __future__ import annotations

import json
from pathlib import Path

from istpan.errors import UserError

__all__ = ["MANIFEST_VERSION", "load_manifest"]

MANIFEST_VERSION = "istpan-webdataset/1"


def load_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: shard manifest not found (write one with `istpan data shard`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not a shard manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_VERSION:
        raise UserError(f"{path}: not a shard manifest of this istpan version (want format {MANIFEST_VERSION})")
    return manifest
