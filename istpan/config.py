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

__all__ = ["Config", "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "load_config", "save_config"]


@dataclass
class DataConfig:
    format: str = "list"  # ucf101 | hmdb51 | charades | kinetics | folder | list
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
    num_workers: int = 2


@dataclass
class ModelConfig:
    name: str = "istpan_mobilenetv2"  # see `istpan.models.list_models()`
    pretrained: str = ""  # local checkpoint file; nothing is ever downloaded
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
    clip_grad_norm: float = 20.0  # 0 disables


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 8
    beta: float = 0.1  # weight of l_interactive
    gamma: float = 0.01  # weight of l_attn
    partial_bn: bool = True  # TSN's partial BN: freeze every BatchNorm but the first
    amp: str = "none"  # none | bf16 | fp16
    compile: bool = False
    seed: int = 0
    eval_every: int = 1
    out_dir: str = "runs/default"
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _merge(obj: Any, updates: dict[str, Any], where: str) -> None:
    """Set fields of a dataclass from a nested dict, refusing unknown keys."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        if key not in names:
            raise UserError(f"{where}: unknown config key '{key}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"{where}: '{key}' must be a mapping, got {value!r}")
            _merge(current, value, f"{where}.{key}" if where else key)
        else:
            setattr(obj, key, value)


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
        _merge(cfg, data, str(path))
    for item in overrides or []:
        keys, value = _parse_override(item)
        nested: dict[str, Any] = value
        for key in reversed(keys):
            nested = {key: nested}
        _merge(cfg, nested, "override")
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
