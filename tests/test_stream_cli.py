"""`istpan predict --stream` (stdin pipes, files), `Predictor.stream`, and `predict --max-frames/--confidence`."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import types

import numpy as np
import pytest
import torch
from videos import fed_pipe, make_video

from istpan.cli.main import main
from istpan.config import DataConfig
from istpan.data import read_frames
from istpan.errors import UserError
from istpan.files.checkpoint import build_meta, save_checkpoint
from istpan.inference.predictor import Predictor
from istpan.models import create_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny order-aware checkpoint (K = 3) and a 12-frame video as .mp4 and as an MPEG-TS byte stream."""
    base = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=4, input_size=32, time_encoding="fourier", head="glimpse")
    torch.nn.init.normal_(model.attention.time_proj.weight)
    meta = build_meta(model, class_names=["a", "b", "c", "d"],
                      data_cfg=DataConfig(input_size=32, short_side=36, test_num_frames=3))
    ckpt = save_checkpoint({"model": model.state_dict(), "meta": meta, "epoch": 1}, base / "model.pt")
    mp4 = make_video(base / "clip.mp4", num_frames=12, size=(40, 48), fps=4)
    ts = make_video(base / "clip.ts", num_frames=12, size=(40, 48), fps=4)
    return ckpt, mp4, ts


def _scores(decision: dict, classes: int = 4) -> torch.Tensor:
    out = torch.zeros(classes)
    for t in decision["top"]:
        out[t["index"]] = t["score"]
    return out


