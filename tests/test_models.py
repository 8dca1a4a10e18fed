"""Every registered model: output shapes, rebuild from its options, TSN consensus, export-traceability."""

from __future__ import annotations

import math

import pytest
import torch

from istpan.errors import UserError
from istpan.models import ModelOutput, create_model, list_models


def test_registry_has_every_family_for_every_backbone():
    names = set(list_models())
    for bb in ("tiny", "mobilenetv2", "bninception", "resnet50", "mobilenetv2_100", "efficientnet_b0", "convnext_tiny"):
        assert {f"istpan_{bb}", f"istpan_single_{bb}", f"tsn_{bb}"} <= names


@pytest.mark.parametrize("name", list_models())
def test_output_shapes(name):
    """One small forward (64 px, K = 2) per registered model, and every backbone stage (all families share the
    multi-scale interface) against the channels and strides its feature_info declares before any forward."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_size=64).eval()
    video = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        out = model(video)
        stages = model.backbone(video[0])  # every family shares the multi-scale backbone interface
    assert isinstance(out, ModelOutput) and out.logits.shape == (1, 3)
    assert model.model_name == name and model.num_classes == 3 and model.multi_label is False
    assert model.pretrained_cfg["input_size"] == 64 and len(model.pretrained_cfg["mean"]) == 3
    assert len(stages) == len(model.backbone.feature_info) >= 3  # the pyramid needs N = 3 scales to choose from
    for f, info in zip(stages, model.backbone.feature_info):
        assert f.shape == (2, info.num_chs, math.ceil(64 / info.reduction), math.ceil(64 / info.reduction))
    top = model.backbone.feature_info[-1]
    h = w = math.ceil(64 / top.reduction)
    if name.startswith("tsn_"):
        assert out.attn is None and out.scale_attn == [] and out.features is None
    else:
        d = model.model_options["d"]
        assert d == h * w  # default: one glimpse per top-map position at input_size
        assert out.attn.shape == (1, d, 2, h, w)
        n = 1 if name.startswith("istpan_single_") else 3
        assert len(out.scale_attn) == n and all(s.shape == out.attn.shape for s in out.scale_attn)
        assert out.features.shape == (1, 2 * h * w, top.num_chs)


@pytest.mark.parametrize("name", ["istpan_tiny", "istpan_single_mobilenetv2", "tsn_tiny"])
def test_model_options_rebuild_the_model(name):
    model = create_model(name, num_classes=3, input_size=96, dropout=0.1)
    rebuilt = create_model(name, num_classes=3, **model.model_options)
    assert rebuilt.model_options == model.model_options
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_options_change_the_layer():
    model = create_model("istpan_tiny", num_classes=2, d=5, num_scales=2, fuse="learned", reduce="max")
    layer = model.attention
    assert [p.weight.shape for p in layer.proj] == [(5, 64), (5, 128)]
    assert layer.fuse_logits.shape == (2,) and layer.reduce == "max"
    out = model.eval()(torch.randn(2, 3, 3, 112, 112))
    assert out.attn.shape == (2, 5, 3, 7, 7)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("istpan_tinny", {}, "unknown model 'istpan_tinny'; did you mean istpan_tiny"),
        ("istpan_tiny", {"fuse": "product"}, "fuse='product' is not one of sum, mean, max, learned"),
        ("istpan_tiny", {"num_scales": 5}, r"num_scales must be in 1\.\.4"),
        ("istpan_single_tiny", {"num_scales": 2}, "single-scale model takes num_scales=1"),
        ("tsn_tiny", {"fuse": "sum", "heads": 2}, r"unknown option\(s\) heads"),
    ],
)
def test_bad_names_and_options_are_user_errors(name, options, match):
    with pytest.raises(UserError, match=match):
        create_model(name, num_classes=3, **options)


def test_tsn_ignores_attention_options_so_one_config_serves_both():
    model = create_model("tsn_tiny", num_classes=3, fuse="learned", num_scales=2, dropout=0.3)
    assert model.model_options == {"input_size": 112, "dropout": 0.3, "multi_label": False, "modality": "rgb",
                                   "flow_length": 5}
    assert model.attention is None


def test_tsn_is_average_consensus_of_per_frame_scores():
    torch.manual_seed(1)
    model = create_model("tsn_tiny", num_classes=4, input_size=64).eval()
    video = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        logits = model(video).logits
        per_frame = [
            [model.head(model.backbone(video[b, t : t + 1])[-1].mean((-2, -1)))[0] for t in range(3)] for b in range(2)
        ]
    expected = torch.stack([sum(scores) / 3 for scores in per_frame])
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-7)


def test_multi_label_flag():
    model = create_model("istpan_tiny", num_classes=7, multi_label=True)
    assert model.multi_label is True and model.model_options["multi_label"] is True


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video).logits


@pytest.mark.parametrize("name", ["istpan_tiny", "tsn_tiny"])
def test_jit_trace_generalises_over_k(name):
    torch.manual_seed(2)
    model = _LogitsOnly(create_model(name, num_classes=3, input_size=64)).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 3, 3, 64, 64), check_trace=False)
        for shape in [(1, 3, 3, 64, 64), (2, 5, 3, 64, 64), (1, 1, 3, 64, 64)]:
            video = torch.randn(shape)
            torch.testing.assert_close(traced(video), model(video), rtol=1e-4, atol=1e-6)
