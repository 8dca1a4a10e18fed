"""The data path: annotation line -> frame count -> sampled indices -> decoded frames -> transforms -> batches.

Each step lives in its own module (decode, sampling, transforms, datasets, loader); see docs/data.md.
"""

from istpan.data.decode import BACKENDS, VideoError, VideoInfo, count_frames, iter_frames, read_frames, video_info

__all__ = ["BACKENDS", "VideoError", "VideoInfo", "count_frames", "iter_frames", "read_frames", "video_info"]
