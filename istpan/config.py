"""Run configuration: dataclasses with defaults in code, YAML files on top, dotted `key=value` overrides last.

Why dataclasses and not a config framework: every field, its type and its default are visible in this one file, an
unknown key is an error (a typo never silently does nothing), and the resolved config is plain YAML saved beside
the run (the dinov2 / nanoGPT habit, without MMAction2's `_base_` chains).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from istpan.errors import UserError

__all__ = [
    "AugmentConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


@dataclass
class DataConfig:
    format: str = "list"  # ucf101 | hmdb51 | charades | kinetics | folder | list | synthetic | webdataset
    root: str = ""  # folder the video paths are relative to
    train_annotations: str = ""  # format-specific: split dir, CSV or list file (see istpan/data/datasets.py)
    val_annotations: str = ""
    classes: str = ""  # optional class-name file (classInd.txt, Charades_v1_classes.txt, one name per line)
    split: int = 1  # UCF101 / HMDB51 official split 1-3
    multi_label: bool = False  # Charades-style multi-hot labels, sigmoid head
    num_segments: int = 8  # K frames per clip at training time
    test_segments: int = 8  # K at evaluation time (any K works: the model has no K-dependent parameter)
    sampling: str = "segment"  # segment (TSN) | dense | uniform
    clip_len: int = 8  # dense sampling: frames per clip
    frame_stride: int = 2  # dense sampling: step between frames
    input_size: int = 224  # crop size fed to the network
    short_side: int = 256  # frames are resized to this short side while decoding
    backend: str = "pyav"  # pyav | opencv | frames
    index: str = "auto"  # persistent video index: auto (<root>/istpan_index.sqlite) | none | a file path
    shuffle_buffer: int = 1000  # data.format=webdataset: samples held for shuffling (per DataLoader worker)
    num_workers: int = 2
    train_crop: str = "multiscale"  # multiscale (TSN) | resized (RandomResizedCrop) | center (no crop augmentation)
    flip: bool = True  # random horizontal flip in training; false when classes depend on left/right


@dataclass
class ModelConfig:
    name: str = "istpan_mobilenetv2"  # see `istpan.models.list_models()`
    # "" (random init) | a local file (.pth/.pt/.safetensors) | imagenet (the backbone's ImageNet weights through
    # torchvision's / timm's own loaders and caches) | timm:<name>[.<tag>] | torchvision:<WeightsEnum>[.<member>]
    pretrained: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # passed to create_model (reduce, fuse, d, dropout, ...)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step
    warmup_epochs: float = 1.0
    step_epochs: list[int] = field(default_factory=lambda: [30, 60])
    step_gamma: float = 0.1
    min_lr: float = 0.0  # cosine ends here
    nesterov: bool = False
    clip_grad_norm: float = 20.0  # 0 disables
    backbone_lr_mult: float = 1.0  # LR of the (pretrained) backbone relative to the new layers; 0.1 is usual


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 8
    # Weights of the normalised attention losses. 0 by default: on the synthetic ablation (docs/ablation.md)
    # l_interactive cost ~9 points of top-1 at beta=0.1 and l_attn had no effect. The paper-reproduction configs
    # (ucf101/hmdb51/charades/kinetics.yaml) switch them on at beta=0.1, gamma=0.01.
    beta: float = 0.0  # weight of l_interactive
    gamma: float = 0.0  # weight of l_attn
    partial_bn: bool = True  # TSN's partial BN: freeze every BatchNorm but the first
    amp: str = "none"  # none | bf16 | fp16
    compile: bool = False
    seed: int = 0
    eval_every: int = 1
    eval_views: str = "1x1"  # CLIPSxCROPS used by the per-epoch validation (`istpan eval --views` for more)
    max_steps_per_epoch: int = 0  # 0 = the whole epoch; >0 caps steps (quick experiments, tests)
    log_every: int = 10  # steps between metrics.jsonl / TensorBoard step records
    tensorboard: bool = True
    out_dir: str = "runs/default"
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # CPU intra-op threads for this run; 0 = torch's default (one per core)
    accumulate_steps: int = 1  # batches whose gradients add up before one optimiser step (global batch x this)
    ema_decay: float = 0.0  # EMA of the weights (timm ModelEmaV3, warm-up on); 0 = off, 0.999-0.9999 usual
    wandb: bool = False  # also log to Weights & Biases (pip install 'istpan[wandb]'); WANDB_MODE=offline works
    wandb_project: str = "istpan"
    wandb_run: str = ""  # run name; "" = the name of train.out_dir


@dataclass
class AugmentConfig:
    """The training recipe's augmentation and regularisation, off by default (TSN's recipe: crop + flip only).

    The `modern` recipe (configs/folder.yaml, configs/list.yaml; docs/training.md) turns them on:
    policy=randaugment (2 ops, magnitude 9), random_erasing=0.25, mixup_alpha=0.8, cutmix_alpha=1.0,
    label_smoothing=0.1, with train.ema_decay=0.999 and optim.backbone_lr_mult=0.1. Every frame of a clip gets the
    same random draw.
    """

    policy: str = "none"  # none | randaugment | trivialaugment (torchvision v2, one draw per clip)
    randaugment_ops: int = 2  # RandAugment: operations per clip
    randaugment_magnitude: int = 9  # RandAugment: magnitude, 0..30
    color_jitter: float = 0.0  # brightness/contrast/saturation strength (hue: a quarter of it); 0 = off
    random_erasing: float = 0.0  # probability of erasing one rectangle (same place in every frame); 0 = off
    mixup_alpha: float = 0.0  # Beta(α, α) of batch-level mixup; 0 = off
    cutmix_alpha: float = 0.0  # Beta(α, α) of batch-level cutmix; 0 = off
    mix_prob: float = 1.0  # probability that a batch is mixed at all (when mixup and/or cutmix are on)
    label_smoothing: float = 0.0  # CE: (1-ε)·one-hot + ε/C; BCE (multi-label): (1-ε)·y + ε/2


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


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
}

# (lowest, highest) per numeric recipe key, None = unbounded: a bad value fails when the config is read.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "augment.randaugment_ops": (1, 10),
    "augment.randaugment_magnitude": (0, 30),
    "augment.color_jitter": (0.0, 1.0),
    "augment.random_erasing": (0.0, 1.0),
    "augment.mixup_alpha": (0.0, None),
    "augment.cutmix_alpha": (0.0, None),
    "augment.mix_prob": (0.0, 1.0),
    "augment.label_smoothing": (0.0, 0.5),
    "optim.backbone_lr_mult": (0.0, None),
    "train.accumulate_steps": (1, None),
    "train.ema_decay": (0.0, 0.999999),
}


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Bring a YAML value to the type of the field's default (YAML reads `1e-3` as a string, `5` as an int)."""
    if value is None or current is None:
        return value
    try:
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(current, float) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return float(value)
        if isinstance(current, int) and isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(current, str) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(current, list) and isinstance(value, list):
            return value
        if isinstance(current, dict) and isinstance(value, dict):
            return value
    except ValueError:
        pass
    raise UserError(f"{where}: expected a {type(current).__name__}, got {value!r}")


