"""Backbones: declared stage channels/strides match what they compute; local checkpoints load strictly or fail
with one clear error."""

from __future__ import annotations

import math

import pytest
import torch

from istpan.errors import UserError
from istpan.models.backbones import build_backbone
from istpan.models.bninception import BNInception


@pytest.mark.parametrize("name", ["tiny", "bninception"])
def test_feature_info_matches_forward(name):
    """Our own backbones (the others are checked stage by stage in test_models.py::test_output_shapes)."""
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 96, 96))
    assert len(feats) == len(backbone.feature_info) == 4
    for f, info in zip(feats, backbone.feature_info):
        assert f.shape == (2, info.num_chs, math.ceil(96 / info.reduction), math.ceil(96 / info.reduction))
    assert [i.reduction for i in backbone.feature_info] == sorted(i.reduction for i in backbone.feature_info)


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(UserError, match="unknown backbone 'vgg16'"):
        build_backbone("vgg16")


def test_shared_mobilenet_checkpoint_loads_strictly_and_changes_features(mobilenet_v2_weights):
    import torchvision

    torch.manual_seed(0)
    frames = torch.randn(2, 3, 64, 64)
    random_init = build_backbone("mobilenetv2").eval()
    loaded = build_backbone("mobilenetv2", pretrained=mobilenet_v2_weights).eval()
    reference = torchvision.models.mobilenet_v2(weights=None)
    reference.load_state_dict(torch.load(mobilenet_v2_weights, weights_only=True), strict=True)
    reference.eval()
    with torch.no_grad():
        top = loaded(frames)[-1]
        assert not torch.allclose(top, random_init(frames)[-1])
        torch.testing.assert_close(top, reference.features(frames))


def test_corrupt_checkpoint_gives_one_clear_error(tmp_path, mobilenet_v2_weights):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(mobilenet_v2_weights.read_bytes()[:100_000])  # a truncated download
    with pytest.raises(UserError, match=r"corrupt\.pth: not a readable PyTorch checkpoint") as err:
        build_backbone("mobilenetv2", pretrained=corrupt)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="not found"):
        build_backbone("mobilenetv2", pretrained=tmp_path / "missing.pth")


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    path = tmp_path / "tiny_as_mobilenet.pth"
    torch.save(build_backbone("tiny").state_dict(), path)
    with pytest.raises(UserError, match=r"tiny_as_mobilenet\.pth: does not match MobileNetV2 \(missing keys: "
                                        r"classifier\.1\.bias.*unexpected keys: stages\.0") as err:
        build_backbone("mobilenetv2", pretrained=path)
    assert "more" in str(err.value)  # long lists are cut after the first few keys

    sd = build_backbone("tiny").state_dict()
    sd["stages.0.0.0.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save({"state_dict": sd}, path)
    with pytest.raises(UserError, match=r"shape mismatch: stages\.0\.0\.0\.weight \(8, 3, 3, 3\) vs \(16, 3, 3, 3\)"):
        build_backbone("tiny", pretrained=path)


def test_timm_checkpoint_round_trip(tmp_path):
    """A full timm state dict (classifier included) loads into the features-only backbone and reproduces it."""
    import timm

    torch.manual_seed(0)
    full = timm.create_model("efficientnet_b0", pretrained=False).eval()
    path = tmp_path / "effnet.pth"
    torch.save(full.state_dict(), path)
    backbone = build_backbone("efficientnet_b0", pretrained=path).eval()
    frames = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full.forward_intermediates(frames, indices=5, intermediates_only=True)[-1]
        torch.testing.assert_close(backbone(frames)[-1], expected)
    torch.save({"conv_stem.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match=r"effnet\.pth: does not match EfficientNet"):
        build_backbone("efficientnet_b0", pretrained=path)


def test_bninception_layout_and_round_trip(tmp_path):
    torch.manual_seed(0)
    net = BNInception()
    keys = set(net.state_dict())
    for key in ("conv1_7x7_s2.weight", "conv1_7x7_s2.bias", "conv1_7x7_s2_bn.running_var",
                "inception_3c_double_3x3_2.weight", "inception_5b_pool_proj_bn.weight"):
        assert key in keys
    assert "inception_3c_1x1.weight" not in keys and "inception_4e_pool_proj.weight" not in keys
    state = dict(net.state_dict())
    state["last_linear.weight"] = torch.zeros(1000, 1024)  # the ported checkpoints' classifier is ignored
    path = tmp_path / "bninception.pth"
    torch.save(state, path)
    loaded = BNInception(pretrained=path).eval()
    frames = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames)[-1], net.eval()(frames)[-1])
