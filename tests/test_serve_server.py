"""`istpan serve` as a process: slow clients, a full queue, SIGTERM draining, the bind rule, and the torture run.

Each test starts the real server (tests/serve_helpers.running_server) on a free loopback port with its temp folder
under tmp_path, and talks to it over sockets, so what is checked is what a client sees. Starting it loads the model
and a decode process: tens of seconds on a busy machine, hence the slow marks.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from checkpoints import tiny_checkpoint
from serve_helpers import HEADERS, REPO, multipart, running_server
from videos import make_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-server")
    media = root / "media"
    return {"root": root, "media": media, "checkpoint": tiny_checkpoint(root / "model.pt")[2],
            "mp4": make_video(media / "a.mp4", num_frames=24, size=(48, 64)),
            "long": make_video(media / "long.mp4", num_frames=400, size=(48, 64))}


def _open_upload(url: str, body: bytes, sent: int) -> socket.socket:
    """A raw connection that has sent the request head and the first `sent` bytes of the body, then waits."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {HEADERS['Content-Type']}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:sent])
    return s


def _response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response read from a raw socket (Content-Length framed)."""
    s.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _uploads_empty(root: Path) -> bool:
    return not any(p for d in root.glob("istpan-serve-*/uploads") for p in d.iterdir())


@pytest.mark.slow
def test_slow_client_times_out_and_queue_is_bounded(setup: dict[str, Path], tmp_path: Path) -> None:
    body = multipart(setup["mp4"].read_bytes())
    with running_server(setup["checkpoint"], tmp_path, "--max-queue", "1", "--read-timeout", "1") as (url, _):
        stalled = _open_upload(url, body, 100)  # holds the only slot until it times out
        try:
            busy = httpx.post(f"{url}/v1/predict", content=body, headers=HEADERS, timeout=30)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            status, _, text = _response(stalled)  # the server gives up on the silent client
            assert status == 408 and b"no data from the client" in text
        finally:
            stalled.close()
        ok = httpx.post(f"{url}/v1/predict", content=body, headers=HEADERS, timeout=60)
        assert ok.status_code == 200, ok.text
        metrics = httpx.get(f"{url}/metrics").text
        assert 'istpan_rejected_total{reason="queue_full"} 1.0' in metrics
        assert _uploads_empty(tmp_path)


@pytest.mark.slow
def test_sigterm_drains(setup: dict[str, Path], tmp_path: Path) -> None:
    body = multipart(setup["mp4"].read_bytes())
    with running_server(setup["checkpoint"], tmp_path, "--media-root", str(setup["media"])) as (url, proc):
        want = httpx.post(f"{url}/v1/predict", content=body, headers=HEADERS, timeout=60).json()
        stream = httpx.post(f"{url}/v1/streams", json={"source": "long.mp4"}).json()  # paced: runs for 16 s
        events: list[str] = []
        following = threading.Event()

        def follow() -> None:
            with httpx.stream("GET", f"{url}{stream['events']}", timeout=60) as r:
                for line in r.iter_lines():
                    following.set()  # the hello event came: subscribed before SIGTERM
                    if line.startswith(("event:", "data:")):
                        events.append(line)
            following.set()

        reader = threading.Thread(target=follow)
        reader.start()
        assert following.wait(60)
        inflight = _open_upload(url, body, len(body) // 2)  # a request in flight when SIGTERM comes
        while "istpan_inflight_predictions 1.0" not in httpx.get(f"{url}/metrics").text:  # the server has it
            pass
        proc.send_signal(signal.SIGTERM)
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 503:  # until the server says it drains
            pass
        refused = httpx.post(f"{url}/v1/predict", content=body, headers=HEADERS, timeout=30)
        assert refused.status_code == 503 and refused.headers.get("retry-after")
        inflight.sendall(body[len(body) // 2:])
        status, _, text = _response(inflight)
        inflight.close()
        assert status == 200 and json.loads(text)["top"] == want["top"]  # the in-flight one finished, correctly
        reader.join(60)
        assert events[-2:] == ["event: end", 'data: {"reason": "the server is shutting down"}']
        assert proc.wait(60) == 0
    assert not list(tmp_path.glob("istpan-serve-*"))  # the private temp folder went with it


def test_bind_rule_and_bad_checkpoint_are_one_line(setup: dict[str, Path]) -> None:
    result = subprocess.run([sys.executable, "-m", "istpan.cli.main", "serve", "--checkpoint",
                             str(setup["checkpoint"]), "--host", "0.0.0.0"], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --host 0.0.0.0 is reachable")
    missing = subprocess.run([sys.executable, "-m", "istpan.cli.main", "serve", "--checkpoint",
                              str(setup["root"] / "nope.pt")], capture_output=True, text=True,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nope.pt" in missing.stderr


@pytest.mark.slow
def test_torture(setup: dict[str, Path], tmp_path: Path, clips_dir: Path) -> None:
    """bench/serve.py's torture phase, shorter: good uploads of the real clips mixed with garbage, truncated,
    oversized, abandoned and unterminated ones. Every good one right, every bad one 4xx, no upload left behind."""
    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "bench" / "serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    clips = [(p.name, p.read_bytes()) for p in sorted(clips_dir.iterdir()) if p.suffix in (".mp4", ".avi")]
    with running_server(setup["checkpoint"], tmp_path, "--max-upload-mb", "2", "--max-queue", "64") as (url, _):
        refs = bench.references(url, clips)
        out = bench.torture(url, clips, refs, concurrency=4, seconds=8, oversized=3 * 2**20, seed=1)
        assert out["good"] > 0 and out["good_ok"] == out["good"]
        assert out["bad"] > 0 and out["bad_4xx"] == out["bad"] and out["server_errors"] == 0
        assert bench.settled_and_empty(url, tmp_path)
        assert httpx.get(f"{url}/readyz").status_code == 200
