"""The gain stopping rule (inference/anytime_gain.py) against naive references, and the case it exists for."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from istpan.errors import UserError
from istpan.inference.anytime import anytime_predict, anytime_scores, calibrate_thresholds, stopping_point
from istpan.inference.anytime_gain import (
    MIN_VIDEOS_PER_CLASS,
    NEVER,
    GainModel,
    calibrate_gain,
    choose_threshold,
    cross_fit,
    features,
    gain_stops,
    loss_bound,
    uses_per_class,
)
from istpan.models import create_model


def _scores(v: int, n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities after 1..n frames that get sharper and more often right with more frames, and labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (v,), generator=g)
    logits = torch.randn(v, n, c, generator=g)
    logits[torch.arange(v), :, labels] += torch.linspace(0.0, 2.5, n)  # (V, N)
    return logits.softmax(-1), labels


def test_features_against_a_naive_loop():
    probs, _ = _scores(5, 4, 3, seed=0)
    x = features(probs)  # (V, N, 9 + 5C)
    assert x.shape == (5, 4, 24) and x.dtype == torch.float64
    for v in range(5):
        for n in range(4):
            p = [float(t) for t in probs[v, n]]
            q = [float(t) for t in probs[v, max(n - 1, 0)]]
            s = sorted(p, reverse=True)
            entropy = -sum(t * math.log(t) for t in p) / math.log(3)
            same = float(max(range(3), key=p.__getitem__) == max(range(3), key=q.__getitem__))
            change = 0.5 * sum(abs(a - b) for a, b in zip(p, q))
            top = [float(c == max(range(3), key=p.__getitem__)) for c in range(3)]
            top_prev = [float(c == max(range(3), key=q.__getitem__)) for c in range(3)]
            want = [s[0] - s[1], s[0], s[1], s[0] + s[1], entropy, same, change, (s[0] - s[1]) ** 2, s[0] * s[1],
                    *p, *q, *top, *[t * (s[0] - s[1]) for t in top], *top_prev]
            torch.testing.assert_close(x[v, n], torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)


def test_gain_model_is_a_ridge_regression_per_step():
    scores, labels = _scores(80, 4, 3, seed=1)
    model = GainModel.fit(scores, labels, l2=4.0, per_class=True)  # 80 videos would not get them by default
    assert model.steps == 3
    x = features(scores)
    correct = (scores.argmax(-1) == labels[:, None]).double()
    pred = model.predict(scores)  # (V, N - 1)
    for n in range(3):
        # reference: least squares on [standardised features, 1] stacked on sqrt(l2 * V) * I (the bias unpenalised)
        xn = x[:, n]
        sd = xn.std(0)
        sd[sd <= 1e-6] = 1.0
        z = torch.cat([(xn - xn.mean(0)) / sd, torch.ones(80, 1, dtype=torch.float64)], 1)
        reg = math.sqrt(4.0) * torch.eye(z.shape[1], dtype=torch.float64)[:-1]
        a = torch.cat([z, reg])
        b = torch.cat([100 * (correct[:, -1] - correct[:, n]), torch.zeros(z.shape[1] - 1, dtype=torch.float64)])
        w = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
        torch.testing.assert_close(pred[:, n], z @ w, atol=1e-6, rtol=0)
    # step n's prediction uses only the first n frames: the same from a prefix as from all of them
    torch.testing.assert_close(model.predict(scores[:, :2]), pred[:, :2], atol=0, rtol=0)
    assert GainModel(**model.to_dict()).predict(scores).equal(pred)  # what the calibration file stores
    with pytest.raises(UserError, match="calibrated for a model with 3 classes, this one has 5"):
        model.predict(torch.rand(2, 4, 5).softmax(-1))


def test_per_class_features_need_enough_videos_per_class():
    """Below MIN_VIDEOS_PER_CLASS calibration videos per class the model keeps the 9 scalar signals only, decided
    once per calibration (folds and final model alike) and recorded in what the calibration file stores."""
    scores, labels = _scores(80, 4, 3, seed=1)
    assert not uses_per_class(80, 3) and uses_per_class(MIN_VIDEOS_PER_CLASS * 3, 3)
    model = GainModel.fit(scores, labels)
    assert not model.per_class and all(len(row) == 9 for row in model.mean)
    torch.testing.assert_close(features(scores, per_class=False), features(scores)[..., :9], atol=0, rtol=0)
    pred = model.predict(scores)
    assert GainModel(**model.to_dict()).predict(scores).equal(pred) and model.to_dict()["per_class"] is False
    assert not calibrate_gain(scores, labels, max_loss=5.0)[0].per_class


def test_cross_fit_never_uses_a_videos_own_label():
    scores, labels = _scores(60, 4, 3, seed=2)
    gain = cross_fit(scores, labels, folds=5, seed=0)
    flipped = labels.clone()
    flipped[7] = (labels[7] + 1) % 3
    again = cross_fit(scores, flipped, folds=5, seed=0)
    assert again[7].equal(gain[7])  # its own prediction does not see its label ...
    assert not again.equal(gain)  # ... the other folds' models do


def _naive_bound(correct, used, z):
    diff = [int(correct[v, -1]) - int(correct[v, used[v] - 1]) for v in range(len(used))]
    loss = 100 * sum(diff) / len(diff)
    se = 100 * statistics.stdev([*diff, 1, -1]) / math.sqrt(len(diff))  # one pseudo-video each way
    return loss, se, loss + z * se


def test_loss_bound_and_threshold_choice_against_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    gain = torch.randn(70, 4, generator=g, dtype=torch.float64) * 10  # (V, N - 1) predicted gains, N = 5
    correct = torch.rand(70, 5, generator=g) < torch.linspace(0.3, 0.8, 5)  # (V, N)
    for t in (-5.0, 0.0, 3.0):
        used = gain_stops(gain, t)
        assert used.tolist() == [next((n + 1 for n in range(4) if gain[v, n] <= t), 5) for v in range(70)]
        assert loss_bound(correct, used, 1.5) == pytest.approx(_naive_bound(correct, used, 1.5))
    same = torch.ones(30, 5, dtype=torch.bool)  # stopping early changed no answer: loss 0, but not SE 0
    se = 100 * math.sqrt(2 / 31) / math.sqrt(30)  # [0] * 30 + [1, -1]: variance 2 / 31
    assert loss_bound(same, torch.ones(30, dtype=torch.long), 1.0) == pytest.approx((0.0, se, se))
    for max_loss, z in ((2.0, 0.0), (2.0, 1.0), (0.0, 1.0)):
        t = choose_threshold(gain, correct, max_loss=max_loss, z=z, candidates=50)
        grid = torch.unique(torch.quantile(gain.flatten(), torch.linspace(0, 1, 51, dtype=torch.float64))).tolist()
        ok = [(5.0, 0.0)]  # never stop early: the fallback, whatever its bound
        for c in grid:
            used = [next((n + 1 for n in range(4) if gain[v, n] <= c), 5) for v in range(70)]
            loss, _, bound = _naive_bound(correct, used, z)
            if bound <= max_loss + 1e-9:
                ok.append((sum(used) / 70, loss))
        chosen = gain_stops(gain, t)
        assert (chosen.double().mean().item(), loss_bound(correct, chosen, z)[0]) == pytest.approx(min(ok))
        assert loss_bound(correct, chosen, z)[2] <= max_loss + 1e-9 or t == NEVER


def test_stopping_point_with_a_gain_model_against_a_naive_loop():
    scores, labels = _scores(40, 5, 3, seed=4)
    model = GainModel.fit(scores, labels)
    for thr in (-10.0, 0.0, 5.0, [NEVER, 0.0, 2.0, -3.0]):
        per = [thr] * 4 if isinstance(thr, float) else thr
        naive = [next((n + 1 for n in range(4) if model.predict(scores[v:v + 1, :n + 1])[0, n] <= per[n]), 5)
                 for v in range(40)]
        assert stopping_point(scores, thr, model).tolist() == naive
    assert stopping_point(scores, NEVER, model).tolist() == [5] * 40


def test_anytime_predict_applies_the_gain_rule_frame_by_frame():
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=3, input_size=32, time_encoding="fourier", head="glimpse").eval()
    video = torch.randn(3, 6, 3, 32, 32)  # (B, N, 3, S, S)
    scores = anytime_scores(model, video)  # (B, N, C)
    calib, labels = _scores(50, 6, 3, seed=5)
    gain = GainModel.fit(calib, labels)
    predicted = gain.predict(scores)  # (B, N - 1)
    for b in range(3):
        for thr in (float(predicted[b, 2]), float(predicted[b].min()) - 1.0):  # stops by frame 3; never
            want = int(stopping_point(scores[b:b + 1], thr, gain))
            asked = []
            frame = lambda k, b=b, asked=asked: asked.append(k) or video[b, k]  # noqa: E731
            probs, used = anytime_predict(model, frame, 6, threshold=thr, gain=gain)
            assert used == want and len(asked) == used
            torch.testing.assert_close(probs, scores[b, used - 1], atol=1e-5, rtol=0)
        assert want == 6


def test_gain_rule_stops_where_waiting_cannot_help_and_the_margin_cannot_tell():
    """Half the videos belong to a pair of classes the model cannot tell apart with any number of frames (an
    order-blind model on a time-reversed pair): it leans the same way after every frame, right half of the time.
    The others get clear with frames. Waiting gains nothing on the first half, but their margin stays small, so the
    margin rule keeps them to the last frame; the gain rule stops them at the first."""
    g = torch.Generator().manual_seed(6)
    v, n = 2000, 4
    labels = torch.randint(0, 4, (v,), generator=g)
    pair = (labels < 2).nonzero()[:, 0]
    lean = torch.randint(0, 2, (len(pair),), generator=g)  # the member this video's frames favour, whatever n
    logits = torch.randn(v, n, 4, generator=g) * 0.05
    logits[pair, :, :2] += 3.0
    logits[pair, :, lean] += 0.15
    rest = (labels >= 2).nonzero()[:, 0]
    logits[rest, :, labels[rest]] += torch.linspace(0.0, 3.0, n)  # (V', N): clearer with frames ...
    logits[rest, 0, (labels[rest] + 1) % 4] += 1.0  # ... and surer of a wrong class than the pair after one frame
    scores = logits.softmax(-1)  # (V, N, C)
    margin_thr, _, margin_frames = calibrate_thresholds(scores, labels, max_loss=1.0, steps=51)
    model, thr, figures = calibrate_gain(scores, labels, max_loss=1.0)
    used = stopping_point(scores, thr, model)
    assert figures["bound"] <= 1.0 + 1e-9 and figures["mean_frames"] < margin_frames - 0.5
    assert used[pair].double().mean() < 1.1 and stopping_point(scores, margin_thr)[pair].double().mean() > 1.5
