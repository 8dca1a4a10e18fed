"""Shared by the tests of `istpan serve`: a tiny checkpoint, generated videos, multipart bodies, a running server.

    from serve_helpers import multipart, running_server
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "istpan-test-boundary"


def multipart(data: bytes, *, filename: str = "clip.mp4", fields: dict[str, str] | None = None,
              close: bool = True) -> bytes:
    """A multipart/form-data body with the video as field "video" (and text fields); close=False leaves out the
    closing boundary (a truncated upload)."""
    out = b""
    for key, value in (fields or {}).items():
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n{value}\r\n").encode()
    out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def served_url(proc: subprocess.Popen) -> str:
    """The URL `istpan serve --port 0` prints once its socket listens (its own free port: nothing to race for)."""
    for line in proc.stdout:
        if line.startswith("istpan serve: http"):
            return line.split(": ", 1)[1].strip().rstrip("/")
    raise RuntimeError(f"server exited {proc.wait()} before listening")


@contextmanager
def running_server(checkpoint: Path, tmp_dir: Path, *args: str, env: dict[str, str] | None = None
                   ) -> Iterator[tuple[str, subprocess.Popen]]:
    """`istpan serve` in a subprocess on a loopback port of its own (--port 0), its temp folders under tmp_dir; yields
    (base URL, process) once /readyz answers; stopped with SIGTERM (then SIGKILL) at the end."""
    child_env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_dir), "OMP_NUM_THREADS": "1",
                 **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "istpan.cli.main", "serve", "--checkpoint", str(checkpoint),
                             "--port", "0", "--decode-workers", "1", "--log-level", "warning", *args],
                            env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = served_url(proc)
        deadline = time.monotonic() + 120
        while True:  # poll until ready (a condition, not a guessed sleep)
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not get ready in 120 s")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
