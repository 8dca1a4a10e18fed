"""The data path: annotation line -> frame count -> sampled indices -> decoded frames -> transforms -> batches.

Each step lives in its own module (decode, sampling, transforms, datasets, video_dataset, loader); see docs/data.md.
"""

from istpan.data.datasets import FORMATS, Annotations, VideoRecord, parse_annotations
from istpan.data.decode import BACKENDS, VideoError, VideoInfo, count_frames, iter_frames, read_frames, video_info
from istpan.data.loader import build_loader, collate_clips
from istpan.data.video_dataset import VideoDataset, build_dataset

__all__ = [
    "BACKENDS",
    "FORMATS",
    "Annotations",
    "VideoDataset",
    "VideoError",
    "VideoInfo",
    "VideoRecord",
    "build_dataset",
    "build_loader",
    "collate_clips",
    "count_frames",
    "iter_frames",
    "parse_annotations",
    "read_frames",
    "video_info",
]
