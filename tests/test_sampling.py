"""Sampling: indices against naive references (TSN's own formulas), bounds, coverage and reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from istpan.data.sampling import (
    clip_generator,
    dense_indices,
    sample_indices,
    segment_indices,
    uniform_indices,
    view_indices,
)

SIZES = [(1, 8), (3, 8), (7, 8), (8, 8), (9, 8), (81, 8), (164, 8), (280, 25), (1000, 3)]


@pytest.mark.parametrize("n,k", SIZES)
def test_segment_test_indices_match_tsn_formula(n, k):
    tick = n / k
    reference = [int(tick / 2.0 + tick * x) for x in range(k)]  # TSN's _get_test_indices, written out by hand
    got = segment_indices(n, k)
    assert got.dtype == torch.long and got.shape == (k,)
    assert got.tolist() == [min(r, n - 1) for r in reference]


@pytest.mark.parametrize("n,k", SIZES)
def test_segment_train_indices_stay_in_their_segment(n, k):
    for seed in range(20):
        got = segment_indices(n, k, rng=clip_generator(seed, 0, 0)).tolist()
        for s, i in enumerate(got):
            lo, hi = math.floor(s * n / k), math.floor((s + 1) * n / k)
            assert lo <= i <= max(lo, hi - 1) and 0 <= i < n
        assert got == sorted(got)


def test_segment_train_covers_every_frame_of_a_segment():
    n, k = 80, 8  # 10 frames per segment
    seen = [set() for _ in range(k)]
    for index in range(400):
        for s, i in enumerate(segment_indices(n, k, rng=clip_generator(0, 0, index)).tolist()):
            seen[s].add(i)
    assert all(seen[s] == set(range(10 * s, 10 * s + 10)) for s in range(k))


def test_dense_clip_stride_and_short_videos():
    assert dense_indices(100, 8, 2).tolist() == [42 + 2 * t for t in range(8)]  # centred: room 85, start 42
    assert dense_indices(10, 8, 2).tolist() == [0, 2, 4, 6, 8, 9, 9, 9]  # shorter than its span: last frame repeats
    starts = {int(dense_indices(30, 4, 3, rng=clip_generator(1, 0, i))[0]) for i in range(300)}
    assert starts == set(range(30 - 10 + 1))  # span 10: every valid start is drawn, nothing past it


def test_uniform_is_fixed_and_spread_over_the_whole_video():
    got = uniform_indices(3000, 16)
    assert got.tolist() == segment_indices(3000, 16).tolist()
    assert got[0] < 3000 / 16 and got[-1] > 3000 - 3000 / 16
    rng = clip_generator(0, 0, 0)
    assert sample_indices(3000, method="uniform", num_frames=16, rng=rng).tolist() == got.tolist()


def test_views_tile_the_segments():
    views = view_indices(100, method="segment", num_frames=4, clips=2)
    assert views.shape == (2, 4)
    assert views.tolist() == [[6, 31, 56, 81], [18, 43, 68, 93]]  # offsets 0.25 and 0.75 of each 25-frame segment
    assert view_indices(100, method="segment", num_frames=4, clips=1).tolist() == [segment_indices(100, 4).tolist()]
    dense = view_indices(50, method="dense", num_frames=4, stride=2, clips=3)
    assert dense[:, 0].tolist() == [7, 21, 35]  # starts at 1/6, 3/6, 5/6 of the 43 valid starts


def test_reproducible_per_seed_epoch_index_and_different_otherwise():
    draw = lambda s, e, i: segment_indices(1000, 8, rng=clip_generator(s, e, i)).tolist()  # noqa: E731
    assert draw(0, 3, 7) == draw(0, 3, 7)
    others = [draw(1, 3, 7), draw(0, 4, 7), draw(0, 3, 8), draw(0, 7, 3)]
    assert all(o != draw(0, 3, 7) for o in others)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="video_frames"):
        segment_indices(0, 8)
    with pytest.raises(ValueError, match="stride"):
        dense_indices(10, 4, 0)
    with pytest.raises(ValueError, match="unknown sampling method"):
        sample_indices(10, method="random", num_frames=4)
