"""What a config may hold: closed sets of values (CHOICES), numeric ranges (RANGES), fields that constrain each other,
and the old names of K (LEGACY_KEYS). `validate` runs them all when a config is read: one line per error, at load
time, not a traceback an hour into training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from istpan.config.schema import Config, DataConfig
from istpan.errors import UserError
from istpan.modality import FLOW_ALGORITHMS, MODALITIES

__all__ = ["CHOICES", "LEGACY_KEYS", "RANGES", "Range", "validate"]

log = logging.getLogger("istpan.config")


# Fields with a closed set of values: a typo is caught when the config is read, not an hour into training.
CHOICES: dict[str, tuple[str, ...]] = {
    "optim.name": ("sgd", "adamw"),
    "optim.schedule": ("cosine", "step"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
    "data.format": ("ucf101", "hmdb51", "charades", "kinetics", "folder", "list", "synthetic", "webdataset"),
    "data.sampling": ("segment", "dense", "uniform"),
    "data.backend": ("pyav", "opencv", "frames"),
    "data.train_crop": ("multiscale", "resized", "center"),
    "augment.policy": ("none", "randaugment", "trivialaugment"),
    "data.modality": MODALITIES,
    "data.flow_algorithm": FLOW_ALGORITHMS,
    "train.prefix_sizes": ("all", "one"),
    "train.prefix_target": ("label", "final"),
}


@dataclass(frozen=True)
class Range:
    """Allowed numeric range of a field: `ge`/`gt` lower bound, `le` upper bound (None: unbounded)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    why: str = ""  # added to the message when the bound is not obvious

    def describe(self) -> str:
        parts = [f">= {self.ge!r}" if self.ge is not None else "", f"> {self.gt!r}" if self.gt is not None else "",
                 f"<= {self.le!r}" if self.le is not None else ""]
        return " and ".join(p for p in parts if p)

    def holds(self, value: float) -> bool:
        # written so that NaN fails every bound
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and value == value
        )


# Numeric fields with a natural range: an impossible value is one line when the config is read, not a traceback
# from deep inside the loader or the optimiser. A list field (optim.step_epochs) is checked element by element.
RANGES: dict[str, Range] = {
    "data.split": Range(ge=1, le=3, why="UCF101 and HMDB51 have official splits 1, 2, 3"),
    "data.num_frames": Range(ge=1),
    "data.test_num_frames": Range(ge=1),
    "data.frame_stride": Range(ge=1),
    "data.input_size": Range(ge=1, why="the crop side in pixels"),
    "data.short_side": Range(ge=0, why="0 keeps the decoded size"),
    "data.num_workers": Range(ge=0, why="0 loads in the main process"),
    "data.shuffle_buffer": Range(ge=0, why="0 or 1 reads shards in order"),
    "optim.lr": Range(gt=0.0),
    "optim.momentum": Range(ge=0.0, le=1.0),
    "optim.weight_decay": Range(ge=0.0),
    "optim.warmup_epochs": Range(ge=0.0),
    "optim.step_epochs": Range(ge=0),
    "optim.step_gamma": Range(gt=0.0),
    "optim.min_lr": Range(ge=0.0),
    "optim.clip_grad_norm": Range(ge=0.0, why="0 disables clipping"),
    "train.epochs": Range(ge=0),  # 0 is refused by `train` ("train.epochs=0: nothing to train"), not by eval
    "train.batch_size": Range(ge=1),
    "train.beta": Range(ge=0.0),
    "train.gamma": Range(ge=0.0),
    "train.seed": Range(ge=0),
    "train.eval_every": Range(ge=1),
    "train.max_steps_per_epoch": Range(ge=0, why="0 runs the whole epoch"),
    "train.log_every": Range(ge=0, why="0 logs only per epoch"),
    "train.num_threads": Range(ge=0, why="0 is torch's default"),
    # the training recipe (augment section, EMA, accumulation, backbone LR)
    "augment.randaugment_ops": Range(ge=1, le=10),
    "augment.randaugment_magnitude": Range(ge=0, le=30),
    "augment.color_jitter": Range(ge=0.0, le=1.0),
    "augment.random_erasing": Range(ge=0.0, le=1.0),
    "augment.mixup_alpha": Range(ge=0.0),
    "augment.cutmix_alpha": Range(ge=0.0),
    "augment.mix_prob": Range(ge=0.0, le=1.0),
    "augment.label_smoothing": Range(ge=0.0, le=0.5),
    "optim.backbone_lr_mult": Range(ge=0.0),
    "train.accumulate_steps": Range(ge=1),
    "train.ema_decay": Range(ge=0.0, le=0.999999),
    "train.frame_subset_min": Range(ge=0, why="0 keeps all K frames; n keeps a random n..K of them per batch"),
    "train.prefix_loss": Range(ge=0.0, why="0 is off; the weight of the prefix cross-entropy next to the K-frame loss"),
    "data.flow_length": Range(ge=1, why="L flow frames per stack"),
    "data.flow_bound": Range(gt=0.0, why="flow is clipped to ±bound pixels"),
}


