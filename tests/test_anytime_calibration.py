"""`istpan eval --anytime` (evaluation/calibration.py) and `predict --confidence FILE`: calibration end to end on
generated videos, the file round trip, and that predict reproduces the frames and accuracy the calibration reported."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from istpan.cli.main import build_parser, main
from istpan.config import config_to_dict
from istpan.data.tools import synth
from istpan.evaluation.calibration import load_calibration
from istpan.experiments.runs import Budget, _val_loader, synth_config
from istpan.files.checkpoint import build_meta, save_checkpoint
from istpan.inference.anytime import FRAME_ORDERS
from istpan.models import create_model


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """24 generated videos (all "val"), a random order-aware istpan_tiny checkpoint whose stored config points at
    them (K = 4), and `istpan eval --anytime --json` run on it."""
    base = tmp_path_factory.mktemp("anytime_cal")
    root = synth.generate(base / "data", num_videos=24, size=32, num_frames=8, val_fraction=1.0, seed=5)
    budget = Budget(num_videos=24, size=32, num_frames=8, segments=4, batch_size=8, num_workers=0)
    cfg = synth_config(root, model="istpan_tiny", out_dir=base / "run", budget=budget,
                       options={"time_encoding": "fourier", "head": "glimpse"})
    cfg.data.val_annotations = str(root / "val.txt")
    cfg.train.device = "cpu"
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=len(synth.CLASSES), **cfg.model.options).eval()
    # a random model is at chance after any number of frames and calibrates to "stop at once" or "never": fit the
    # layer and head (not the backbone: cheap, on cached features) to these videos' 4 frames, so that margins grow
    # with the frames seen and the calibrated rule stops at different frames for different videos
    video = torch.cat([b["video"] for b in _val_loader(cfg, test_num_frames=4)])  # (24, 4, 3, 32, 32)
    label = torch.tensor([synth.CLASSES.index(line.split()[1]) for line in (root / "val.txt").read_text().splitlines()])
    with torch.no_grad():
        feats = model.frame_features(video.flatten(0, 1)).unflatten(0, video.shape[:2])  # (24, 4, ΣC_j, h, w)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("backbone.")], lr=1e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model.forward_clip(feats).logits, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = build_meta(model, class_names=synth.CLASSES, data_cfg=cfg.data)
    ckpt = save_checkpoint({"model": model.state_dict(), "meta": meta, "epoch": 1, "config": config_to_dict(cfg)},
                           base / "model.pt")
    out = base / "anytime.json"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["eval", "--checkpoint", str(ckpt), "--anytime", "--rule", "margin", "--z", "0", "--max-loss", "5",
                     "--json", str(out)]) == 0
    return root, ckpt, out, printed.getvalue()


@pytest.fixture(scope="module")
def gain_calibrated(calibrated):
    """The same checkpoint and videos calibrated with the gain rule: the default (z = 2) and the point loss (z = 0)."""
    root, ckpt, _, _ = calibrated
    files, printed = {}, {}
    for z in ("2", "0"):
        files[z] = ckpt.parent / f"gain_z{z}.json"
        extra = [] if z == "2" else ["--z", z]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            # 24 videos: loss + 2 SE of one changed answer is ~13 points, so a target that lets the rule stop
            assert main(["eval", "--checkpoint", str(ckpt), "--anytime", "--max-loss", "15", "--no-fixed-k", *extra,
                         "--json", str(files[z])]) == 0
        printed[z] = out.getvalue()
    return root, ckpt, files, printed


def test_eval_anytime_writes_a_calibration_that_predict_reproduces(calibrated, capsys):
    root, ckpt, out, printed = calibrated
    cal = load_calibration(out)
    raw = json.loads(out.read_text())
    assert raw["frame_order"] == "spread" and raw["order"] == [1, 3, 2, 0] and raw["max_frames"] == 4
    assert len(cal.thresholds) == 3 and cal.num_videos == 24 and sorted(cal.fixed_k_accuracy) == [1, 2, 3, 4]
    assert cal.data["val_annotations"] == str(root / "val.txt") and f"wrote {out}" in printed
    assert f"{cal.mean_frames:.2f} frames" in printed and "fixed K top-1" in printed
    assert cal.accuracy >= cal.full_accuracy - 5 - 1e-9
    assert cal.fixed_k_accuracy[4] == pytest.approx(cal.full_accuracy)  # all 4 candidates = fixed K = 4
    assert 1 < cal.mean_frames < 4  # it does stop early, and not everywhere at the first frame

    videos = [str(root / line.split()[0]) for line in (root / "val.txt").read_text().splitlines()]
    labels = [line.split()[1] for line in (root / "val.txt").read_text().splitlines()]
    assert main(["predict", *videos, "--checkpoint", str(ckpt), "--confidence", str(out), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    frames = sum(r["num_frames"] for r in results) / len(results)
    accuracy = 100 * sum(r["top"][0]["class"] == y for r, y in zip(results, labels, strict=True)) / len(results)
    assert {r["max_frames"] for r in results} == {4}
    assert frames == pytest.approx(cal.mean_frames) and accuracy == pytest.approx(cal.accuracy)
    # the same thresholds as numbers, order and N given by hand: the same decisions
    numbers = ["--max-frames", "4", "--frame-order", "spread", "--confidence", ",".join(map(repr, cal.thresholds))]
    assert main(["predict", *videos[:6], "--checkpoint", str(ckpt), *numbers, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r["num_frames"] for r in again] == [r["num_frames"] for r in results[:6]]


def test_calibration_file_errors(calibrated, tmp_path, capsys):
    root, ckpt, out, _ = calibrated
    video = str(root / (root / "val.txt").read_text().split()[0])

    def error(*extra: str) -> str:
        assert main(["predict", video, "--checkpoint", str(ckpt), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return err

    assert error("--confidence", str(tmp_path / "gone.json")).endswith("gone.json: calibration file not found "
                                                                       f"(write one with `istpan eval --anytime "
                                                                       f"--json {tmp_path / 'gone.json'}`)")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "bad.json: not a calibration file: bad JSON" in error("--confidence", str(bad))
    wrong = json.loads(out.read_text())
    wrong["thresholds"] = wrong["thresholds"][:1]
    bad.write_text(json.dumps(wrong))
    assert "bad.json: 1 thresholds for max_frames 4; expected 3 (one per step)" in error("--confidence", str(bad))
    assert "--max-frames 6 does not match the calibration" in error("--confidence", str(out), "--max-frames", "6")
    assert "--frame-order dyadic does not match the calibration" in error("--confidence", str(out), "--frame-order",
                                                                          "dyadic")
    assert "--confidence with numbers needs --max-frames" in error("--confidence", "0.3")
    assert "--frame-order needs --max-frames or --confidence" in error("--frame-order", "dyadic")
    assert main(["eval", "--checkpoint", str(ckpt), "--max-frames", "4"]) == 2
    assert "go with --anytime" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(ckpt), "--rule", "margin"]) == 2
    assert "go with --anytime" in capsys.readouterr().err


def test_cli_frame_orders_are_the_engines():
    """The CLI lists the orders without importing torch; they must be the engine's FRAME_ORDERS."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("predict", "eval"):
        action = next(a for a in sub.choices[command]._actions if a.dest == "frame_order")
        assert set(action.choices) == set(FRAME_ORDERS), command


