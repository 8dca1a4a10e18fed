"""Anytime inference: coarse-to-fine frame order, lazy backbone passes, and the calibrated stopping threshold."""

from __future__ import annotations

import pytest
import torch

from istpan.errors import UserError
from istpan.inference.anytime import (
    DEFAULT_ORDER,
    anytime_predict,
    anytime_scores,
    calibrate_threshold,
    calibrate_thresholds,
    coarse_to_fine,
    frame_order,
    margins,
    spread_order,
    stopping_point,
    van_der_corput,
)
from istpan.models import create_model


def test_coarse_to_fine_order():
    assert coarse_to_fine(8) == [3, 1, 5, 0, 2, 4, 6, 7]  # middle, quarters, eighths (ties: the earlier)
    assert coarse_to_fine(1) == [0] and coarse_to_fine(5)[:3] == [2, 1, 3] and coarse_to_fine(7)[:3] == [3, 1, 5]
    for n in range(1, 20):
        assert sorted(coarse_to_fine(n)) == list(range(n))
    assert frame_order("dyadic", 8) == coarse_to_fine(8)


def test_spread_order():
    assert [van_der_corput(i) for i in range(8)] == [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]
    # 8 candidates at (k + 0.5) / 8; targets 1/4, 3/4, 1/2, 0, 3/8, 7/8, 5/8, 1/8 each in its own candidate's segment
    assert spread_order(8) == [2, 6, 4, 0, 3, 7, 5, 1] == frame_order("spread", 8) == frame_order(DEFAULT_ORDER, 8)
    for n in range(1, 26):
        order = spread_order(n)
        assert sorted(order) == list(range(n)), n  # every candidate once
        m = 1
        while m <= n:
            if n % m == 0:  # the first m (a power of two dividing n) are an even grid: every n/m-th candidate
                assert sorted(k % (n // m) for k in order[:m]) == [order[0] % (n // m)] * m, (n, m)
                assert len(set(k // (n // m) for k in order[:m])) == m, (n, m)
            m *= 2
        if n >= 2:  # the first two lie in different halves of the video, whatever n
            assert (order[0] < n / 2) != (order[1] < n / 2), n
    assert frame_order([1, 0, 2], 3) == [1, 0, 2]
    with pytest.raises(UserError, match="unknown frame order 'random': one of spread, dyadic"):
        frame_order("random", 4)
    with pytest.raises(UserError, match=r"must use each of 0\.\.2 once"):
        frame_order([0, 0, 2], 3)


@pytest.mark.parametrize(("name", "options", "order"), [
    ("istpan_tiny", {}, "dyadic"), ("tsn_tiny", {}, "spread"),
    ("istpan_tiny", {"time_encoding": "fourier", "head": "glimpse"}, "dyadic"),
    ("istpan_tiny", {"time_encoding": "fourier", "head": "glimpse"}, "spread")])
def test_anytime_scores_and_lazy_prediction_match_the_model(name, options, order):
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, input_size=32, **options).eval()
    if getattr(model.attention, "time_proj", None) is not None:
        torch.nn.init.normal_(model.attention.time_proj.weight)
    video = torch.randn(2, 8, 3, 32, 32)  # (B, N, 3, S, S): the fixed-K = 8 frames, in time order
    scores = anytime_scores(model, video, order=order)  # (B, N, C)
    with torch.no_grad():
        full = model(video).logits.softmax(-1)
        three = sorted(frame_order(order, 8)[:3])  # e.g. frames 2, 4, 6 of 8 (spread), at their own times
        ref3 = model.forward_clip(model.frame_features(video[:, three].flatten(0, 1)).unflatten(0, (2, 3)),
                                  times=(torch.tensor(three) + 0.5) / 8).logits.softmax(-1)
    torch.testing.assert_close(scores[:, -1], full, atol=1e-5, rtol=0)  # n = N is fixed K = N
    torch.testing.assert_close(scores[:, 2], ref3, atol=1e-5, rtol=0)

    asked = []
    frame = lambda k: asked.append(k) or video[0, k]  # noqa: E731
    probs, used = anytime_predict(model, frame, 8, threshold=2.0, order=order)  # never clear enough: all 8 frames
    assert used == 8 and asked == frame_order(order, 8)
    torch.testing.assert_close(probs, full[0], atol=1e-5, rtol=0)
    asked.clear()
    thr = float(margins(scores[0, 2])) - 1e-6  # clear enough after 3 frames (maybe earlier)
    probs, used = anytime_predict(model, frame, 8, threshold=thr, order=order)
    assert used == int(stopping_point(scores[:1], thr)) <= 3 and asked == frame_order(order, 8)[:used]
    torch.testing.assert_close(probs, scores[0, used - 1], atol=1e-5, rtol=0)
    asked.clear()  # per step: never after 1 or 2 frames, always after 3
    probs, used = anytime_predict(model, frame, 8, threshold=[2.0, 2.0, 0.0, 2.0, 2.0, 2.0, 2.0],
                                  order=order)
    assert used == 3 and asked == frame_order(order, 8)[:3]
    torch.testing.assert_close(probs, ref3[0], atol=1e-5, rtol=0)


def test_stopping_point_and_calibration_against_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 6, 4, generator=g).softmax(-1) ** 3
    scores = scores / scores.sum(-1, keepdim=True)  # (V, N, C) sharp-ish distributions
    labels = torch.randint(0, 4, (50,), generator=g)
    m = margins(scores)
    for thr in (0.0, 0.2, 0.5, 1.1):
        naive = [next((n + 1 for n in range(6) if m[v, n] >= thr), 6) for v in range(50)]
        assert stopping_point(scores, thr).tolist() == naive
    thr, curve = calibrate_threshold(scores, labels, max_loss=1.0, steps=101)
    full = 100 * (scores[:, -1].argmax(-1) == labels).float().mean().item()
    assert curve.full_accuracy == pytest.approx(full)
    used = stopping_point(scores, thr)
    acc = 100 * (scores[torch.arange(50), used - 1].argmax(-1) == labels).float().mean().item()
    assert acc >= full - 1.0 - 1e-9
    # no other threshold of the grid within the loss uses fewer frames
    for t in [i / 100 for i in range(101)]:
        u = stopping_point(scores, t)
        a = 100 * (scores[torch.arange(50), u - 1].argmax(-1) == labels).float().mean().item()
        if a >= full - 1.0 - 1e-9:
            assert u.float().mean() >= used.float().mean() - 1e-9


def _naive_point(scores, labels, thr):
    """Accuracy (%) and mean frames of per-step thresholds, one video at a time."""
    v, num = scores.shape[:2]
    hits, frames = 0, 0
    for i in range(v):
        n = next((n for n in range(num - 1) if margins(scores[i, n]) >= thr[n]), num - 1)
        hits += int(scores[i, n].argmax() == labels[i])
        frames += n + 1
    return 100 * hits / v, frames / v


def test_per_step_thresholds_against_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(60, 5, 4, generator=g) * torch.linspace(0.5, 3, 5)[:, None]  # sharper with more frames
    labels = torch.randint(0, 4, (60,), generator=g)
    logits[torch.arange(60), -1, labels] += 1.5  # the full video is mostly right
    scores = logits.softmax(-1)  # (V, N, C)
    for thr in ([0.3, 0.9, 0.1, 2.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5, 0.0]):
        used = stopping_point(scores, thr)
        naive = [next((n + 1 for n in range(4) if margins(scores[i, n]) >= thr[n]), 5) for i in range(60)]
        assert used.tolist() == naive
    assert stopping_point(scores, 0.5).tolist() == stopping_point(scores, [0.5] * 4).tolist()
    with pytest.raises(UserError, match="one threshold per step"):
        stopping_point(scores, [0.5, 0.5])

    full = 100 * (scores[:, -1].argmax(-1) == labels).float().mean().item()
    thr, acc, frames = calibrate_thresholds(scores, labels, max_loss=2.0, steps=11)
    assert len(thr) == 4 and (acc, frames) == pytest.approx(_naive_point(scores, labels, thr))
    assert acc >= full - 2.0 - 1e-9 and frames < 5  # within the loss, and it does stop early here
    one, _ = calibrate_threshold(scores, labels, max_loss=2.0, steps=11)
    assert frames <= _naive_point(scores, labels, [one] * 4)[1] + 1e-9  # never worse than one shared threshold
    # a local optimum: no single step's threshold on the grid can be changed to use fewer frames within the loss
    for n in range(4):
        for value in [i / 10 for i in range(11)] + [2.0]:
            a, f = _naive_point(scores, labels, [*thr[:n], value, *thr[n + 1:]])
            assert not (a >= full - 2.0 - 1e-9 and f < frames - 1e-9)
