"""Optical flow: computation, the TSN encoding, flow folders (ours, TSN's, MMAction2's), stacks, transforms, bad input.

Flow is checked on generated videos whose motion is known (a textured square translating by a fixed shift per
frame), through the real path: H.264 file -> decode -> flow -> JPEG folder -> stacks.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from videos import make_video

from istpan.config import DataConfig
from istpan.data.decode import VideoError
from istpan.data.flow.compute import DEFAULT_BOUND, dequantise, flow_folder, quantise
from istpan.data.flow.frames import count_flow, flow_files, read_flow_stacks
from istpan.data.flow.transforms import FlowFlip, flow_test_transform
from istpan.data.sampling import stack_starts
from istpan.data.tools.flow import FlowJob, extract_flow, save_flow_frame, write_video_flow
from istpan.modality import flow_x_channels, in_channels, input_stats

pytest.importorskip("cv2", reason="optical flow needs opencv-contrib-python-headless (istpan[opencv])")

STEP = 2 * DEFAULT_BOUND / 255  # one quantisation step in pixels
SHIFT = (3, -2)  # (dx, dy) pixels per frame


def square_frames(num_frames: int = 4, size: int = 64, shift: tuple[int, int] = SHIFT, side: int = 24) -> np.ndarray:
    """A textured square moving by `shift` per frame over a still, textured background: uint8 (T, size, size, 3).

    Both are textured because flow is only defined where there is texture (a flat region takes whatever motion the
    regulariser spreads into it)."""
    rng = np.random.default_rng(0)
    noise = rng.random((side // 4 + 1, side // 4 + 1))
    tex = np.kron(noise, np.ones((4, 4)))[:side, :side]  # blocky texture: trackable and codec-friendly
    yy, xx = np.mgrid[0:side, 0:side]
    tex = 60 + 150 * (0.5 * tex + 0.25 * np.sin(xx / 3.0) + 0.25 * np.cos(yy / 4.0) + 0.25)
    bg = np.kron(rng.random((size // 8, size // 8)), np.ones((8, 8)))
    by, bx = np.mgrid[0:size, 0:size]
    background = (40 + 50 * bg + 20 * np.sin(bx / 5.0) * np.cos(by / 6.0)).astype(np.uint8)
    frames = np.repeat(background[None, :, :, None], 3, axis=-1).repeat(num_frames, axis=0)
    for t in range(num_frames):
        x0, y0 = 14 + shift[0] * t, 24 + shift[1] * t
        frames[t, y0 : y0 + side, x0 : x0 + side] = np.clip(tex, 0, 255)[..., None].astype(np.uint8)
    return frames


@pytest.mark.parametrize("algorithm", ["tvl1", "dis", "farneback"])
def test_translating_square_recovers_shift_and_direction(tmp_path, algorithm):
    video = make_video(tmp_path / "square.mp4", square_frames())
    folder = tmp_path / "flow" / "square"
    n = write_video_flow(video, folder, algorithm=algorithm, short_side=None)
    assert n == 3 and count_flow(folder) == 3
    stack = read_flow_stacks(folder, torch.tensor([0]), length=3)[0].numpy()  # (6, H, W): x1, y1, x2, y2, x3, y3
    for t in range(3):
        x0, y0 = 14 + SHIFT[0] * t, 24 + SHIFT[1] * t  # the square in frame t, where flow t -> t+1 is defined
        inner = (slice(y0 + 6, y0 + 18), slice(x0 + 6, x0 + 18))
        dx = float(np.median(dequantise(stack[2 * t][inner])))
        dy = float(np.median(dequantise(stack[2 * t + 1][inner])))
        assert abs(dx - SHIFT[0]) <= 0.5 and abs(dy - SHIFT[1]) <= 0.5, (algorithm, t, dx, dy)
        assert dx > 0 and dy < 0  # right and up
        still = (slice(2, 12), slice(50, 62))  # a corner of the background the square never reaches
        assert abs(float(np.median(dequantise(stack[2 * t][still])))) <= 0.5
        assert abs(float(np.median(dequantise(stack[2 * t + 1][still])))) <= 0.5


def test_quantisation_and_jpeg_round_trip_within_the_step(tmp_path):
    yy, xx = np.mgrid[0:64, 0:80].astype(np.float32)
    flow = np.stack([12 * np.sin(xx / 13) + 3 * np.cos(yy / 7), 9 * np.cos(yy / 11) - 2], -1)  # smooth, in ±20
    # the 8-bit code alone: within half a step, and TSN's mapping (0 -> -bound, 255 -> +bound, clipped outside)
    assert np.abs(dequantise(quantise(flow)) - flow).max() <= STEP / 2 + 1e-6
    assert quantise(np.array([-25.0, -20.0, 0.0, 20.0, 30.0])).tolist() == [0, 0, 128, 255, 255]
    # through JPEG (quality 95, as dense_flow): no code moves by more than one step, so the flow read back is
    # within 1.5 steps (0.24 px) of the true one
    code = quantise(flow)
    save_flow_frame(tmp_path, 1, code)
    back = read_flow_stacks(tmp_path, torch.tensor([0]), length=1)[0].numpy().transpose(1, 2, 0)  # (H, W, 2)
    assert np.abs(back.astype(int) - code.astype(int)).max() <= 1
    assert np.abs(dequantise(back) - flow).max() <= 1.5 * STEP + 1e-6


def test_reads_tsn_and_mmaction2_prefixes_interleaved(tmp_path):
    for prefix in ("flow_", ""):
        folder = tmp_path / prefix / "v"
        folder.mkdir(parents=True)
        for i in range(1, 4):  # frame i: x = 10 i, y = 100 + 10 i (distinct constants survive JPEG)
            code = np.stack([np.full((8, 8), 10 * i), np.full((8, 8), 100 + 10 * i)], -1).astype(np.uint8)
            save_flow_frame(folder, i, code)
            if prefix == "":  # MMAction2's denseflow names: x_00001.jpg / y_00001.jpg
                for axis in "xy":
                    (folder / f"flow_{axis}_{i:05d}.jpg").rename(folder / f"{axis}_{i:05d}.jpg")
        stacks = read_flow_stacks(folder, torch.tensor([0, 1]), length=2)  # (K=2, 2L=4, 8, 8)
        means = stacks.float().mean((-2, -1)).round()
        assert means.tolist() == [[10, 110, 20, 120], [20, 120, 30, 130]]


def test_bad_flow_folders_name_the_video(tmp_path):
    with pytest.raises(VideoError, match="flow folder not found"):
        flow_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no flow images"):
        flow_files(tmp_path / "empty")
    uneven = tmp_path / "uneven"
    uneven.mkdir()
    code = np.zeros((8, 8, 2), np.uint8)
    for i in (1, 2, 3):
        save_flow_frame(uneven, i, code)
    (uneven / "flow_y_00003.jpg").unlink()
    with pytest.raises(VideoError, match=r"3 flow_x_.* but 2 flow_y_"):
        flow_files(uneven)
    (uneven / "flow_x_00003.jpg").unlink()
    with pytest.raises(VideoError, match="2 flow frames, too short for a stack of L=5"):
        read_flow_stacks(uneven, torch.tensor([0]), length=5)


def test_stack_starts_keep_every_stack_inside_the_video():
    g = torch.Generator().manual_seed(0)
    for n in (5, 9, 31, 200):
        for rng in (None, g):
            starts = stack_starts(n, method="segment", num_frames=8, stack=5, rng=rng)
            assert starts.shape == (8,) and starts.min() >= 0 and int(starts.max()) + 5 <= n
            assert (starts.diff() >= 0).all()
    assert stack_starts(31, method="segment", num_frames=3, stack=5).tolist() == [4, 13, 22]  # TSN's centres of 27


def test_modality_channels_and_stats():
    assert [in_channels(m, 5) for m in ("rgb", "flow", "rgb+flow")] == [3, 10, 13]
    assert flow_x_channels("flow", 3) == (0, 2, 4) and flow_x_channels("rgb+flow", 2) == (3, 5)
    mean, std = input_stats("rgb+flow", 2)
    assert len(mean) == len(std) == 7 and mean[3:] == (0.5,) * 4


def test_flow_flip_mirrors_and_negates_horizontal_motion():
    video = torch.randint(0, 256, (2, 4, 5, 7), dtype=torch.uint8)  # (K, 2L, H, W) with L = 2
    torch.manual_seed(0)
    out = FlowFlip(flow_x_channels("flow", 2), p=1.0)(video)
    assert torch.equal(out[:, 0], 255 - video[:, 0].flip(-1)) and torch.equal(out[:, 2], 255 - video[:, 2].flip(-1))
    assert torch.equal(out[:, 1], video[:, 1].flip(-1)) and torch.equal(out[:, 3], video[:, 3].flip(-1))
    # ten crops: the mirrored five carry negated horizontal flow, exactly as flipping the codes first would give
    mean, std = input_stats("flow", 2)
    ten = flow_test_transform(input_size=4, resize=5, mean=mean, std=std, x_channels=(0, 2), crops=10)(video)
    plain = flow_test_transform(input_size=4, resize=5, mean=mean, std=std, x_channels=(0, 2), crops=5)
    mirrored = plain(FlowFlip((0, 2), p=1.0)(video))  # (5, K, 4, 4, 4): the five crops of the flipped clip
    # torchvision's ten_crop: the five crops of the image, then the five crops of its mirror image
    assert torch.allclose(ten[5:], mirrored, atol=1e-4)


def test_data_flow_skips_finished_and_logs_bad_videos(tmp_path, caplog):
    good = [make_video(tmp_path / "v" / f"{i}.mp4", square_frames(5)) for i in range(2)]
    bad = tmp_path / "v" / "broken.mp4"
    bad.write_bytes(b"not a video")
    jobs = [FlowJob(str(v), str(flow_folder(v, root=tmp_path / "v", out=tmp_path / "flow"))) for v in [*good, bad]]
    with caplog.at_level(logging.WARNING):
        first = extract_flow(jobs, algorithm="farneback", short_side=None, workers=1, progress=False)
    assert first["written"] == 2 and first["frames"] == 8 and len(first["failed"]) == 1
    assert "broken.mp4" in first["failed"][0] and "broken.mp4" in caplog.text
    assert sorted(p.name for p in (tmp_path / "flow").iterdir()) == ["0", "1"]  # no folder left for the bad one
    again = extract_flow(jobs, algorithm="farneback", short_side=None, workers=1, progress=False)
    assert again["written"] == 0 and again["skipped"] == 2


def _flow_dataset(tmp_path, videos, **overrides):
    from istpan.data.video_dataset import build_dataset

    (tmp_path / "list.txt").write_text("".join(f"{v.name} {i % 2}\n" for i, v in enumerate(videos)))
    (tmp_path / "classes.txt").write_text("a\nb\n")
    d = DataConfig(format="list", root=str(videos[0].parent), train_annotations=str(tmp_path / "list.txt"),
                   val_annotations=str(tmp_path / "list.txt"), classes=str(tmp_path / "classes.txt"),
                   modality="flow", flow_length=3, num_frames=2, test_num_frames=2, input_size=48, short_side=64,
                   train_crop="center", flow_algorithm="farneback", num_workers=0)
    for key, value in overrides.items():
        setattr(d, key, value)
    return build_dataset(d, split="val", train=False)


def test_on_the_fly_flow_matches_flow_folders(tmp_path):
    videos = [make_video(tmp_path / "v" / "a.mp4", square_frames(8))]
    extract_flow([FlowJob(str(videos[0]), str(tmp_path / "flow" / "a"))], algorithm="farneback", short_side=64,
                 progress=False)
    from_folders = _flow_dataset(tmp_path, videos, flow_root=str(tmp_path / "flow"))[0]["video"]
    on_the_fly = _flow_dataset(tmp_path, videos)[0]["video"]
    assert from_folders.shape == on_the_fly.shape == (2, 6, 48, 48)  # (K, 2L, h, w)
    std = input_stats("flow", 3)[1][0]
    codes = (from_folders - on_the_fly).abs() * std * 255  # difference in 8-bit codes
    assert codes.mean() < 0.5 and codes.max() <= 3.5  # JPEG's round trip only


def test_rgb_plus_flow_clip_aligns_both(tmp_path):
    videos = [make_video(tmp_path / "v" / "a.mp4", square_frames(8))]
    clip = _flow_dataset(tmp_path, videos, modality="rgb+flow")[0]["video"]
    assert clip.shape == (2, 3 + 6, 48, 48)


def test_bad_flow_input_is_one_line_and_training_skips_it(tmp_path, caplog):
    videos = [make_video(tmp_path / "v" / f"{n}.mp4", square_frames(f)) for n, f in (("ok", 8), ("short", 3))]
    flow_root = tmp_path / "flow"
    extract_flow([FlowJob(str(v), str(flow_folder(v, root=v.parent, out=flow_root))) for v in videos],
                 algorithm="farneback", short_side=64, progress=False)
    ds = _flow_dataset(tmp_path, [*videos, tmp_path / "v" / "nofolder.mp4"], flow_root=str(flow_root))
    assert ds.load(0)["video"].shape == (2, 6, 48, 48)
    with pytest.raises(VideoError, match=r"short\.mp4: 2 flow frames, too short for a stack of L=3"):
        ds.load(1)
    with pytest.raises(VideoError, match=r"nofolder\.mp4: flow folder not found"):
        ds.load(2)
    with caplog.at_level(logging.WARNING):
        assert ds[2] is None  # evaluation: None, dropped and counted by the loader's collate
    assert "nofolder.mp4" in caplog.text
    ds.replace_failed = True  # training: replaced by a readable video
    assert ds[1]["skipped"] >= 1


def test_data_flow_command_writes_rightward_motion_as_positive_x(tmp_path, capsys):
    """`istpan data flow` end to end, read back with PIL alone: a square moving right and up (3, -2 px per frame)
    gives flow_x above the middle grey (128) and flow_y below it, as TSN stores them (x to the right, y down, the
    motion from frame t to t + 1); the same square moving left and down gives the opposite."""
    from PIL import Image

    from istpan.cli.main import main

    moves = {"0": SHIFT, "1": (-SHIFT[0], -SHIFT[1])}
    for name, shift in moves.items():
        make_video(tmp_path / "v" / f"{name}.mp4", square_frames(4, shift=shift))  # starts at (14, 24) either way
    (tmp_path / "list.txt").write_text("0.mp4 a\n1.mp4 a\n")
    (tmp_path / "classes.txt").write_text("a\n")
    (tmp_path / "cfg.yaml").write_text(
        f"data: {{format: list, root: {tmp_path / 'v'}, train_annotations: {tmp_path / 'list.txt'}, "
        f"classes: {tmp_path / 'classes.txt'}, short_side: 0}}\n")
    assert main(["data", "flow", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "flow"),
                 "--algorithm", "farneback", "--workers", "1", "--no-progress"]) == 0
    for name, (sx, sy) in moves.items():
        inner = (slice(24 + 6, 24 + 18), slice(14 + 6, 14 + 18))  # inside the square in frame 0
        x = np.asarray(Image.open(tmp_path / "flow" / name / "flow_x_00001.jpg"), dtype=np.float64)[inner]
        y = np.asarray(Image.open(tmp_path / "flow" / name / "flow_y_00001.jpg"), dtype=np.float64)[inner]
        step = 255 / (2 * DEFAULT_BOUND)  # grey levels per pixel of motion
        assert abs(np.median(x) - (127.5 + sx * step)) <= 0.5 * step + 1, (name, np.median(x))
        assert abs(np.median(y) - (127.5 + sy * step)) <= 0.5 * step + 1, (name, np.median(y))
