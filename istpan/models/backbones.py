"""Backbones with one multi-scale interface: frames in, the maps of every stage out, shallow -> deep.

Every backbone tells its stages' channels and strides (`feature_info`) before any forward, so the IST-PAN layer can
size its per-scale projections W_j at construction time (timm's `features_only` convention). All of them run on
(B·K) frames; they never see the video axis.

- `tiny`: a 4-stage CNN of our own (16-128 channels, stride 16) for synthetic data and fast tests on CPU.
- `mobilenetv2`: torchvision's MobileNetV2 (loads torchvision's ImageNet checkpoint strictly).
- `bninception`: TSN's BN-Inception (istpan/models/bninception.py; in no library).
- `resnet50`, `mobilenetv2_100`, `efficientnet_b0`, `convnext_tiny`: timm `features_only`.

`pretrained` is a local file or `imagenet` / `torchvision:...` / `timm:...` (istpan/models/weights.py says where
those come from); random init when None.

`in_chans != 3` (optical-flow stacks of 2L channels) is handled here, once, for every family: the 3-channel backbone
is built and its ImageNet weights loaded as usual, then the first convolution is replaced by one with `in_chans`
inputs. With pretrained weights it gets TSN's cross-modality initialisation (Wang et al. 2016): the RGB filters
averaged over their 3 input channels and that mean replicated over the `in_chans` channels. Without, it is freshly
initialised (PyTorch's default), since averaging random filters only loses their diversity.

Why not timm's `in_chans=`: timm (`timm.models._manipulate.adapt_input_conv`) repeats the R, G, B filters cyclically
over the new channels and scales them by 3/in_chans, so flow channel x_1 would get the red filter, y_1 the green
one, x_2 the blue one, ...: an arbitrary difference between channels that mean the same thing. TSN's average
treats every flow channel alike, is what two-stream results are reported with, and works for the torchvision and
BN-Inception backbones too, which have no `in_chans` argument.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from istpan.errors import UserError
from istpan.models.features import Backbone, FeatureInfo
from istpan.models.weights import (
    PRETRAINED_FORMS,
    is_hub_weights,
    load_state_dict_file,
    load_strict,
    timm_missing_weights_error,
    timm_pretrained_tag,
    torchvision_weights_file,
)

__all__ = ["BACKBONES", "TIMM_BACKBONES", "Backbone", "FeatureInfo", "adapt_input_conv", "build_backbone",
           "first_conv"]

TIMM_BACKBONES = ("resnet50", "mobilenetv2_100", "efficientnet_b0", "convnext_tiny")
BACKBONES = ("tiny", "mobilenetv2", "bninception", *TIMM_BACKBONES)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyBackbone(Backbone):
    """Four stages of two 3x3 conv-BN-ReLU each (the first strided), channels 16/32/64/128, strides 2/4/8/16.

    About 40 MMAC per 112x112 frame, so a batch of videos trains in well under a second on 2 CPU cores. At the default
    112-pixel input the top map is 7x7, like ResNet's at 224, so the attention sees the same number of positions.
    """

    default_input_size = 112

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        stages, cin = [], 3
        for cout in channels:
            stages.append(nn.Sequential(_conv_bn_relu(cin, cout, stride=2), _conv_bn_relu(cout, cout)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.feature_info = [FeatureInfo(c, 2 ** (i + 1)) for i, c in enumerate(channels)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class TorchvisionMobileNetV2(Backbone):
    """torchvision's MobileNetV2 `features`, cut at the five stride changes (16/24/32/96/1280 channels, s2-s32).

    The checkpoint is loaded into torchvision's *full* model strictly (classifier included) and only then are the
    features kept, so a file of another architecture can never half-load.
    """

    _STAGE_ENDS = (1, 3, 6, 13, 18)  # index in `features` after which the stride changes (timm's out_indices)

    def __init__(self, pretrained: str | Path | None = None) -> None:
        super().__init__()
        import torchvision

        full = torchvision.models.mobilenet_v2(weights=None)
        if is_hub_weights(pretrained):  # torchvision's own weights file, from the torch hub cache
            pretrained = torchvision_weights_file(str(pretrained), enum_name="MobileNet_V2_Weights")
        if pretrained:
            load_strict(full, load_state_dict_file(pretrained), path=pretrained)
        self.features = full.features
        self.feature_info = [FeatureInfo(c, s) for c, s in zip((16, 24, 32, 96, 1280), (2, 4, 8, 16, 32))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._STAGE_ENDS:
                feats.append(x)
        return feats


class TimmBackbone(Backbone):
    """Any timm model with `features_only=True`. Hub weights (`imagenet`, `timm:<name>.<tag>`) come from timm's own
    `pretrained=True` path and cache (the Hugging Face Hub); a local file is first checked strictly against timm's
    full model (so mismatches name their keys) and then handed to timm's own loader, which knows how to carry
    full-model weights into its feature wrappers."""

    def __init__(self, name: str, pretrained: str | Path | None = None) -> None:
        super().__init__()
        import timm

        if is_hub_weights(pretrained):
            if str(pretrained).startswith("torchvision:"):
                raise UserError(f"model.pretrained={pretrained}: the {name} backbone is timm's; use imagenet or "
                                f"timm:{name}.<tag> (e.g. timm:resnet50.tv_in1k for torchvision's ResNet-50)")
            tag = timm_pretrained_tag(str(pretrained), name)
            try:
                self.model = timm.create_model(tag, pretrained=True, features_only=True)
            except Exception as err:  # offline with a cold cache, no network, a broken download
                raise timm_missing_weights_error(str(pretrained), tag, err) from err
            cfg = timm.models.get_pretrained_cfg(tag)
            self.mean, self.std = tuple(cfg.mean), tuple(cfg.std)  # e.g. 0.5 for efficientnet_b0.ra4_e3600_r224_in1k
            info = self.model.feature_info
            self.feature_info = [FeatureInfo(c, r) for c, r in zip(info.channels(), info.reduction())]
            return
        overlay = {}
        if pretrained:
            full = timm.create_model(name, pretrained=False)
            load_strict(full, load_state_dict_file(pretrained), path=pretrained)
            overlay = dict(pretrained_cfg_overlay=dict(file=str(pretrained)))
            del full
        self.model = timm.create_model(name, pretrained=bool(pretrained), features_only=True, **overlay)
        info = self.model.feature_info
        self.feature_info = [FeatureInfo(c, r) for c, r in zip(info.channels(), info.reduction())]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def first_conv(module: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent, attribute name, conv) of the first Conv2d in registration order: every backbone here registers its
    stem first, so that is the convolution that sees the input frames."""
    for parent in module.modules():
        for attr, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                return parent, attr, child
    raise ValueError(f"{type(module).__name__} has no Conv2d")


