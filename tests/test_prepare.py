"""`istpan data prepare`: the copy holds the source's frames in the source's order (frame by frame against a full
decode), the GOP asked for, and survives reruns, changed sources, a kill half-way through a video and bad input.

Tolerance of the lossy re-encode (H.264 crf 23, JPEG quality 95): each copy frame is compared with the source frame
istpan reads at the same index, resized the same way; its luma must be within PSNR >= 30 dB of it on every frame and
>= 34 dB on average (measured at the default crf 23: >= 32.8 dB, mean 36.9-37.2 dB on these 32-pixel frames) AND it
must be closer to it than to any other source frame. Luma, because both formats store
colour at half resolution (4:2:0): on these small saturated frames that alone, without any compression, takes RGB PSNR
down to 28 dB, which says nothing about the copy being right. The generated frames carry a per-frame marker (a
brightness level and a square that moves every frame, tests/videos.py), so a dropped, doubled or swapped frame fails
the second check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from videos import make_frames, make_video

from istpan.cli.main import main
from istpan.config import load_config, save_config
from istpan.data import index as video_index
from istpan.data.decode import read_frames
from istpan.data.tools.prepare import KILL_HOOK, LOG_NAME
from istpan.data.video_dataset import load_split

REPO = Path(__file__).resolve().parents[1]
SHORT = 32  # the copies' short side: 48x80 sources become 32x52 (53 rounded down to even)


@pytest.fixture(autouse=True)
def _no_active_index():
    video_index.use(None)
    yield
    video_index.use(None)


def make_dataset(root: Path, *, bad: bool = False) -> Path:
    """A list-format dataset: an H.264 MP4 with one keyframe (long GOP), an MPEG-4 AVI with B-frames (the UCF101
    shape), a video with a space in its name, and optionally a file that is not a video."""
    root.mkdir(parents=True, exist_ok=True)
    make_video(root / "a.mp4", make_frames(40, (48, 80), seed=1), options={"g": "250"})
    make_video(root / "b.avi", make_frames(30, (48, 80), seed=2), codec="mpeg4", options={"bf": "2", "b": "2M"})
    make_video(root / "sub" / "c d.mp4", make_frames(24, (80, 48), seed=3))
    lines = ["a.mp4 run", "b.avi jump", "sub/c d.mp4 run"] + (["bad.mp4 jump"] if bad else [])
    if bad:
        (root / "bad.mp4").write_bytes(b"not a video" * 100)
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text("b.avi jump\n")
    (root / "classes.txt").write_text("run\njump\n")
    return root


def write_config(tmp: Path, data: Path) -> Path:
    cfg = load_config(None, [f"data.root={data}", f"data.train_annotations={data}/train.txt",
                             f"data.val_annotations={data}/val.txt", f"data.classes={data}/classes.txt"])
    save_config(cfg, tmp / "cfg.yaml")
    return tmp / "cfg.yaml"


def prepare(config: Path, out: Path, *extra: str) -> int:
    return main(["data", "prepare", "--config", str(config), "--out", str(out), "--short-side", str(SHORT),
                 "--workers", "1", "--no-progress", *extra])


def full_decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # (T, H, W, 3)


def luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the BT.601 luma of two uint8 (H, W, 3) frames."""
    weights = np.array([0.299, 0.587, 0.114])
    mse = np.mean((a.astype(np.float64) @ weights - b.astype(np.float64) @ weights) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def assert_same_frames(copy: np.ndarray, source: Path) -> None:
    """Frame i of the copy is the source's frame i (istpan's read at the copy's short side, cropped to its size)."""
    n = len(copy)
    want = read_frames(source, list(range(n)), short_side=SHORT).numpy()[:, : copy.shape[1], : copy.shape[2]]
    assert want.shape == copy.shape
    dist = ((copy[:, None].astype(np.float32) - want[None].astype(np.float32)) ** 2).mean(axis=(2, 3, 4))  # (T, T)
    assert dist.argmin(axis=1).tolist() == list(range(n)), "frames out of order, dropped or doubled"
    quality = [luma_psnr(c, w) for c, w in zip(copy, want, strict=True)]
    assert min(quality) >= 30.0 and np.mean(quality) >= 34.0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("prepare")
    data = make_dataset(tmp / "data")
    config = write_config(tmp, data)
    assert prepare(config, tmp / "out", "--gop", "6") == 0
    return data, config, tmp / "out"


def test_mp4_copy_is_the_source_frame_by_frame(prepared):
    data, _, out = prepared
    for src, n in (("a.mp4", 40), ("b.avi", 30), ("sub/c d.mp4", 24)):
        copy_path = out / "videos" / Path(src).with_suffix(".mp4")
        copy = full_decode(copy_path)
        assert len(copy) == n
        assert_same_frames(copy, data / src)
        with av.open(str(copy_path)) as c:
            stream = c.streams.video[0]
            assert len(c.streams) == 1 and stream.codec_context.name == "h264"
            assert stream.average_rate == 25
            keys = [i for i, p in enumerate(c.demux(stream)) if p.size and p.is_keyframe]
        assert keys == list(range(0, n, 6))  # a keyframe exactly every GOP frames
    assert full_decode(out / "videos" / "a.mp4").shape[1:3] == (32, 52)  # short side 32, odd width made even
    assert full_decode(out / "videos" / "sub" / "c d.mp4").shape[1:3] == (52, 32)  # portrait: the width is short


def test_copy_trains_from_its_config_with_the_same_labels_and_a_filled_index(prepared):
    _, config, out = prepared
    source_cfg, copy_cfg = load_config(config), load_config(out / "prepared.yaml")
    for split in ("train", "val"):
        src, cp = load_split(source_cfg.data, split), load_split(copy_cfg.data, split)
        assert cp.class_names == src.class_names
        assert [r.label for r in cp.records] == [r.label for r in src.records]
        assert [Path(r.path).stem for r in cp.records] == [Path(r.path).stem for r in src.records]
    index = video_index.VideoIndex(out / video_index.DEFAULT_NAME)
    assert len(index) == 3  # one entry per copy: training never scans them
    entry = index.get(out / "videos" / "a.mp4", *(lambda s: (s.st_size, s.st_mtime_ns))((out / "videos/a.mp4").stat()))
    assert entry is not None and entry["num_frames"] == 40 and entry["seekable"]


def test_frames_layout_holds_every_frame_in_order(prepared, tmp_path):
    data, config, _ = prepared
    assert prepare(config, tmp_path / "frames", "--format", "frames", "--quality", "95") == 0
    folder = tmp_path / "frames" / "frames" / "b"
    assert sorted(os.listdir(folder))[:2] == ["img_00001.jpg", "img_00002.jpg"]
    copy = read_frames(folder, list(range(30)), backend="frames").numpy()
    assert len(os.listdir(folder)) == 30
    assert_same_frames(copy, data / "b.avi")
    assert load_config(tmp_path / "frames" / "prepared.yaml").data.backend == "frames"


def snapshot(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if "istpan_index" not in p.name}


def test_rerun_rewrites_nothing_and_a_changed_source_is_redone(tmp_path):
    data = make_dataset(tmp_path / "data")
    config = write_config(tmp_path, data)
    out = tmp_path / "out"
    assert prepare(config, out) == 0
    before = snapshot(out)
    assert prepare(config, out) == 0
    assert snapshot(out) == before  # not one file touched
    make_video(data / "a.mp4", make_frames(20, (48, 80), seed=9))  # the source changed: size and mtime
    assert prepare(config, out) == 0
    after = snapshot(out)
    changed = {p for p in after if after[p] != before.get(p)}
    assert str(out / "videos" / "a.mp4") in changed
    assert not any("b.mp4" in p or "c d.mp4" in p for p in changed)
    assert len(full_decode(out / "videos" / "a.mp4")) == 20


def run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "istpan.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow
def test_a_kill_half_way_leaves_no_visible_half_file_and_the_rerun_completes(tmp_path):
    data = make_dataset(tmp_path / "data")
    config = write_config(tmp_path, data)
    out = tmp_path / "out"
    args = ["data", "prepare", "--config", str(config), "--out", str(out), "--workers", "1", "--no-progress"]
    killed = run_cli(args, {KILL_HOOK: "2"})  # SIGKILL half-way through the 2nd video (b.avi)
    assert killed.returncode == -9
    assert (out / "videos" / "a.mp4").is_file()
    assert not (out / "videos" / "b.mp4").exists() and (out / "videos" / "b.mp4.part").is_file()
    first = (out / "videos" / "a.mp4").stat().st_mtime_ns
    assert [json.loads(line)["src"] for line in (out / LOG_NAME).read_text().splitlines()] == [str(data / "a.mp4")]
    done = run_cli(args)
    assert done.returncode == 0, done.stderr
    assert "written 2, already done 1 of 3" in done.stdout
    assert (out / "videos" / "a.mp4").stat().st_mtime_ns == first  # not written again
    assert not list(out.rglob("*.part"))
    assert len(full_decode(out / "videos" / "b.mp4")) == 30


def test_a_bad_video_is_listed_counted_and_left_out(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", bad=True)
    config = write_config(tmp_path, data)
    assert prepare(config, tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert "failed 1" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.mp4" in errors[0] and "cannot open as a video" in errors[0]
    assert "bad.mp4" not in (tmp_path / "out" / "train.txt").read_text()
    assert not list((tmp_path / "out").rglob("bad*"))
    assert len((tmp_path / "out" / "train.txt").read_text().splitlines()) == 3


@pytest.mark.parametrize(("extra", "out", "message"), [
    (["--short-side", "0"], "out", "--short-side 0: must be a positive number of pixels"),
    (["--gop", "0"], "out", "--gop 0: must be at least 1"),
    ([], "data/inside", "is inside the dataset's folder"),
    ([], "file.txt/out", "cannot write there"),
])
def test_bad_arguments_are_one_line_each(tmp_path, capsys, extra, out, message):
    data = make_dataset(tmp_path / "data")
    config = write_config(tmp_path, data)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    code = main(["data", "prepare", "--config", str(config), "--out", str(tmp_path / out), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (data / "inside").exists()


def _tiny(path: Path, seed: int) -> None:
    make_video(path, make_frames(8, (32, 32), seed=seed))


def _dataset_of_format(tmp: Path, fmt: str) -> list[str]:
    """Two or three tiny videos laid out and annotated as `fmt` keeps them; the config overrides that read them."""
    root = tmp / "src"
    if fmt == "ucf101":
        for i, name in enumerate(("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "YoYo/v_YoYo_g02_c01.avi")):
            _tiny(root / name, i)
        lists = tmp / "ucfTrainTestlist"
        lists.mkdir()
        (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 YoYo\r\n")
        (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\n")
        (lists / "testlist01.txt").write_text("YoYo/v_YoYo_g02_c01.avi\r\n")
        return [f"data.root={root}", f"data.train_annotations={lists}", f"data.val_annotations={lists}"]
    if fmt == "hmdb51":
        _tiny(root / "golf" / "Golf_Tips!!!_golf_0.avi", 0)
        _tiny(root / "shoot_bow" / "6 arrows_shoot_bow_3.avi", 1)
        splits = tmp / "splits"
        splits.mkdir()
        (splits / "golf_test_split1.txt").write_text("Golf_Tips!!!_golf_0.avi 1 \n")
        (splits / "shoot_bow_test_split1.txt").write_text("6 arrows_shoot_bow_3.avi 2 \n")
        return [f"data.root={root}", f"data.train_annotations={splits}", f"data.val_annotations={splits}"]
    if fmt == "charades":
        for i, vid in enumerate(("46GP8", "N11GT")):
            _tiny(root / f"{vid}.mp4", i)
        (tmp / "classes.txt").write_text("c000 Holding some clothes\nc001 Putting clothes somewhere\n")
        (tmp / "train.csv").write_text("id,subject,scene,quality,relevance,verified,script,objects,descriptions,"
                                       "actions,length\n46GP8,a,b,6,7,Yes,x,y,z,c001 1.0 2.0;c000 0.0 3.0,5.0\n"
                                       "N11GT,a,b,6,7,Yes,x,y,z,c000 1.0 2.0,5.0\n")
        return [f"data.root={root}", f"data.train_annotations={tmp}/train.csv", f"data.classes={tmp}/classes.txt",
                "data.format=charades", "data.multi_label=true"]
    if fmt == "kinetics":
        _tiny(root / "arm wrestling" / "a1_000010_000020.mp4", 0)
        _tiny(root / "zumba" / "b2_000001_000011.mkv", 1)
        (tmp / "train.csv").write_text("label,youtube_id,time_start,time_end,split\narm wrestling,a1,10,20,train\n"
                                       "zumba,b2,1,11,train\n")
        return [f"data.root={root}", f"data.train_annotations={tmp}/train.csv"]
    if fmt == "folder":
        for split in ("train", "val"):
            _tiny(root / split / "jump" / "x.mp4", 0)
            _tiny(root / split / "run" / "y.avi", 1)
        return [f"data.root={root}"]
    assert fmt == "synthetic"
    from istpan.data.tools import synth

    synth.generate(root, num_videos=16, size=32, num_frames=8)
    return [f"data.root={root}"]


@pytest.mark.parametrize("fmt", ["ucf101", "hmdb51", "charades", "kinetics", "folder", "synthetic"])
def test_every_dataset_format_prepares_with_its_labels(tmp_path, fmt):
    overrides = [f"data.format={fmt}", *_dataset_of_format(tmp_path, fmt)]
    cfg = load_config(None, overrides)
    save_config(cfg, tmp_path / "cfg.yaml")
    assert main(["data", "prepare", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "out"),
                 "--workers", "1", "--no-progress"]) == 0
    copy = load_config(tmp_path / "out" / "prepared.yaml")
    assert copy.data.multi_label == (fmt == "charades")
    for split in ("train", "val"):
        if split == "val" and fmt in ("charades", "kinetics"):
            continue
        src, cp = load_split(cfg.data, split), load_split(copy.data, split)
        assert [r.label for r in cp.records] == [r.label for r in src.records] and cp.records
        assert cp.class_names == src.class_names
        for s, c in zip(src.records, cp.records, strict=True):
            assert Path(c.path).suffix == ".mp4" and Path(c.path).stem == Path(s.path).stem
            assert len(full_decode(Path(c.path))) == 8
