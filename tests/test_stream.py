"""Live sources and streaming decisions: generated files, stdin pipes and a local socket (no camera, no network)."""

from __future__ import annotations

import itertools
import logging
import socket
import threading

import numpy as np
import pytest
import torch
from videos import fed_pipe, make_video

from istpan.data import VideoError, read_frames
from istpan.data.preprocess import Preprocessing
from istpan.data.sources import SourceError, VideoSource, open_source, source_kind
from istpan.errors import UserError
from istpan.inference.stream import FeatureCache, stream_decisions
from istpan.models import create_model

NAMES = [f"c{i}" for i in range(5)]


def test_source_kinds():
    assert [source_kind(s) for s in ("-", "/dev/video0", "rtsp://cam/1", "HTTP://x/y.ts", "clip.mp4")] == [
        "stdin", "camera", "url", "url", "file"]


def test_file_source_yields_every_frame_then_sampled_by_rate(tmp_path):
    path = make_video(tmp_path / "a.mp4", num_frames=20, fps=10)
    with open_source(path) as source:
        got = list(source)
    assert [round(t, 3) for t, _ in got] == [round(i / 10, 3) for i in range(20)]
    np.testing.assert_array_equal(torch.stack([f for _, f in got]).numpy(), read_frames(path, list(range(20))).numpy())
    with open_source(path, sample_fps=3) as source:
        times = [t for t, _ in source]
    all_times = [t for t, _ in got]
    assert times == [min(t for t in all_times if t >= k / 3 - 1e-9) for k in range(6)]  # first frame at/after k/3 s


def test_stdin_stream_with_a_size_change_keeps_going_and_says_so(tmp_path, caplog):
    a = make_video(tmp_path / "a.ts", num_frames=12, size=(64, 64), fps=10)
    b = make_video(tmp_path / "b.ts", num_frames=12, size=(48, 80), fps=10)
    with caplog.at_level(logging.WARNING), VideoSource("-", stdin=fed_pipe(a.read_bytes() + b.read_bytes())) as source:
        got = list(source)
    assert [tuple(f.shape) for _, f in got] == [(64, 64, 3)] * 12 + [(48, 80, 3)] * 12
    times = [t for t, _ in got]
    assert all(b > a for a, b in itertools.pairwise(times))  # the second part's timestamps restart; stream time not
    changes = [r.message for r in caplog.records if "frame size changed" in r.message]
    assert len(changes) == 1 and "64x64 to 80x48" in changes[0]


