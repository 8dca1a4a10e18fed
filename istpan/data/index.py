"""A persistent video index: what one full decode learns about a video, stored once beside the dataset.

`decode.count_frames` has to decode a whole file once to know how many frames really decode and where the
keyframes are (the truth that makes sparse reads frame-exact and seeks safe). Without a store, every DataLoader worker
of every rank of every run repeats that scan. With one, `istpan data check`, `istpan data shard` or the first epoch
fill it and everything after reads the entry instead of the video.

Why SQLite (stdlib) in WAL mode: one file, keyed lookups without loading the whole index (650k Kinetics entries stay
on disk; a process keeps only the pages it touched), and many readers with one writer at a time from any number of
processes on a machine, each write an atomic transaction, so DataLoader workers and ranks can all write during the
first epoch. Entries are keyed by path and validated by file size and mtime: a video that changed on disk is
noticed (one warning line, counted in `stats`), scanned again and its entry replaced. WAL needs shared memory, so
on a network file system shared by several nodes fill the index before the job (`istpan data check`) — a process that
cannot write the file keeps working from its memory cache after one warning line.

Entry fields (owned by decode.py's `_Index`): num_frames, pts (int64 per output frame), keyframes (pts of keyframe
packets), seekable, errors. pts are stored delta-encoded and zlib-compressed: constant-frame-rate videos shrink to a
few bytes per entry.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_NAME", "VideoIndex", "active", "decode_entry", "encode_entry", "index_path_for", "lookup",
           "stats", "store", "use"]

_SAID = "ISTPAN_INDEX_UNWRITABLE"  # set once a process has warned that this index can't be written
DEFAULT_NAME = "istpan_index.sqlite"  # written into the dataset's root folder by default (data.index=auto)
_TIMEOUT_S = 60.0  # how long a writer waits for another process's transaction (first epoch: many writers)

log = logging.getLogger(__name__)
stats: Counter = Counter()  # per process: hits, misses, stale, stored, write_errors


def encode_entry(entry: dict) -> tuple[int, bytes, bytes, int, str]:
    """(num_frames, pts blob, keyframes blob, seekable, errors json) for one row."""
    pts = np.asarray(entry["pts"], dtype=np.int64)
    deltas = np.diff(pts, prepend=np.int64(0)) if pts.size else pts
    keys = np.asarray(entry["keyframes"], dtype=np.int64)
    return (int(entry["num_frames"]), zlib.compress(deltas.tobytes(), 6), zlib.compress(keys.tobytes(), 6),
            int(bool(entry["seekable"])), json.dumps(list(entry.get("errors", ()))))


def decode_entry(num_frames: int, pts: bytes, keyframes: bytes, seekable: int, errors: str) -> dict:
    deltas = np.frombuffer(zlib.decompress(pts), dtype=np.int64)
    return {"num_frames": int(num_frames), "pts": np.cumsum(deltas, dtype=np.int64),
            "keyframes": tuple(np.frombuffer(zlib.decompress(keyframes), dtype=np.int64).tolist()),
            "seekable": bool(seekable), "errors": tuple(json.loads(errors))}


def _set_up(conn: sqlite3.Connection) -> None:
    """WAL mode and the table, retried while another process holds the lock.

    Why a retry loop on top of the connection's busy timeout: when several fresh processes open a new index at once
    (DataLoader workers, torchrun ranks), switching to WAL can report "database is locked" at once, without waiting
    (SQLite does not call the busy handler there). Giving up would leave that process without a writable index.
    """
    deadline = time.monotonic() + _TIMEOUT_S
    delay = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses at most the last entries
            conn.execute("CREATE TABLE IF NOT EXISTS videos (path TEXT PRIMARY KEY, size INTEGER, "
                         "mtime_ns INTEGER, num_frames INTEGER, pts BLOB, keyframes BLOB, seekable INTEGER, "
                         "errors TEXT)")
            return
        except sqlite3.OperationalError as err:
            if ("locked" not in str(err) and "busy" not in str(err)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class VideoIndex:
    """One SQLite file: path -> (size, mtime_ns, entry). Paths under the index's folder are stored relative to it,
    so a dataset copied or mounted elsewhere (with its mtimes, `cp -p` / `rsync -t`) keeps its index.

    The connection is opened lazily per process (a forked DataLoader worker must not reuse its parent's)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.base = os.path.realpath(self.path.parent)
        self._conn: sqlite3.Connection | None = None
        self._pid = -1  # the connection belongs to this process (a forked worker opens its own)
        self._lock = threading.Lock()
        self._writable = True

    def _db(self) -> sqlite3.Connection | None:
        """This process's connection (None when the file can't even be opened: the index is then skipped)."""
        if self._pid != os.getpid():
            self._conn, self._pid, self._writable = None, os.getpid(), True
            conn = None
            try:
                if not self.path.exists():
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=_TIMEOUT_S, check_same_thread=False, isolation_level=None)
                _set_up(conn)
            except (OSError, sqlite3.Error) as err:  # read-only folder or file, not a database, locked too long
                self._read_only(err)
                conn = conn if conn is not None and _readable(conn) else None  # read-only: still answers lookups
            self._conn = conn
        return self._conn

    def _read_only(self, err: Exception) -> None:
        if self._writable:
            self._writable = False
            stats["write_errors"] += 1
            quiet = os.environ.get(_SAID) == str(self.path)  # the main process said it before starting workers
            log.log(logging.DEBUG if quiet else logging.WARNING,
                    "%s: cannot write the video index (%s); new scans stay in this process's memory", self.path, err)
            os.environ[_SAID] = str(self.path)  # inherited by DataLoader workers started from now on

    def key(self, path: str | Path) -> str:
        real = os.path.realpath(path)
        rel = os.path.relpath(real, self.base)
        return real if rel.startswith("..") else rel

    def get(self, path: str | Path, size: int, mtime_ns: int) -> dict | None:
        """The entry of this file version, or None (unknown, or stale: the file changed since it was indexed)."""
        with self._lock:
            db = self._db()
            if db is None:
                return None
            try:
                row = db.execute("SELECT size, mtime_ns, num_frames, pts, keyframes, seekable, errors "
                                 "FROM videos WHERE path = ?", (self.key(path),)).fetchone()
            except sqlite3.Error as err:
                stats["read_errors"] += 1
                log.warning("%s: video index unreadable (%s); scanning videos instead", self.path, err)
                return None
        if row is None:
            stats["misses"] += 1
            return None
        if (row[0], row[1]) != (size, mtime_ns):
            stats["stale"] += 1
            log.warning("%s: video index entry is stale (file changed on disk: size %d -> %d, mtime changed: %s); "
                        "scanning it again", path, row[0], size, row[1] != mtime_ns)
            return None
        stats["hits"] += 1
        return decode_entry(*row[2:])

    def put(self, path: str | Path, size: int, mtime_ns: int, entry: dict) -> None:
        with self._lock:
            db = self._db()
            if db is None or not self._writable:
                return
            try:
                db.execute("INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                   (self.key(path), size, mtime_ns, *encode_entry(entry)))
                stats["stored"] += 1
            except sqlite3.Error as err:
                self._read_only(err)

    def put_many(self, rows: list[tuple[str, int, int, dict]]) -> None:
        """Many entries in one transaction (bulk fills: 650k single commits would be slow)."""
        with self._lock:
            db = self._db()
            if db is None:
                raise OSError(f"{self.path}: cannot open the video index")
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(self.key(p), s, m, *encode_entry(e)) for p, s, m, e in rows])
            db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            db = self._db()
            return int(db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]) if db is not None else 0

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn, self._pid = None, -1

    def __getstate__(self) -> dict:  # picklable for spawned DataLoader workers: the connection is reopened there
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


