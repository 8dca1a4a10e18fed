"""The whole tool on a folder where good videos sit among every kind of broken one (issue 10's corpus).

`data check`, `train`, `eval` and every mode of `predict` run on the same folder-per-class dataset: a few good videos
per class plus 0-byte, random bytes, a text file named .mp4, an MP4 whose packets are all noise, MP4 and AVI cut at
10/50/90 %, an MP4 whose index (moov atom) is missing, audio only, one frame, no packets, 4000x3000, 17x13, variable
frame rate, rotated, odd names, a dangling symlink and a folder named `x.mp4`. `data check` also runs them through
the opencv and frames backends, with folders of frames (one corrupt JPEG, none, text named .jpg). Each command must
name each unusable file on one line, use every good one, never print a traceback, and say with its exit status
whether something was wrong (never 0 after doing nothing).

The commands run through `istpan.cli.main.main` in this process (an uncaught exception fails the test just as a
traceback would) except training, which runs once as a real `python -m istpan.cli.main` subprocess with decoding
workers, where a traceback printed by a worker would show on stderr.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from videos import make_frames, make_video

from istpan.cli.main import main

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("left", "right")


# ------------------------------------------------------------------------------------------------ the corpus
def _moving(direction: str, *, seed: int, frames: int = 8, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """uint8 (T, H, W, 3): the bright square of `make_frames` moving one way (left) or back (right)."""
    clip = make_frames(frames, size, seed=seed)
    return np.ascontiguousarray(clip if direction == "left" else clip[::-1])


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        tone = (np.sin(np.arange(8000) / 5) * 0.3).astype(np.float32)[None]  # (channels, samples)
        for start in range(0, 8000, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 8000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _no_packets(path: Path) -> Path:
    """A container with a video stream and not one packet (AVI: MP4 drops a stream without packets)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
        container.start_encoding()
    return path


def _mp4_without_index(path: Path, frames: np.ndarray) -> Path:
    """A recording never finalised: every frame in `mdat`, but the index (`moov`, written last) missing."""
    data = make_video(path, frames).read_bytes()
    path.write_bytes(data[: data.rindex(b"moov") - 4])  # the box starts with its 4-byte size
    return path


def _garbage_packets(good: bytes) -> bytes:
    """An MP4 whose container is intact but whose every packet is noise: it opens, and no frame decodes."""
    at = good.index(b"mdat")
    size = int.from_bytes(good[at - 4:at], "big")  # the box: 4-byte size, b"mdat", payload
    noise = np.random.default_rng(1).integers(0, 256, size - 8, np.uint8).tobytes()
    return good[:at + 4] + noise + good[at - 4 + size:]


def naive_frames(path: Path) -> int:
    """Frames a plain PyAV decode gets out of `path` (0 when it cannot be opened): the reference for 'usable'."""
    count = 0
    try:
        with av.open(str(path)) as container:
            for packet in container.demux(video=0):
                with contextlib.suppress(av.error.FFmpegError):  # a damaged packet: the others still count
                    count += len(packet.decode())
    except (av.error.FFmpegError, OSError, IndexError, ValueError):
        pass
    return count


