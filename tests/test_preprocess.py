"""`Preprocessing`: one typed owner of what the model sees, stored as plain types, read back from old checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from test_train import make_list_dataset, tiny_config

from istpan.data import build_dataset, read_frames
from istpan.data.preprocess import LEGACY_K_KEYS, Preprocessing
from istpan.data.sampling import sample_indices
from istpan.files.description import ModelDescription
from istpan.models import create_model

PLAIN = (int, float, str, bool, list)


def test_round_trip_through_plain_types_and_weights_only(tmp_path):
    pre = Preprocessing(input_size=96, short_side=110, resize=110, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
                        num_frames=6, sampling="dense", frame_stride=3)
    data = pre.to_dict()
    assert all(isinstance(v, PLAIN) for v in data.values())
    assert set(data) == {f.name for f in dataclasses.fields(pre)} | set(LEGACY_K_KEYS)
    torch.save({"pre": data}, tmp_path / "x.pt")
    assert Preprocessing.from_dict(torch.load(tmp_path / "x.pt", weights_only=True)["pre"]) == pre
    assert Preprocessing.from_dict({**data, "added_by_a_newer_istpan": 1}) == pre


def test_from_data_config_is_what_the_old_checkpoint_meta_stored():
    cfg = tiny_config(Path("/nonexistent"), Path("/nonexistent/run")).data  # only the data section is used
    pre = Preprocessing.from_data_config(cfg, mean=(0.1, 0.2, 0.3))
    assert (pre.input_size, pre.short_side, pre.resize, pre.num_frames) == (32, 36, 36, 3)
    assert pre.mean == (0.1, 0.2, 0.3) and pre.std == (0.229, 0.224, 0.225)
    small_side = dataclasses.replace(cfg, short_side=24)
    assert Preprocessing.from_data_config(small_side).resize == 32  # never crop more than the frame has


def test_old_partial_meta_is_completed_in_one_place():
    """Checkpoints of earlier versions stored a partial dict; mean/std then come from the model."""
    model = create_model("istpan_tiny", num_classes=3, input_size=64)
    pre = ModelDescription.from_dict({"preprocessing": {"input_size": 64, "short_side": 72, "num_segments": 4}},
                                     model=model).preprocessing
    assert (pre.input_size, pre.short_side, pre.resize, pre.num_frames) == (64, 72, round(64 * 256 / 224), 4)
    assert pre.mean == tuple(model.pretrained_cfg["mean"]) and pre.sampling == "segment" and pre.num_frames == 4
    dense = ModelDescription.from_dict({"preprocessing": {"input_size": 64, "short_side": 72, "num_segments": 4,
                                                         "sampling": "dense", "clip_len": 6, "frame_stride": 2}}
                                       ).preprocessing
    assert dense.num_frames == 6
    assert dense.indices(40) == sample_indices(40, method="dense", num_frames=6, stride=2).tolist()
    assert dense.with_frames(3).num_frames == 3 and dense.with_frames(None) is dense
    assert ModelDescription.from_dict({"preprocessing": pre}).preprocessing is pre


def test_eval_dataset_feeds_the_model_what_predict_feeds_it(tmp_path):
    """`istpan eval` (1x1 view) and `predict` read the same frames and make the same tensor, bit for bit."""
    data = make_list_dataset(tmp_path / "data", train=1, val=3, frames=11, size=40)
    cfg = tiny_config(data, tmp_path / "run").data
    dataset = build_dataset(cfg, split="val", train=False)
    pre = Preprocessing.from_data_config(cfg)
    for i, record in enumerate(dataset.records):
        views, indices, n = pre.read(record.path)
        assert n == 11 and indices == sample_indices(11, method="segment", num_frames=3).tolist()
        assert torch.equal(dataset[i]["video"], pre.to_input(views))  # (K, 3, 32, 32)


def test_one_frame_is_preprocessed_like_a_clip(tmp_path):
    from videos import make_video

    path = make_video(tmp_path / "v.mp4", num_frames=6, size=(48, 80))
    pre = Preprocessing(input_size=32, short_side=40, resize=40)
    frames = read_frames(path, [0, 3, 5], short_side=40)  # (3, 40, 67, 3)
    clip = pre.to_input(pre.view(frames))  # (3, 3, 32, 32)
    assert clip.shape == (3, 3, 32, 32)
    for k in range(3):
        assert torch.equal(pre.frame_input(frames[k]), clip[k])
    assert torch.equal(pre.transform(crops=1)(frames.permute(0, 3, 1, 2)), clip)


@pytest.mark.parametrize("bad", [0, -1])
def test_with_frames_refuses_no_frames(bad):
    with pytest.raises(ValueError, match="must be >= 1"):
        Preprocessing().with_frames(bad)
