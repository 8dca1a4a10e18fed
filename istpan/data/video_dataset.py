"""`VideoDataset`: record -> frame count -> indices -> frames -> clip tensor, and `build_dataset` from a DataConfig.

A video that can't be decoded never stops a run: the item is `None` (the loader's collate drops it and counts it in
`skipped`), or, in training, replaced by another video so batches keep their size; the path and reason are logged
once per run by the process iterating the loader (`istpan.data.loader.report_unreadable`). Randomness (frames and
augmentation) is a function of (seed, epoch, index) only, so results don't depend on the number of workers; the epoch
lives in shared memory so `set_epoch` reaches persistent workers too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import torch

from istpan.config import AugmentConfig, DataConfig
from istpan.data import index as video_index
from istpan.data.datasets import FORMATS, Annotations, VideoRecord, parse_annotations
from istpan.data.decode import VideoError, count_frames, read_frames
from istpan.data.flow.compute import flow_folder
from istpan.data.loader import report_unreadable
from istpan.data.manifest import load_manifest
from istpan.data.preprocess import Preprocessing
from istpan.data.sampling import clip_generator, sample_indices, stack_starts, view_indices
from istpan.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform
from istpan.errors import UserError

__all__ = ["VideoDataset", "build_dataset", "has_split", "load_split"]

log = logging.getLogger(__name__)
_MAX_REPLACEMENTS = 10
_FRAMES, _AUGMENT, _REPLACEMENT = 0, 1, 2  # independent random streams per (seed, epoch, index)


class VideoDataset(torch.utils.data.Dataset):
    """dataset[i] -> dict(video=float (K, C, h, w) or (V, K, C, h, w) with V = clips x crops > 1,
    label=long () or float multi-hot (num_classes,), index=i) or None when the video can't be decoded.

    C = 3 for modality "rgb", 2L for "flow" (L consecutive flow frames per segment), 3 + 2L for "rgb+flow"
    (istpan/modality.py).
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        class_names: Sequence[str],
        transform: Callable[[torch.Tensor], torch.Tensor],
        num_frames: int = 8,
        sampling: str = "segment",
        stride: int = 1,
        train: bool = False,
        views: tuple[int, int] = (1, 1),
        multi_label: bool = False,
        backend: str = "pyav",
        short_side: int | None = None,
        seed: int = 0,
        replace_failed: bool | None = None,
        index_path: str | Path | None = None,
        modality: str = "rgb",
        flow_length: int = 5,
        flow_root: str | None = None,
        root: str = "",
        flow_algorithm: str = "dis",
        flow_bound: float = 20.0,
    ):
        self.records = list(records)
        self.class_names = list(class_names)
        self.transform = transform
        self.num_frames = num_frames
        self.sampling = sampling
        self.stride = stride
        self.train = train
        self.views = (int(views[0]), int(views[1]))
        self.multi_label = multi_label
        self.backend = backend
        self.short_side = short_side
        self.seed = seed
        self.replace_failed = train if replace_failed is None else replace_failed
        self.index_path = str(index_path) if index_path else None  # persistent video index (istpan.data.index)
        video_index.use(self.index_path)  # opened in the main process first: one line if it can't be written
        # Modality (docs/flow.md): what one segment is; flow comes from `flow_root` folders or is computed on the fly.
        self.modality = modality
        self.flow_length = flow_length
        self.flow_root = flow_root or None
        self.root = root
        self.flow_algorithm = flow_algorithm
        self.flow_bound = flow_bound
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()  # seen by workers forked or spawned earlier

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict | None:
        candidates = [index]
        if self.replace_failed and len(self) > 1:
            g = self._rng(index, _REPLACEMENT)
            candidates += torch.randint(len(self), (_MAX_REPLACEMENTS,), generator=g).tolist()
        for attempt, i in enumerate(candidates):
            try:
                item = self.load(i)
            except VideoError as err:
                _report(err)
                continue
            item["skipped"] = attempt  # failed videos this item stands in for
            return item
        return None

    def load(self, index: int) -> dict:
        """Like `dataset[index]` but raising VideoError instead of returning None."""
        return self.load_record(self.records[index], index)

    def load_record(self, record: VideoRecord, index: int) -> dict:
        """Load any record (e.g. one streamed from a shard) as item `index`: randomness follows (seed, epoch, index)."""
        try:
            load = self._frames if self.modality == "rgb" else self._flow
            video = load(record, index)  # (V·K, C, H, W) uint8
        except (av.error.FFmpegError, OSError) as err:  # a decoder failure that slipped past decode.py's checks
            raise VideoError(record.path, f"decoding failed ({err})") from err
        if self.train:
            with torch.random.fork_rng(devices=[]):  # augmentation from (seed, epoch, index), global RNG untouched
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=self._rng(index, _AUGMENT))))
                video = self.transform(video)  # (K, 3, h, w)
        else:
            clips = video.unflatten(0, (self.views[0], -1))  # (clips, K, 3, H, W)
            video = torch.stack([self.transform(c) for c in clips])  # (clips, [crops,] K, 3, h, w)
            video = video.reshape(-1, *video.shape[-4:])  # (V, K, 3, h, w), V = clips * crops
            if video.shape[0] == 1:
                video = video[0]  # (K, 3, h, w)
        return {"video": video, "label": self._label(record), "index": index}

    def _rng(self, index: int, stream: int = 0) -> torch.Generator:
        return clip_generator(self.seed, self.epoch, index, stream)

    def _frames(self, record: VideoRecord, index: int) -> torch.Tensor:
        video_index.use(self.index_path)  # cheap when already active; reaches spawned workers through pickling
        n = count_frames(record.path, backend=self.backend)
        if n == 0:
            raise VideoError(record.path, "no frame decodes")
        opts = dict(method=self.sampling, num_frames=self.num_frames, stride=self.stride)
        if self.train:
            idx = sample_indices(n, **opts, rng=self._rng(index, _FRAMES))  # (K,)
        else:
            idx = view_indices(n, **opts, clips=self.views[0]).flatten()  # (clips·K,)
        return read_frames(record.path, idx, backend=self.backend, short_side=self.short_side).permute(0, 3, 1, 2)

    def _flow(self, record: VideoRecord, index: int) -> torch.Tensor:
        """uint8 (V·K, 2L, H, W) flow stacks, or (V·K, 3 + 2L, H, W) with the RGB frame at each stack's centre.

        TSN's flow sampling: K segments over the start positions where an L-stack fits (`stack_starts`).
        """
        from istpan.data.flow import frames as flow_frames  # flow reading only where flow is used

        length = self.flow_length
        folder = flow_folder(record.path, root=self.root, out=self.flow_root) if self.flow_root else None
        try:
            n_flow = flow_frames.count_flow(folder) if folder else count_frames(record.path, backend=self.backend) - 1
        except VideoError as err:
            if folder is None:
                raise
            raise VideoError(record.path, f"{err.reason} ({err.path})") from err
        if n_flow < length:
            raise VideoError(record.path, f"{max(n_flow, 0)} flow frames, too short for a stack of L={length} flow "
                                          f"frames (data.flow_length)")
        opts = dict(method="segment" if self.sampling == "dense" else self.sampling, num_frames=self.num_frames,
                    stack=length)
        if self.train:
            starts = stack_starts(n_flow, **opts, rng=self._rng(index, _FRAMES))  # (K,)
        else:
            clips = self.views[0]
            starts = torch.cat([stack_starts(n_flow, **opts, offset=(c + 0.5) / clips) for c in range(clips)])
        rgb = None
        if self.modality == "rgb+flow":
            rgb = read_frames(record.path, starts + length // 2, backend=self.backend, short_side=self.short_side)
            rgb = rgb.permute(0, 3, 1, 2)  # (V·K, 3, H, W)
        if folder is None:
            if self.backend != "pyav":
                raise UserError("on-the-fly flow reads videos with PyAV: set data.backend=pyav or data.flow_root")
            flow = flow_frames.stacks_from_video(record.path, starts, length=length, video_frames=n_flow + 1,
                                                 short_side=self.short_side, algorithm=self.flow_algorithm,
                                                 bound=self.flow_bound)
        else:
            size = tuple(rgb.shape[-2:]) if rgb is not None else None  # flow resized onto the RGB frame exactly
            try:
                flow = flow_frames.read_flow_stacks(folder, starts, length=length, short_side=self.short_side,
                                                    size=size)
            except VideoError as err:
                raise VideoError(record.path, f"{err.reason} ({err.path})") from err
        return flow if rgb is None else torch.cat([rgb, flow], dim=1)  # (V·K, 2L or 3 + 2L, H, W)

    def _label(self, record: VideoRecord) -> torch.Tensor:
        if self.multi_label:
            target = torch.zeros(self.num_classes)
            labels = record.label if isinstance(record.label, list) else [record.label]
            target[torch.tensor(labels, dtype=torch.long)] = 1.0
            return target  # (num_classes,)
        label = record.label[0] if isinstance(record.label, list) else record.label
        return torch.tensor(label, dtype=torch.long)  # ()


def _report(err: VideoError) -> None:
    report_unreadable(err.path, str(err))  # logged once by the process iterating the loader, not once per worker


def build_dataset(
    data_cfg: DataConfig,
    *,
    split: str,
    train: bool,
    views: tuple[int, int] = (1, 1),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
    augment: AugmentConfig | None = None,
) -> VideoDataset:
    """The train or val split of the dataset `data_cfg` describes, with training or test-time sampling/transforms.

    mean/std: the backbone's `pretrained_cfg` (ImageNet's when None). views=(clips, crops) at test time.
    augment: the recipe's per-clip augmentations (training only; None = TSN's crop + flip).
    """
    d = data_cfg
    parsed = load_split(d, split)
    if parsed.problems:
        log.warning("%s split: %d annotation lines skipped, first: %s (run `istpan data check`)", split,
                    len(parsed.problems), parsed.problems[0])
    multi_label = d.multi_label or d.format == "charades"
    if not multi_label and any(isinstance(r.label, list) and len(r.label) > 1 for r in parsed.records):
        log.warning("%s split: some videos have several labels but data.multi_label is false: only the first "
                    "label of each is used (set data.multi_label=true for a sigmoid head)", split)
    if mean is not None:
        check_channels(d, len(mean))  # e.g. a flow checkpoint evaluated with data.modality=rgb
    if train and d.modality != "rgb":  # flow: crops and a flip that negates horizontal motion (no colour policies)
        transform = _flow_train_transform(d, mean=mean, std=std)
        num_frames = d.num_frames
    elif train:
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
        a = augment or AugmentConfig()
        transform = train_transform(input_size=d.input_size, mean=mean, std=std, crop=d.train_crop, flip=d.flip,
                                    policy=a.policy, randaugment_ops=a.randaugment_ops,
                                    randaugment_magnitude=a.randaugment_magnitude, color_jitter=a.color_jitter,
                                    random_erasing=a.random_erasing)
        num_frames = d.num_frames
    else:  # test time: what the model sees is the checkpoint's Preprocessing, built from this same config
        pre = Preprocessing.from_data_config(d, mean=mean, std=std)
        transform, num_frames = pre.transform(crops=views[1]), pre.num_frames
    return VideoDataset(
        parsed.records,
        class_names=parsed.class_names,
        transform=transform,
        num_frames=num_frames,
        sampling=d.sampling,
        stride=d.frame_stride if d.sampling == "dense" else 1,
        train=train,
        views=views,
        multi_label=multi_label,
        backend=d.backend,
        short_side=d.short_side or None,
        seed=seed,
        index_path=video_index.index_path_for(d.index, root=d.root, annotations=d.train_annotations),
        modality=d.modality,
        flow_length=d.flow_length,
        flow_root=d.flow_root or None,
        root=d.root,
        flow_algorithm=d.flow_algorithm,
        flow_bound=d.flow_bound,
    )


def _flow_train_transform(d: DataConfig, *, mean, std) -> Callable[[torch.Tensor], torch.Tensor]:
    """Training transform of flow / rgb+flow clips: the RGB crops with a flip that negates horizontal motion.

    mean/std: the model's pretrained_cfg (one value per input channel); the modality's own when None.
    """
    from istpan.data.flow.transforms import flow_train_transform
    from istpan.modality import flow_x_channels, input_stats

    if mean is None:
        mean, std = input_stats(d.modality, d.flow_length)
    return flow_train_transform(input_size=d.input_size, mean=mean, std=std, crop=d.train_crop, flip=d.flip,
                                x_channels=flow_x_channels(d.modality, d.flow_length))


def check_channels(d: DataConfig, normalised: int) -> None:
    """The data's channels per segment must be what the model normalises (a flow model on RGB data, ...)."""
    from istpan.modality import in_channels

    channels = in_channels(d.modality, d.flow_length)
    if normalised != channels:
        raise UserError(f"data.modality={d.modality} with data.flow_length={d.flow_length} gives {channels} input "
                        f"channels but the model takes {normalised}: use the checkpoint's data.modality / "
                        "data.flow_length (istpan train sets the model's from the data section)")


def has_split(data_cfg: DataConfig, split: str) -> bool:
    """Whether the config names `split` ("train" or "val"): an annotation file, or a layout (synthetic, folder)
    whose lists default to files under data.root. What `data check`, `data flow` and `data shard` walk."""
    given = data_cfg.train_annotations if split == "train" else data_cfg.val_annotations
    return bool(given or (data_cfg.format in ("synthetic", "folder") and data_cfg.root))


def load_split(data_cfg: DataConfig, split: str) -> Annotations:
    """Records and class names of one split ("train" or "val"), with the config's paths checked first."""
    d = data_cfg
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if d.format == "webdataset":  # records stream from the shards; the manifest knows the classes
        manifest = load_manifest(d.train_annotations if split == "train" else d.val_annotations)
        return Annotations([], list(manifest["classes"]), [])
    if d.format not in FORMATS:
        raise UserError(f"data.format: unknown format '{d.format}' (choose from {', '.join(FORMATS)})")
    ann, classes = _annotation_paths(d, split)
    if d.root and not _exists(d.root):
        raise UserError(f"data.root: '{d.root}' does not exist; fix the path in the config or with data.root=...")
    return parse_annotations(
        d.format, ann, root=d.root, subset=split, split=d.split, classes=classes or None,
        class_source=_train_source(d) if split == "val" else None,
    )


def _train_source(d: DataConfig) -> str | None:
    """The training annotations the val split takes its class list from (when data.classes does not give one):
    also for the layouts with defaults under the root, so a val/ folder lacking a class of train/ (or with an extra
    one) keeps train's label indices instead of numbering its own classes."""
    try:
        return _annotation_paths(d, "train")[0]
    except UserError:  # no training split (evaluating a val list alone): val names its own classes
        return None


def _exists(path: str) -> bool:
    return Path(path).exists()


def _annotation_paths(d: DataConfig, split: str) -> tuple[str, str]:
    """(annotations, classes) for a split; the synthetic and folder layouts default to fixed places under the root."""
    ann = d.train_annotations if split == "train" else d.val_annotations
    classes = d.classes
    if d.format == "synthetic" and d.root:
        ann = ann or f"{d.root}/{split}.txt"
        classes = classes or f"{d.root}/classes.txt"
    if d.format == "folder" and d.root:
        ann = ann or f"{d.root}/{split}"  # <root>/train/<class>/*.mp4 and <root>/val/<class>/*.mp4
    if not ann:
        raise UserError(f"data.{split}_annotations: not set; point it at the {d.format} annotations for '{split}'")
    if not _exists(ann):
        raise UserError(f"data.{split}_annotations: '{ann}' does not exist; fix the path in the config")
    if classes and not _exists(classes):
        raise UserError(f"data.classes: '{classes}' does not exist; fix the path in the config or leave it empty")
    return ann, classes
