"""One result schema in every mode of `istpan predict` and in Python, one error record, and a run folder as
--checkpoint in every mode (issue 24). Uses the committed legacy run folder (tests/fixtures/legacy/run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_legacy_formats import LEGACY
from videos import make_frames, make_video

from istpan.cli.main import main
from istpan.inference.predictor import Predictor, predict_fused
from istpan.inference.results import VIDEO_KEYS, error_record

RUN = LEGACY / "run"  # a run folder: best.pt
TOP_KEYS = {"class", "index", "score"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "clip.mp4"
    make_video(path, np.ascontiguousarray(make_frames(12, (40, 40), seed=3)))
    return path


def _json(capsys, *argv: str) -> list[dict]:
    code = main(["predict", *argv, "--json"])
    out = capsys.readouterr().out
    assert code in (0, 1)
    return json.loads(out)


def _video_keys_ok(result: dict) -> None:
    assert set(VIDEO_KEYS) <= set(result), sorted(result)
    assert result["top"] and all(set(t) == TOP_KEYS for t in result["top"])


def test_every_mode_has_the_same_per_video_keys_with_a_run_folder(clip, capsys, tmp_path):
    run = str(RUN)
    plain = _json(capsys, str(clip), "--checkpoint", run)[0]
    windows = _json(capsys, str(clip), "--checkpoint", run, "--window", "6", "--stride", "3", "--unit", "frames")[0]
    anytime = _json(capsys, str(clip), "--checkpoint", run, "--max-frames", "3", "--confidence", "0")[0]
    explain = _json(capsys, str(clip), "--checkpoint", run, "--explain", str(tmp_path / "x"))[0]
    fused = _json(capsys, str(clip), "--checkpoint", run, "--checkpoint", str(RUN / "best.pt"))[0]
    python = Predictor.from_checkpoint(RUN).predict(str(clip))
    for result in (plain, windows, anytime, explain, fused, python):
        _video_keys_ok(result)
        assert result["path"] == str(clip) and result["video_frames"] == 12
    assert plain["num_frames"] == explain["num_frames"] == python["num_frames"] == 3  # the checkpoint's K
    assert windows["num_frames"] == 3 and all(set(s) >= {"class", "index"} for s in windows["segments"])
    assert anytime["num_frames"] == 1 and anytime["max_frames"] == 3  # stopped after one frame (margin >= 0)
    assert [t["index"] for t in plain["top"]] == [t["index"] for t in python["top"]] == [t["index"] for t in
                                                                                         fused["top"]]
    report = json.loads((tmp_path / "x" / "results.json").read_text())[0]
    _video_keys_ok(report)


def test_list_and_stream_records(clip, capsys, tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{clip}\n{tmp_path / 'missing.mp4'}\n")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--list", str(listing), "--out", str(out), "--checkpoint", str(RUN), "--workers", "0"]) == 1
    good, bad = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["line"])
    _video_keys_ok(good)
    assert set(bad) == {"line", "path", "error"} and bad["path"] == str(tmp_path / "missing.mp4")
    capsys.readouterr()
    assert main(["predict", "--stream", str(clip), "--checkpoint", str(RUN), "--every-frames", "4"]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert decisions and all({"num_frames", "multi_label", "top"} <= set(d) for d in decisions)
    assert all(set(t) == TOP_KEYS for d in decisions for t in d["top"])


def test_one_error_record_in_every_mode(clip, capsys, tmp_path):
    missing = str(tmp_path / "missing.mp4")
    for mode in ([], ["--window", "6", "--unit", "frames"], ["--max-frames", "3"], ["--explain", str(tmp_path / "e")]):
        results = _json(capsys, str(clip), missing, "--checkpoint", str(RUN), *mode)
        assert results[1] == error_record(missing, results[1]["error"]) and missing in results[1]["error"]
    predictor = Predictor.from_checkpoint(RUN)
    assert set(predictor.predict([missing], errors="report")[0]) == {"path", "error"}
    assert set(predict_fused([predictor, predictor], [missing])[0]) == {"path", "error"}
