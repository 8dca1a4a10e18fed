"""Explain outputs (overlay PNG/MP4, timeline) kept for a while under unguessable ids, then removed.

Each explained request gets a folder named by 128 random bits under the server's private temp folder; GET
/v1/artifacts/{id}/{name} serves a file from it (token-checked like the rest of the API); a sweep removes folders
older than the time limit, and everything goes when the server stops.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path

__all__ = ["ArtifactStore"]

_ID = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class ArtifactStore:
    def __init__(self, root: Path, ttl_s: float) -> None:
        self.root, self.ttl_s = root, ttl_s
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._made: dict[str, float] = {}

    def new(self) -> tuple[str, Path]:
        """A fresh (id, folder) to draw into."""
        key = secrets.token_hex(16)
        folder = self.root / key
        folder.mkdir(mode=0o700)
        self._made[key] = time.monotonic()
        return key, folder

    def discard(self, key: str) -> None:
        self._made.pop(key, None)
        shutil.rmtree(self.root / key, ignore_errors=True)

    def file(self, key: str, name: str) -> Path | None:
        """The file to serve, or None (unknown id, expired, a name with a path in it, or absent)."""
        if not _ID.fullmatch(key) or not _NAME.fullmatch(name) or key not in self._made:
            return None
        if time.monotonic() - self._made[key] > self.ttl_s:
            self.discard(key)
            return None
        path = self.root / key / name
        return path if path.is_file() else None

    def sweep(self) -> int:
        """Remove expired folders; returns how many."""
        now = time.monotonic()
        expired = [k for k, t in self._made.items() if now - t > self.ttl_s]
        for key in expired:
            self.discard(key)
        return len(expired)

    def clear(self) -> None:
        for key in list(self._made):
            self.discard(key)
        shutil.rmtree(self.root, ignore_errors=True)
