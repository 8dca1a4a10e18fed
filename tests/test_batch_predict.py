"""`istpan predict --list`: same predictions as `predict_videos`, bad videos recorded, every line exactly once after
a SIGKILL and a rerun, and the same output from 2 torchrun processes as from 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoints import tiny_checkpoint
from pausing import PausingChild
from videos import make_video

from istpan.cli.main import main
from istpan.inference.videos import predict_videos

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint and a list of 14 lines: 12 good videos, a missing one, a corrupt one."""
    base = tmp_path_factory.mktemp("batch")
    model, meta, ckpt = tiny_checkpoint(base / "model.pt")
    names = []
    for i in range(12):
        make_video(base / "v" / f"clip{i}.mp4", num_frames=6 + i, size=(32, 40))
        names.append(f"clip{i}.mp4")
    (base / "v" / "corrupt.mp4").write_bytes(b"\x00garbage" * 64)
    names[3:3] = ["missing.mp4"]
    names[9:9] = ["corrupt.mp4", "", "# a comment"]
    (base / "list.txt").write_text("\n".join(names) + "\n")
    return model.eval(), meta, ckpt, base


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _cli(setup, out: Path, *extra: str) -> list[str]:
    _, _, ckpt, base = setup
    return ["predict", "--list", str(base / "list.txt"), "--root", str(base / "v"), "--out", str(out),
            "--checkpoint", str(ckpt), "--topk", "2", *extra]


def test_predictions_equal_single_video_predict_and_bad_videos_are_recorded(setup, tmp_path, capsys):
    model, meta, _, _ = setup
    assert main(_cli(setup, tmp_path / "preds.jsonl", "--workers", "2", "--batch-size", "3")) == 1  # 2 failed
    records = _records(tmp_path / "preds.jsonl")
    assert len(records) == 14 and len({r["line"] for r in records}) == 14
    errors = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    assert set(errors) == {"missing.mp4", "corrupt.mp4"} and "file not found" in errors["missing.mp4"]
    reference = {r["path"]: r for r in predict_videos(model, meta, [r["path"] for r in records], topk=2)}
    for r in records:
        if "error" not in r:
            ref = reference[r["path"]]
            assert [t["class"] for t in r["top"]] == [t["class"] for t in ref["top"]]
            assert [t["score"] for t in r["top"]] == pytest.approx([t["score"] for t in ref["top"]], abs=1e-5)
            assert r["video_frames"] == ref["video_frames"]
    assert not (tmp_path / "preds.jsonl.parts").exists()
    assert "12 videos predicted" in capsys.readouterr().err
    # a rerun: nothing left to do, nothing written twice
    assert main(_cli(setup, tmp_path / "preds.jsonl", "--workers", "0")) == 0
    assert len(_records(tmp_path / "preds.jsonl")) == 14


# Batches of one: the child stops before predicting its third video, when exactly two lines (clip0, clip1) are written.
_PATCH = """
from istpan.inference.predictor import Predictor
predict, calls = Predictor.predict, []
def paused_predict(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        pause()
    return predict(self, *args, **kwargs)
Predictor.predict = paused_predict
"""


@pytest.mark.slow
def test_sigkill_then_rerun_loses_nothing_and_duplicates_nothing(setup, tmp_path):
    out = tmp_path / "preds.jsonl"
    child = PausingChild(tmp_path / "pause", patch=_PATCH, argv=_cli(setup, out, "--workers", "0", "--batch-size", "1"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child.wait_paused()
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait()
    part = tmp_path / "preds.jsonl.parts" / "rank-00000.jsonl"
    assert [r["line"] for r in _records(part)] == [1, 2]  # killed mid-list: two videos done, twelve lines to go
    with part.open("a") as fh:
        fh.write('{"line": 99, "path": "half-writ')  # what a kill in the middle of a write leaves
    main(_cli(setup, out, "--workers", "0"))
    records = _records(out)
    assert sorted(r["line"] for r in records) == sorted({r["line"] for r in records})  # no duplicates
    assert len(records) == 14  # no loss


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed")
def test_two_processes_write_the_same_predictions_as_one(setup, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert main(_cli(setup, one, "--workers", "0")) == 1
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "istpan.cli.main",
                           *_cli(setup, two, "--workers", "0")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the two bad videos
    a = sorted(_records(one), key=lambda r: r["line"])
    b = sorted(_records(two), key=lambda r: r["line"])
    assert [r["line"] for r in a] == [r["line"] for r in b] and len(b) == 14
    for x, y in zip(a, b):
        assert ("error" in x) == ("error" in y)
        if "top" in x:
            assert [t["class"] for t in x["top"]] == [t["class"] for t in y["top"]]
            assert [t["score"] for t in x["top"]] == pytest.approx([t["score"] for t in y["top"]], abs=1e-5)
