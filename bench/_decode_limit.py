"""What bench/decode.py compares istpan's sparse reads with: the decoding limit, decord and torchcodec, generated clips.

Run through bench/decode.py (bench/ is on sys.path when a bench script runs).

The limit of one sparse read is the work no exact reader can avoid: decode from the keyframe before each wanted frame
up to it, each frame once, skipping every frame that is neither wanted nor referenced by a later one
(`skip_frame=NONREF`, which FFmpeg honours for H.264/HEVC non-reference pictures and MPEG-4 part 2 B-VOPs), and
convert only the wanted frames to RGB. `LimitPlan` learns what is needed for that from one untimed decode; `read_limit`
then does that work and nothing else: no frame-position checks, no fallback, no index lookup. Its frames are not
compared with anything (on AVIs a skipped B-frame shifts which frame comes out), it is a measure of work only.

Where timestamps identify frames (H.264 in MP4, what istpan's index calls seekable) the limit seeks to each group's
keyframe by timestamp. Elsewhere (the AVIs) it decodes from the start: their only keyframes are at frames 0 and 1,
so that is the same work; an AVI with later keyframes would make this limit too high, i.e. too kind to istpan.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from istpan.data import decode as decode_mod


@dataclass(frozen=True)
class LimitPlan:
    seekable: bool
    frame_pts: list[int]  # seekable files: pts of output frame i
    keyframes: list[int]  # seekable files: sorted keyframe pts
    frame_call: list[int]  # output frame i -> ordinal of the packet whose decode call emitted it (a full decode)


def limit_plan(path: Path) -> LimitPlan:
    entry = decode_mod.index_entry(path)
    calls: list[int] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for k, packet in enumerate(container.demux(stream)):
            calls.extend(k for _ in packet.decode())
    return LimitPlan(bool(entry["seekable"]), [int(p) for p in entry["pts"]], [int(k) for k in entry["keyframes"]],
                     calls)


def _decode(container, stream, keep: Callable[[int, av.Packet], bool], stop: Callable[[int, av.VideoFrame], bool],
            wanted: Callable[[int, av.VideoFrame], bool], out: list) -> None:
    """Decode packets, skipping non-reference frames of packets `keep` rejects; RGB-convert `wanted` frames; stop
    once `stop` says so."""
    ctx = stream.codec_context
    try:
        for k, packet in enumerate(container.demux(stream)):
            ctx.skip_frame = "DEFAULT" if keep(k, packet) else "NONREF"
            for frame in packet.decode():
                if wanted(k, frame):
                    out.append(frame.to_ndarray(format="rgb24"))
                if stop(k, frame):
                    return
    finally:
        ctx.skip_frame = "DEFAULT"


def read_limit(path: Path, plan: LimitPlan, indices: list[int]) -> int:
    """Do the limit's work for one sparse read; returns the number of frames converted (for a sanity check)."""
    wanted = sorted(set(indices))
    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if plan.seekable:
            pts = plan.frame_pts
            keep_pts = {pts[i] for i in wanted}
            groups: dict[int, list[int]] = {}
            for i in wanted:
                groups.setdefault(plan.keyframes[max(bisect.bisect_right(plan.keyframes, pts[i]) - 1, 0)], []).append(i)
            for n, (key, members) in enumerate(groups.items()):
                if n or key != pts[0]:
                    container.seek(key, stream=stream, backward=True, any_frame=False)
                last = pts[members[-1]]
                _decode(container, stream, lambda k, p: p.pts is None or p.pts in keep_pts,
                        lambda k, f, last=last: f.pts == last, lambda k, f: f.pts in keep_pts, out)
        else:
            calls = {plan.frame_call[i] for i in wanted}
            last_call = plan.frame_call[wanted[-1]]
            _decode(container, stream, lambda k, p: k in calls, lambda k, f: k >= last_call,
                    lambda k, f: k in calls, out)
    while len(out) < len(wanted):  # a skipped B-frame moved an output: same work as converting the wanted frame
        out.append(out[-1] if out else np.zeros((1, 1, 3), np.uint8))
    return len(out)


