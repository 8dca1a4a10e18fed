"""VideoDataset + build_loader: shapes, bad videos skipped and counted, reproducibility across worker counts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from videos import make_video

from istpan.config import DataConfig
from istpan.data import build_dataset, build_loader, collate_clips
from istpan.data.loader import EpochShuffleSampler, ShardSampler


def list_dataset(tmp_path: Path, n_good: int = 6, bad: tuple[str, ...] = ()) -> DataConfig:
    """A list-format dataset of real tiny videos (2 classes), plus the requested kinds of broken entries."""
    lines = []
    for i in range(n_good):
        make_video(tmp_path / "v" / f"good {i}.mp4", num_frames=10 + i, size=(48, 64))
        lines.append(f"v/good {i}.mp4 {'ab'[i % 2]}")
    for kind in bad:
        path = tmp_path / "v" / f"{kind}.mp4"
        if kind == "zero":
            path.write_bytes(b"")
        elif kind == "random":
            path.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
        elif kind == "directory":
            path.mkdir(parents=True)
        lines.append(f"v/{kind}.mp4 a")  # "missing": listed, never written
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    return DataConfig(format="list", root=str(tmp_path), train_annotations=str(tmp_path / "list.txt"),
                      val_annotations=str(tmp_path / "list.txt"), classes=str(tmp_path / "classes.txt"),
                      num_frames=4, test_num_frames=5, input_size=32, short_side=36)


def test_item_shapes_train_and_views(tmp_path):
    cfg = list_dataset(tmp_path, n_good=2)
    train = build_dataset(cfg, split="train", train=True)
    item = train[1]
    assert item["video"].shape == (4, 3, 32, 32) and item["video"].dtype == torch.float32
    assert item["label"].dtype == torch.long and item["label"].item() == 1 and item["index"] == 1
    val = build_dataset(cfg, split="val", train=False, views=(2, 3))
    assert val[0]["video"].shape == (6, 5, 3, 32, 32)  # V = 2 clips x 3 crops
    assert build_dataset(cfg, split="val", train=False)[0]["video"].shape == (5, 3, 32, 32)


def test_real_clips_in_hmdb51_layout(tmp_path, clips_dir):
    splits = tmp_path / "splits"
    splits.mkdir()
    for cls, name in [("shoot_bow", "6arrowswithin30seconds_shoot_bow_f_nm_np1_fr_med_3.avi"),
                      ("golf", "Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi")]:
        (tmp_path / "videos" / cls).mkdir(parents=True)
        (tmp_path / "videos" / cls / name).symlink_to(clips_dir / name)
        (splits / f"{cls}_test_split1.txt").write_text(f"{name} 2 \n")
    cfg = DataConfig(format="hmdb51", root=str(tmp_path / "videos"), train_annotations=str(splits),
                     val_annotations=str(splits), test_num_frames=8, input_size=112, short_side=128)
    ds = build_dataset(cfg, split="val", train=False, views=(1, 3))
    loader = build_loader(ds, batch_size=2, train=False, num_workers=0, seed=0)
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 3, 8, 3, 112, 112) and batch["skipped"] == 0
    assert sorted(batch["label"].tolist()) == [0, 1] and ds.class_names == ["golf", "shoot_bow"]


def test_bad_videos_are_skipped_counted_and_logged_once(tmp_path, caplog):
    bad = ("zero", "random", "directory", "missing")
    cfg = list_dataset(tmp_path, n_good=3, bad=bad)
    val = build_dataset(cfg, split="val", train=False)
    loader = build_loader(val, batch_size=3, train=False, num_workers=0, seed=0)
    with caplog.at_level(logging.WARNING):
        batches = list(loader) + list(loader)  # two passes: each broken path is logged only once
    scored = sum(b["video"].shape[0] for b in batches)
    assert scored == 2 * 3 and sum(b["skipped"] for b in batches) == 2 * len(bad)
    assert sorted(int(i) for b in batches[:3] for i in b["index"]) == [0, 1, 2]
    warnings = [r.getMessage() for r in caplog.records if "skipping unreadable video" in r.getMessage()]
    assert len(warnings) == len(bad)
    assert any("zero.mp4: empty file" in w for w in warnings)
    assert any("missing.mp4: file not found" in w for w in warnings)


def test_bad_videos_met_by_several_workers_over_epochs_are_logged_once(tmp_path, caplog):
    """`istpan train` with decoding workers used to log a bad video from each worker that met it (and again from the
    validation loader's workers); logged in the workers, none of it reached this process. Now the workers pass path
    and reason along with the batch and the iterating process logs each video once, lists it in `loader.unreadable`
    (the run summary) and still skips and counts it every time."""
    bad = ("zero", "random")
    cfg = list_dataset(tmp_path, n_good=4, bad=bad)
    train, val = build_dataset(cfg, split="train", train=True), build_dataset(cfg, split="val", train=False)
    train_loader = build_loader(train, batch_size=2, train=True, num_workers=2, seed=0)
    val_loader = build_loader(val, batch_size=2, train=False, num_workers=2, seed=0)
    val_loader.unreadable = train_loader.unreadable  # the loaders of one run, as build_data makes them
    skipped = {"train": [], "val": []}
    with caplog.at_level(logging.WARNING):
        for epoch in range(2):
            train_loader.sampler.set_epoch(epoch)
            train.set_epoch(epoch)
            skipped["train"].append(sum(b["skipped"] for b in train_loader))  # 6 clips, 3 batches: all seen
            skipped["val"].append(sum(b["skipped"] for b in val_loader))
    paths = {str(tmp_path / "v" / f"{kind}.mp4") for kind in bad}
    warnings = [r.getMessage() for r in caplog.records if "skipping unreadable video" in r.getMessage()]
    assert sorted(sum(path in w for w in warnings) for path in paths) == [1, 1] and len(warnings) == len(bad)
    assert set(train_loader.unreadable) == paths
    assert all(message.startswith(f"{path}: ") for path, message in val_loader.unreadable.items())
    assert skipped["val"] == [len(bad)] * 2 and min(skipped["train"]) >= len(bad)  # each pass skips and counts


def test_training_replaces_a_broken_video_and_counts_it(tmp_path):
    cfg = list_dataset(tmp_path, n_good=3, bad=("random",))
    train = build_dataset(cfg, split="train", train=True)
    item = train[3]  # the broken one
    assert item is not None and item["index"] != 3 and item["skipped"] >= 1
    batch = collate_clips([train[0], item, None])
    assert batch["video"].shape[0] == 2 and batch["skipped"] == item["skipped"] + 1


def test_all_failed_batch_is_empty_not_an_error():
    batch = collate_clips([None, None])
    assert batch["video"].numel() == 0 and batch["skipped"] == 2 and batch["index"].shape == (0,)


def _epochs(loader, dataset, epochs=(0, 1)):
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        out.append([(b["index"].clone(), b["video"].clone()) for b in loader])
    return out


def test_same_batches_whatever_the_number_of_workers(tmp_path):
    cfg = list_dataset(tmp_path, n_good=6)
    ds0 = build_dataset(cfg, split="train", train=True)
    ds2 = build_dataset(cfg, split="train", train=True)
    in_process = _epochs(build_loader(ds0, batch_size=3, train=True, num_workers=0, seed=5), ds0)
    workers = _epochs(build_loader(ds2, batch_size=3, train=True, num_workers=2, seed=5), ds2)  # persistent
    for a_epoch, b_epoch in zip(in_process, workers):
        for (ia, va), (ib, vb) in zip(a_epoch, b_epoch):
            assert torch.equal(ia, ib) and torch.equal(va, vb)
    first, second = in_process
    assert [i.tolist() for i, _ in first] != [i.tolist() for i, _ in second]  # a new order per epoch


def test_samplers_shard_without_padding_and_shuffle_per_epoch():
    shards = [list(ShardSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(10)) and [len(s) for s in shards] == [4, 3, 3]
    s = EpochShuffleSampler(20, seed=1)
    s.set_epoch(3)
    order = list(s)
    assert sorted(order) == list(range(20)) and order == list(s)
    s.set_epoch(4)
    assert list(s) != order


def test_loader_options(tmp_path):
    cfg = list_dataset(tmp_path, n_good=5)
    ds = build_dataset(cfg, split="train", train=True)
    train = build_loader(ds, batch_size=2, train=True, num_workers=0, seed=0)
    assert train.drop_last and len(train) == 2
    val = build_loader(build_dataset(cfg, split="val", train=False), batch_size=2, train=False, num_workers=0, seed=0)
    assert not val.drop_last and len(val) == 3
    assert ds.seed == 0 and build_loader(ds, batch_size=2, train=True, num_workers=0, seed=9).dataset.seed == 9


@pytest.mark.parametrize("sampling", ["dense", "uniform"])
def test_other_samplings_give_k_frames(tmp_path, sampling):
    cfg = list_dataset(tmp_path, n_good=1)
    cfg.sampling, cfg.frame_stride = sampling, 2
    cfg.num_frames = 3 if sampling == "dense" else cfg.num_frames  # dense clips of 3 frames (was data.clip_len)
    ds = build_dataset(cfg, split="train", train=True)
    assert ds[0]["video"].shape == ((3 if sampling == "dense" else 4), 3, 32, 32)


def test_extracted_frame_folders_as_a_dataset(tmp_path):
    from PIL import Image
    from videos import make_frames

    for v in range(2):
        folder = tmp_path / "frames" / f"v_Jump_g0{v}_c01"
        folder.mkdir(parents=True)
        for i, frame in enumerate(make_frames(6 + v, (48, 64), seed=v)):
            Image.fromarray(frame).save(folder / f"img_{i + 1:05d}.jpg")
    (tmp_path / "list.txt").write_text("frames/v_Jump_g00_c01 0\nframes/v_Jump_g01_c01 1\nframes/nothing_here 1\n")
    cfg = DataConfig(format="list", root=str(tmp_path), train_annotations=str(tmp_path / "list.txt"),
                     backend="frames", test_num_frames=4, input_size=32, short_side=36)
    ds = build_dataset(cfg, split="train", train=False)
    assert [ds[i]["video"].shape for i in range(2)] == [(4, 3, 32, 32)] * 2
    assert ds[2] is None  # the missing folder is skipped, not fatal


def test_resumed_pass_starts_after_the_done_batches_without_reading_them(tmp_path):
    cfg = list_dataset(tmp_path, n_good=6)
    ds = build_dataset(cfg, split="train", train=True)
    loader = build_loader(ds, batch_size=2, train=True, num_workers=0, seed=5)
    (full,) = _epochs(loader, ds, epochs=(1,))

    reads = []
    get = type(ds).__getitem__
    ds.__class__ = type("Counting", (type(ds),), {"__getitem__": lambda self, i: (reads.append(i), get(self, i))[1]})
    loader.sampler.skip(2 * 2)  # resume at step 2 of a batch-2 epoch
    (resumed,) = _epochs(loader, ds, epochs=(1,))
    assert len(resumed) == len(full) - 2 and len(reads) == 2 * len(resumed)  # the done clips are never decoded
    for (ia, va), (ib, vb) in zip(full[2:], resumed):
        assert torch.equal(ia, ib) and torch.equal(va, vb)  # same clips, same augmentation
    (again,) = _epochs(loader, ds, epochs=(1,))
    assert len(again) == len(full)  # the skip applied to one pass only