# Old names of K in the data section, still read (YAML files, dotted overrides, configs stored in checkpoints) with
# one warning that says what to write instead. What each old key meant depended on data.sampling: `num_segments` and
# `test_segments` were K for segment and uniform sampling, `clip_len` was K (training and test alike) for dense
# sampling, and each did nothing otherwise. So they are replayed, in the order they were read, once the whole config
# is known (`validate`), and map exactly onto what the old config did.
LEGACY_KEYS: dict[str, str] = {
    "num_segments": "num_frames", "test_segments": "test_num_frames", "clip_len": "num_frames",
}
K_FIELDS = ("num_frames", "test_num_frames")
_K_LOG = "_k_assignments"  # attribute of a DataConfig that read an old key: [(key, value), ...] in reading order


def note_k_assignment(data: DataConfig, key: str, value: int) -> None:
    """Remember a K assignment: every old key, and a new one once an old key was read (so the last one wins)."""
    if key in LEGACY_KEYS or hasattr(data, _K_LOG):
        data.__dict__.setdefault(_K_LOG, []).append((key, value))


def _resolve_legacy_keys(data: DataConfig) -> None:
    """Replay the K assignments of `note_k_assignment` with the final data.sampling; one warning per old key."""
    assignments = data.__dict__.pop(_K_LOG, [])
    dense = data.sampling == "dense"
    for key, value in assignments:
        if key in K_FIELDS:
            setattr(data, key, value)
        elif key == "clip_len" and dense:
            data.num_frames = data.test_num_frames = value
        elif key != "clip_len" and not dense:
            setattr(data, LEGACY_KEYS[key], value)
    for old in dict.fromkeys(key for key, _ in assignments if key in LEGACY_KEYS):
        new = "num_frames and data.test_num_frames" if old == "clip_len" else LEGACY_KEYS[old]
        if (old == "clip_len") == dense:
            note = ""
        elif dense:
            note = " (ignored, as before: with data.sampling=dense K was data.clip_len)"
        else:
            note = " (ignored, as before: it set K only with data.sampling=dense)"
        log.warning("config key data.%s is an old name: write data.%s instead%s", old, new, note)


def validate(cfg: Config) -> Config:
    """Check every field with a closed set of values (CHOICES) or a natural range (RANGES), then the fields that
    constrain each other; one line per error.

    Old key names read since the last check (LEGACY_KEYS) are resolved first."""
    _resolve_legacy_keys(cfg.data)
    for dotted, allowed in CHOICES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise UserError(f"{dotted}: unknown value {value!r} (choose one of: {', '.join(allowed)})")
    for dotted, rng in RANGES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise UserError(f"{dotted}: expected a number, got {item!r}")
            if not rng.holds(item):
                why = f"; {rng.why}" if rng.why else ""
                raise UserError(f"{dotted}: {item!r} is out of range (must be {rng.describe()}{why})")
    _check_combinations(cfg)
    return cfg


def _check_combinations(cfg: Config) -> None:
    """Fields that constrain each other: one line when the config is read, not an epoch into training."""
    t = cfg.train
    if t.prefix_loss > 0 and t.frame_subset_min > 0:
        raise UserError("train.prefix_loss and train.frame_subset_min are two ways to train anytime inference; set "
                        "one of them to 0")
    if t.prefix_loss > 0 and t.compile:
        raise UserError("train.prefix_loss runs the model's two halves itself, which train.compile does not see; set "
                        "train.compile=false or train.prefix_loss=0")
    for key in ("modality", "flow_length"):  # the model's input channels follow the data (docs/flow.md)
        value = getattr(cfg.data, key)
        if key in cfg.model.options and cfg.model.options[key] != value:
            raise UserError(f"model.options.{key}={cfg.model.options[key]!r} but data.{key}={value!r}; set only "
                            f"data.{key}")
