"""Attention overlays, the overlay video, localisation metrics and the end-to-end explain run on generated videos."""

from __future__ import annotations

import json
import random
from pathlib import Path
from urllib.parse import quote

import av
import numpy as np
import pytest
import torch
from PIL import Image
from references import charades_ap_loop, naive_decode, naive_window_probs
from videos import make_frames, make_video

from istpan.data import read_frames
from istpan.data.sampling import sample_indices, segment_indices
from istpan.evaluation.localization import (
    charades_timepoints,
    frame_targets,
    localization_map,
    merge_segments,
    pointing_accuracy,
    pointing_game,
    segment_iou,
    temporal_iou,
)
from istpan.files.description import ModelDescription
from istpan.inference.explain import explain_videos
from istpan.inference.videos import predict_videos
from istpan.models import attention_maps, create_model
from istpan.viz.overlay import colorize, frame_grid, overlay_heatmap, upsample_heat
from istpan.viz.video import heat_at, write_video

META = {"class_names": ["wave", "jump", "run"], "multi_label": False,
        "preprocessing": {"input_size": 64, "short_side": 80, "num_segments": 4, "sampling": "segment",
                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# ---------------------------------------------------------------- overlay


def _naive_bilinear(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Textbook bilinear resampling with pixel centres at (i + 0.5) and clamped edges."""
    h, w = heat.shape
    out = np.zeros(size)
    for y in range(size[0]):
        sy = min(max((y + 0.5) * h / size[0] - 0.5, 0.0), h - 1.0)
        y0 = int(sy)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for x in range(size[1]):
            sx = min(max((x + 0.5) * w / size[1] - 0.5, 0.0), w - 1.0)
            x0 = int(sx)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = (1 - fx) * heat[y0, x0] + fx * heat[y0, x1]
            bottom = (1 - fx) * heat[y1, x0] + fx * heat[y1, x1]
            out[y, x] = (1 - fy) * top + fy * bottom
    return out


def test_hottest_cell_lands_on_its_pixels():
    frames = np.zeros((1, 64, 48, 3), np.uint8)
    heat = torch.zeros(1, 4, 3)
    heat[0, 1, 2] = 1.0  # cell (row 1, col 2) covers rows 16..31, cols 32..47
    heat[0, 3, 0] = 0.25
    big = upsample_heat(heat, (64, 48))[0].numpy()
    assert np.allclose(big, _naive_bilinear(heat[0].numpy(), (64, 48)), atol=1e-5)
    y, x = np.unravel_index(big.argmax(), big.shape)
    assert 16 <= y <= 31 and 32 <= x <= 47
    out = overlay_heatmap(frames, heat, alpha=1.0)[0]  # alpha 1: the pure colormap
    expected = colorize(_naive_bilinear(heat[0].numpy(), (64, 48)), vmin=0.0, vmax=1.0)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 5  # at most one colormap step apart
    cold = colorize(np.array([0.0]), vmin=0, vmax=1)[0]
    assert np.array_equal(out[0, 0], cold)  # a far cell is exactly the coldest colour
    # the pixels coloured closest to the hottest colour are those nearest the hot cell's centre
    hot = colorize(np.array([1.0]), vmin=0, vmax=1)[0]
    dist = np.abs(out.astype(int) - hot).sum(-1)
    ys, xs = np.nonzero(dist == dist.min())
    assert ys.min() >= 16 and ys.max() <= 31 and xs.min() >= 32


def test_overlay_blends_with_alpha_and_scales_over_the_whole_clip():
    frames = np.full((2, 8, 8, 3), 200, np.uint8)
    heat = torch.zeros(2, 2, 2)
    heat[0] = 0.1  # a frame the model barely looks at
    heat[1, 0, 0] = 1.0
    out = overlay_heatmap(frames, heat, alpha=0.25)
    colours = colorize(np.array([0.1, 0.0]), vmin=0.0, vmax=1.0)  # joint scale: frame 0 is 10% of the clip max
    expected0 = np.floor(0.75 * 200 + 0.25 * colours[0].astype(np.float32) + 0.5)
    assert np.array_equal(out[0, 3, 3], expected0.astype(np.uint8))
    assert np.array_equal(out[1, 7, 7], np.floor(0.75 * 200 + 0.25 * colours[1] + 0.5).astype(np.uint8))
    with pytest.raises(ValueError, match="heat must be"):
        overlay_heatmap(frames, torch.zeros(3, 2, 2))


def test_frame_grid_places_each_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    grid = np.asarray(frame_grid(images, ncols=3, pad=2))
    assert grid.shape == (2 + 2 * (6 + 2), 2 + 3 * (7 + 2), 3)
    for i in range(5):
        r, c = divmod(i, 3)
        y, x = 2 + r * 8, 2 + c * 9
        assert np.array_equal(grid[y : y + 6, x : x + 7], images[i])
    assert (grid[2 + 8 : 2 + 8 + 6, 2 + 2 * 9 : 2 + 2 * 9 + 7] == 255).all()  # 6th slot is empty background
    labelled = frame_grid(images, ncols=5, col_labels=["a"] * 5, row_labels=["fused"])
    assert labelled.width > 5 * 9 and labelled.height > 6 + 4


# ---------------------------------------------------------------- overlay video


def test_heat_at_interpolates_linearly_between_samples():
    heat = torch.arange(3 * 2 * 2, dtype=torch.float32).view(3, 2, 2)
    idx = [2, 6, 14]
    assert np.allclose(heat_at(heat, idx, 0), heat[0])  # held before the first sample
    assert np.allclose(heat_at(heat, idx, 20), heat[2])  # and after the last
    assert np.allclose(heat_at(heat, idx, 6), heat[1])
    assert np.allclose(heat_at(heat, idx, 4), 0.5 * heat[0] + 0.5 * heat[1])
    assert np.allclose(heat_at(heat, idx, 8), 0.75 * heat[1] + 0.25 * heat[2])


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_video_streams_every_frame(tmp_path, suffix):
    frames = make_frames(12, (48, 63))  # odd width: H.264 needs even sizes
    path = write_video(tmp_path / f"v{suffix}", (f for f in frames), fps=25)
    decoded = _decode(path)
    assert len(decoded) == 12
    w = 62 if suffix == ".mp4" else 63
    assert decoded.shape[1:] == (48, w, 3)
    err = np.abs(decoded.astype(int) - frames[:, :, :w].astype(int)).mean()
    assert err < (6 if suffix == ".mp4" else 40)  # lossy codecs; gif is palettised
    with pytest.raises(ValueError, match="unsupported"):
        write_video(tmp_path / "v.webm", iter(frames), fps=25)


def _top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes in file order (each box: 4-byte big-endian size, 4-byte type)."""
    data, types, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        types.append(data[pos + 4:pos + 8].decode("latin-1"))
        if size == 1:  # 64-bit size follows the type
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8:
            break
        pos += size
    return types


def test_overlay_mp4_has_its_index_before_the_data(tmp_path):
    # +faststart: the moov box (the index) before mdat, so a browser plays the overlay before the download ends.
    path = write_video(tmp_path / "v.mp4", iter(make_frames(12, (48, 64))), fps=25)
    boxes = _top_level_boxes(path)
    assert "moov" in boxes and "mdat" in boxes, boxes
    assert boxes.index("moov") < boxes.index("mdat"), boxes


# ---------------------------------------------------------------- localisation metrics


def _grid_length(segments, lo=0.0, hi=20.0, step=1e-3) -> tuple[np.ndarray, float]:
    t = np.arange(lo, hi, step) + step / 2
    covered = np.zeros_like(t, dtype=bool)
    for s, e in segments:
        covered |= (t >= s) & (t < e)
    return covered, step


def test_temporal_iou_matches_a_brute_force_time_grid():
    rng = random.Random(0)
    for _ in range(30):
        segs = [(a, a + rng.uniform(0.2, 4)) for a in (rng.uniform(0, 14) for _ in range(rng.randint(0, 4)))]
        span = (rng.uniform(0, 10), 0.0)
        span = (span[0], span[0] + rng.uniform(0.5, 8))
        pred, _ = _grid_length(segs)
        true, _ = _grid_length([span])
        union = (pred | true).sum()
        expected = (pred & true).sum() / union if union else 0.0
        assert temporal_iou(segs, span) == pytest.approx(expected, abs=2e-3)
    assert segment_iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    assert segment_iou((0, 1), (2, 3)) == 0.0
    assert merge_segments([(3, 4), (0, 1), (0.5, 2), (2, 2.5)]) == [(0.0, 2.5), (3.0, 4.0)]
    assert temporal_iou([], (1, 2)) == 0.0


def test_charades_timepoints_and_frame_targets():
    times = charades_timepoints(50.0)
    assert len(times) == 25 and times[0] == 0 and times[1] == pytest.approx(2.0) and times[-1] == pytest.approx(48.0)
    target = frame_targets([(1, 4.0, 10.0), (0, 48.0, 60.0)], 50.0, num_classes=3)
    assert target.shape == (25, 3)
    assert target[:, 1].nonzero().flatten().tolist() == [2, 3, 4, 5]  # t = 4, 6, 8, 10 (inclusive ends)
    assert target[:, 0].nonzero().flatten().tolist() == [24]
    assert target[:, 2].sum() == 0




def test_localization_map_matches_the_official_per_frame_evaluation():
    gen = torch.Generator().manual_seed(0)
    scores = (torch.rand(6, 25, 5, generator=gen) * 4).round() / 4  # many ties, like real frame scores
    targets = (torch.rand(6, 25, 5, generator=gen) > 0.7).float()
    targets[..., 4] = 0  # a class with no positive is left out of the mean
    flat_s, flat_t = scores.reshape(-1, 5).numpy(), targets.reshape(-1, 5).numpy()
    expected = np.mean([charades_ap_loop(flat_s[:, c].tolist(), flat_t[:, c].astype(int).tolist()) for c in range(4)])
    got = localization_map(scores, targets)
    assert got["mAP"] == pytest.approx(100 * expected, abs=1e-6)
    assert got["classes_without_positives"] == 1


def test_pointing_game():
    heat = torch.zeros(7, 7)
    heat[2, 5] = 1.0  # cell centre at x = 5.5 / 7 = 0.786, y = 2.5 / 7 = 0.357
    assert pointing_game(heat, (0.7, 0.3, 0.9, 0.4))
    assert not pointing_game(heat, (0.0, 0.0, 0.5, 0.5))
    assert pointing_game(heat, (0.0, 0.0, 0.76, 0.5), tolerance=0.03)
    heats = torch.stack([heat, heat.flip(1)])  # second: centre x = 1.5 / 7
    assert pointing_accuracy(heats, [(0.7, 0.3, 0.9, 0.4), (0.7, 0.3, 0.9, 0.4)]) == 0.5


# ---------------------------------------------------------------- explain end to end


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("istpan_tiny", num_classes=3, input_size=64).eval()


def test_explain_writes_every_file(tmp_path, tiny_model):
    a = make_video(tmp_path / "in" / "clip (1)!.mp4", num_frames=30, size=(72, 96))
    b = make_video(tmp_path / "in" / "b.avi", num_frames=20, size=(80, 72), codec="mpeg4")
    broken = tmp_path / "in" / "broken.mp4"
    broken.write_bytes(b"not a video")
    out = tmp_path / "explain"
    entries = explain_videos(tiny_model, META, [a, broken, b], out, levels=True, topk=2)

    assert [e.get("error") is None for e in entries] == [True, False, True]
    assert "broken.mp4" in entries[1]["error"]
    for entry, total in ((entries[0], 30), (entries[2], 20)):
        assert entry["video_frames"] == total
        assert entry["frame_indices"] == segment_indices(total, 4).tolist()
        assert [t["class"] for t in entry["top"]] != [] and len(entry["top"]) == 2
        assert sum(entry["attention_mass"]) == pytest.approx(1.0, abs=1e-4)
        grid = Image.open(entry["grid"])
        assert grid.width > 4 * 64 and grid.height > 2 * 64  # 2 rows (frames, attention) x 4 frames
        levels = Image.open(entry["levels_grid"])
        assert levels.height > 4 * 64  # fused + 3 pyramid levels of istpan_tiny
        assert Image.open(entry["timeline"]).width > 100
        video = _decode(entry["video"])
        assert video.shape == (total, 64, 64, 3)
    six = explain_videos(tiny_model, META, [a], tmp_path / "k6", num_frames=6)[0]  # any K, as predict allows
    assert six["frame_indices"] == segment_indices(30, 6).tolist() and len(six["attention_mass"]) == 6
    html = (out / "index.html").read_text()
    for entry in (entries[0], entries[2]):
        for key in ("grid", "levels_grid", "video", "timeline"):
            assert f'"{quote(Path(entry[key]).relative_to(out).as_posix())}"' in html
    assert "broken.mp4" in html and "http" not in html  # nothing fetched from anywhere
    assert json.loads((out / "results.json").read_text())[0]["top"] == entries[0]["top"]


def test_explain_video_overlay_is_aligned_with_the_model_view(tmp_path, tiny_model):
    """The sampled frames of attention.mp4 show the model's own heat over the model's own crop."""
    path = make_video(tmp_path / "a.mp4", num_frames=24, size=(72, 96))
    entry = explain_videos(tiny_model, META, [path], tmp_path / "out")[0]
    pre = ModelDescription.from_dict(META, model=tiny_model).preprocessing
    views = pre.view(read_frames(path, entry["frame_indices"], short_side=80))
    with torch.no_grad():
        heat = attention_maps(tiny_model(pre.to_input(views)[None]))[0]
    expected = overlay_heatmap(views, heat).astype(int)  # (K, 64, 64, 3)
    video = _decode(entry["video"]).astype(int)
    for k, t in enumerate(entry["frame_indices"]):
        same = np.abs(video[t] - expected[k]).mean()
        other = np.abs(video[t] - expected[(k + 2) % 4]).mean()
        assert same < 6 and same < other / 2
    assert torch.allclose(torch.tensor(entry["attention_mass"]), heat.sum((1, 2)), atol=1e-5)


def test_explain_tsn_model_has_frames_but_no_heatmaps(tmp_path):
    model = create_model("tsn_tiny", num_classes=3, input_size=64).eval()
    path = make_video(tmp_path / "a.mp4", num_frames=12, size=(64, 64))
    entry = explain_videos(model, META, [path], tmp_path / "out")[0]
    assert entry.get("error") is None and entry["attention_mass"] is None and entry["video"] is None
    assert Image.open(entry["grid"]).width >= 4 * 64
    assert "no attention" in (tmp_path / "out" / "index.html").read_text()


def test_explain_explains_the_prediction_of_istpan_predict(tmp_path, tiny_model):
    """Same frames, same preprocessing, same scores as predict_videos (what the CLI prints), and both equal the model
    run by hand on the K segment-centre frames (references.naive_window_probs)."""
    import copy

    model = copy.deepcopy(tiny_model)
    with torch.no_grad():  # scores far from uniform, so a wrong frame or crop shows
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    meta = {**META, "preprocessing": {**META["preprocessing"], "short_side": 73}}  # decoded at the crop's resize
    assert ModelDescription.from_dict(meta).preprocessing.resize == 73  # so the reference needs no second resize
    paths = [make_video(tmp_path / "a.mp4", num_frames=37, size=(90, 120)),
             make_video(tmp_path / "b.avi", num_frames=9, size=(96, 80), codec="mpeg4")]
    explained = explain_videos(model, meta, paths, tmp_path / "out", topk=3)
    predicted = predict_videos(model, meta, paths, topk=3)
    pre = meta["preprocessing"]
    for e, p, path in zip(explained, predicted, paths, strict=True):
        ref = naive_window_probs(model, naive_decode(path, 73), k=4, input_size=64, mean=pre["mean"], std=pre["std"])
        top = ref.topk(3)
        assert top.values[0] - top.values[1] > 1e-3  # a clear first class
        for got in (e["top"], p["top"]):
            assert [t["index"] for t in got] == top.indices.tolist()
            assert [t["score"] for t in got] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_box_to_view_follows_resize_and_centre_crop(tmp_path):
    """A white box drawn in a non-square video lands where box_to_view says, in the model's centre crop."""
    h, w = 90, 160
    box = (0.55, 0.3, 0.75, 0.7)  # normalised (x0, y0, x1, y1)
    frames = np.zeros((4, h, w, 3), np.uint8)
    frames[:, round(0.3 * h) : round(0.7 * h), round(0.55 * w) : round(0.75 * w)] = 255
    path = make_video(tmp_path / "box.mp4", frames)
    pre = ModelDescription.from_dict(META).preprocessing  # short side 80 -> resize 73 -> crop 64
    view = pre.view(read_frames(path, [0, 1], short_side=80))[0].numpy()  # (64, 64, 3)
    ys, xs = np.nonzero(view.mean(-1) > 128)
    x0, y0, x1, y1 = pre.box_to_view(box, h, w)
    s = pre.input_size
    assert abs(xs.min() - x0 * s) <= 1.5 and abs(xs.max() + 1 - x1 * s) <= 1.5
    assert abs(ys.min() - y0 * s) <= 1.5 and abs(ys.max() + 1 - y1 * s) <= 1.5
    assert pre.box_to_view((0.0, 0.0, 0.05, 0.1), h, w) is None  # cropped away at the left


def test_explain_real_hmdb51_clip(tmp_path, tiny_model, clips_dir):
    """A real DivX AVI with packed B-frames and `!`, `+` in its name: 89 frames decode (the container claims 90)."""
    clip = next(clips_dir.glob("Golf_Tips*.avi"))
    entry = explain_videos(tiny_model, META, [clip], tmp_path / "out")[0]
    assert entry.get("error") is None and entry["video_frames"] == 89
    assert _decode(entry["video"]).shape == (89, 64, 64, 3)
    assert Image.open(entry["grid"]).width > 4 * 64


def test_explain_num_segments_override_matches_predict_for_dense_checkpoints(tmp_path, tiny_model):
    """--num-frames is the K of a dense checkpoint too: explain must sample what predict_videos samples."""
    meta = {**META, "preprocessing": {**META["preprocessing"], "sampling": "dense", "clip_len": 8}}
    path = make_video(tmp_path / "a.mp4", num_frames=40, size=(72, 96))
    entry = explain_videos(tiny_model, meta, [path], tmp_path / "out", topk=3, num_frames=5)[0]
    predicted = predict_videos(tiny_model, meta, [path], topk=3, num_frames=5)[0]
    assert entry["frame_indices"] == sample_indices(40, method="dense", num_frames=5).tolist()
    assert [t["score"] for t in entry["top"]] == pytest.approx([t["score"] for t in predicted["top"]], abs=1e-6)