def _merge(obj: Any, updates: dict[str, Any], where: str) -> None:
    """Set fields of a dataclass from a nested dict, refusing unknown keys and values of the wrong type."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        dotted = f"{where}.{key}" if where else key
        if key not in names:
            raise UserError(f"{dotted}: unknown config key '{key}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"{dotted}: must be a mapping, got {value!r}")
            _merge(current, value, dotted)
        elif isinstance(current, dict) and isinstance(value, dict):
            # Free-form mappings (model.options) merge key by key, so `model.options.fuse=learned` on top of a
            # config keeps its other options (dropout, ...).
            setattr(obj, key, {**current, **value})
        else:
            setattr(obj, key, _coerce(value, current, dotted))


def _check_choices(cfg: Config) -> None:
    for dotted, allowed in CHOICES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise UserError(f"{dotted}: unknown value {value!r} (choose one of: {', '.join(allowed)})")
    for dotted, (low, high) in RANGES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise UserError(f"{dotted}: {value} is out of range (must be {bounds})")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"override '{item}' must look like key=value, e.g. optim.lr=0.001")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then `a.b=value` overrides (values parsed as YAML: 3, 0.1, true, [1, 2])."""
    cfg = Config()
    if path:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise UserError(f"{path}: a config file must be a mapping of sections (data, model, optim, train)")
        try:
            _merge(cfg, data, "")
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply dotted `a.b=value` overrides in place (e.g. on a config stored in a checkpoint) and check the result."""
    for item in overrides:
        keys, value = _parse_override(item)
        nested: dict[str, Any] = value
        for key in reversed(keys):
            nested = {key: nested}
        try:
            _merge(cfg, nested, "")
        except UserError as err:
            raise UserError(f"override '{item}': {err}") from None
    _check_choices(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """A Config from a nested dict (e.g. the one stored in a checkpoint), with the same checks as a YAML file."""
    cfg = Config()
    _merge(cfg, data, "")
    _check_choices(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of built-in types: safe for YAML, JSON and `torch.load(weights_only=True)`."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config, so a run can be repeated with `istpan train --config <run>/config.yaml`."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
