"""`istpan predict --backend` and `Predictor(backend=...)`: a folder of extracted frames predicts exactly like the video
it came from, the checkpoint's data.backend is the default, and bad folders are one `error:` line each."""

from __future__ import annotations

import json

import pytest
from checkpoints import tiny_checkpoint
from PIL import Image
from videos import make_video

from istpan.cli.main import main
from istpan.config import DataConfig
from istpan.data.decode import iter_frames
from istpan.files.checkpoint import build_meta, load_checkpoint, save_checkpoint
from istpan.inference.predictor import Predictor


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny checkpoint, a 14-frame video and the same video's frames as PNG in a folder (lossless: the frames
    backend reads exactly the pixels PyAV decodes), plus broken folders: no image, one corrupt image, missing."""
    base = tmp_path_factory.mktemp("backends")
    _, _, ckpt = tiny_checkpoint(base / "model.pt")
    # short side 36 = the checkpoint's: neither backend resamples while decoding, so the pixels can match exactly
    video = make_video(base / "clip.mp4", num_frames=14, size=(36, 44), fps=4)
    folder = base / "clip"
    folder.mkdir()
    for i, frame in iter_frames(video, short_side=36):  # what PyAV hands predict, frame by frame
        Image.fromarray(frame.numpy()).save(folder / f"img_{i + 1:05d}.png")
    empty = base / "empty"
    empty.mkdir()
    corrupt = base / "corrupt"
    corrupt.mkdir()
    for file in sorted(folder.iterdir()):
        (corrupt / file.name).write_bytes(file.read_bytes()[:60])  # every image cut inside its pixel data
    bad = {str(empty): "no frame images", str(corrupt): "cannot read frame image", str(base / "gone"): "not found"}
    return ckpt, video, folder, bad


def _predict(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["predict", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def _scores(result: dict) -> list[tuple[int, float]]:
    return [(t["index"], t["score"]) for t in result.get("top", [])]


@pytest.mark.parametrize("mode", [[], ["--window", "6", "--stride", "3", "--unit", "frames"], ["--max-frames", "4"],
                                  ["--checkpoint", "CKPT", "--fuse-weights", "1", "2"]],
                         ids=["plain", "window", "anytime", "fused"])
def test_frames_backend_on_the_folder_equals_pyav_on_the_video(inputs, mode, capsys):
    ckpt, video, folder, _ = inputs
    mode = [str(ckpt) if a == "CKPT" else a for a in mode]
    code_v, (from_video,), _ = _predict(capsys, str(video), "--checkpoint", str(ckpt), "--topk", "4", *mode)
    code_f, (from_folder,), _ = _predict(capsys, str(folder), "--checkpoint", str(ckpt), "--topk", "4",
                                         "--backend", "frames", *mode)
    assert code_v == code_f == 0
    assert _scores(from_folder) == _scores(from_video) and len(_scores(from_video)) == 4
    assert len({s for _, s in _scores(from_video)}) == 4  # distinct scores: the comparison is not vacuous
    if "--window" in mode:
        assert [w["scores"] for w in from_folder["windows"]] == [w["scores"] for w in from_video["windows"]]
        assert len(from_video["windows"]) == 4  # [0, 6) [3, 9) [6, 12) [8, 14)


def test_predictor_backend_and_checkpoint_default(inputs, tmp_path):
    ckpt, video, folder, _ = inputs
    expected = Predictor.from_checkpoint(ckpt).predict(video)["top"]
    assert Predictor.from_checkpoint(ckpt, backend="frames").predict(folder)["top"] == expected
    # a run trained on rawframes (data.backend=frames): its checkpoint reads folders without being told
    state = load_checkpoint(ckpt)
    model = Predictor.from_checkpoint(ckpt).model
    meta = build_meta(model, class_names=list("abcd"),
                      data_cfg=DataConfig(input_size=32, short_side=36, test_num_frames=3, backend="frames"))
    frames_ckpt = save_checkpoint({**state, "meta": meta}, tmp_path / "frames.pt")
    assert Predictor.from_checkpoint(frames_ckpt).predict(folder)["top"] == expected
    # an older checkpoint (no backend in its preprocessing) takes it from the run config it carries
    old_meta = {**meta, "preprocessing": {k: v for k, v in meta["preprocessing"].items() if k != "backend"}}
    old = save_checkpoint({**state, "meta": old_meta, "config": {"data": {"backend": "frames"}}}, tmp_path / "old.pt")
    assert Predictor.from_checkpoint(old).preprocessing.backend == "frames"
    assert Predictor.from_checkpoint(old, backend="pyav").predict(video)["top"] == expected


@pytest.mark.parametrize("mode", [[], ["--window", "6", "--unit", "frames"], ["--explain", "OUT"]],
                         ids=["plain", "window", "explain"])
def test_each_bad_folder_is_one_error_line_and_the_good_one_is_predicted(inputs, mode, tmp_path, capsys):
    ckpt, _, folder, bad = inputs
    paths = [*bad, str(folder)]
    argv = [a.replace("OUT", str(tmp_path / "x")) for a in mode]
    code, results, err = _predict(capsys, *paths, "--checkpoint", str(ckpt), "--backend", "frames", *argv)
    assert code == 1 and "Traceback" not in err
    assert [r["path"] for r in results] == paths and "error" not in results[-1]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for path, words in bad.items():
        (line,) = [e for e in errors if path in e]
        assert words in line, line
    if "--explain" in mode:  # the folder's overlays are drawn from its frames too (a failure here only logs)
        (entry,) = [e for e in json.loads((tmp_path / "x" / "results.json").read_text()) if e["path"] == str(folder)]
        assert entry.get("error") is None and (tmp_path / "x" / entry["video"]).is_file()


def test_a_folder_under_pyav_suggests_the_frames_backend(inputs, capsys):
    ckpt, video, folder, _ = inputs
    code, results, err = _predict(capsys, str(folder), str(video), "--checkpoint", str(ckpt))
    (line,) = [e for e in err.splitlines() if e.startswith("error: ")]
    assert code == 1 and str(folder) in line and "--backend frames" in line and "top" in results[1]


@pytest.mark.parametrize(("argv", "words"), [
    (["--stream", "-", "--backend", "frames"], "--stream decodes a live source with PyAV"),
    (["FOLDER", "--backend", "frames", "--window", "2"], "--unit frames"),
])
def test_flags_that_cannot_work_with_the_backend_are_one_line(inputs, argv, words, capsys):
    ckpt, _, folder, _ = inputs
    argv = [str(folder) if a == "FOLDER" else a for a in argv]
    assert main(["predict", *argv, "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err


def test_list_mode_reads_folders(inputs, tmp_path):
    ckpt, video, folder, bad = inputs
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder}\n{next(iter(bad))}\n")
    out = tmp_path / "preds.jsonl"
    code = main(["predict", "--list", str(listing), "--out", str(out), "--checkpoint", str(ckpt), "--backend", "frames",
                 "--workers", "0"])
    records = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert code == 1 and "error" in records[next(iter(bad))]
    assert records[str(folder)]["top"] == Predictor.from_checkpoint(ckpt).predict(video)["top"]