def build_corpus(root: Path) -> dict[str, dict[str, str]]:
    """`root/{train,val}/{left,right}/...`: good videos, odd but valid ones and broken ones.

    Returns {"broken": {path: words data check must use}, "odd": {path: class}, "good": {path: class}} over both
    splits. Broken files sit in both splits and both classes; the odd valid ones only in val (they must be predicted).
    """
    corpus: dict[str, dict[str, str]] = {"broken": {}, "odd": {}, "good": {}}
    for split, per_class in (("train", 3), ("val", 2)):
        for c, cls in enumerate(CLASSES):
            for i in range(per_class):
                frames = _moving(cls, seed=10 * c + i + 50 * (split == "val"))
                path = make_video(root / split / cls / f"{cls}_{i}.mp4", frames)
                corpus["good"][str(path)] = cls
    sample = _moving("left", seed=99)
    scratch = root.parent / f"{root.name}_scratch"
    scratch.mkdir(exist_ok=True)
    fast = make_video(scratch / "fast.mp4", sample, container_options={"movflags": "faststart"}).read_bytes()
    avi = make_video(scratch / "good.avi", sample, codec="mpeg4").read_bytes()
    for split in ("train", "val"):
        for c, cls in enumerate(CLASSES):
            folder = root / split / cls
            if c == 0:  # half the broken kinds per class
                files = {"zero.mp4": (b"", "empty"),
                         "random bytes.mp4": (np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes(),
                                              "cannot open as a video"),
                         "notes.mp4": (b"a text file named .mp4\n" * 40, "cannot open as a video"),
                         "noise packets.mp4": (_garbage_packets(fast), "no frame")}
                for pct in (10, 50, 90):  # the index comes first (faststart): 50 and 90 % keep some frames
                    files[f"cut{pct}.mp4"] = (fast[: len(fast) * pct // 100], "moov atom) is truncated" if pct == 10
                                              else "only")
                for name, (payload, says) in files.items():
                    (folder / name).write_bytes(payload)
                    corpus["broken"][str(folder / name)] = says
                corpus["broken"][str(_mp4_without_index(folder / "no_moov.mp4", sample))] = "moov atom) is missing"
                corpus["broken"][str(_audio_only(folder / "audio_only.mp4"))] = "no video stream"
            else:
                for pct in (10, 50, 90):
                    (folder / f"cut{pct}.avi").write_bytes(avi[: len(avi) * pct // 100])
                    corpus["broken"][str(folder / f"cut{pct}.avi")] = ""
                corpus["broken"][str(_no_packets(folder / "no_packets.avi"))] = "no frame"
                os.symlink(folder / "gone.mp4", folder / "dangling.mp4")
                corpus["broken"][str(folder / "dangling.mp4")] = "link target does not exist"
                (folder / "x.mp4").mkdir()
                corpus["broken"][str(folder / "x.mp4")] = "directory"
    val = root / "val"
    odd = {
        "one_frame.mp4": lambda p: make_video(p, sample[:1]),
        "huge.mp4": lambda p: make_video(p, np.ascontiguousarray(np.broadcast_to(
            np.linspace(0, 255, 4000, dtype=np.uint8)[None, :, None], (2, 3000, 4000, 3)))),
        "tiny.mp4": lambda p: make_video(p, _moving("left", seed=3, size=(13, 17)), pix_fmt="yuv444p"),
        "vfr.mp4": lambda p: make_video(p, sample, pts=[0, 40, 50, 200, 210, 400, 1000, 1040]),
        "rotated.mp4": lambda p: make_video(p, sample, rotation=90),
        "a b ü ç !+ (1).mp4": lambda p: make_video(p, sample),
        "mpeg4 in avi.avi": lambda p: make_video(p, sample, codec="mpeg4"),
    }
    for i, (name, write) in enumerate(odd.items()):
        path = val / CLASSES[i % 2] / name
        write(path)
        corpus["odd"][str(path)] = CLASSES[i % 2]
    return corpus


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("torture") / "data"
    return root, build_corpus(root)


def _usable(path: str) -> bool:
    return naive_frames(Path(path)) > 0


def _overrides(root: Path, run: Path) -> list[str]:
    """configs/folder.yaml (the modern recipe) shrunk to istpan_tiny on 32 px, K = 3, one epoch of batch 1 (every
    clip once), two decoding workers as a user would run it."""
    return ["--config", "folder", f"data.root={root}", "model.name=istpan_tiny", "model.pretrained=",
            "model.options.input_size=32", "data.input_size=32", "data.short_side=36", "data.num_frames=3",
            "data.test_num_frames=3", "data.num_workers=2", "train.epochs=1", "train.batch_size=1",
            "train.ema_decay=0", "train.partial_bn=false", "train.tensorboard=false", f"train.out_dir={run}"]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`python -m istpan.cli.main train` on the corpus, as a user runs it (a subprocess with decoding workers)."""
    root, _ = corpus
    run = tmp_path_factory.mktemp("run") / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "istpan.cli.main", "train", *_overrides(root, run)], env=env,
                          capture_output=True, text=True, timeout=600)
    return run, proc


def _cli(argv: list[str], capsys, caplog) -> tuple[int, str, str]:
    """Run `istpan ARGV` in this process: (exit status, stdout, stderr + log lines). Never a traceback."""
    caplog.clear()
    code = main(argv)
    out, err = capsys.readouterr()
    err = err + caplog.text  # pytest's log capture takes the lines the CLI would print to stderr
    assert "Traceback" not in out + err
    return code, out, err


def _lines_naming(text: str, path: str) -> list[str]:
    return [line for line in text.splitlines() if path in line]


def _val_videos(corpus) -> list[str]:
    root, _ = corpus
    return sorted(str(p) for p in (root / "val").glob("*/*"))


# ------------------------------------------------------------------------------------------------ the tests
def test_the_corpus_has_every_kind_and_the_reference_agrees(corpus):
    """The reference (a plain PyAV decode) finds frames in every good and odd video, none in the hopeless ones."""
    _, files = corpus
    assert all(_usable(p) for p in [*files["good"], *files["odd"]])
    hopeless = [Path(p).name for p in files["broken"] if not _usable(p)]
    assert {"zero.mp4", "random bytes.mp4", "notes.mp4", "noise packets.mp4", "cut10.mp4", "no_moov.mp4",
            "audio_only.mp4", "cut10.avi", "no_packets.avi", "dangling.mp4", "x.mp4"} <= set(hopeless)
    assert naive_frames(Path(next(p for p in files["odd"] if p.endswith("huge.mp4")))) == 2


def test_data_check_names_each_broken_file_once_and_passes_every_good_one(corpus, tmp_path, capsys, caplog):
    root, files = corpus
    code, out, _ = _cli(["data", "check", *_overrides(root, tmp_path / "run"), "--out", str(tmp_path / "chk")],
                          capsys, caplog)
    assert code == 1 and "PROBLEMS FOUND" in out
    report = json.loads((tmp_path / "chk" / "report.json").read_text())
    found = {p["path"]: p for s in report["splits"].values() for p in s["video_problems"]}
    assert set(found) == set(files["broken"])  # the folder named x.mp4 and the dangling link included
    for path, word in files["broken"].items():
        assert word in found[path]["reason"], (path, found[path])
        assert found[path]["status"] == ("truncated" if _usable(path) else found[path]["status"])
        assert len(_lines_naming(out, path)) == 1
    good = [*files["good"], *files["odd"]]
    assert sum(s["ok"] for s in report["splits"].values()) == len(good)
    assert not any(_lines_naming(out, p) for p in good)


@pytest.mark.slow
def test_train_skips_and_counts_each_unusable_clip_and_trains_on_the_rest(corpus, trained):
    _, files = corpus
    run, proc = trained
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    (epoch,) = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == "epoch"]
    train_files = [p for p in [*files["good"], *files["broken"]] if "/train/" in p]
    unusable = [p for p in train_files if not _usable(p)]
    assert epoch["train"]["clips"] == len(train_files)  # batch 1: every clip once; a failed one is replaced
    assert epoch["train"]["skipped"] >= len(unusable)
    val_files = [p for group in files.values() for p in group if "/val/" in p]
    val_unusable = [p for p in val_files if not _usable(p)]
    assert epoch["val"]["skipped"] == len(val_unusable)
    assert epoch["val"]["num_videos"] == len(val_files) - len(val_unusable)  # no good (or odd) video lost
    skips = [line for line in proc.stderr.splitlines() if "skipping unreadable video" in line]
    for path in [*unusable, *val_unusable]:
        assert len(_lines_naming("\n".join(skips), path)) == 1, path  # each named once, whatever the workers
    assert f"skipped {len(skips)} unreadable videos" in proc.stdout  # and counted once in the run's summary
    assert not any(_lines_naming("\n".join(skips), p) for p in val_files + train_files if _usable(p))


@pytest.mark.slow
def test_eval_scores_every_usable_video_and_counts_the_rest(corpus, trained, capsys, caplog):
    _, files = corpus
    run, _ = trained
    val_files = [p for group in files.values() for p in group if "/val/" in p]
    unusable = [p for p in val_files if not _usable(p)]
    # no worker processes: their log lines would not reach pytest's capture (the train subprocess has workers)
    code, out, err = _cli(["eval", "--checkpoint", str(run / "best.pt"), "data.num_workers=0"], capsys, caplog)
    assert code == 0  # documented: evaluation reports the skipped videos and scores the others
    assert f"videos {len(val_files) - len(unusable)}  skipped {len(unusable)} (failed to decode)" in out
    for path in unusable:
        assert _lines_naming(err, path), path


@pytest.mark.slow
def test_eval_and_train_where_nothing_decodes_stop_with_one_line(corpus, trained, tmp_path, capsys, caplog):
    """Only the broken files (folder named x.mp4 included): no metrics from nothing, no checkpoint of nothing."""
    root, files = corpus
    run, _ = trained
    bad = tmp_path / "bad"
    for path in files["broken"]:
        if not _usable(path):
            target = bad / Path(path).relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(path) if os.path.islink(path) else path, target)
    code, out, err = _cli(["eval", "--checkpoint", str(run / "best.pt"), f"data.root={bad}"], capsys, caplog)
    assert code == 2 and "validation: no clip could be decoded" in err
    overrides = [o.replace("data.num_workers=2", "data.num_workers=0") for o in _overrides(bad, tmp_path / "r2")]
    code, out, err = _cli(["train", *overrides], capsys, caplog)
    assert code == 2 and "training: no clip could be decoded" in err
    assert not (tmp_path / "r2" / "last.pt").exists()
    code, out, err = _cli(["data", "check", *overrides, "--out", str(tmp_path / "chk")], capsys, caplog)
    assert code == 1 and "PROBLEMS FOUND" in out


def _frame_folders(root: Path) -> dict[str, str]:
    """Folders of extracted frames (`img_00001.jpg`, ...) beside the corpus: {folder: what data check must say}."""
    said = {"ok": "", "one corrupt": "img_00003.jpg", "first corrupt": "cannot read frame image", "empty": "no frame",
            "text named jpg": "cannot read frame image"}
    for name in said:
        folder = root / name
        folder.mkdir(parents=True)
        for i, array in enumerate(_moving("left", seed=7, frames=0 if name == "empty" else 6)):
            file = folder / f"img_{i + 1:05d}.jpg"
            if name == "text named jpg":
                file.write_text("not an image")
                continue
            Image.fromarray(array).save(file)
            if (name, i) in (("one corrupt", 2), ("first corrupt", 0)):
                file.write_bytes(file.read_bytes()[:300])  # cut inside the picture: opens, fails to decode
    return {str(root / name): words for name, words in said.items()}


@pytest.mark.parametrize("backend", ["opencv", "frames"])
def test_data_check_with_each_other_backend_names_each_broken_input_in_one_line(corpus, backend, tmp_path, capfd,
                                                                                caplog):
    """The same broken videos (and folders of frames with a corrupt JPEG, none, or text named .jpg) through the opencv
    and frames backends: one line per unusable input, nothing for the good ones, no traceback and no decoder chatter
    on stderr (OpenCV's FFmpeg printed dozens of "[h264 @ 0x...]" lines per damaged file; a folder with one corrupt
    JPEG among good ones passed the check, then failed in training)."""
    if backend == "opencv":
        pytest.importorskip("cv2")
    _, files = corpus
    folders = _frame_folders(tmp_path / "frames")
    videos = [p for p in [*files["broken"], *files["good"]] if "/train/" in p]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p} left\n" for p in [*videos, *folders]))
    (tmp_path / "classes.txt").write_text("left\nright\n")
    code = main(["data", "check", "--format", "list", "--annotations", str(listing), "--classes",
                 str(tmp_path / "classes.txt"), "--backend", backend, "--workers", "1", "--no-progress",
                 "--out", str(tmp_path / "chk")])
    out, err = capfd.readouterr()
    assert code == 1 and "Traceback" not in out + err + caplog.text
    assert not [line for line in err.splitlines() if " @ 0x" in line]  # FFmpeg's own log lines
    report = json.loads((tmp_path / "chk" / "report.json").read_text())
    found = {p["path"]: p["reason"] for s in report["splits"].values() for p in s["video_problems"]}
    if backend == "frames":  # every video file is "not a folder of frames"; the folders say what the images are
        expected = {p: w for p, w in folders.items() if w} | {p: "" for p in videos}
        assert all("not a folder of frames" in found[p] for p in videos if p in files["good"])
    else:  # the broken videos as with pyav; a folder of frames is not a video
        expected = {p: "" for p in videos if p in files["broken"]} | {p: "is a directory" for p in folders}
    assert set(found) == set(expected)
    for path, words in expected.items():
        assert words in found[path] and len(_lines_naming(out, path)) == 1, (path, found[path])


def _check_predictions(corpus, code: int, out: str, err: str, *, report: str = "error: ") -> None:
    """Exit status 1; one `error:` line per unusable video and nothing else naming it; each usable one predicted
    (a line of its own, or with --json a record with its top classes)."""
    videos = _val_videos(corpus)
    unusable = [p for p in videos if not _usable(p)]
    assert code == 1
    as_json = out.startswith("[")
    if as_json:  # --json: one record per video on stdout, the error lines on stderr as always
        records = json.loads(out)
        assert [r["path"] for r in records] == videos
        assert [r["path"] for r in records if "error" in r] == unusable and all(r.get("top")
                                                                                for r in records if "error" not in r)
    for path in videos:
        if path in unusable:
            named = _lines_naming(err if as_json else out + err, path)
            assert len(named) == 1 and named[0].startswith(report), (path, named)
        else:  # (--json escapes non-ASCII names: its records were checked above)
            named = _lines_naming(err if as_json else out + err, path)
            assert (as_json or named) and not any(line.startswith(report) for line in named), (path, named)
    assert f"{len(unusable)} of {len(videos)} videos failed" in err


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--window", "4", "--unit", "frames"], ["--max-frames", "4"], ["--json"],
                                  ["--checkpoint", "last.pt"]], ids=["plain", "window", "anytime", "json", "fused"])
def test_predict_reports_each_broken_video_and_predicts_every_good_one(corpus, trained, mode, capsys, caplog):
    run, _ = trained
    mode = [str(run / m) if m.endswith(".pt") else m for m in mode]
    code, out, err = _cli(["predict", *_val_videos(corpus), "--checkpoint", str(run / "best.pt"), *mode],
                          capsys, caplog)
    _check_predictions(corpus, code, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("window", [False, True], ids=["whole", "window"])
def test_predict_explain_reports_each_broken_video_once(corpus, trained, window, tmp_path, capsys, caplog):
    run, _ = trained
    extra = ["--window", "4", "--unit", "frames"] if window else []
    code, out, err = _cli(["predict", *_val_videos(corpus), "--checkpoint", str(run / "best.pt"), "--explain",
                           str(tmp_path / "ex"), *extra], capsys, caplog)
    _check_predictions(corpus, code, out, err)
    page = (tmp_path / "ex" / "index.html").read_text()
    assert all(html.escape(Path(p).name) in page for p in _val_videos(corpus))  # failed ones listed with the reason
    if not window:
        entries = json.loads((tmp_path / "ex" / "results.json").read_text())
        assert [e["path"] for e in entries] == _val_videos(corpus)
        assert [e["path"] for e in entries if e.get("error")] == [p for p in _val_videos(corpus) if not _usable(p)]


@pytest.mark.slow
def test_predict_list_records_each_broken_video_and_refuses_an_empty_list(corpus, trained, tmp_path, capsys, caplog):
    run, _ = trained
    videos = [*_val_videos(corpus), str(tmp_path / "not there.mp4")]
    listing = tmp_path / "videos.txt"
    listing.write_text("# the corpus\n" + "\n".join(videos) + "\n")
    out_file = tmp_path / "preds.jsonl"
    argv = ["predict", "--list", str(listing), "--out", str(out_file), "--checkpoint", str(run / "best.pt"),
            "--workers", "2", "--batch-size", "4"]
    code, _, err = _cli(argv, capsys, caplog)
    unusable = [p for p in videos if not _usable(p)]
    assert code == 1 and f"{len(videos) - len(unusable)} videos predicted" in err and f"{len(unusable)} failed" in err
    records = {r["path"]: r for r in map(json.loads, out_file.read_text().splitlines())}
    assert sorted(records) == sorted(videos)  # every listed video exactly once
    for path in videos:
        assert ("error" in records[path]) == (path in unusable), records[path]
        assert len(_lines_naming(err, path)) == (1 if path in unusable else 0)
    code, _, err = _cli(argv, capsys, caplog)  # a rerun has nothing left to do: says so, adds nothing
    assert code == 0 and f"{len(videos)} already in" in err and len(out_file.read_text().splitlines()) == len(videos)
    listing.write_text("# nothing yet\n\n")
    code, _, err = _cli([*argv[:4], str(tmp_path / "empty.jsonl"), *argv[5:]], capsys, caplog)
    assert code == 2 and "lists no video" in err


@pytest.mark.slow
def test_predict_stream_of_each_file_decides_or_fails_in_one_line(corpus, trained, capsys, caplog):
    run, _ = trained
    for path in _val_videos(corpus):
        code, out, err = _cli(["predict", "--stream", path, "--checkpoint", str(run / "best.pt"), "--timeout", "5"],
                              capsys, caplog)
        decisions = [json.loads(line) for line in out.splitlines()]
        if _usable(path):
            assert code == 0 and decisions and f"{path}: end of stream after {len(decisions)} decisions" in err
        else:
            errors = [line for line in err.splitlines() if line.startswith("error: ")]
            assert code == 2 and not decisions and len(errors) == 1 and path in errors[0], (path, err)
    moov = next(p for p in _val_videos(corpus) if p.endswith("no_moov.mp4"))
    code, out, err = _cli(["predict", "--stream", moov, "--checkpoint", str(run / "best.pt")], capsys, caplog)
    assert "the MP4 index (moov atom) is missing" in err  # the same diagnosis as every other mode