# ------------------------------------------------------------------------------------------------ the anchors
def load_anchors() -> tuple[dict[str, Callable[[Path, list[int]], np.ndarray]], list[str]]:
    """{name: read(path, indices) -> uint8 (n, H, W, 3)} for the anchors that load here, and one line per missing one.
    Each read opens a fresh decoder (what a Dataset's __getitem__ does), with one decoding thread like istpan's."""
    readers, notes = {}, []
    try:
        import decord

        def read_decord(path: Path, indices: list[int]) -> np.ndarray:
            return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1).get_batch(indices).asnumpy()

        readers["decord"] = read_decord
    except Exception as err:  # ImportError, or a wheel whose bundled libraries do not load
        notes.append(f"decord: not available ({type(err).__name__}: {str(err)[:80]}; `pip install decord`, bench "
                     "only): skipped")
    try:
        from torchcodec.decoders import VideoDecoder

        def read_torchcodec(path: Path, indices: list[int]) -> np.ndarray:
            decoder = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC")
            return decoder.get_frames_at(indices).data.numpy()

        readers["torchcodec"] = read_torchcodec
    except Exception as err:  # torchcodec loads the system's FFmpeg libraries (libavcodec 4-7) when imported
        notes.append(f"torchcodec: not available ({type(err).__name__}: {str(err).splitlines()[0][:80]}; it needs "
                     "`pip install torchcodec` and the system's FFmpeg libraries): skipped")
    return readers, notes


def right_frames(got: np.ndarray, full: list[np.ndarray], indices: list[int]) -> bool:
    """Whether each returned frame is the wanted one: closest (mean absolute difference) to the full decode's frame at
    its index among all frames, and close to it. Not bit-identity: each anchor converts colours with its own FFmpeg."""
    stack = np.stack(full).astype(np.int16)  # (T, H, W, 3)
    for frame, i in zip(got, indices, strict=True):
        if frame.shape != full[i].shape:
            return False
        mad = np.abs(stack - frame.astype(np.int16)).mean(axis=(1, 2, 3))  # (T,)
        if mad[i] > mad.min() + 0.01 or mad[i] > 3.0:
            return False
    return True


# ------------------------------------------------------------------------------------------- generated clips
def encode(path: Path, frames: np.ndarray, *, fps: int, codec: str, options: dict[str, str]) -> Path:
    """uint8 (T, H, W, 3) -> a video file (container from the suffix), one frame per input frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


def source_frames(clip: Path, count: int, size: tuple[int, int], shift: int = 0) -> np.ndarray:
    """`count` frames (H, W) = `size` of a real clip, played forwards and backwards (ping-pong) from frame `shift`:
    real texture and motion, so the encoder and decoder work as on real video."""
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24", width=size[1], height=size[0]) for f in container.decode(video=0)]
    cycle = frames + frames[-2:0:-1]
    return np.stack([cycle[(shift + t) % len(cycle)] for t in range(count)])


def kinetics_shape(path: Path, clip: Path, shift: int = 0) -> Path:
    """10 s of 340x256 H.264 at 30 fps with a keyframe every 250 frames (x264's default GOP, what YouTube-sourced
    Kinetics files look like: 2 keyframes in 300 frames), preset medium, B-frames."""
    if not path.is_file():
        encode(path, source_frames(clip, 300, (256, 340), shift), fps=30, codec="libx264",
               options={"crf": "23", "preset": "medium", "g": "250", "threads": "1"})
    return path


def ucf_shape(path: Path, clip: Path, shift: int = 0) -> Path:
    """7 s of 320x240 MPEG-4 part 2 in AVI at 25 fps, B-frames, one keyframe every 250 frames (UCF101's XviD)."""
    if not path.is_file():
        encode(path, source_frames(clip, 175, (240, 320), shift), fps=25, codec="mpeg4",
               options={"b": "400k", "bf": "2", "g": "250", "threads": "1"})
    return path
