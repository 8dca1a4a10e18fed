"""`istpan predict` in every mode: one forward pass per video, each bad file reported, the good ones predicted."""

from __future__ import annotations

import json

import pytest
import torch
from references import naive_decode, naive_window_probs
from videos import make_video

from istpan.cli.main import main
from istpan.config import DataConfig
from istpan.files.checkpoint import build_meta, save_checkpoint
from istpan.inference.videos import predict_videos
from istpan.models import create_model
from istpan.models.classifier import VideoClassifier


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint, two good videos and three bad files (0 bytes, garbage, missing)."""
    base = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=3, input_size=32)
    with torch.no_grad():  # scores far from uniform and different per video and window: a wrong frame shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    meta = build_meta(model, class_names=["a", "b", "c"],
                      data_cfg=DataConfig(input_size=32, short_side=36, test_num_frames=3))
    ckpt = save_checkpoint({"model": model.state_dict(), "meta": meta, "epoch": 1}, base / "model.pt")
    good = [make_video(base / "good1.mp4", num_frames=12, size=(40, 48), fps=4),
            make_video(base / "good2.mp4", num_frames=9, size=(36, 36), fps=4)]
    empty = base / "empty.mp4"
    empty.write_bytes(b"")
    garbage = base / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01garbage" * 50)
    bad = [empty, garbage, base / "missing.mp4"]
    return model.eval(), meta, ckpt, good, bad


@pytest.fixture
def forwards():
    """Counts forward passes of any video classifier, however it is called (CLI included)."""
    calls: list[int] = []

    def hook(module, args, out):
        if isinstance(module, VideoClassifier):
            calls.append(args[0].shape[0])

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield calls
    handle.remove()


def test_explain_runs_one_forward_pass_per_video(setup, tmp_path, forwards, capsys):
    _, _, ckpt, good, bad = setup
    code = main(["predict", str(good[0]), str(bad[1]), str(good[1]), "--checkpoint", str(ckpt), "--json",
                 "--explain", str(tmp_path / "x")])
    assert code == 1
    assert forwards == [1, 1]  # one forward of one clip per readable video: prediction and pictures share it
    results = json.loads(capsys.readouterr().out)
    entries = json.loads((tmp_path / "x" / "results.json").read_text())
    assert [e["path"] for e in entries] == [r["path"] for r in results]
    for r, e in zip(results, entries, strict=True):
        if "error" in r:
            assert e["error"] == r["error"]
            continue
        assert [t["index"] for t in e["top"]] == [t["index"] for t in r["top"]]
        assert [t["score"] for t in e["top"]] == [t["score"] for t in r["top"]]
        assert (tmp_path / "x").joinpath(e["grid"]).is_file()


def _naive(model, meta, path, start: int = 0, end: int | None = None) -> torch.Tensor:
    """The model by hand on the K segment-centre frames of frames[start:end] (checkpoint's short side 36 = resize)."""
    pre = meta["preprocessing"]
    assert pre["short_side"] == pre["resize"] == 36
    return naive_window_probs(model, naive_decode(path, 36), k=3, input_size=32, mean=pre["mean"], std=pre["std"],
                              start=start, end=end)


def test_predict_videos_with_explain_equals_plain_predict(setup, tmp_path, forwards):
    model, meta, _, good, _ = setup
    plain = predict_videos(model, meta, good, topk=3)
    n = len(forwards)
    explained = predict_videos(model, meta, good, topk=3, explain=tmp_path / "x")
    assert explained == plain and len(forwards) - n == len(good)
    for result, path in zip(plain, good, strict=True):  # and both are the model on the right frames
        top = _naive(model, meta, path).topk(3)
        assert [t["index"] for t in result["top"]] == top.indices.tolist()
        assert [t["score"] for t in result["top"]] == pytest.approx(top.values.tolist(), abs=1e-5)


def _window_bounds(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The windows docs/inference describes, written out: [s, s + W) every S frames while inside, the end-aligned
    window when those stop short of the end, or [0, T) for a video shorter than the window."""
    if n < window:
        return [(0, n)]
    bounds = [(s, s + window) for s in range(0, n - window + 1, stride)]
    return bounds if bounds[-1][1] == n else [*bounds, (n - window, n)]


@pytest.mark.parametrize("mode", [[], ["--explain", "OUT"], ["--window", "2"], ["--window", "4", "--explain", "OUT"]],
                         ids=["plain", "explain", "window", "window-explain"])
def test_every_mode_reports_each_bad_file_and_predicts_the_good_ones(setup, tmp_path, mode, capsys):
    _, _, ckpt, good, bad = setup
    videos = [str(bad[0]), str(good[0]), str(bad[1]), str(bad[2]), str(good[1])]
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in mode]
    code = main(["predict", *videos, "--checkpoint", str(ckpt), "--json", *argv])
    captured = capsys.readouterr()
    assert code == 1
    results = json.loads(captured.out)
    assert [r["path"] for r in results] == videos
    assert [("error" in r) for r in results] == [True, False, True, True, False]
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and all(any(str(b) in e for e in errors) for b in bad)
    if "--window" in mode:  # 4 fps: --window 2 is 8 frames (stride 4), --window 4 is 16 (longer than both videos)
        model, meta = setup[0], setup[1]
        window = 8 if mode[1] == "2" else 16
        for r, path in ((results[1], good[0]), (results[4], good[1])):
            n = 12 if path == good[0] else 9
            assert [(w["start"], w["end"]) for w in r["windows"]] == _window_bounds(n, window, window // 2)
            for w in r["windows"]:
                want = _naive(model, meta, path, w["start"], w["end"])
                assert w["scores"] == pytest.approx(want.tolist(), abs=1e-5)
    if "--explain" in mode:
        assert (tmp_path / "out" / "index.html").read_text().count("error") >= 3


def test_all_good_exits_zero(setup, capsys):
    _, _, ckpt, good, _ = setup
    assert main(["predict", *map(str, good), "--checkpoint", str(ckpt), "--window", "2"]) == 0
    assert capsys.readouterr().out.count("windows (mean)") == 2


def test_stride_without_window_is_an_error(setup, capsys):
    _, _, ckpt, good, _ = setup
    assert main(["predict", str(good[0]), "--checkpoint", str(ckpt), "--stride", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--stride needs --window" in err and "\n" not in err


@pytest.mark.parametrize(("window", "frames", "stride"), [("1.5", 1, 1), ("1", 1, 1), ("5", 5, 2)])
def test_default_stride_is_half_the_window_in_frames(setup, capsys, window, frames, stride):
    """`--window 1.5 --unit frames` used to fail on a derived `--stride 0.75` nobody gave."""
    _, _, ckpt, good, _ = setup
    assert main(["predict", str(good[0]), "--checkpoint", str(ckpt), "--window", window, "--unit", "frames",
                 "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["window"] == frames and result["stride"] == stride
    assert [(w["start"], w["end"]) for w in result["windows"]][:2] == [(0, frames), (stride, stride + frames)]
