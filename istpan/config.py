"""Run configuration: dataclasses with defaults in code, YAML files on top, dotted `key=value` overrides last.

Why dataclasses and not a config framework: every field, its type and its default are visible in this one file, an
unknown key is an error (a typo never silently does nothing), and the resolved config is plain YAML saved beside
the run (the dinov2 / nanoGPT habit, without MMAction2's `_base_` chains).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from istpan.errors import UserError
from istpan.modality import FLOW_ALGORITHMS, MODALITIES

log = logging.getLogger(__name__)

__all__ = [
    "LEGACY_KEYS",
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
    "packaged_configs",
    "resolve_config",
    "save_config",
    "validate",
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
    # K: frames the model sees per clip (TSN's segments, a dense clip's length). Old names, still read with a
    # warning: num_segments, clip_len -> num_frames; test_segments -> test_num_frames (see LEGACY_KEYS).
    num_frames: int = 8  # K at training time
    test_num_frames: int = 8  # K at evaluation time (any K works: the model has no K-dependent parameter)
    sampling: str = "segment"  # segment (TSN) | dense | uniform
    frame_stride: int = 2  # dense sampling: step between frames
    input_size: int = 224  # crop size fed to the network
    short_side: int = 256  # frames are resized to this short side while decoding
    backend: str = "pyav"  # pyav | opencv | frames
    index: str = "auto"  # persistent video index: auto (<root>/istpan_index.sqlite) | none | a file path
    shuffle_buffer: int = 100  # data.format=webdataset: encoded videos held for shuffling, per DataLoader worker
    num_workers: int = 2
    train_crop: str = "multiscale"  # multiscale (TSN) | resized (RandomResizedCrop) | center (no crop augmentation)
    flip: bool = True  # random horizontal flip in training; false when classes depend on left/right
    # Optical flow (docs/flow.md). modality: rgb | flow (K stacks of flow_length flow frames, 2L channels) |
    # rgb+flow (both, for feature-level fusion). flow_root: the folders `istpan data flow` wrote (TSN / MMAction2
    # flow_x_/x_ folders read too); "" computes flow on the fly from the videos (small datasets).
    modality: str = "rgb"
    flow_length: int = 5  # L
    flow_root: str = ""
    flow_algorithm: str = "tvl1"  # tvl1 | dis | farneback (`istpan data flow` and on-the-fly flow)
    flow_bound: float = 20.0  # pixels mapped to 0..255 (TSN's ±20)


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
    # 0 = off; n >= 1: each batch keeps a random time-ordered subset of n..K of its K frames (size uniform, the same
    # for the whole batch), each at its own time: trains the any-K use of anytime inference (docs/latency.md)
    frame_subset_min: int = 0
    # 0 = off; w > 0 adds w x the mean cross-entropy of the clip classified from prefixes of the anytime frame order
    # (the backbone runs once per frame, only the head again per prefix): trains anytime inference while keeping
    # the K-frame loss (training/prefix_loss.py, docs/latency.md). prefix_sizes: "all" prefixes 1..K-1, or "one" per
    # batch
    prefix_loss: float = 0.0
    prefix_sizes: str = "all"
    prefix_target: str = "label"  # label: CE against the label; final: against the model's own K-frame prediction
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
_K_FIELDS = ("num_frames", "test_num_frames")
_K_LOG = "_k_assignments"  # attribute of a DataConfig that read an old key: [(key, value), ...] in reading order


def _log_k(data: DataConfig, key: str, value: int) -> None:
    """Remember a K assignment: every old key, and a new one once an old key was read (so the last one wins)."""
    if key in LEGACY_KEYS or hasattr(data, _K_LOG):
        data.__dict__.setdefault(_K_LOG, []).append((key, value))


def _resolve_legacy_keys(data: DataConfig) -> None:
    """Replay the K assignments of `_log_k` with the final data.sampling; one warning per old key."""
    assignments = data.__dict__.pop(_K_LOG, [])
    dense = data.sampling == "dense"
    for key, value in assignments:
        if key in _K_FIELDS:
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
        if isinstance(obj, DataConfig) and key in LEGACY_KEYS:
            _log_k(obj, key, _coerce(value, 0, dotted))
            continue
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
            if isinstance(obj, DataConfig) and key in _K_FIELDS:
                _log_k(obj, key, getattr(obj, key))


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


class _StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error: PyYAML silently keeps the last
    one, so of two `augment:` sections the first (the one a reader finds and edits) would change nothing."""


def _unique_keys_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: list[Any] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges are PyYAML's to resolve
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"'{key}' is given twice (only the last one would "
                                                    "count); keep one", key_node.start_mark)
        seen.append(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys_mapping)


def _yaml_problem(err: yaml.YAMLError, *, line: bool = True) -> str:
    """PyYAML's message in one line: 'line N: <problem>' (its own text spans several lines with a caret)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    return f"line {mark.line + 1}: {problem}" if line and mark is not None else problem


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"override '{item}' must look like key=value, e.g. optim.lr=0.001")
    key, raw = item.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(raw)
    except yaml.YAMLError as err:  # e.g. data.root=@videos ('@' is reserved in YAML) or an unclosed [
        problem = _yaml_problem(err, line=False)
        raise UserError(f"override '{item}': the value is not valid YAML ({problem}); quote it, e.g. "
                        f"{key.strip()}='\"{raw}\"'") from None


def packaged_configs() -> dict[str, Path]:
    """The configs shipped inside the package, by name: {"ucf101": .../istpan/configs/ucf101.yaml, ...}."""
    folder = Path(str(resources.files("istpan").joinpath("configs")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def packaged_config_summary(path: Path) -> str:
    """First line of a shipped config's leading comment (what it is for), for `istpan configs`."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").rstrip(":")
        break
    return ""


def resolve_config(name: str | Path) -> Path:
    """A config file path, or the name of a packaged config (`ucf101`, `ucf101.yaml`, `configs/ucf101.yaml`).

    An existing file always wins. Otherwise a bare name, or a path whose folder is called `configs` (the README's
    `--config configs/ucf101.yaml`, typed outside the repository), means the config shipped with istpan, so the
    documented commands work from any directory.
    """
    path = Path(name)
    if path.is_file():
        return path
    shipped = packaged_configs()
    bare = path.parent in (Path("."), Path("configs")) and path.suffix in ("", ".yaml", ".yml")
    if bare and path.stem in shipped:
        return shipped[path.stem]
    raise UserError(f"{path}: config file not found (packaged configs: {', '.join(shipped)}; see `istpan configs`)")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (a path or a packaged config's name, see `resolve_config`), then `a.b=value`
    overrides (values parsed as YAML: 3, 0.1, true, [1, 2])."""
    cfg = Config()
    if path:
        path = resolve_config(path)
        try:
            data = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML ({_yaml_problem(err)})") from err
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
    return validate(cfg)


def config_from_dict(data: dict[str, Any]) -> Config:
    """A Config from a nested dict (e.g. the one stored in a checkpoint), with the same checks as a YAML file."""
    cfg = Config()
    _merge(cfg, data, "")
    return validate(cfg)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of built-in types: safe for YAML, JSON and `torch.load(weights_only=True)`."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config, so a run can be repeated with `istpan train --config <run>/config.yaml`."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