def adapt_input_conv(backbone: Backbone, in_chans: int, *, pretrained: bool) -> Backbone:
    """Make the backbone take `in_chans` input channels (see the module doc): TSN's cross-modality initialisation
    when `pretrained`, a fresh convolution otherwise. In place; returns the backbone."""
    if in_chans == backbone.in_chans:
        return backbone
    parent, attr, conv = first_conv(backbone)
    if conv.in_channels != backbone.in_chans or conv.groups != 1:
        raise ValueError(f"{type(backbone).__name__}: first conv {attr} takes {conv.in_channels} channels")
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    if pretrained:
        with torch.no_grad():
            mean = conv.weight.mean(dim=1, keepdim=True)  # (C_out, 1, kh, kw): the filters averaged over R, G, B
            new.weight.copy_(mean.expand(-1, in_chans, -1, -1))  # (C_out, in_chans, kh, kw)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    setattr(parent, attr, new)
    backbone.in_chans = in_chans
    return backbone


def build_backbone(name: str, *, pretrained: str | Path | None = None, in_chans: int = 3) -> Backbone:
    """Backbone by short name (see `BACKBONES`); `pretrained` as in the module doc (None: random init);
    `in_chans` input channels per frame (3 for RGB, 2L for a flow stack; see the module doc)."""
    if in_chans < 1:
        raise UserError(f"in_chans must be >= 1, got {in_chans}")
    backbone = _build_rgb(name, pretrained=pretrained)
    return adapt_input_conv(backbone, in_chans, pretrained=bool(pretrained))


def _build_rgb(name: str, *, pretrained: str | Path | None) -> Backbone:
    if is_hub_weights(pretrained) and name in ("tiny", "bninception"):
        raise UserError(f"model.pretrained={pretrained}: neither torchvision nor timm has weights for the {name} "
                        f"backbone; give a local file (model.pretrained takes {PRETRAINED_FORMS})")
    if name == "tiny":
        backbone: Backbone = TinyBackbone()
        if pretrained:
            load_strict(backbone, load_state_dict_file(pretrained), path=pretrained)
        return backbone
    if name == "mobilenetv2":
        return TorchvisionMobileNetV2(pretrained)
    if name == "bninception":
        from istpan.models.bninception import BNInception

        return BNInception(pretrained)
    if name in TIMM_BACKBONES:
        return TimmBackbone(name, pretrained)
    raise UserError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})")
