"""`istpan.Predictor`: the same scores as `istpan predict` on files, and on frame arrays and tensors, batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from checkpoints import tiny_checkpoint
from videos import make_video

from istpan import Predictor
from istpan.data import count_frames, read_frames
from istpan.errors import UserError
from istpan.files.checkpoint import save_checkpoint
from istpan.files.load import load_model
from istpan.inference.videos import predict_videos


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with last.pt of istpan_tiny (non-trivial head) and three videos of different sizes/lengths."""
    base = tmp_path_factory.mktemp("predictor")
    tiny_checkpoint(base / "run" / "last.pt")
    videos = [make_video(base / "a.mp4", num_frames=14, size=(40, 56)),
              make_video(base / "b.avi", num_frames=7, size=(48, 36), codec="mpeg4"),
              make_video(base / "c.mp4", num_frames=20, size=(40, 56))]
    return base / "run", videos


def _decoded(path, pre) -> np.ndarray:
    """Every frame of a file as `istpan predict` decodes it (at the checkpoint's short side)."""
    return read_frames(path, range(count_frames(path)), short_side=pre.short_side).numpy()


def _same(a: dict, b: dict) -> None:
    assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
    assert [t["score"] for t in a["top"]] == pytest.approx([t["score"] for t in b["top"]], abs=1e-5)


def test_files_give_what_istpan_predict_gives(run):
    folder, videos = run
    predictor = Predictor.from_checkpoint(folder)  # a run folder: its best.pt, else last.pt
    model, meta = load_model(folder / "last.pt")
    expected = predict_videos(model, meta, videos, topk=3)
    single = predictor.predict(videos[0], topk=3)
    assert isinstance(single, dict) and single["path"] == str(videos[0]) and single["video_frames"] == 14
    _same(single, expected[0])
    batched = predictor.predict(videos, topk=3, batch_size=2)  # one batch of 2, then 1
    assert [r["path"] for r in batched] == [str(v) for v in videos]
    for got, want in zip(batched, expected, strict=True):
        _same(got, want)
        assert got["num_frames"] == want["num_frames"] == 3


def test_frame_arrays_and_tensors(run):
    folder, videos = run
    predictor = Predictor.from_checkpoint(folder / "last.pt")
    pre = predictor.preprocessing
    from_file = predictor.predict(videos[0])
    frames = _decoded(videos[0], pre)  # uint8 (14, 36, 50, 3)
    from_array = predictor.predict(frames)
    assert from_array["video_frames"] == 14 and "path" not in from_array
    _same(from_array, from_file)
    _same(predictor.predict(torch.from_numpy(frames)), from_file)
    # a batch of equally long videos as one 5-D uint8 array
    both = predictor.predict(np.stack([frames, frames[::-1].copy()]))
    assert isinstance(both, list) and len(both) == 2
    _same(both[0], from_file)
    # a preprocessed float clip, and the per-frame step a stream uses
    clip = predictor.preprocess(frames)  # (3, 3, 32, 32)
    assert clip.shape == (3, 3, 32, 32)
    _same(predictor.predict(clip), from_file)
    for k, t in enumerate(pre.indices(14)):
        assert torch.equal(predictor.preprocess_frame(frames[t]), clip[k])
    scores = predictor.scores([frames, clip, videos[1]])  # a list mixing the three kinds of input
    assert scores.shape == (3, 4) and torch.allclose(scores.sum(1), torch.ones(3))
    assert torch.allclose(scores[0], scores[1], atol=1e-6)


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (np.zeros((4, 32, 32, 3), np.float32), "float32 array of shape (4, 32, 32, 3)"),
        (torch.zeros(4, 3, 32, 32, dtype=torch.uint8), "uint8 tensor of shape (4, 3, 32, 32)"),
        (np.zeros((32, 32, 3), np.uint8), "uint8 array of shape (32, 32, 3)"),
        (torch.zeros(3, 3, 64, 64), "float32 tensor of shape (3, 3, 64, 64)"),
        (np.zeros((0, 32, 32, 3), np.uint8), "no frames"),
        ({"frames": 1}, "got dict"),
    ],
)
def test_bad_arrays_are_one_clear_line(run, bad, needle):
    predictor = Predictor.from_checkpoint(run[0])
    with pytest.raises(UserError) as err:
        predictor.predict(bad)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_files_raise_or_are_reported(run, tmp_path):
    folder, videos = run
    predictor = Predictor.from_checkpoint(folder)
    missing = tmp_path / "missing.mp4"
    with pytest.raises(UserError, match=r"missing\.mp4"):
        predictor.predict([videos[0], missing])
    results = predictor.predict([videos[0], missing, videos[1]], errors="report", batch_size=1)
    assert [("error" in r) for r in results] == [False, True, False] and results[1]["path"] == str(missing)
    _same(results[2], predictor.predict(videos[1]))
    with pytest.raises(UserError, match=r"no best\.pt or last\.pt"):
        Predictor.from_checkpoint(tmp_path)


def test_checkpoint_of_an_earlier_version_still_predicts(run, tmp_path):
    """Early checkpoints stored a partial preprocessing dict (no resize / clip_len / mean / std): the missing fields
    are the 256/224 test ratio and the model's own mean/std, so the scores equal those of the full dict."""
    from istpan.files.checkpoint import load_checkpoint

    folder, videos = run
    state = load_checkpoint(folder / "last.pt")
    full = state["meta"]["preprocessing"]
    state["meta"] = {**state["meta"], "preprocessing": {"input_size": 32, "short_side": 36, "num_segments": 3}}
    save_checkpoint(state, tmp_path / "old.pt")
    old = Predictor.from_checkpoint(tmp_path / "old.pt")
    assert old.preprocessing.resize == round(32 * 256 / 224) and old.preprocessing.mean == tuple(full["mean"])
    state["meta"]["preprocessing"] = {**full, "resize": round(32 * 256 / 224)}
    save_checkpoint(state, tmp_path / "same.pt")
    _same(old.predict(videos[0]), Predictor.from_checkpoint(tmp_path / "same.pt").predict(videos[0]))
