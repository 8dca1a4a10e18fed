"""The calibration file of anytime inference: what `istpan eval --anytime --json FILE` writes and `istpan predict
--confidence FILE` reads (rule, thresholds, gain model, frame order and N in one place, so they cannot drift apart).

Reading it (and turning what the user gave into thresholds) is inference's; fitting it is evaluation's
(`istpan.evaluation.calibration`), which imports `Calibration` from here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from istpan.errors import UserError
from istpan.inference.anytime import DEFAULT_ORDER, frame_order
from istpan.inference.anytime_gain import GainModel

__all__ = ["DEFAULT_RULE", "DEFAULT_Z", "FORMAT", "RULES", "Calibration", "load_calibration", "resolve_confidence"]

FORMAT = "istpan-anytime-calibration/2"  # bump when a field's meaning changes (2: rule, gain, z, bound added)
OLD_FORMATS = ("istpan-anytime-calibration/1",)  # margin rule only: still read
RULES = ("gain", "margin")
DEFAULT_RULE = "gain"  # held out on the demo's three models: docs/latency.md
DEFAULT_Z = 2.0  # calibrate the bound loss + 2 SE, not the loss: within target in every held-out fold (docs/latency.md)


@dataclass
class Calibration:
    """What `istpan eval --anytime` measured and what `predict --confidence FILE` needs (all accuracies in %)."""

    thresholds: list[float]  # N - 1, one per number of frames seen: margin rule: stop when margin >= it (above 1:
    # never stop there); gain rule: stop when the predicted gain of waiting <= it (the same at every step)
    frame_order: str  # the rule's name (FRAME_ORDERS) ...
    order: list[int]  # ... and the permutation of the N candidates it gave, the one predict uses
    max_frames: int  # N
    max_loss: float  # target: top-1 points below fixed K = N
    accuracy: float  # top-1 of the calibrated rule on the calibration videos
    mean_frames: float  # its mean frames through the backbone per video
    full_accuracy: float  # fixed K = N (all N candidates): the reference the loss is measured from
    prefix_accuracy: list[float]  # top-1 after the first n frames of the order, n = 1..N
    fixed_k_accuracy: dict[int, float] = field(default_factory=dict)  # fixed K = k (its own segment centres)
    num_videos: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # which videos it was calibrated on
    checkpoint: str = ""
    rule: str = "margin"  # one of RULES
    gain: dict[str, Any] | None = None  # the gain rule's model (GainModel fields)
    z: float = 0.0  # the calibration kept loss + z * SE within max_loss
    bound: dict[str, float] = field(default_factory=dict)  # loss, se, bound (points) on these videos; gain rule:
    # cross-fitted (each video's gain predicted by a model fit on the other folds: what held-out videos should see)
    format: str = FORMAT

    def gain_model(self) -> GainModel | None:
        return None if self.gain is None else GainModel(**self.gain)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")
        return path


def load_calibration(path: str | Path) -> Calibration:
    """Read a file written by `istpan eval --anytime --json FILE`; any problem is one UserError line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: calibration file not found (write one with `istpan eval --anytime --json {path}`)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a calibration file: bad JSON ({err})") from None
    if isinstance(raw, dict) and raw.get("format") in OLD_FORMATS:  # margin thresholds only
        raw = {**raw, "format": FORMAT, "rule": "margin"}
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"{path}: not a calibration file of this version (expected \"format\": \"{FORMAT}\"; "
                        "write one with `istpan eval --anytime --json FILE`)")
    try:
        num = int(raw["max_frames"])
        thresholds = [float(t) for t in raw["thresholds"]]
        order = frame_order([int(k) for k in raw["order"]], num)  # a permutation of 0..N-1
        raw["fixed_k_accuracy"] = {int(k): float(v) for k, v in (raw.get("fixed_k_accuracy") or {}).items()}
        cal = Calibration(**{**raw, "thresholds": thresholds, "order": order, "max_frames": num})
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a calibration file: {type(err).__name__} {err}") from None
    if len(thresholds) != num - 1:
        raise UserError(f"{path}: {len(thresholds)} thresholds for max_frames {num}; expected {num - 1} (one per step)")
    if cal.rule not in RULES:
        raise UserError(f"{path}: unknown rule {cal.rule!r}: one of {', '.join(RULES)}")
    if cal.rule == "margin" and any(t < 0 for t in thresholds):
        raise UserError(f"{path}: thresholds are margins p1 - p2 >= 0, got {thresholds}")
    if cal.rule == "gain":
        try:
            model = cal.gain_model()
            rows = [row for v in (model.mean, model.scale, model.weight) for row in v]  # type: ignore[union-attr]
            ok = (model.steps == num - 1 and all(len(v) == num - 1 for v in (model.mean, model.scale, model.weight))
                  and len({len(row) for row in rows}) == 1)  # type: ignore[union-attr]
        except (TypeError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise UserError(f"{path}: the gain rule needs its model (\"gain\": mean, scale, weight, bias for "
                            f"{num - 1} steps); the file is damaged: calibrate again")
    return cal


def resolve_confidence(
    confidence: float | Sequence[float] | str | Path | Calibration | None,
    max_frames: int | None,
    order: str | Sequence[int] | None,
) -> tuple[float | list[float] | None, int, str | list[int], GainModel | None]:
    """(thresholds, N, order, gain model or None) for `predict_anytime` from what the user gave: numbers (margins)
    need max_frames; a calibration (or its file's path) brings its own N, order and rule, and an explicit
    max_frames / order must agree with it."""
    if isinstance(confidence, (str, Path)):
        confidence = load_calibration(confidence)
    if isinstance(confidence, Calibration):
        where = f"the calibration{f' ({confidence.checkpoint})' if confidence.checkpoint else ''}"
        if max_frames is not None and max_frames != confidence.max_frames:
            raise UserError(f"--max-frames {max_frames} does not match {where}: calibrated for "
                            f"{confidence.max_frames} frames (leave --max-frames out to use its own)")
        if order is not None and frame_order(order, confidence.max_frames) != confidence.order:
            raise UserError(f"--frame-order {order} does not match {where}: calibrated with the "
                            f"{confidence.frame_order} order {confidence.order} (leave --frame-order out)")
        return list(confidence.thresholds), confidence.max_frames, list(confidence.order), confidence.gain_model()
    if max_frames is None:
        raise UserError("--confidence with numbers needs --max-frames N (a calibration file brings its own)")
    if isinstance(confidence, Sequence):
        confidence = [float(v) for v in confidence]
    return confidence, max_frames, order if order is not None else DEFAULT_ORDER, None

