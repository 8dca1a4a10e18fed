"""Transforms: one set of random parameters per clip, crops against naive slicing, TSN's crop grid, normalisation."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from istpan.data.transforms import MultiCrop, MultiScaleCrop, test_transform, train_transform

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Naive reference: to [0, 1], subtract mean and divide by std per channel."""
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x.float() / 255 - mean) / std


def clip_of_identical_frames(k=6, h=72, w=96) -> torch.Tensor:
    frame = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return frame.expand(k, -1, -1, -1).clone()  # (K, C, H, W)


@pytest.mark.parametrize("crop", ["multiscale", "resized", "center"])
def test_train_transform_uses_one_set_of_params_for_all_frames(crop):
    clip = clip_of_identical_frames()
    t = train_transform(input_size=48, mean=MEAN, std=STD, crop=crop)
    outs = []
    for seed in range(10):
        torch.manual_seed(seed)
        out = t(clip)
        assert out.shape == (6, 3, 48, 48) and out.dtype == torch.float32
        assert all(torch.equal(out[0], out[i]) for i in range(1, 6))  # same crop and flip on every frame
        outs.append(out[0])
    if crop != "center":
        assert any(not torch.equal(outs[0], o) for o in outs[1:])  # but different params across clips


def tsn_crop_candidates(h: int, w: int, size: int) -> set[tuple[int, int, int, int]]:
    """TSN's GroupMultiScaleCrop._sample_crop_size with fix_crop / more_fix_crop, written out independently."""
    base = min(h, w)
    sizes = [int(base * s) for s in (1, 0.875, 0.75, 0.66)]
    crop_h = [size if abs(x - size) < 3 else x for x in sizes]
    crop_w = [size if abs(x - size) < 3 else x for x in sizes]
    out = set()
    for i, ch in enumerate(crop_h):
        for j, cw in enumerate(crop_w):
            if abs(i - j) > 1:
                continue
            ws, hs = (w - cw) // 4, (h - ch) // 4
            offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs), (0, 2 * hs),
                       (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0), (ws, hs), (3 * ws, hs), (ws, 3 * hs),
                       (3 * ws, 3 * hs)]
            out |= {(top, left, ch, cw) for left, top in offsets}
    return out


def test_multiscale_crop_draws_exactly_tsn_candidates():
    h, w, size = 240, 320, 224
    allowed = tsn_crop_candidates(h, w, size)
    t = MultiScaleCrop(size)
    torch.manual_seed(0)
    seen = set()
    for _ in range(3000):
        p = t.make_params([torch.zeros(1, 3, h, w)])
        seen.add((p["top"], p["left"], p["height"], p["width"]))
    assert seen == allowed


def test_multiscale_crop_pixels_match_naive_slicing():
    clip = torch.randint(0, 256, (4, 3, 60, 80), dtype=torch.uint8)
    t = MultiScaleCrop(32)
    torch.manual_seed(3)
    p = t.make_params([clip])
    out = t.transform(clip, p)
    region = clip[..., p["top"] : p["top"] + p["height"], p["left"] : p["left"] + p["width"]]
    assert torch.equal(out, F.resize(region, [32, 32], antialias=True))


def test_flip_flips_every_frame_together():
    clip = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8)
    t = train_transform(input_size=48, mean=MEAN, std=STD, crop="center")
    plain, flipped = normalise(clip), normalise(clip.flip(-1))
    kinds = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = t(clip)
        if torch.allclose(out, plain, atol=1e-5):
            kinds.add("plain")
        elif torch.allclose(out, flipped, atol=1e-5):
            kinds.add("flipped")
        else:
            raise AssertionError("output is neither the clip nor its mirror image")
    assert kinds == {"plain", "flipped"}
    no_flip = train_transform(input_size=48, mean=MEAN, std=STD, crop="center", flip=False)
    assert all(torch.allclose(no_flip(clip), plain, atol=1e-5) for _ in range(10))


def test_test_transform_centre_crop_and_normalise():
    clip = torch.randint(0, 256, (3, 3, 64, 80), dtype=torch.uint8)
    out = test_transform(input_size=48, resize=64, mean=MEAN, std=STD)(clip)
    assert out.shape == (3, 3, 48, 48)
    assert torch.allclose(out, normalise(clip[..., 8:56, 16:64]), atol=1e-5)  # resize is a no-op at 64


def test_three_crops_cover_the_long_side():
    wide = torch.randint(0, 256, (2, 3, 32, 80), dtype=torch.uint8)
    views = MultiCrop(32, 3)(wide)
    assert views.shape == (3, 2, 3, 32, 32)
    for v, left in zip(views, (0, 24, 48)):
        assert torch.equal(v, wide[..., :, left : left + 32])
    tall = wide.transpose(-1, -2)  # (2, 3, 80, 32)
    for v, top in zip(MultiCrop(32, 3)(tall), (0, 24, 48)):
        assert torch.equal(v, tall[..., top : top + 32, :])


def test_ten_crop_is_five_crops_and_their_mirrors():
    clip = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    out = test_transform(input_size=32, resize=40, mean=MEAN, std=STD, crops=10)(clip)
    assert out.shape == (10, 2, 3, 32, 32)
    # The mirrored frame's (top-left, top-right, bottom-left, bottom-right, centre) are the mirror images of the
    # original's (top-right, top-left, bottom-right, bottom-left, centre).
    assert torch.allclose(out[5:], out[[1, 0, 3, 2, 4]].flip(-1), atol=1e-6)
    assert torch.allclose(out[0], normalise(clip[..., :32, :32]), atol=1e-5)  # top-left corner


def test_bad_options():
    with pytest.raises(ValueError, match="crops must be"):
        MultiCrop(32, 4)
    with pytest.raises(ValueError, match="unknown train crop"):
        train_transform(input_size=32, crop="random")
