"""A frozen backbone's multi-scale features, computed once per frame and kept on disk (float16), for the ablation.

Why: with a frozen ImageNet backbone every row and seed of the ablation would push the same frames through the same
network. The backbone is >99 % of the compute, so it runs once per frame here and the rows train only the IST-PAN
layer and the head on the cached maps (`VideoClassifier.forward_maps`), in seconds to minutes instead of hours.

Layout of a cache folder (one per dataset split):

    s{j}.npy     float16 (V, T, C_j, h_j, w_j) for each cached stage j (memory-mapped, written video by video)
    meta.json    stages, frames cached per video (their indices in the video), labels, the actor's boxes on the
                 cached frames, and `done`: how many videos are written (an interrupted extraction resumes there)

Frames go through the data pipeline's decoder and test transform (no crop at the dataset's own size), so the cached
maps are exactly what `istpan train` would feed the backbone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

__all__ = ["FeatureCache", "extract_features"]

META = "meta.json"


@dataclass
class FeatureCache:
    """A loaded cache: stage maps (memory-mapped float16), labels and boxes; `maps(v, t)` gathers frames."""

    stages: list[int]  # backbone stage indices cached (shallow -> deep)
    num_stages: int  # stages of the backbone (to rebuild its full list, None where not cached)
    arrays: list[np.ndarray]  # per cached stage (V, T, C, h, w) float16
    labels: torch.Tensor  # (V,) long
    frames: list[int]  # (T,) frame index in the video of each cached frame
    boxes: torch.Tensor  # (V, T, 4) normalised actor box per cached frame, NaN where invisible
    num_frames: int  # frames per video

    @classmethod
    def load(cls, folder: str | Path, *, in_memory: bool = True) -> FeatureCache:
        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        if meta["done"] < meta["num_videos"]:
            raise RuntimeError(f"{folder}: feature cache incomplete ({meta['done']}/{meta['num_videos']} videos)")
        arrays = [np.load(folder / f"s{j}.npy", mmap_mode=None if in_memory else "r") for j in meta["stages"]]
        boxes = torch.tensor([[b if b is not None else [float("nan")] * 4 for b in v] for v in meta["boxes"]])
        return cls(meta["stages"], meta["num_stages"], arrays, torch.tensor(meta["labels"]), meta["frames"], boxes,
                   meta["num_frames"])

    def __len__(self) -> int:
        return len(self.labels)

    def first_per_class(self, n: int) -> FeatureCache:
        """The first n videos of each class (a smaller balanced cache, copied into memory)."""
        counts: dict[int, int] = {}
        keep = [i for i, y in enumerate(self.labels.tolist()) if counts.setdefault(y, 0) < n
                and not counts.__setitem__(y, counts[y] + 1)]
        idx = np.asarray(keep)
        return FeatureCache(self.stages, self.num_stages, [np.ascontiguousarray(a[idx]) for a in self.arrays],
                            self.labels[idx], self.frames, self.boxes[idx], self.num_frames)

    def maps(self, videos: torch.Tensor, frames: torch.Tensor) -> list[torch.Tensor | None]:
        """Stage maps of frames (B, K) (cached-frame positions) of videos (B,) as the backbone would return them:
        a list over every backbone stage of (B·K, C_j, h_j, w_j) float32, None for stages not cached."""
        v = videos[:, None].expand_as(frames).flatten().numpy()  # (B·K,)
        t = frames.flatten().numpy()  # (B·K,)
        out: list[torch.Tensor | None] = [None] * self.num_stages
        for j, arr in zip(self.stages, self.arrays):
            out[j] = torch.from_numpy(arr[v, t]).float()  # (B·K, C_j, h_j, w_j)
        return out


def extract_features(
    root: str | Path,
    split: str,
    out_dir: str | Path,
    *,
    pretrained: str | Path,
    stages: tuple[int, ...] = (2, 3, 4),
    frames: list[int] | None = None,
    per_class: int | None = None,
    batch_frames: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the frozen ImageNet MobileNetV2 over `frames` (indices in each video; default all) of the `split` videos
    of the synthetic dataset at root (the first `per_class` of each class when given) and write the cache into
    out_dir; returns timing. Resumes a partial cache of the same request.

    Why frame lists: the backbone is the whole cost, so a cache holds only the frames its use needs, e.g. the K = 8
    test positions for the validation table and every frame only for the few videos of the any-K curve."""
    from istpan.data import read_frames
    from istpan.data.tools.synth import CLASSES, load_ground_truth
    from istpan.data.transforms import test_transform
    from istpan.models import create_model

    root, out = Path(root), Path(out_dir)
    gt = load_ground_truth(root)
    spec = gt["spec"]
    videos = [(rel, v) for rel, v in sorted(gt["videos"].items()) if v["split"] == split]
    if per_class is not None:
        seen: dict[int, int] = {}
        videos = [(rel, v) for rel, v in videos if seen.setdefault(v["label"], 0) < per_class
                  and not seen.__setitem__(v["label"], seen[v["label"]] + 1)]
    size, num_frames = int(spec["size"]), int(spec["num_frames"]) * (int(spec["untrimmed_factor"])
                                                                      if spec["untrimmed"] else 1)
    frames = list(range(num_frames)) if frames is None else [int(f) for f in frames]
    if not frames or min(frames) < 0 or max(frames) >= num_frames:
        raise ValueError(f"frames must lie in 0..{num_frames - 1}, got {frames}")
    model = create_model("tsn_mobilenetv2", num_classes=len(CLASSES), pretrained=pretrained, input_size=size).eval()
    backbone = model.backbone
    transform = test_transform(input_size=size, resize=size, mean=model.pretrained_cfg["mean"],
                               std=model.pretrained_cfg["std"])
    request = dict(root=str(root.resolve()), split=split, stages=list(stages), frames=frames, spec=spec)
    meta_path = out / META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta is None or meta.get("request") != request:
        out.mkdir(parents=True, exist_ok=True)
        with torch.inference_mode():
            shapes = [tuple(m.shape[1:]) for m in backbone(torch.zeros(1, 3, size, size))]
        for j in stages:
            np.lib.format.open_memmap(out / f"s{j}.npy", mode="w+", dtype=np.float16,
                                      shape=(len(videos), len(frames), *shapes[j]))
        meta = dict(request=request, stages=list(stages), num_stages=len(shapes), num_videos=len(videos),
                    num_frames=num_frames, frames=frames, labels=[v["label"] for _, v in videos],
                    boxes=[[v["boxes"][t] for t in frames] for _, v in videos], done=0, seconds=0.0)
        meta_path.write_text(json.dumps(meta))
    arrays = {j: np.load(out / f"s{j}.npy", mmap_mode="r+") for j in stages}
    start, done = time.perf_counter(), meta["done"]
    per_batch = max(1, batch_frames // len(frames))
    bar = tqdm(total=len(videos), initial=done, desc=f"features {split}", unit="video", disable=not progress)
    with torch.inference_mode():
        for first in range(done, len(videos), per_batch):
            chunk = videos[first:first + per_batch]
            clips = [torch.as_tensor(read_frames(root / rel, frames)).permute(0, 3, 1, 2) for rel, _ in chunk]
            x = torch.cat([transform(c) for c in clips])  # (n·T, 3, S, S)
            maps = backbone(x)
            for j in stages:
                arrays[j][first:first + len(chunk)] = maps[j].unflatten(0, (len(chunk), -1)).half().numpy()
            meta["done"] = first + len(chunk)
            if meta["done"] % (per_batch * 16) < per_batch or meta["done"] == len(videos):
                for arr in arrays.values():
                    arr.flush()
                meta["seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                meta_path.write_text(json.dumps(meta))
            bar.update(len(chunk))
    bar.close()
    return dict(videos=len(videos), frames=len(videos) * len(frames), seconds=meta["seconds"])
