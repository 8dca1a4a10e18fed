"""The "gain" stopping rule of anytime inference, and the loss bound both rules are calibrated with.

The margin rule (inference/anytime.py) stops once the model is sure: top-1 minus top-2 probability >= a per-step
threshold. What stopping early costs is something else: the top-1 accuracy lost against waiting for all N frames,
E[correct_N - correct_n | what the model said so far]. The two differ where waiting does not help: an order-blind
model split 50/50 between two classes it cannot tell apart is as unsure after 8 frames as after 2, so stopping at 2
costs nothing on average, but its margin never lets it stop. The gain rule estimates that cost directly:

    features  of the probabilities after n frames and after n - 1 (`features`: margin, top-1, top-2 and their sum,
              entropy, top-1 unchanged, total variation between the two, both probability vectors, and which class
              leads now and before, alone and times the margin: a leading class may be more or less trustworthy)
    model     one ridge regression per step n = 1..N-1 (`GainModel`, penalty RIDGE), fit on labelled calibration
              videos to the per-video gain of waiting, 100 * (correct after N frames - correct after n), in points
    stop      after n frames once the predicted gain <= one threshold (the same at every step: the prediction is in
              the same unit at every step, so one knob, which over-fits a calibration set far less than N - 1)

Calibration (`calibrate_gain`) picks the threshold on cross-fitted predictions (each video's gain predicted by a
model fit on the other folds, so the regression's own fit to these videos does not make the threshold optimistic),
and both rules keep the *upper bound* `loss + z * SE` within the target, not the point estimate (`loss_bound`): the
loss is a mean over the few videos where stopping early changes the answer, so its standard error is about half a
point even on 1,280 videos (docs/latency.md has the measurements that chose all of this).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from istpan.errors import UserError

__all__ = ["MIN_VIDEOS_PER_CLASS", "NEVER", "RIDGE", "GainModel", "calibrate_gain", "choose_threshold", "cross_fit",
           "features", "gain_stops", "loss_bound", "stopped_correct", "uses_per_class"]

NEVER = -1e9  # a gain threshold no prediction is below: never stop at that step
# The per-class features (5 per class) are used only with at least this many calibration videos per class: with
# fewer, each class's weights are fit to a handful of videos, and the cross-fitted rule hardly stops (400 classes,
# 5,000 videos: 7.98 of 8 frames with them, fewer without; docs/latency.md). The synthetic sets have 160-1,280.
MIN_VIDEOS_PER_CLASS = 100
RIDGE = 128.0  # ridge penalty: 0.1 per video on 1,280 calibration videos, 0.0125 on 10,240 (measured: docs/latency.md)


def features(probs: torch.Tensor, *, per_class: bool = True) -> torch.Tensor:
    """Per step the signals the gain is predicted from: probabilities after 1..n frames (V, n, C) -> (V, n, 9 + 5C),
    or (V, n, 9) without the per-class ones (`per_class=False`: see `MIN_VIDEOS_PER_CLASS`).

    Step n uses only steps n and n - 1 (step 1: itself as the previous one), so a video's features after n frames
    are the same whether computed at once for all steps (calibration) or frame by frame (prediction). float64.
    """
    p = probs.double().clamp_min(1e-9)  # (V, n, C)
    top2 = p.topk(min(2, p.shape[-1]), dim=-1).values
    p1 = top2[..., 0]
    p2 = top2[..., 1] if p.shape[-1] > 1 else torch.zeros_like(p1)
    entropy = -(p * p.log()).sum(-1) / math.log(max(p.shape[-1], 2))  # 0..1
    prev = torch.cat([p[:, :1], p[:, :-1]], 1)  # (V, n, C): the distribution one frame earlier
    same = (p.argmax(-1) == prev.argmax(-1)).double()
    change = 0.5 * (p - prev).abs().sum(-1)  # total variation
    margin = p1 - p2
    signals = [margin, p1, p2, p1 + p2, entropy, same, change, margin**2, p1 * p2]
    if not per_class:
        return torch.stack(signals, -1)
    top = torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]).double()  # which class leads: how far to trust it
    top_prev = torch.nn.functional.one_hot(prev.argmax(-1), p.shape[-1]).double()
    return torch.cat([torch.stack(signals, -1), p, prev, top, top * margin[..., None], top_prev], -1)


def uses_per_class(videos: int, classes: int) -> bool:
    """Whether a gain model fit on `videos` calibration videos of `classes` classes gets the per-class features."""
    return videos >= MIN_VIDEOS_PER_CLASS * classes


@dataclass
class GainModel:
    """One ridge regression per step n = 1..N-1: standardised features -> predicted top-1 gain (points) of waiting
    for all N frames. Plain lists, so it is written into the calibration file as it is."""

    mean: list[list[float]]  # (N-1, F)
    scale: list[list[float]]  # (N-1, F)
    weight: list[list[float]]  # (N-1, F)
    bias: list[float]  # (N-1,)
    per_class: bool = True  # F = 9 + 5C with the per-class features, 9 without (files before this field: with)

    @property
    def steps(self) -> int:
        return len(self.bias)

    @classmethod
    def fit(cls, scores: torch.Tensor, labels: torch.Tensor, *, l2: float = RIDGE, per_class: bool | None = None
            ) -> GainModel:
        """scores (V, N, C) probabilities after 1..N frames, labels (V,). l2: the ridge penalty on the standardised
        weights (the bias is not shrunk), fixed whatever the number of videos, so it shrinks a fit to a few hundred
        videos hard and one to ten thousand hardly (RIDGE: docs/latency.md)."""
        if per_class is None:  # `calibrate_gain` decides once for all its folds
            per_class = uses_per_class(len(labels), scores.shape[-1])
        x = features(scores, per_class=per_class)  # (V, N, F)
        correct = (scores.argmax(-1) == labels[:, None]).double()  # (V, N)
        gain = 100.0 * (correct[:, -1:] - correct)  # (V, N): points gained by waiting for all N
        out: dict[str, list] = {"mean": [], "scale": [], "weight": [], "bias": []}
        for n in range(scores.shape[1] - 1):
            xn, y = x[:, n], gain[:, n]
            mu = xn.mean(0)
            sd = xn.std(0) if len(xn) > 1 else torch.ones_like(mu)
            sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))  # a constant feature (step 1's "change") stays 0
            z = torch.cat([(xn - mu) / sd, torch.ones(len(xn), 1, dtype=xn.dtype)], 1)  # (V, F + 1)
            penalty = torch.full((z.shape[1],), float(l2), dtype=z.dtype)
            penalty[-1] = 0.0
            w = torch.linalg.solve(z.T @ z + torch.diag(penalty) + 1e-9 * torch.eye(z.shape[1], dtype=z.dtype),
                                   z.T @ y)
            out["mean"].append(mu.tolist())
            out["scale"].append(sd.tolist())
            out["weight"].append(w[:-1].tolist())
            out["bias"].append(float(w[-1]))
        return cls(**out, per_class=per_class)

    def predict(self, probs: torch.Tensor) -> torch.Tensor:
        """Predicted gain of waiting (points) after each of the first min(n, N-1) steps: (V, n, C) -> (V, n')."""
        x = features(probs, per_class=self.per_class)
        if self.per_class and x.shape[-1] != len(self.mean[0]):
            classes = (len(self.mean[0]) - 9) // 5
            raise UserError(f"the gain rule was calibrated for a model with {classes} classes, this one has "
                            f"{probs.shape[-1]}: calibrate it for this checkpoint (istpan eval --anytime)")
        steps = min(x.shape[1], self.steps)
        out = torch.empty(x.shape[0], steps, dtype=torch.float64)
        for n in range(steps):
            mu, sd, w = (torch.tensor(v[n], dtype=torch.float64) for v in (self.mean, self.scale, self.weight))
            out[:, n] = ((x[:, n] - mu) / sd) @ w + self.bias[n]
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def stopped_correct(correct: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """(V,) whether each video's answer is right at the frame it stopped at: correct (V, N) per step, used (V,)
    frames used (1-based). The one place calibration, the loss bound and the bench read a stopping rule's answers."""
    return correct.gather(1, (used - 1)[:, None])[:, 0]


def loss_bound(correct: torch.Tensor, used: torch.Tensor, z: float) -> tuple[float, float, float]:
    """(loss, its standard error, loss + z * SE) in top-1 points vs all N frames: correct (V, N) bool per step,
    used (V,) frames each video stopped at. The SE is the paired one, from the per-video differences, with one
    pseudo-video lost and one gained added (Agresti-Caffo style): a small set on which stopping early happened to
    change no answer does not get a zero SE (on 5,120 videos this changes the SE by < 1 %)."""
    diff = correct[:, -1].double() - stopped_correct(correct, used).double()  # (V,) in {-1, 0, 1}
    loss = 100.0 * diff.mean().item()
    padded = torch.cat([diff, torch.tensor([1.0, -1.0], dtype=torch.float64)])
    se = 100.0 * padded.std().item() / math.sqrt(len(diff))
    return loss, se, loss + z * se


def gain_stops(gain: torch.Tensor, threshold: float) -> torch.Tensor:
    """Frames used (V,): the first n whose predicted gain (V, N-1) <= threshold, else N."""
    clear = torch.cat([gain <= threshold, torch.ones(len(gain), 1, dtype=torch.bool)], 1)  # (V, N)
    return clear.float().argmax(1) + 1


def cross_fit(scores: torch.Tensor, labels: torch.Tensor, *, folds: int = 5, l2: float = RIDGE, seed: int = 0,
              per_class: bool | None = None) -> torch.Tensor:
    """Each video's predicted gain (V, N-1) from a model fit on the other folds (random, fixed by seed): a video's
    own label never enters its prediction, so a threshold chosen on these is not flattered by the regression."""
    gain = torch.empty(len(labels), scores.shape[1] - 1, dtype=torch.float64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    folds = max(2, min(folds, len(labels)))
    for i in range(folds):
        held = order[i::folds]
        rest = torch.cat([order[j::folds] for j in range(folds) if j != i])
        gain[held] = GainModel.fit(scores[rest], labels[rest], l2=l2, per_class=per_class).predict(scores[held])
    return gain


def choose_threshold(gain: torch.Tensor, correct: torch.Tensor, *, max_loss: float, z: float,
                     candidates: int = 400) -> float:
    """The threshold with the fewest mean frames (ties: lower loss) whose loss bound stays within max_loss: gain
    (V, N-1) predicted, correct (V, N). Tried: `candidates` quantiles of the predictions and NEVER (all N frames,
    loss 0, always within)."""
    grid = torch.quantile(gain.flatten(), torch.linspace(0, 1, candidates + 1, dtype=torch.float64))
    best: tuple[float, float, float] = (float(correct.shape[1]), 0.0, NEVER)  # (frames, loss, threshold)
    for t in torch.unique(grid).tolist():
        used = gain_stops(gain, t)
        loss, _, bound = loss_bound(correct, used, z)
        frames = used.double().mean().item()
        if bound <= max_loss + 1e-9 and (frames, loss) < best[:2]:
            best = (frames, loss, t)
    return best[2]


def calibrate_gain(
    scores: torch.Tensor, labels: torch.Tensor, *, max_loss: float = 1.0, z: float = 0.0, folds: int = 5,
    l2: float = RIDGE, candidates: int = 400, seed: int = 0,
) -> tuple[GainModel, float, dict[str, float]]:
    """The gain model fit on all these videos and the one threshold with the fewest mean frames whose loss bound
    (loss + z * SE vs all N frames) stays within max_loss, chosen on cross-fitted predictions (`cross_fit`,
    `choose_threshold`). scores (V, N, C), labels (V,). Returns (model, threshold, cross-fitted figures: accuracy,
    mean_frames, loss, se, bound)."""
    correct = scores.argmax(-1) == labels[:, None]  # (V, N)
    per_class = uses_per_class(len(labels), scores.shape[-1])  # one decision for the folds and the final model
    gain = cross_fit(scores, labels, folds=folds, l2=l2, seed=seed, per_class=per_class)
    threshold = choose_threshold(gain, correct, max_loss=max_loss, z=z, candidates=candidates)
    used = gain_stops(gain, threshold)
    loss, se, bound = loss_bound(correct, used, z)
    figures = {"accuracy": 100.0 * stopped_correct(correct, used).double().mean().item(),
               "mean_frames": used.double().mean().item(), "loss": loss, "se": se, "bound": bound}
    return GainModel.fit(scores, labels, l2=l2, per_class=per_class), threshold, figures
