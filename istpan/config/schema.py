"""The run configuration's schema: one dataclass per section, every field with its type, default and meaning.

Why dataclasses and not a config framework: every field, its type and its default are visible in this one file, an
unknown key is an error (a typo never silently does nothing), and the resolved config is plain YAML saved beside
the run (the dinov2 / nanoGPT habit, without MMAction2's `_base_` chains). Checks: `istpan.config.checks`; YAML and
dotted overrides: `istpan.config.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AugmentConfig", "Config", "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig"]


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
