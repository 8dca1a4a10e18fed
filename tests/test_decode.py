"""Decoding: frame-exact against a naive full decode, sparse (stops early, seeks only where exact), bad files."""

from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from references import naive_decode
from videos import make_frames, make_video

from istpan.data import VideoError, count_frames, iter_frames, read_frames, video_info
from istpan.data import decode as decode_mod

REAL_CLIPS = [
    "ucf101_ApplyEyeMakeup_g01_c01.avi",
    "6arrowswithin30seconds_shoot_bow_f_nm_np1_fr_med_3.avi",
    "Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi",
    "kinetics_arm_wrestling.mp4",
]


def tsn_like(n: int, rng: random.Random, k: int = 8) -> list[int]:
    return [min(n - 1, int(s * n / k) + rng.randrange(max(1, n // k))) for s in range(k)]


@pytest.mark.parametrize("name", REAL_CLIPS)
def test_real_clips_bit_identical_to_full_decode(clips_dir, name):
    path = clips_dir / name
    ref = naive_decode(path)
    n = count_frames(path)
    assert n == len(ref)
    rng = random.Random(0)
    cases = [[0], [n - 1], list(range(n)), [n - 1, 0, 5, 5]] + [tsn_like(n, rng) for _ in range(6)]
    for idx in cases:
        got = read_frames(path, idx)
        assert got.dtype == torch.uint8 and got.shape == (len(idx), *ref.shape[1:])
        assert np.array_equal(got.numpy(), ref[idx]), idx


def test_hmdb_container_claims_one_frame_more_than_decodes(clips_dir):
    path = clips_dir / "6arrowswithin30seconds_shoot_bow_f_nm_np1_fr_med_3.avi"
    info = video_info(path)
    n = count_frames(path)
    assert info.claimed_frames == n + 1 and n == len(naive_decode(path))
    with pytest.raises(VideoError, match=f"frame {n} requested but only {n} frames decode"):
        read_frames(path, [0, n])


def test_resize_on_the_way_out_matches_full_decode(clips_dir):
    path = clips_dir / "kinetics_arm_wrestling.mp4"
    ref = naive_decode(path, short_side=128)
    idx = [3, 40, 150, 279]
    got = read_frames(path, idx, short_side=128)
    assert got.shape == (4, 128, 170, 3)
    assert np.array_equal(got.numpy(), ref[idx])


@pytest.mark.parametrize("suffix,codec,options", [
    (".mp4", "libx264", {"g": "5", "bf": "2"}),
    (".mkv", "libx264", {"g": "7", "bf": "3"}),
    (".mp4", "libx264", {"x264-params": "bframes=3:b-pyramid=normal:keyint=12:open-gop=1"}),  # B-frames as references
    (".avi", "mpeg4", {"bf": "2", "g": "6"}),
    (".mp4", "libx265", {"x265-params": "keyint=10:min-keyint=10:bframes=3:log-level=error"}),
])
def test_generated_videos_exact_with_many_keyframes(tmp_path, suffix, codec, options):
    path = make_video(tmp_path / f"v{suffix}", num_frames=60, codec=codec, options=options)
    ref = naive_decode(path)
    n = count_frames(path)
    assert n == 60
    rng = random.Random(1)
    for _ in range(10):
        idx = sorted(rng.sample(range(n), 5))
        assert np.array_equal(read_frames(path, idx).numpy(), ref[idx]), idx


def _count_decoded(monkeypatch) -> list[int]:
    """Spy on the decoder generators: how many frames did a read really decode?"""
    counter = [0]

    def spy(real):
        def wrapped(*args, **kwargs):
            for frame in real(*args, **kwargs):
                counter[0] += 1
                yield frame
        return wrapped

    for name in ("_decoded", "_decoded_sparse"):
        monkeypatch.setattr(decode_mod, name, spy(getattr(decode_mod, name)))
    return counter


def test_sequential_read_stops_after_last_wanted_frame(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.avi", num_frames=40, codec="mpeg4")
    counter = _count_decoded(monkeypatch)
    read_frames(path, [2, 9])
    assert counter[0] == 10


def test_h264_mp4_seeks_to_keyframe_and_stays_exact(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", num_frames=60, options={"g": "10", "bf": "2"})
    ref = naive_decode(path)
    count_frames(path)  # records the timestamp of every frame: what makes the seek provably exact
    counter = _count_decoded(monkeypatch)
    got = read_frames(path, [1, 55])
    assert np.array_equal(got.numpy(), ref[[1, 55]])
    assert counter[0] < 30  # frames 2..49 were skipped by seeking to the keyframe at 50
    assert decode_mod._index(path, scan=False).seekable  # no fallback happened


def test_unwanted_b_frames_are_not_decoded(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", num_frames=48, options={"g": "48", "bf": "2"})  # one keyframe: no seeking
    ref = naive_decode(path)
    count_frames(path)
    counter = _count_decoded(monkeypatch)
    assert np.array_equal(read_frames(path, [5, 30, 47]).numpy(), ref[[5, 30, 47]])
    assert counter[0] < 40  # non-reference B-frames that were not asked for were skipped by the decoder


def test_iter_frames_memory_stays_flat(tmp_path):
    import tracemalloc

    path = make_video(tmp_path / "long.mp4", num_frames=150, size=(128, 128))  # 7 MB of RGB if all were kept
    tracemalloc.start()
    count = sum(1 for _ in iter_frames(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 150 and peak < 1_500_000


def test_avi_is_never_seeked(clips_dir, monkeypatch):
    path = clips_dir / "ucf101_ApplyEyeMakeup_g01_c01.avi"
    count_frames(path)
    assert not decode_mod._index(path, scan=False).seekable
    counter = _count_decoded(monkeypatch)
    read_frames(path, [150])
    assert counter[0] == 151


def test_negative_and_empty_indices(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=8)
    with pytest.raises(ValueError, match="must be >= 0"):
        read_frames(path, [0, -1])
    assert read_frames(path, []).shape == (0, 64, 64, 3)
    assert read_frames(path, torch.tensor([7, 0])).shape == (2, 64, 64, 3)


def test_iter_frames_streams_every_step(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=20, size=(48, 64))
    ref = naive_decode(path, short_side=24)
    seen = list(iter_frames(path, short_side=24, step=3))
    assert [i for i, _ in seen] == list(range(0, 20, 3))
    for i, frame in seen:
        assert frame.shape == (24, 32, 3) and np.array_equal(frame.numpy(), ref[i])


def test_frames_backend_reads_tsn_folder(tmp_path):
    from PIL import Image

    frames = make_frames(5, (32, 48))
    folder = tmp_path / "v_Foo_g01_c01"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"img_{i + 1:05d}.png")  # png: lossless, so exact equality holds
    assert count_frames(folder, backend="frames") == 5
    assert np.array_equal(read_frames(folder, [4, 0], backend="frames").numpy(), frames[[4, 0]])
    assert read_frames(folder, [1], backend="frames", short_side=16).shape == (1, 16, 24, 3)
    with pytest.raises(VideoError, match="folder holds 5 frames"):
        read_frames(folder, [5], backend="frames")
    assert [i for i, _ in iter_frames(folder, backend="frames", step=2)] == [0, 2, 4]


def test_opencv_backend_agrees_with_itself_and_counts(tmp_path):
    pytest.importorskip("cv2")
    path = make_video(tmp_path / "v.avi", num_frames=12, codec="mpeg4", options={"bf": "2"})
    assert count_frames(path, backend="opencv") == 12
    every = read_frames(path, list(range(12)), backend="opencv")
    assert np.array_equal(read_frames(path, [9, 3], backend="opencv").numpy(), every.numpy()[[9, 3]])
    # Same decoder family as PyAV: the frames agree up to colour-conversion rounding.
    diff = (every.float() - torch.from_numpy(naive_decode(path)).float()).abs().mean()
    assert diff < 3


# ----------------------------------------------------------------------------------------------------- bad input
def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(5):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _bad_file(kind: str, tmp_path: Path) -> tuple[Path, str]:
    if kind == "zero bytes":
        path = tmp_path / "zero.mp4"
        path.write_bytes(b"")
        return path, "empty file"
    if kind == "truncated mp4":  # cut before the index, which the muxer writes last: say so, not "not a video"
        data = make_video(tmp_path / "full.mp4", num_frames=32).read_bytes()
        path = tmp_path / "trunc.mp4"
        path.write_bytes(data[: len(data) // 2])
        return path, "MP4 index (moov atom) is missing"
    if kind == "mp4 cut in its index":  # FFmpeg opens this with no stream at all
        data = make_video(tmp_path / "full.mp4", num_frames=32).read_bytes()
        path = tmp_path / "cut.mp4"
        path.write_bytes(data[: data.index(b"moov") + 200])
        return path, "MP4 index (moov atom) is truncated"
    if kind == "mp4 without moov":
        data = make_video(tmp_path / "full.mp4", num_frames=32).read_bytes()
        start = data.index(b"moov") - 4
        end = start + int.from_bytes(data[start : start + 4], "big")
        path = tmp_path / "nomoov.mp4"
        path.write_bytes(data[:start] + data[end:])
        return path, "MP4 index (moov atom) is missing"
    if kind == "dangling link":
        path = tmp_path / "link.mp4"
        path.symlink_to(tmp_path / "gone.mp4")
        return path, "missing: link target does not exist"
    if kind == "random bytes":
        path = tmp_path / "random.mp4"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return path, "cannot open"
    if kind == "audio only":
        return _audio_only(tmp_path / "audio.mp4"), "no video stream"
    if kind == "directory":
        path = tmp_path / "dir.mp4"
        path.mkdir()
        return path, "is a directory"
    return tmp_path / "missing.mp4", "file not found"


@pytest.mark.parametrize("kind", ["zero bytes", "truncated mp4", "mp4 cut in its index", "mp4 without moov",
                                  "random bytes", "audio only", "directory", "missing", "dangling link"])
def test_bad_files_raise_video_error_naming_the_path(tmp_path, kind):
    path, reason = _bad_file(kind, tmp_path)
    calls = [lambda: count_frames(path), lambda: read_frames(path, [0]), lambda: video_info(path),
             lambda: next(iter_frames(path))]
    for call in calls:
        with pytest.raises(VideoError) as err:
            call()
        assert str(err.value).startswith(f"{path}: ") and reason in str(err.value)
        assert "\n" not in str(err.value)


def test_truncated_avi_decodes_what_is_there(tmp_path):
    data = make_video(tmp_path / "full.avi", num_frames=64, codec="mpeg4").read_bytes()
    path = tmp_path / "trunc.avi"
    path.write_bytes(data[: int(len(data) * 0.7)])
    n = count_frames(path)
    assert 0 < n < 64
    ref = naive_decode(path)
    assert np.array_equal(read_frames(path, [0, n - 1]).numpy(), ref[[0, n - 1]])
    with pytest.raises(VideoError, match=f"only {n} frames decode"):
        read_frames(path, [n])


def test_damaged_packet_mid_file_is_skipped_not_fatal(tmp_path):
    data = bytearray(make_video(tmp_path / "ok.mp4", num_frames=64, options={"g": "16"}).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 300] = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(av.error.InvalidDataError), av.open(str(path)) as container:
        for _ in container.decode(video=0):  # what a naive loader does: one bad packet ends the run
            pass
    n = count_frames(path)
    assert 0 < n < 64 and decode_mod.decode_errors(path)
    assert not decode_mod._index(path, scan=False).seekable  # never seek in a file that had decode errors
    ref = naive_decode(tmp_path / "ok.mp4")
    assert np.array_equal(read_frames(path, [0, 5]).numpy(), ref[[0, 5]])  # before the damage: untouched
    assert read_frames(path, [n - 1]).shape == (1, 64, 64, 3)


def test_single_frame_and_odd_names(tmp_path):
    path = make_video(tmp_path / "sub dir" / "Golf !!! 300+ (yards) & más.mp4", num_frames=1)
    assert count_frames(path) == 1
    assert read_frames(path, [0, 0, 0]).shape == (3, 64, 64, 3)
    assert video_info(path).width == 64


def test_video_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(VideoError("a b.mp4", "empty file (0 bytes)")))
    assert str(err) == "a b.mp4: empty file (0 bytes)" and err.path == "a b.mp4"


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_rotation_metadata_is_applied_as_players_do(tmp_path, degrees):
    """Phones store portrait video as landscape pictures plus a display matrix; players turn it upright, so do we.

    Reference: a naive decode of the same file (which ignores the matrix) turned by numpy counter-clockwise, the
    direction FFmpeg's display matrix (and PyAV's `set_display_rotation`) is defined in; and the source frames, so
    the direction is checked against what was drawn, not only against the decoder.
    """
    frames = make_frames(6, (32, 48))
    path = make_video(tmp_path / "rotated.mp4", frames, rotation=degrees)
    turns = degrees // 90
    stored = naive_decode(path)
    assert stored.shape[1:3] == (32, 48)  # the pictures themselves are landscape
    expected = np.rot90(stored, turns, axes=(1, 2))  # (T, H, W, 3) upright
    drawn = np.rot90(frames, turns, axes=(1, 2)).astype(int)
    assert np.abs(expected.astype(int) - drawn).mean() < 8  # lossy, but the same picture the same way up
    assert np.array_equal(read_frames(path, [0, 3, 5]).numpy(), expected[[0, 3, 5]])
    assert np.array_equal(np.stack([f.numpy() for _, f in iter_frames(path)]), expected)
    small = np.rot90(naive_decode(path, short_side=16), turns, axes=(1, 2))
    assert np.array_equal(read_frames(path, [2], short_side=16).numpy(), small[[2]])


# EXIF Orientation that shows a stored picture turned `degrees` counter-clockwise (3: 180, 6: 90 clockwise, 8: 90 ccw)
_EXIF_FOR_DEGREES = {90: 8, -90: 6, 180: 3}


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_every_backend_and_video_info_agree_on_a_rotated_video(tmp_path, degrees):
    """One phone video, three ways in: PyAV, OpenCV and a folder of its frames as a phone saves pictures (the sensor's
    landscape pixels plus an EXIF Orientation tag). All return the same upright frames, and `video_info` describes
    those frames, not the stored ones (it used to report the stored size, and the frames backend ignored EXIF)."""
    from PIL import Image

    frames = make_frames(4, (32, 48))
    path = make_video(tmp_path / "phone.mp4", frames, rotation=degrees)
    upright = read_frames(path, [0, 1, 2, 3]).numpy()  # (T, H, W, 3): pyav, checked against a numpy turn above
    size = (48, 32) if degrees % 180 else (32, 48)
    assert upright.shape[1:3] == size
    info = video_info(path)
    assert (info.height, info.width, info.rotation) == (*size, degrees % 360)
    assert read_frames(path, []).shape == (0, *size, 3)  # the empty read takes its size from video_info
    pytest.importorskip("cv2")
    opencv = read_frames(path, [0, 1, 2, 3], backend="opencv").numpy()
    assert opencv.shape == upright.shape and np.abs(opencv.astype(int) - upright).mean() < 2
    folder = tmp_path / "phone_frames"
    folder.mkdir()
    for i, stored in enumerate(naive_decode(path)):  # landscape, as the sensor wrote them
        exif = Image.Exif()
        exif[0x0112] = _EXIF_FOR_DEGREES[degrees]
        Image.fromarray(stored).save(folder / f"img_{i + 1:05d}.jpg", quality=95, exif=exif)
    images = read_frames(folder, [0, 1, 2, 3], backend="frames").numpy()
    assert images.shape == upright.shape and np.abs(images.astype(int) - upright).mean() < 4  # JPEG: lossy
    assert np.stack([f.numpy() for _, f in iter_frames(folder, backend="frames")]).shape == upright.shape
    info = video_info(folder, backend="frames")
    assert (info.height, info.width) == size


@pytest.mark.parametrize("text", ["ffconcat version 1.0\nfile secret.mp4\n",
                                  "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nsecret.mp4\n#EXT-X-ENDLIST\n"])
def test_a_concat_list_or_playlist_named_mp4_is_refused_not_followed(tmp_path, text):
    """FFmpeg probes by content: a concat list would make it decode the file it names (16 frames of secret.mp4)."""
    make_video(tmp_path / "secret.mp4")
    (tmp_path / "clip.mp4").write_text(text)
    with pytest.raises(VideoError, match=r"clip\.mp4: .*(refused|cannot open)"):
        count_frames(tmp_path / "clip.mp4")
    with pytest.raises(VideoError):
        read_frames(decode_mod.EncodedVideo("shard:clip", (tmp_path / "clip.mp4").read_bytes()), [0])
    assert count_frames(tmp_path / "secret.mp4") == 16  # a plain MP4 still opens
