"""`istpan serve` in process (Starlette's TestClient runs the app and its lifespan): the API's answers, checked
against the Predictor on the same files, its refusals (one line, 4xx), metrics, the token, stream sessions.

The server process itself (SIGTERM drain, slow clients, a full queue, the torture run) is tests/test_serve_server.py.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from checkpoints import tiny_checkpoint
from fastapi.testclient import TestClient
from serve_helpers import HEADERS, multipart
from videos import make_video

from istpan.data.decode import count_frames
from istpan.inference.predictor import Predictor
from istpan.serve import ServeConfig, create_app
from istpan.serve.security import SourceRefused, check_source, probe_media


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    media = root / "media"
    out = {"root": root, "media": media, "checkpoint": tiny_checkpoint(root / "model.pt")[2]}
    out["mp4"] = make_video(media / "a.mp4", num_frames=24, size=(48, 64))
    out["avi"] = make_video(media / "b.avi", num_frames=20, codec="mpeg4")
    (root / "secret.mp4").write_bytes(out["mp4"].read_bytes())
    os.symlink(root / "secret.mp4", media / "escape.mp4")  # a link inside the media root pointing out of it
    return out


@pytest.fixture(scope="module")
def client(files: dict[str, Path]):
    config = ServeConfig(checkpoint=str(files["checkpoint"]), decode_workers=1, max_batch=4, max_wait_ms=5,
                         media_root=str(files["media"]), tmp_dir=str(files["root"]), stream_timeout_s=1.0)
    with TestClient(create_app(config)) as c:
        yield c


def _uploads_empty(client: TestClient) -> bool:
    return not any(client.app.state.serve.uploads.iterdir())


def _predict(client: TestClient, path: Path, **params):
    with open(path, "rb") as f:
        return client.post("/v1/predict", files={"video": (path.name, f, "video/mp4")}, params=params)


def test_predict_matches_the_predictor(client: TestClient, files: dict[str, Path]) -> None:
    predictor = Predictor.from_checkpoint(files["checkpoint"])
    for key in ("mp4", "avi"):
        response = _predict(client, files[key], top_k=3)
        assert response.status_code == 200, response.text
        got = response.json()
        want = predictor.predict(str(files[key]), topk=3)
        assert got["path"] == files[key].name  # the client's name, never the server's temp path
        assert got["video_frames"] == count_frames(files[key])
        assert got["num_frames"] == predictor.preprocessing.num_frames
        assert [t["class"] for t in got["top"]] == [t["class"] for t in want["top"]]
        assert [t["score"] for t in got["top"]] == pytest.approx([t["score"] for t in want["top"]], abs=1e-5)
    assert _uploads_empty(client)


def test_concurrent_requests_share_forward_passes(client: TestClient, files: dict[str, Path]) -> None:
    state = client.app.state.serve
    before = state.batcher.batches
    results: list = [None] * 8

    def one(i: int) -> None:
        results[i] = _predict(client, files["mp4"] if i % 2 else files["avi"], top_k=1)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results)
    assert len({r.json()["top"][0]["class"] for r in results[1::2]}) == 1  # the same video, the same answer
    assert state.batcher.batches > before
    assert "istpan_batch_size_count" in client.get("/metrics").text


def test_micro_batcher_groups_waiting_clips_and_routes_rows() -> None:
    """Clips already waiting go together (up to max_batch); each request gets its own row back."""
    import asyncio

    import numpy as np
    import torch

    from istpan.serve.batching import MicroBatcher
    from istpan.serve.metrics import Metrics

    sizes: list[int] = []

    def run_batch(views: list[np.ndarray]) -> torch.Tensor:
        sizes.append(len(views))
        return torch.tensor([[float(v[0, 0, 0, 0])] for v in views])  # row = the clip's own marker

    async def main() -> list[float]:
        batcher = MicroBatcher(run_batch, max_batch=4, max_wait_ms=50, metrics=Metrics(4))
        clips = [np.full((3, 2, 2, 3), i, dtype=np.uint8) for i in range(6)]
        tasks = [asyncio.ensure_future(batcher.submit(c)) for c in clips]
        await asyncio.sleep(0)  # all six are queued before the loop takes the first
        batcher.start()
        rows = await asyncio.gather(*tasks)
        await batcher.close()
        return [float(r[0]) for r in rows]

    assert asyncio.run(main()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert sizes == [4, 2]


def test_explain_links_and_artifacts(client: TestClient, files: dict[str, Path]) -> None:
    response = _predict(client, files["mp4"], explain="true", top_k=2)
    assert response.status_code == 200, response.text
    drawn = response.json()["explain"]
    assert len(response.json()["top"]) == 2
    grid = client.get(drawn["grid"])
    assert grid.status_code == 200 and grid.content.startswith(b"\x89PNG")
    video = client.get(drawn["video"])
    assert video.status_code == 200 and len(video.content) > 1000
    assert client.get(drawn["grid"].rsplit("/", 1)[0] + "/results.json").status_code == 404  # only the drawings
    assert client.get("/v1/artifacts/" + "0" * 32 + "/grid.png").status_code == 404
    assert client.get(drawn["grid"].replace("grid.png", "..%2Fgrid.png")).status_code == 404
    assert _uploads_empty(client)


def test_confidence_reports_frames_used(client: TestClient, files: dict[str, Path]) -> None:
    always = _predict(client, files["mp4"], confidence="0", max_frames=3).json()
    never = _predict(client, files["mp4"], confidence="1", max_frames=3).json()
    assert always["frames_used"] == 1 and always["max_frames"] == 3  # a margin >= 0 is reached after one frame
    assert never["frames_used"] == 3  # a margin never exceeds 1 before the last frame... except at 1 exactly
    fixed = _predict(client, files["mp4"], top_k=4).json()
    assert [t["score"] for t in never["top"]] == pytest.approx([t["score"] for t in fixed["top"]], abs=1e-4)


@pytest.mark.parametrize(("body", "status", "says"), [
    (multipart(b"this is not a video at all" * 10, filename="notes.txt"), 415, "not a video"),
    (multipart(b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n", filename="list.m3u8"), 415, "not a video"),
    (multipart(b"ffconcat version 1.0\nfile /etc/passwd\n", filename="x.mp4"), 415, "not a video"),
    (multipart(b"x" * 100, close=False), 400, "truncated upload"),
    (b"--wrong\r\ngarbage", 400, "multipart"),
    (multipart(b"", filename="empty.mp4"), 400, "empty file"),
])
def test_bad_uploads_are_one_line_4xx(client: TestClient, files: dict[str, Path], body: bytes, status: int,
                                      says: str) -> None:
    response = client.post("/v1/predict", content=body, headers=HEADERS)
    assert response.status_code == status, response.text
    assert says in response.json()["error"] and "\n" not in response.json()["error"]
    assert str(files["root"]) not in response.text  # no server path in the message
    assert _predict(client, files["mp4"]).status_code == 200  # and the next request is served
    assert _uploads_empty(client)


def test_damaged_videos_are_422(client: TestClient, files: dict[str, Path]) -> None:
    data = files["mp4"].read_bytes()
    cut = files["root"] / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is written last: cut before it
    response = _predict(client, cut)
    assert response.status_code == 422 and "cut.mp4" in response.json()["error"]
    assert "moov" in response.json()["error"]
    assert "istpan_decode_failures_total" in client.get("/metrics").text


def test_options_and_form_errors(client: TestClient, files: dict[str, Path]) -> None:
    assert _predict(client, files["mp4"], top_k=99).status_code == 400
    assert _predict(client, files["mp4"], confidence=2).status_code == 400
    assert _predict(client, files["mp4"], explain="maybe").status_code == 400
    assert _predict(client, files["mp4"], colour="red").status_code == 400
    assert client.post("/v1/predict", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 400
    no_file = client.post("/v1/predict", data={"top_k": "2"}, files={"other": ("x", b"y")})
    assert no_file.status_code == 400
    assert _uploads_empty(client)


def test_upload_limit_while_reading(client: TestClient) -> None:
    config = client.app.state.serve.config
    saved, config.max_upload_mb = config.max_upload_mb, 0.01  # the same app, a small limit for this test
    try:
        big = multipart(b"\0" * 20_000)
        declared = client.post("/v1/predict", content=big, headers=HEADERS)
        assert declared.status_code == 413

        def chunks():  # no Content-Length: the limit can only be enforced while reading
            yield big[:5000]
            yield big[5000:]
        streamed = client.post("/v1/predict", content=chunks(), headers=HEADERS)
        assert streamed.status_code == 413 and "limit" in streamed.json()["error"]
        assert 'istpan_rejected_total{reason="too_large"} 2.0' in client.get("/metrics").text
        assert _uploads_empty(client)
    finally:
        config.max_upload_mb = saved


def test_health_ready_metrics_model(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    model = client.get("/v1/model").json()
    assert model["classes"] == list("abcd") and model["num_frames"] == 3
    text = client.get("/metrics").text
    for name in ("istpan_requests_total", "istpan_request_seconds_bucket", "istpan_batch_size_bucket",
                 "istpan_queue_depth", "istpan_active_streams"):
        assert name in text
    assert 'route="/v1/predict"' in text
    page = client.get("/")
    assert page.status_code == 200 and "istpan serve" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/..%2Fapp.py").status_code == 404


def test_token(client: TestClient, files: dict[str, Path], tmp_path: Path) -> None:
    state = client.app.state.serve
    state.token = "s3cret-token-0123456789"  # what --token-file gives (ServeConfig.token); reset below
    try:
        assert client.get("/v1/model").status_code == 401
        assert client.get("/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.post("/v1/streams", json={"source": "a.mp4"}).status_code == 401
        good = {"Authorization": "Bearer s3cret-token-0123456789"}
        assert client.get("/v1/model", headers=good).status_code == 200
        with open(files["mp4"], "rb") as f:
            assert client.post("/v1/predict", files={"video": f}, headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200  # probes, page
    finally:
        state.token = None
    from istpan.errors import UserError

    with pytest.raises(UserError, match="--token-file"):
        create_app(ServeConfig(checkpoint=str(files["checkpoint"]), host="0.0.0.0"))
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    config = ServeConfig(checkpoint="x", host="0.0.0.0", token_file=str(token_file))
    assert config.token() == "s3cret-token-0123456789"
    token_file.write_text("short")
    with pytest.raises(UserError, match="at least 16"):
        config.check()


def test_source_checks(files: dict[str, Path]) -> None:
    media = files["media"]
    assert check_source("a.mp4", media) == str((media / "a.mp4").resolve())
    assert check_source("rtsp://cam/live", media) == "rtsp://cam/live"
    assert check_source("v4l2:///dev/video0", None) == "/dev/video0"
    for spec, kind in [("../secret.mp4", "forbidden"), ("escape.mp4", "forbidden"), (str(files["root"] /
                       "secret.mp4"), "forbidden"), ("nope.mp4", "missing"), ("file:///etc/passwd", None),
                       ("concat:a.mp4|b.mp4", "missing"), ("udp://0.0.0.0:1234", None), ("/dev/sda", None)]:
        with pytest.raises(SourceRefused) as err:
            check_source(spec, media)
        assert (kind == "forbidden") == err.value.forbidden and (kind == "missing") == err.value.missing, spec
    with pytest.raises(SourceRefused, match="--media-root"):
        check_source("a.mp4", None)
    assert probe_media(files["avi"]) == "avi"


def _events(client: TestClient, stream_id: str) -> list[tuple[str, dict]]:
    events, kind = [], None
    with client.stream("GET", f"/v1/streams/{stream_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def test_stream_of_a_media_file(client: TestClient, files: dict[str, Path]) -> None:
    started = client.post("/v1/streams", json={"source": "a.mp4", "realtime": False, "every_frames": 4})
    assert started.status_code == 201, started.text
    events = _events(client, started.json()["id"])
    kinds = [k for k, _ in events]
    assert kinds[0] == "hello" and kinds[-1] == "end" and kinds.count("end") == 1
    assert events[-1][1]["reason"] == "end of stream"
    decisions = [d for k, d in events if k == "decision"]
    assert decisions and all(d["num_frames"] == 3 for d in decisions)
    # the same decisions as Predictor.stream on the same file (events may start after the first ones)
    want = list(Predictor.from_checkpoint(files["checkpoint"]).stream(str(files["mp4"]), every_frames=4, topk=4))
    by_frame = {d["frame"]: d for d in want}
    for d in decisions:
        assert d["top"][0]["class"] == by_frame[d["frame"]]["top"][0]["class"]
        assert d["top"][0]["score"] == pytest.approx(by_frame[d["frame"]]["top"][0]["score"], abs=1e-5)
    listed = client.get("/v1/streams").json()["streams"]
    assert any(s["id"] == started.json()["id"] and s["state"] == "ended" for s in listed)


@pytest.mark.parametrize(("source", "status"), [("../secret.mp4", 403), ("escape.mp4", 403), ("gone.mp4", 404),
                                                ("file:///etc/passwd", 400), ("/etc/passwd", 403)])
def test_refused_sources(client: TestClient, source: str, status: int) -> None:
    response = client.post("/v1/streams", json={"source": source})
    assert response.status_code == status, response.text


class _Stalling(BaseHTTPRequestHandler):
    """Serves the first half of an MPEG-TS stream, then sends nothing more while keeping the connection open."""

    data = b""
    release = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        self.wfile.write(self.data[: len(self.data) // 2])
        self.wfile.flush()
        self.release.wait(30)

    def log_message(self, *args) -> None:
        pass


def test_stalled_source_ends_with_a_reason_and_delete_stops(client: TestClient, files: dict[str, Path]) -> None:
    _Stalling.data = make_video(files["root"] / "live.ts", num_frames=150, size=(48, 64)).read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.ts"
        started = client.post("/v1/streams", json={"source": url, "every_frames": 10})
        assert started.status_code == 201
        events = _events(client, started.json()["id"])
        assert events[-1][0] == "end" and "stalled" in events[-1][1]["reason"], events[-1]
        assert any(k == "decision" for k, _ in events)  # decided on what arrived before the stall
        # DELETE ends a running session with its own reason
        started = client.post("/v1/streams", json={"source": url, "every_frames": 10})
        stream_id = started.json()["id"]
        assert client.delete(f"/v1/streams/{stream_id}").json()["reason"] == "stopped by DELETE"
        assert _events(client, stream_id)[-1] == ("end", {"reason": "stopped by DELETE"})
        assert client.delete("/v1/streams/nope").status_code == 404
    finally:
        _Stalling.release.set()
        server.shutdown()


def test_max_streams(client: TestClient, files: dict[str, Path]) -> None:
    release = threading.Event()
    _Stalling.data = make_video(files["root"] / "live2.ts", num_frames=60, size=(48, 64)).read_bytes()
    _Stalling.release = release
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    streams = client.app.state.serve.streams
    saved, streams.max_streams = streams.max_streams, 1
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.ts"
        first = client.post("/v1/streams", json={"source": url})
        assert first.status_code == 201
        full = client.post("/v1/streams", json={"source": url})
        assert full.status_code == 503 and full.headers["retry-after"]
        assert "istpan_active_streams 1.0" in client.get("/metrics").text
        release.set()  # the source ends; the session (and its thread) with it
        assert _events(client, first.json()["id"])[-1][0] == "end"
        streams.sessions[first.json()["id"]].thread.join(30)
        assert client.post("/v1/streams", json={"source": "a.mp4", "realtime": False}).status_code == 201
    finally:
        streams.max_streams = saved
        release.set()
        server.shutdown()


class _Playlist(BaseHTTPRequestHandler):
    """An HLS playlist whose one segment is a local file of the server's machine."""

    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.apple.mpegurl")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def test_url_playlist_cannot_reach_local_files(client: TestClient, files: dict[str, Path]) -> None:
    """A network source that is an HLS playlist naming file:// or absolute-path segments: FFmpeg's HLS demuxer
    refuses local segments from a network playlist, so the session ends with an error and never decides on them."""
    local = make_video(files["root"] / "private.ts", num_frames=30, size=(48, 64))
    for segment in (f"file://{local}", str(local)):
        _Playlist.body = (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.2,\n{segment}\n"
                          "#EXT-X-ENDLIST\n").encode()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Playlist)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/list.m3u8"
            started = client.post("/v1/streams", json={"source": url})
            assert started.status_code == 201
            events = _events(client, started.json()["id"])
            assert [k for k, _ in events] == ["hello", "end"], events
            assert "cannot open" in events[-1][1]["reason"]
        finally:
            server.shutdown()


def test_artifacts_are_removed_after_their_time(tmp_path: Path) -> None:
    from istpan.serve.artifacts import ArtifactStore

    store = ArtifactStore(tmp_path / "artifacts", ttl_s=60)
    key, folder = store.new()
    (folder / "grid.png").write_bytes(b"png")
    assert store.file(key, "grid.png") == folder / "grid.png"
    assert store.file(key, "../grid.png") is None and store.file("../" + key, "grid.png") is None
    assert store.sweep() == 0
    store._made[key] -= 61  # as if made 61 s ago
    assert store.sweep() == 1 and not folder.exists() and store.file(key, "grid.png") is None


def test_a_port_in_use_is_one_line_and_port_0_gets_a_free_one():
    """The server binds its socket itself: --port 0 picks a free port (printed for scripts), a taken port is a
    UserError naming host and port instead of uvicorn's traceback."""
    import socket

    from istpan.errors import UserError
    from istpan.serve.server import _bind

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"--host 127.0.0.1 --port {port}: cannot listen there"):
            _bind("127.0.0.1", port)
    with _bind("127.0.0.1", 0) as sock:
        assert sock.getsockname()[1] > 0