def test_stalled_stdin_and_stalled_http_end_with_a_clear_error_not_a_hang(tmp_path):
    """Half a stream, then silence with the pipe / connection left open: the source gives up after `timeout_s` of no
    data with an error that says so. (Were it waiting for the end of the stream instead, the feeders close after
    120 s and the stream would end without that error: the test fails, it does not hang.)"""
    data = make_video(tmp_path / "a.ts", num_frames=40, fps=10).read_bytes()
    done = threading.Event()  # the feeders hold their end open until the test is over
    try:
        half = fed_pipe(data[: len(data) // 2], hold_open=done)
        with pytest.raises(SourceError, match=r"no data on stdin for 0\.5 s"), VideoSource("-", stdin=half,
                                                                                            timeout_s=0.5) as source:
            sum(1 for _ in source)

        server = socket.create_server(("127.0.0.1", 0))

        def serve():  # an HTTP server that sends half a video and then keeps the connection open, silent
            conn, _ = server.accept()
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n" + data[: len(data) // 2])
            done.wait(120)
            conn.close()

        threading.Thread(target=serve, daemon=True).start()
        frames = 0
        url = f"http://127.0.0.1:{server.getsockname()[1]}/live.ts"
        with pytest.raises(SourceError, match=r"no data for 0\.5 s \(stalled or disconnected\)"), \
                open_source(url, timeout_s=0.5) as source:
            for _ in source:
                frames += 1
        assert frames > 0
        server.close()
    finally:
        done.set()


def test_corrupt_packets_are_skipped_not_fatal(tmp_path):
    data = bytearray(make_video(tmp_path / "a.ts", num_frames=30, fps=10, options={"g": "5"}).read_bytes())
    for off in range(len(data) // 2, len(data) // 2 + 3000, 188):  # damage the payload of some TS packets
        data[off + 10: off + 100] = bytes(90)
    (tmp_path / "bad.ts").write_bytes(bytes(data))
    with open_source(tmp_path / "bad.ts") as source:
        times = [t for t, _ in source]
    assert 10 < len(times) < 30 and max(times) > 2.0  # frames after the damage still come


@pytest.fixture
def refused_url():
    """An http URL on a local port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/x.ts"


@pytest.mark.parametrize(("spec", "match"), [
    ("missing.mp4", "missing.mp4: file not found"),
    ("/dev/video97", "/dev/video97: cannot open as a video stream"),
    ("REFUSED", "cannot open as a video stream .*refused"),
])
def test_sources_that_cannot_be_opened(tmp_path, spec, match, refused_url):
    with pytest.raises(VideoError, match=match):
        open_source(refused_url if spec == "REFUSED" else spec, timeout_s=1)
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(VideoError, match=r"notes\.txt: cannot open as a video stream"):
        open_source(tmp_path / "notes.txt")


def test_feature_cache_is_a_ring_of_the_last_k():
    cache = FeatureCache(3)
    for i in range(5):
        cache.push(torch.full((2, 1, 1), float(i)), i / 10)
    assert cache.full and cache.times == [0.2, 0.3, 0.4]
    assert cache.clip().shape == (1, 3, 2, 1, 1) and cache.clip()[0, :, 0, 0, 0].tolist() == [2.0, 3.0, 4.0]


@pytest.mark.parametrize("options", [{}, {"time_encoding": "fourier", "head": "glimpse"}])
def test_stream_decisions_equal_the_model_on_the_last_k_frames(tmp_path, options):
    """Every decision (K = 4, one per frame) equals model(video of the 4 latest frames) to 1e-5; every frame went
    through the backbone once."""
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=5, input_size=48, **options).eval()
    if model.attention.time_proj is not None:
        torch.nn.init.normal_(model.attention.time_proj.weight)
    path = make_video(tmp_path / "a.mp4", num_frames=10, size=(56, 64), fps=5)
    pre = Preprocessing(input_size=48, short_side=0, resize=56, num_frames=4)
    calls = []
    model.frame_features = (lambda f, inner=model.frame_features: calls.append(len(f)) or inner(f))
    with open_source(path) as source:
        decisions = list(stream_decisions(model, pre, source, class_names=NAMES, topk=5))
    assert [d["frame"] for d in decisions] == list(range(3, 10)) and sum(calls) == 10
    frames = pre.to_input(pre.view(read_frames(path, list(range(10)))))  # (10, 3, 48, 48): as `predict` reads
    for d in decisions:
        with torch.no_grad():
            ref = model(frames[d["frame"] - 3: d["frame"] + 1][None]).logits[0].softmax(-1)
        got = torch.zeros(5)
        for t in d["top"]:
            got[t["index"]] = t["score"]
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
        assert d["num_frames"] == 4 and d["time_s"] == pytest.approx(d["frame"] / 5)
        assert d["window_s"] == pytest.approx(0.6) and d["latency_ms"] > 0


def test_decision_cadence_short_streams_and_bad_frames(caplog):
    model = create_model("tsn_tiny", num_classes=5, input_size=32).eval()
    frames = [torch.randint(0, 255, (40, 40, 3), dtype=torch.uint8) for _ in range(12)]
    pre = Preprocessing(input_size=32, short_side=0, resize=32, num_frames=4)

    def run(frames, **kw):
        return list(stream_decisions(model, pre, frames, class_names=NAMES, **kw))

    assert [d["frame"] for d in run(frames, every_frames=3)] == [3, 6, 9]
    assert [d["time_s"] for d in run(frames, every_seconds=1.0, fps=4)] == [0.75, 1.75, 2.75]
    with caplog.at_level(logging.WARNING):
        short = run(frames[:2])
    assert len(short) == 1 and short[0]["num_frames"] == 2 and "fewer than the model's K = 4" in caplog.text
    with pytest.raises(UserError, match=r"frame 2: expected a uint8 array \(H, W, 3\), got float32 \(3, 40, 40\)"):
        run([frames[0], frames[1], torch.rand(3, 40, 40)])
    with pytest.raises(UserError, match=r"frame 0: expected a uint8 array .*got str"):
        run(["clip.mp4"])