def _stdin_pipe(monkeypatch, data: bytes) -> None:
    """sys.stdin becomes a pipe fed `data` by a thread (`cat clip.ts | istpan ...`)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(fed_pipe(data)))


def test_stdin_stream_prints_one_json_line_per_decision(setup, monkeypatch, capsys):
    """`cat clip.ts | istpan predict --stream - ...`: 10 decisions (12 frames, K = 3), each the model on the 3 latest
    frames, as the Python API computes them from the same frames as an array."""
    ckpt, _, ts = setup
    _stdin_pipe(monkeypatch, ts.read_bytes())
    assert main(["predict", "--stream", "-", "--checkpoint", str(ckpt), "--topk", "4"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["frame"] for d in lines] == list(range(2, 12)) and "-: end of stream after 10 decisions" in err
    assert all(d["latency_ms"] > 0 and d["num_frames"] == 3 for d in lines)
    predictor = Predictor.from_checkpoint(ckpt)
    frames = read_frames(ts, list(range(12)), short_side=36)  # what the stream decoded
    ref = list(predictor.stream(frames.numpy(), fps=4, topk=4))  # an iterable of uint8 arrays
    pre = predictor.preprocessing
    for got, want in zip(lines, ref, strict=True):
        assert got["time_s"] == pytest.approx(want["time_s"]) and got["frame"] == want["frame"]
        torch.testing.assert_close(_scores(got), _scores(want), atol=1e-5, rtol=0)
        with torch.no_grad():
            clip = pre.to_input(pre.view(frames[got["frame"] - 2: got["frame"] + 1]))  # (3, 3, 32, 32)
            model_probs = predictor.model(clip[None]).logits.softmax(-1)[0]
        torch.testing.assert_close(_scores(got), model_probs, atol=1e-5, rtol=0)


def test_ctrl_c_stops_cleanly(setup, monkeypatch, capsys):
    """A live source that keeps the pipe open: Ctrl-C (SIGINT) while waiting for data ends with a summary line and
    status 0 (PyAV swallows a KeyboardInterrupt raised in its read callback; the source hands it on).

    The SIGINT is sent at the moment it is about: the stream has made a decision, every byte fed is consumed, and the
    source asks for more. (Were Ctrl-C ignored, the pipe closes after 120 s and the run ends "end of stream".)"""
    import istpan.data.sources as sources
    import istpan.inference.stream as stream_module

    ckpt, _, ts = setup
    done, written = threading.Event(), threading.Event()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(fed_pipe(ts.read_bytes(), hold_open=done, written=written)))
    inner, decided, interrupted = stream_module.stream_decisions, [], []

    def counted(*args, **kwargs):
        for decision in inner(*args, **kwargs):
            decided.append(decision["frame"])
            yield decision

    real_select = sources.select.select

    def select_then_ctrl_c(read, write, errors, timeout=None):
        if decided and written.is_set() and not interrupted and not real_select(read, write, errors, 0)[0]:
            interrupted.append(len(decided))
            os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt here, inside the source's wait for data
        return real_select(read, write, errors, timeout)

    monkeypatch.setattr(stream_module, "stream_decisions", counted)
    monkeypatch.setattr(sources, "select", types.SimpleNamespace(select=select_then_ctrl_c))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh process (other tests may
    try:                                                                  # have left a training handler installed)
        assert main(["predict", "--stream", "-", "--checkpoint", str(ckpt), "--timeout", "300"]) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
        done.set()
    out, err = capsys.readouterr()
    assert len(interrupted) == 1 and "Traceback" not in err
    assert f"-: stopped (Ctrl-C) after {len(decided)} decisions" in err
    assert [json.loads(line)["frame"] for line in out.splitlines()] == decided == list(range(2, 2 + len(decided)))


def test_file_stream_cadence_and_bad_sources(setup, capsys):
    ckpt, mp4, _ = setup
    assert main(["predict", "--stream", str(mp4), "--checkpoint", str(ckpt), "--every-seconds", "1"]) == 0
    times = [json.loads(line)["time_s"] for line in capsys.readouterr().out.splitlines()]
    assert times == [0.5, 1.5, 2.5]  # 4 fps, first decision when K = 3 frames are in, then every second
    assert main(["predict", "--stream", str(mp4), "--checkpoint", str(ckpt), "--sample-fps", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["time_s"] for d in lines] == [1.0, 1.5, 2.0, 2.5] and lines[0]["window_s"] == 1.0
    assert main(["predict", "--stream", str(mp4.with_name("gone.mp4")), "--checkpoint", str(ckpt)]) == 2
    assert capsys.readouterr().err.strip().endswith("gone.mp4: file not found")
    assert main(["predict", str(mp4), "--stream", str(mp4), "--checkpoint", str(ckpt)]) == 2
    assert "--stream takes no VIDEO" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"frame 1: expected a uint8 array \(H, W, 3\), got int64 \(40, 48\)"):
        list(Predictor.from_checkpoint(ckpt).stream([np.zeros((40, 48, 3), np.uint8), np.zeros((40, 48), int)]))


def test_anytime_predict_cli(setup, capsys):
    ckpt, mp4, _ = setup
    assert main(["predict", str(mp4), "--checkpoint", str(ckpt), "--max-frames", "5", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)[0]
    assert main(["predict", str(mp4), "--checkpoint", str(ckpt), "--num-frames", "5", "--json"]) == 0
    fixed = json.loads(capsys.readouterr().out)[0]
    assert full["num_frames"] == 5 and [t["index"] for t in full["top"]] == [t["index"] for t in fixed["top"]]
    assert [t["score"] for t in full["top"]] == pytest.approx([t["score"] for t in fixed["top"]], abs=1e-5)
    assert main(["predict", str(mp4), "--checkpoint", str(ckpt), "--max-frames", "5", "--confidence", "0"]) == 0
    assert "(1 of 5 frames)" in capsys.readouterr().out
    per_step = ["--max-frames", "5", "--confidence", "2,2,0,2", "--json"]  # one threshold per step: stop after 3
    assert main(["predict", str(mp4), "--checkpoint", str(ckpt), *per_step]) == 0
    assert json.loads(capsys.readouterr().out)[0]["num_frames"] == 3
    assert main(["predict", str(mp4), "--checkpoint", str(ckpt), "--max-frames", "5", "--confidence", "0,0"]) == 2
    assert "need one threshold per step: 4 (or 5) values for 5 frames, got 2" in capsys.readouterr().err
    assert main(["predict", str(mp4), "--checkpoint", str(ckpt), "--confidence", "0.3"]) == 2
    assert "--confidence with numbers needs --max-frames" in capsys.readouterr().err
    dyadic = ["--max-frames", "5", "--frame-order", "dyadic", "--confidence", "2,2,0,2", "--json"]
    assert main(["predict", str(mp4), "--checkpoint", str(ckpt), *dyadic]) == 0
    by_order = json.loads(capsys.readouterr().out)[0]
    assert by_order["num_frames"] == 3
    with torch.no_grad():  # the first 3 of the dyadic order [2, 1, 3, 0, 4] at their own times, 5 candidates
        predictor = Predictor.from_checkpoint(ckpt)
        pre = predictor.preprocessing.with_frames(5)
        views = pre.to_input(pre.read(mp4)[0][[1, 2, 3]])  # (3, 3, 32, 32)
        ref = predictor.model(views[None], times=(torch.tensor([1, 2, 3]) + 0.5) / 5).logits.softmax(-1)[0]
    torch.testing.assert_close(_scores(by_order), ref, atol=1e-5, rtol=0)
