"""The synthetic dataset: deterministic, decodable through istpan.data, boxes inside frames, balanced classes."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from istpan.data.tools import synth
from istpan.errors import UserError

SMALL = dict(num_videos=16, size=48, num_frames=8, fps=8)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("synth") / "a", seed=3, **SMALL)


def test_same_seed_same_bytes_other_seed_differs(small_set: Path, tmp_path: Path) -> None:
    again = synth.generate(tmp_path / "b", seed=3, **SMALL)
    other = synth.generate(tmp_path / "c", seed=4, **SMALL)
    assert _digest(small_set) == _digest(again)
    first = small_set / "videos/move_left/00000.mp4"
    assert first.read_bytes() != (other / "videos/move_left/00000.mp4").read_bytes()


def test_same_bytes_whatever_the_output_path(tmp_path: Path) -> None:
    """Issue 10.5: x264's mbtree made the bytes depend on memory layout, which the output path's length changes.

    Before the fix this failed every time on an AVX-512 machine (7 of 64 comparisons differed); sizes large enough
    for x264's lookahead to matter, three folder names of different lengths.
    """
    kw = dict(seed=1, num_videos=32, size=64, num_frames=24)
    digests = [_digest(synth.generate(tmp_path / name, **kw)) for name in ("q", "q" * 40, "qq")]
    assert len(digests[0]) == 32 + 4  # the videos and the four text files
    assert digests[1] == digests[0]
    assert digests[2] == digests[0]


def test_files_decode_through_istpan_data_with_claimed_frames(small_set: Path) -> None:
    from istpan.data import count_frames, read_frames

    gt = synth.load_ground_truth(small_set)
    for rel, video in list(gt["videos"].items())[:8]:
        path = small_set / rel
        assert count_frames(path) == video["num_frames"] == SMALL["num_frames"]
        frames = read_frames(path, list(range(video["num_frames"])))
        assert tuple(frames.shape) == (SMALL["num_frames"], SMALL["size"], SMALL["size"], 3)
        # the file holds what the generator drew (H.264 is lossy, so close, not equal): the boxes, computed from the
        # drawing, describe the decoded frames
        spec = synth.SynthSpec(**{**gt["spec"], "num_distractors": tuple(gt["spec"]["num_distractors"])})
        drawn, boxes, _ = synth._render_video(spec, int(Path(rel).stem), video["class_name"])
        assert boxes == video["boxes"]
        error = (frames.float() - torch.from_numpy(drawn).float()).abs().mean()
        other, _, _ = synth._render_video(spec, int(Path(rel).stem) + 1, video["class_name"])
        assert error < 10.0 and 3 * error < (frames.float() - torch.from_numpy(other).float()).abs().mean()


def test_list_files_classes_and_balance(small_set: Path) -> None:
    classes = (small_set / "classes.txt").read_text().split()
    assert classes == synth.CLASSES
    lines = [line for split in ("train", "val") for line in (small_set / f"{split}.txt").read_text().splitlines()]
    rows = [line.split() for line in lines]
    assert len(rows) == SMALL["num_videos"]
    assert all((small_set / path).is_file() and label in classes for path, label in rows)
    counts = Counter(label for _, label in rows)
    assert set(counts.values()) == {SMALL["num_videos"] // len(classes)}
    val = Counter(line.split()[1] for line in (small_set / "val.txt").read_text().splitlines())
    assert len(set(val.values())) == 1 and set(val) == set(classes)  # every class in val, equally often


def test_boxes_lie_inside_frames_and_follow_the_motion(small_set: Path) -> None:
    gt = synth.load_ground_truth(small_set)
    for video in gt["videos"].values():
        assert len(video["boxes"]) == video["num_frames"]
        for box in video["boxes"]:
            if box is None:
                assert video["class_name"] == "blink"
                continue
            x0, y0, x1, y1 = box
            assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
        boxes = np.array([b for b in video["boxes"] if b is not None])
        centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        name = video["class_name"]
        if name == "move_right":
            assert centre_x[-1] > centre_x[0] + 0.2
        if name == "move_left":
            assert centre_x[-1] < centre_x[0] - 0.2
        if name == "grow":
            assert area[-1] > 4 * area[0]
        if name == "shrink":
            assert area[0] > 4 * area[-1]


def test_actor_pixels_are_inside_the_box(tmp_path: Path) -> None:
    """Render one frame with and without the actor: every changed pixel lies inside the recorded box."""
    spec = synth.SynthSpec(seed=1, num_videos=8, size=64, num_frames=4)
    rng = np.random.default_rng(0)
    background = synth._background(rng, spec.size)
    params = synth._actor_params("rotate_cw", rng, spec.size)
    pose = synth._actor_pose("rotate_cw", 0.3, params)
    with_actor, box = synth._draw_frame(background, [], 0, pose, params["colour"], spec.size)
    without, _ = synth._draw_frame(background, [], 0, {**pose, "visible": False}, params["colour"], spec.size)
    ys, xs = np.nonzero(np.any(with_actor != without, axis=-1))
    assert len(xs) > 10
    x0, y0, x1, y1 = (v * spec.size for v in box)
    assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1) + 1
    assert ys.min() >= np.floor(y0) - 1 and ys.max() <= np.ceil(y1) + 1


def test_reversal_pairs_are_time_reversals() -> None:
    """The two members of a pair draw the same poses in opposite order: only frame order tells them apart."""
    for a, b in synth.REVERSAL_PAIRS:
        params = synth._actor_params(a, np.random.default_rng(5), 96)
        for t in (0.0, 0.25, 0.7, 1.0):
            pa, pb = synth._actor_pose(a, t, params), synth._actor_pose(b, 1.0 - t, params)
            assert pa == pytest.approx(pb)
        assert synth.pair_of(a) == synth.pair_of(b) != a


def test_untrimmed_span_and_idle_actor(tmp_path: Path) -> None:
    out = synth.generate(tmp_path / "u", seed=0, untrimmed=True, **SMALL)
    gt = synth.load_ground_truth(out)
    for video in gt["videos"].values():
        start, end = video["span"]
        assert video["num_frames"] == 3 * SMALL["num_frames"]
        assert 0 <= start < end <= video["num_frames"] and end - start == SMALL["num_frames"]
        assert all(box is not None for f, box in enumerate(video["boxes"]) if not start <= f < end)


def test_reuse_keeps_an_identical_dataset_and_bad_args_are_user_errors(small_set: Path, tmp_path: Path) -> None:
    stamp = (small_set / "videos/grow/00002.mp4").stat().st_mtime_ns
    synth.generate(small_set, seed=3, **SMALL)  # same spec: reused, nothing rewritten
    assert (small_set / "videos/grow/00002.mp4").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="num-videos"):
        synth.generate(tmp_path / "x", num_videos=3)
    with pytest.raises(UserError, match="no synthetic ground truth"):
        synth.load_ground_truth(tmp_path)


def test_cli_entry_points(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "s"), "--num-videos", "8", "--size", "32", "--frames", "4"])
    assert synth.run(args) == 0
    assert "wrote 8 videos" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "ground_truth.json").read_text())["spec"]["size"] == 32
