"""`istpan serve` under load on loopback: throughput with and without batching, latency, errors, memory, torture.

    python bench/serve.py                                   # runs/demo/istpan_tiny, ../shared/clips, C = 8
    python bench/serve.py --checkpoint best.pt --concurrency 8 --seconds 30 --warmup 5

Phases (each server a fresh `istpan serve` subprocess on a free loopback port, its temp folder under a bench folder):
  load      C closed-loop clients post the real clips round-robin for --seconds after --warmup seconds; every answer
            is checked against the first answer for that clip (same top class, scores within 1e-4); twice: the
            server with --max-batch 8 and with --max-batch 1 (no batching), same everything else
  memory    resident memory of the server and its decode workers after warm-up and at the end (rss_ratio = end /
            after warm-up: flat means <= 1.1)
  torture   for --torture-seconds, C clients mix good uploads with garbage bytes, truncated MP4s, oversized uploads,
            uploads cut off mid-body (the client goes away) and multipart bodies without their closing boundary;
            every good one must be answered correctly, every bad one with a 4xx, and afterwards (in-flight count
            back to 0) the server's upload folder must be empty

Last line: serve_throughput=<batched / unbatched>x ... errors=<n> rss_ratio=<r> torture_good=<ok>/<n> ...
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "istpan-bench-boundary"
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(data: bytes, filename: str, *, close: bool = True) -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + b"\r\n" + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def _served_url(proc: subprocess.Popen) -> str:
    """The URL `istpan serve --port 0` prints once it listens (its own free port)."""
    for line in proc.stdout:
        if line.startswith("istpan serve: http"):
            return line.split(": ", 1)[1].strip().rstrip("/")
    raise SystemExit(f"server exited with {proc.wait()} before listening")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the decode workers), MB, from /proc."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


@contextmanager
def server(checkpoint: str, tmp: Path, *args: str):
    """(url, process) of `istpan serve` once ready; stopped with SIGTERM at the end."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "istpan.cli.main", "serve", "--checkpoint", checkpoint, "--port",
                             "0", "--log-level", "warning", *args], env=env, stdout=subprocess.PIPE, text=True)
    try:
        url = _served_url(proc)
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready after 180 s")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def post(client: httpx.Client, url: str, name: str, data: bytes) -> httpx.Response:
    return client.post(f"{url}/v1/predict", content=multipart(data, name), headers=HEADERS, timeout=120)


def same(a: dict, b: dict) -> bool:
    return a["top"][0]["class"] == b["top"][0]["class"] and all(
        abs(x["score"] - y["score"]) < 1e-4 for x, y in zip(a["top"], b["top"]))


def references(url: str, clips: list[tuple[str, bytes]]) -> dict[str, dict]:
    with httpx.Client() as client:
        return {name: post(client, url, name, data).json() for name, data in clips}


def load(url: str, clips: list[tuple[str, bytes]], refs: dict[str, dict], *, concurrency: int, warmup: float,
         seconds: float, pid: int) -> dict:
    """Closed loop: each client posts, waits, posts the next clip. Counts only what finishes in the window."""
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"done": 0, "errors": 0}
    t0 = time.monotonic()
    start, stop = t0 + warmup, t0 + warmup + seconds

    def client_loop(k: int) -> None:
        with httpx.Client() as client:
            i = k
            while time.monotonic() < stop:
                name, data = clips[i % len(clips)]
                i += 1
                began = time.monotonic()
                try:
                    r = post(client, url, name, data)
                    ok = r.status_code == 200 and same(r.json(), refs[name])
                except httpx.HTTPError:
                    ok = False
                ended = time.monotonic()
                if began >= start and ended <= stop:
                    with lock:
                        latencies.append(1000 * (ended - began))
                        counts["done"] += 1
                        counts["errors"] += not ok
                elif not ok:
                    with lock:
                        counts["errors"] += 1

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, start - time.monotonic()))
    rss_start = rss_mb(pid)
    for t in threads:
        t.join()
    rss_end = rss_mb(pid)
    lat = sorted(latencies) or [float("nan")]
    return {"throughput": counts["done"] / seconds, "p50_ms": statistics.median(lat),
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))], "errors": counts["errors"],
            "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_ratio": rss_end / max(rss_start, 1e-9)}


