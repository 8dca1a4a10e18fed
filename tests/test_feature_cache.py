"""The model split that streaming rests on: per-frame features once, the K-frame head over any K cached frames."""

from __future__ import annotations

import pytest
import torch

from istpan.models import create_model, list_models
from istpan.models.pyramid_attention import frame_times

# Every family of the registry on the tiny backbone, the order-aware options, and the benched MobileNetV2.
CASES = [
    *[(name, {}) for name in list_models() if name.endswith("_tiny") and "convnext" not in name],
    ("istpan_tiny", {"time_encoding": "fourier", "head": "glimpse"}),
    ("istpan_tiny", {"time_encoding": "fourier", "fuse": "learned", "reduce": "bilinear"}),
    ("istpan_tiny", {"head": "glimpse", "pool_weights": "l2", "reduce": "strided"}),
    ("istpan_mobilenetv2", {}),
    ("tsn_mobilenetv2", {}),
]


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in CASES])
def test_video_forward_equals_head_over_frames_one_at_a_time(name, options):
    """model(video) == forward_clip(stack of frame_features(frame_k) computed one frame at a time), to 1e-5."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, input_size=64, **options).eval()
    video = torch.randn(2, 4, 3, 64, 64)  # (B, K, 3, H, W)
    with torch.no_grad():
        ref = model(video)
        cached = torch.stack([torch.cat([model.frame_features(video[b, k][None]) for k in range(4)])
                              for b in range(2)])  # (B, K, ΣC_j, h, w), every frame through the backbone alone
        out = model.forward_clip(cached)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=0)
    if ref.attn is not None:
        torch.testing.assert_close(out.attn, ref.attn, atol=1e-5, rtol=0)
        assert cached.shape[2] == sum(model.frame_channels)
    else:
        assert cached.shape[2:] == (model.frame_channels[0], 1, 1)


def test_frame_times_default_and_explicit_agree_and_matter():
    """forward_clip's default times are the segment centres (k + 0.5) / K; other times change an order-aware model."""
    torch.manual_seed(1)
    model = create_model("istpan_tiny", num_classes=4, input_size=64, time_encoding="fourier", head="glimpse").eval()
    torch.nn.init.normal_(model.attention.time_proj.weight)  # trained models prefer times; the init is neutral
    with torch.no_grad():
        feats = model.frame_features(torch.randn(3, 3, 64, 64))[None]  # (1, 3, C, h, w)
        default = model.forward_clip(feats).logits
        centres = model.forward_clip(feats, times=torch.tensor([1 / 6, 3 / 6, 5 / 6])).logits
        shifted = model.forward_clip(feats, times=torch.tensor([0.25, 0.5, 0.75])).logits
    torch.testing.assert_close(frame_times(torch.zeros(3)), torch.tensor([1 / 6, 3 / 6, 5 / 6]))
    torch.testing.assert_close(default, centres, atol=1e-6, rtol=0)
    assert (default - shifted).abs().max() > 1e-4