def test_calibration_on_a_held_out_list_and_without_fixed_k(calibrated, tmp_path, capsys):
    """Overrides choose the videos (calibrate on other videos than you report on); the dyadic order is recorded."""
    root, ckpt, _, _ = calibrated
    half = tmp_path / "half.txt"
    half.write_text("\n".join((root / "val.txt").read_text().splitlines()[:12]) + "\n")
    out = tmp_path / "dyadic.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--anytime", "--frame-order", "dyadic", "--no-fixed-k",
                 "--json", str(out), f"data.val_annotations={half}"]) == 0
    cal = load_calibration(out)
    assert cal.num_videos == 12 and cal.order == [1, 0, 2, 3] and cal.fixed_k_accuracy == {}
    assert cal.data["val_annotations"] == str(half) and Path(cal.checkpoint) == ckpt
    assert "frame order dyadic [1, 0, 2, 3]" in capsys.readouterr().out



def test_gain_rule_calibration_and_predict(gain_calibrated, calibrated, tmp_path, capsys):
    """`eval --anytime` (default: the gain rule, z = 2) writes its model into the file; predict applies it and
    reproduces the frames and accuracy the calibration reported, video by video, frame by frame."""
    root, ckpt, files, printed = gain_calibrated
    videos = [str(root / line.split()[0]) for line in (root / "val.txt").read_text().splitlines()]
    labels = [line.split()[1] for line in (root / "val.txt").read_text().splitlines()]
    for z, path in files.items():
        raw = json.loads(path.read_text())
        cal = load_calibration(path)
        assert raw["format"] == "istpan-anytime-calibration/2" and raw["rule"] == "gain" and raw["z"] == float(z)
        assert len(set(cal.thresholds)) == 1 and cal.gain_model().steps == 3  # one threshold, a model per step
        assert cal.bound["bound"] == pytest.approx(cal.bound["loss"] + float(z) * cal.bound["se"])
        assert cal.bound["bound"] <= 15 + 1e-9 and "gain rule: stop when the predicted top-1 gain" in printed[z]
        assert main(["predict", *videos, "--checkpoint", str(ckpt), "--confidence", str(path), "--json"]) == 0
        results = json.loads(capsys.readouterr().out)
        frames = sum(r["num_frames"] for r in results) / len(results)
        accuracy = 100 * sum(r["top"][0]["class"] == y for r, y in zip(results, labels, strict=True)) / len(results)
        assert frames == pytest.approx(cal.mean_frames) and accuracy == pytest.approx(cal.accuracy)
    assert 1 < load_calibration(files["0"]).mean_frames < 4  # it does stop early, and not everywhere at once
    assert load_calibration(files["2"]).mean_frames < 4  # the default's wider bound still lets some videos stop

    # a version-1 file (margin thresholds only, before rules existed) still reads, as the margin rule
    _, _, margin_file, _ = calibrated
    old = json.loads(margin_file.read_text())
    for key in ("rule", "gain", "z", "bound"):
        old.pop(key)
    old["format"] = "istpan-anytime-calibration/1"
    (tmp_path / "v1.json").write_text(json.dumps(old))
    v1 = load_calibration(tmp_path / "v1.json")
    assert v1.rule == "margin" and v1.gain is None and v1.thresholds == load_calibration(margin_file).thresholds
    # a damaged gain model is one line naming the file
    broken = json.loads(files["2"].read_text())
    broken["gain"]["bias"] = broken["gain"]["bias"][:1]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert main(["predict", videos[0], "--checkpoint", str(ckpt), "--confidence", str(tmp_path / "broken.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.json: the gain rule needs its model" in err
    assert main(["eval", "--checkpoint", str(ckpt), "--anytime", "--rule", "margin", "--z", "-1"]) == 2
    assert "--z must be >= 0" in capsys.readouterr().err