def mean_batch(url: str) -> float:
    """Mean clips per forward pass so far, from the server's own histogram."""
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(("istpan_batch_size_sum", "istpan_batch_size_count")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("istpan_batch_size_sum", 0.0) / max(values.get("istpan_batch_size_count", 0.0), 1.0)


def forward_speedup(checkpoint: str, clip_paths: list[Path], batch: int = 8, reps: int = 5) -> tuple[float, float]:
    """Milliseconds per clip of the forward pass alone at batch 1 and at `batch` (this process, one thread): the
    most batching can give when decoding costs nothing."""
    import torch

    from istpan.serve.engine import Engine, decode_clip

    torch.set_num_threads(1)
    engine = Engine.load(checkpoint)
    views = [decode_clip(engine.preprocessing, str(p)).views for p in clip_paths]
    views = (views * batch)[:batch]
    out = []
    for size in (1, batch):
        engine.scores(views[:size])  # warm-up
        began = time.perf_counter()
        for _ in range(reps):
            for start in range(0, batch, size):
                engine.scores(views[start:start + size])
        out.append(1000 * (time.perf_counter() - began) / (reps * batch))
    return out[0], out[1]


def _cancelled_upload(url: str, body: bytes) -> None:
    """Send the headers and half the body, then go away (a client that gives up mid-upload)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {HEADERS['Content-Type']}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body[: len(body) // 2])


def torture(url: str, clips: list[tuple[str, bytes]], refs: dict[str, dict], *, concurrency: int, seconds: float,
            oversized: int, seed: int = 0) -> dict:
    """Good uploads mixed with bad ones (see the module docstring); returns counts by kind and outcome."""
    rng = random.Random(seed)
    mp4 = next((d for n, d in clips if n.endswith(".mp4")), clips[0][1])
    kinds = ["good", "good", "garbage", "truncated", "oversized", "cancelled", "no_boundary"]
    lock = threading.Lock()
    out = {"good": 0, "good_ok": 0, "bad": 0, "bad_4xx": 0, "server_errors": 0}
    stop = time.monotonic() + seconds

    def one(client: httpx.Client, kind: str) -> None:
        name, data = rng.choice(clips)
        if kind == "cancelled":
            _cancelled_upload(url, multipart(data, name))
            return
        if kind == "good":
            r = post(client, url, name, data)
            with lock:
                out["good"] += 1
                out["good_ok"] += r.status_code == 200 and same(r.json(), refs[name])
            return
        body = {"garbage": lambda: multipart(os.urandom(50_000), "noise.mp4"),
                "truncated": lambda: multipart(mp4[: len(mp4) // 3], "cut.mp4"),
                "oversized": lambda: multipart(b"\0" * oversized, "big.mp4"),
                "no_boundary": lambda: multipart(data, name, close=False)}[kind]()
        r = client.post(f"{url}/v1/predict", content=body, headers=HEADERS, timeout=120)
        with lock:
            out["bad"] += 1
            out["bad_4xx"] += 400 <= r.status_code < 500
            out["server_errors"] += r.status_code >= 500

    def client_loop() -> None:
        with httpx.Client() as client:
            while time.monotonic() < stop:
                one(client, rng.choice(kinds))

    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def settled_and_empty(url: str, tmp: Path, timeout_s: float = 60) -> bool:
    """Wait until no prediction is in flight (the server noticed every client that went away), then: is every
    server's upload folder empty?"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        if "istpan_inflight_predictions 0.0" in text:
            break
        time.sleep(0.2)
    return not any(p for d in tmp.glob("istpan-serve-*/uploads") for p in d.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/demo/istpan_tiny")
    ap.add_argument("--clips", default=str(REPO.parent / "shared" / "clips"))
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--torture-seconds", type=float, default=15.0)
    ap.add_argument("--decode-workers", type=int, default=2)
    args = ap.parse_args()
    clips = [(p.name, p.read_bytes()) for p in sorted(Path(args.clips).iterdir()) if p.suffix in (".mp4", ".avi")]
    if not clips:
        raise SystemExit(f"no .mp4/.avi clips in {args.clips}")
    if not Path(args.checkpoint).exists():
        raise SystemExit(f"{args.checkpoint}: not found (make it with: istpan demo)")
    common = ["--decode-workers", str(args.decode_workers), "--max-queue", "256", "--max-upload-mb", "2"]
    results = {}
    with tempfile.TemporaryDirectory(prefix="istpan-bench-serve-") as tmp:
        for mode, batch in (("batched", "8"), ("unbatched", "1")):
            with server(args.checkpoint, Path(tmp), "--max-batch", batch, *common) as (url, proc):
                refs = references(url, clips)
                results[mode] = r = load(url, clips, refs, concurrency=args.concurrency, warmup=args.warmup,
                                         seconds=args.seconds, pid=proc.pid)
                r["mean_batch"] = mean_batch(url)
                print(f"{mode} (--max-batch {batch}): {r['throughput']:.2f} videos/s, p50 {r['p50_ms']:.0f} ms, "
                      f"p99 {r['p99_ms']:.0f} ms, errors {r['errors']}, mean batch {r['mean_batch']:.2f}, RSS "
                      f"{r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f} MB", flush=True)
                if mode == "batched":
                    t = torture(url, clips, refs, concurrency=args.concurrency, seconds=args.torture_seconds,
                                oversized=3 * 2**20)
                    t["tmp_empty"] = settled_and_empty(url, Path(tmp))
                    results["torture"] = t
                    print(f"torture: {t['good_ok']}/{t['good']} good answered correctly, {t['bad_4xx']}/{t['bad']} "
                          f"bad refused with 4xx, {t['server_errors']} 5xx, upload folder empty: {t['tmp_empty']}",
                          flush=True)
    b, u, t = results["batched"], results["unbatched"], results["torture"]
    one, eight = forward_speedup(args.checkpoint, [Path(args.clips) / n for n, _ in clips])
    print(f"forward pass alone: {one:.1f} ms/clip at batch 1, {eight:.1f} ms/clip at batch 8", flush=True)
    print(f"serve_throughput={b['throughput'] / u['throughput']:.2f}x ({b['throughput']:.2f} vs "
          f"{u['throughput']:.2f} videos/s, C={args.concurrency}) p50_ms={b['p50_ms']:.0f} p99_ms={b['p99_ms']:.0f} "
          f"errors={b['errors'] + u['errors']} rss_ratio={b['rss_ratio']:.3f} "
          f"torture_good={t['good_ok']}/{t['good']} torture_bad_4xx={t['bad_4xx']}/{t['bad']} "
          f"torture_5xx={t['server_errors']} tmp_empty={t['tmp_empty']} mean_batch={b['mean_batch']:.2f} "
          f"forward_batch_speedup={one / eight:.2f}x")


if __name__ == "__main__":
    main()