def _readable(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT path FROM videos LIMIT 1").fetchall()
        return True
    except sqlite3.Error:
        return False


# --------------------------------------------------------------------- the index decode.py consults in this process
_active: VideoIndex | None = None


def use(path: str | Path | None) -> VideoIndex | None:
    """Make `path` the index `decode.count_frames` / `read_frames` read and fill in this process (None: none).
    Cheap when it is already the active one, so datasets call it in every worker."""
    global _active
    if path is None or str(path) == "":
        _active = None
    elif _active is None or str(_active.path) != str(path):
        _active = VideoIndex(path)
        _active._db()  # opened now: a problem is said here once, not by every DataLoader worker later
    return _active


def active() -> VideoIndex | None:
    return _active


def lookup(path: str | Path, size: int, mtime_ns: int) -> dict | None:
    return _active.get(path, size, mtime_ns) if _active is not None else None


def store(path: str | Path, size: int, mtime_ns: int, entry: dict) -> None:
    if _active is not None:
        _active.put(path, size, mtime_ns, entry)


def index_path_for(setting: str, *, root: str = "", annotations: str = "") -> Path | None:
    """Where `data.index` puts the file: "none" -> no index; "auto" -> `<data.root>/istpan_index.sqlite` (beside the
    annotations when there is no root); anything else is the file's path."""
    if setting in ("none", "", "off"):
        return None
    if setting != "auto":
        return Path(setting)
    if root and "://" not in root and not root.startswith("pipe:"):
        return Path(root) / DEFAULT_NAME
    if annotations:
        where = Path(annotations)
        return (where if where.is_dir() else where.parent) / DEFAULT_NAME
    return None
