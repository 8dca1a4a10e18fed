"""`istpan data check` on datasets the tests write: every kind of problem found, reported, and reflected in the exit
status; a clean dataset (real clips included) passes."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from videos import make_video

from istpan.cli.main import main
from istpan.data.tools.check import check_video


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


@pytest.fixture
def broken_dataset(tmp_path):
    v = tmp_path / "videos"
    make_video(v / "good one.mp4", num_frames=8)
    make_video(v / "Golf !!! 300+ (yards) & more.avi", num_frames=8, codec="mpeg4")
    make_video(v / "single.mp4", num_frames=1)
    (v / "zero.mp4").write_bytes(b"")
    (v / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    audio_only(v / "audio.mp4")
    (v / "folder.mp4").mkdir()
    data = make_video(tmp_path / "full.avi", num_frames=64, codec="mpeg4").read_bytes()
    (v / "half.avi").write_bytes(data[: len(data) // 2 + len(data) // 5])
    names = ["good one.mp4", "Golf !!! 300+ (yards) & more.avi", "single.mp4", "zero.mp4", "random.mp4", "audio.mp4",
             "folder.mp4", "half.avi", "missing.mp4"]
    lines = [f"videos/{n} {'abc'[i % 2]}" for i, n in enumerate(names)] + ["videos/good one.mp4 nope"]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    return tmp_path


def test_check_finds_every_kind_of_problem(broken_dataset, capsys):
    out = broken_dataset / "report"
    code = main(["data", "check", "--format", "list", "--annotations", str(broken_dataset / "train.txt"),
                 "--classes", str(broken_dataset / "classes.txt"), "--out", str(out), "--workers", "2",
                 "--no-progress"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    split = report["splits"]["train"]
    status = {Path(p["path"]).name: p["status"] for p in split["video_problems"]}
    assert status == {"zero.mp4": "unreadable", "random.mp4": "unreadable", "audio.mp4": "unreadable",
                      "folder.mp4": "unreadable", "half.avi": "truncated", "missing.mp4": "missing"}
    reasons = {Path(p["path"]).name: p["reason"] for p in split["video_problems"]}
    assert "empty file" in reasons["zero.mp4"] and "no video stream" in reasons["audio.mp4"]
    assert "is a directory" in reasons["folder.mp4"] and "only" in reasons["half.avi"]
    assert split["ok"] == 3 and split["videos"] == 9  # good, odd name, single frame
    assert [c["ok"] for c in split["classes"]] == [2, 1, 0] and split["empty_classes"] == ["c"]
    assert len(split["annotation_problems"]) == 1 and "nope" in split["annotation_problems"][0]
    summary = (out / "summary.txt").read_text()
    assert "PROBLEMS FOUND" in summary and "missing: 1" in summary and "half.avi" in summary
    assert summary in capsys.readouterr().out


def test_clean_dataset_exits_zero(tmp_path, clips_dir):
    root = tmp_path / "videos"
    root.mkdir()
    names = sorted(p.name for p in clips_dir.iterdir() if p.suffix in (".avi", ".mp4"))
    for name in names:
        (root / name).symlink_to(clips_dir / name)
    (tmp_path / "train.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    out = tmp_path / "report"
    code = main(["data", "check", "--format", "list", "--root", str(root), "--annotations",
                 str(tmp_path / "train.txt"), "--out", str(out), "--workers", "1", "--no-progress"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["clean"] and report["splits"]["train"]["ok"] == len(names)


def test_damaged_video_is_reported(tmp_path):
    data = bytearray(make_video(tmp_path / "ok.mp4", num_frames=64, options={"g": "16"}).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 300] = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    result = check_video(str(tmp_path / "damaged.mp4"))
    assert result.status == "damaged" and "fail to decode" in result.reason and result.frames < 64


def test_hmdb51_claimed_frame_too_many_is_not_a_problem(clips_dir):
    result = check_video(str(clips_dir / "6arrowswithin30seconds_shoot_bow_f_nm_np1_fr_med_3.avi"))
    assert result.status == "ok" and (result.frames, result.claimed_frames) == (81, 82)


def test_check_with_a_config_file_and_usage_errors(tmp_path, capsys):
    make_video(tmp_path / "a.mp4", num_frames=4)
    (tmp_path / "train.txt").write_text("a.mp4 0\n")
    (tmp_path / "val.txt").write_text("a.mp4 0\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  format: list\n  root: {tmp_path}\n  train_annotations: {tmp_path}/train.txt\n")
    out = tmp_path / "r"
    assert main(["data", "check", "--config", str(cfg), f"data.val_annotations={tmp_path}/val.txt", "--out",
                 str(out), "--no-progress"]) == 0
    assert set(json.loads((out / "report.json").read_text())["splits"]) == {"train", "val"}
    assert main(["data", "check", "--out", str(out)]) == 2
    assert main(["data", "check", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "error: data check: give --config" in err and "nope.yaml: config file not found" in err


def _check(*args: str) -> int:
    return main(["data", "check", *args, "--workers", "1", "--no-progress"])


def test_empty_dataset_is_an_error_not_a_clean_report(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("# nothing yet\n")
    out = tmp_path / "report"
    assert _check("--format", "list", "--annotations", str(tmp_path / "train.txt"), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to check" in err[0] and not out.exists()
    (tmp_path / "bad.txt").write_text("a.mp4 nope\n")  # every line skipped: say why in the same line
    assert _check("--format", "list", "--annotations", str(tmp_path / "bad.txt"), "--classes",
                  str(_classes(tmp_path)), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "nothing to check" in err and "1 annotation lines skipped" in err and "nope" in err


def _classes(tmp_path: Path) -> Path:
    (tmp_path / "classes.txt").write_text("a\nb\n")
    return tmp_path / "classes.txt"


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    make_video(tmp_path / "a.mp4", num_frames=4)
    (tmp_path / "train.txt").write_text("a.mp4 0\n")
    (tmp_path / "taken").write_text("mine\n")
    assert _check("--format", "list", "--annotations", str(tmp_path / "train.txt"), "--out",
                  str(tmp_path / "taken")) == 2
    err = capsys.readouterr().err
    assert "taken: exists and is not a folder" in err and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "mine\n"


def test_dangling_link_is_missing_and_cut_mp4_names_its_index(tmp_path):
    (tmp_path / "link.mp4").symlink_to(tmp_path / "gone.mp4")
    result = check_video(str(tmp_path / "link.mp4"))
    assert (result.status, result.reason) == ("missing", "link target does not exist")
    data = make_video(tmp_path / "full.mp4", num_frames=16).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.9)])  # the index (written last) is cut
    result = check_video(str(tmp_path / "cut.mp4"))
    assert result.status == "unreadable" and "moov atom" in result.reason and "audio" not in result.reason


@pytest.mark.parametrize("val_classes", [["run"], ["run", "walk", "swim"]], ids=["val lacks one", "val has extra"])
def test_folder_val_with_other_classes_than_train(tmp_path, val_classes, capsys):
    """Issue 10.10: the class list comes from train/; a val class unknown to train is reported and skipped."""
    for cls in ("run", "walk"):
        make_video(tmp_path / "train" / cls / "a.mp4", num_frames=4)
    for cls in val_classes:
        make_video(tmp_path / "val" / cls / "b.mp4", num_frames=4)
    out = tmp_path / "report"
    code = _check("--format", "folder", "--root", str(tmp_path), "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    val = report["splits"]["val"]
    assert [c["name"] for c in val["classes"]] == ["run", "walk"]  # train's classes, train's order
    if "swim" in val_classes:
        assert code == 1 and len(val["annotation_problems"]) == 1 and "'swim'" in val["annotation_problems"][0]
    else:
        assert code == 0 and val["empty_classes"] == ["walk"]
        assert "classes without a usable video (1): walk" in capsys.readouterr().out
