"""BN-Inception (Ioffe & Szegedy, 2015), the backbone of TSN, written out because no maintained library has it.

The parameter names are the flat Caffe-derived ones of the TSN / `pretrainedmodels` (Cadene) ports, e.g.
`conv1_7x7_s2.weight`, `inception_3a_double_3x3_1_bn.running_mean`, so converted TSN/Kinetics checkpoints load
strictly (their `last_linear.*` / `fc.*` classifier is ignored). Convs keep Caffe's biases. docs/models.md lists the
full layout. Input: RGB normalised with `pretrained_cfg` (converted Caffe weights expect BGR·255 minus the mean,
so such a checkpoint needs its first conv's channels flipped and scaled; see docs/models.md).

Stages returned (224-pixel input): conv2 (192, s4), inception_3b (320, s8), inception_4d (608, s16),
inception_5b (1024, s32).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from istpan.models.features import Backbone, FeatureInfo
from istpan.models.weights import load_state_dict_file, load_strict

__all__ = ["INCEPTION_BLOCKS", "BNInception"]

# name: (in, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool kind, pool proj); a strided block ("stride 2")
# has no 1x1 and no projection: its max-pool branch passes the input through.
INCEPTION_BLOCKS: dict[str, tuple[int, int, int, int, int, int, str, int]] = {
    "3a": (192, 64, 64, 64, 64, 96, "avg", 32),
    "3b": (256, 64, 64, 96, 64, 96, "avg", 64),
    "3c": (320, 0, 128, 160, 64, 96, "stride2", 0),
    "4a": (576, 224, 64, 96, 96, 128, "avg", 128),
    "4b": (576, 192, 96, 128, 96, 128, "avg", 128),
    "4c": (576, 160, 128, 160, 128, 160, "avg", 128),
    "4d": (608, 96, 128, 192, 160, 192, "avg", 128),
    "4e": (608, 0, 128, 192, 192, 256, "stride2", 0),
    "5a": (1056, 352, 192, 320, 160, 224, "avg", 128),
    "5b": (1024, 352, 192, 320, 192, 224, "max", 128),
}
_STAGE_ENDS = ("conv2", "3b", "4d", "5b")


class BNInception(Backbone):
    """BN-Inception trunk with flat Caffe-style module names; `forward` returns the four stage maps."""

    def __init__(self, pretrained: str | Path | None = None) -> None:
        super().__init__()
        self._unit("conv1_7x7_s2", 3, 64, 7, stride=2)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._unit("conv2_3x3_reduce", 64, 64, 1)
        self._unit("conv2_3x3", 64, 192, 3)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for block, (cin, c1, r3, c3, rd, cd, pool, proj) in INCEPTION_BLOCKS.items():
            p = f"inception_{block}"
            stride = 2 if pool == "stride2" else 1
            if c1:
                self._unit(f"{p}_1x1", cin, c1, 1)
            self._unit(f"{p}_3x3_reduce", cin, r3, 1)
            self._unit(f"{p}_3x3", r3, c3, 3, stride=stride)
            self._unit(f"{p}_double_3x3_reduce", cin, rd, 1)
            self._unit(f"{p}_double_3x3_1", rd, cd, 3)
            self._unit(f"{p}_double_3x3_2", cd, cd, 3, stride=stride)
            if proj:
                self._unit(f"{p}_pool_proj", cin, proj, 1)
        self.feature_info = [FeatureInfo(192, 4), FeatureInfo(320, 8), FeatureInfo(608, 16), FeatureInfo(1024, 32)]
        if pretrained:
            state = load_state_dict_file(pretrained)
            load_strict(self, state, path=pretrained, ignore_prefixes=("last_linear.", "fc."))

    def _unit(self, name: str, cin: int, cout: int, k: int, *, stride: int = 1) -> None:
        """conv `name` + BatchNorm `name_bn` (+ ReLU in forward), registered flat as in the Caffe port."""
        self.add_module(name, nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))
        self.add_module(f"{name}_bn", nn.BatchNorm2d(cout))

    def _run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

    def _inception(self, block: str, x: torch.Tensor) -> torch.Tensor:
        p, (_, c1, _, _, _, _, pool, _) = f"inception_{block}", INCEPTION_BLOCKS[block]
        branches = [self._run(f"{p}_1x1", x)] if c1 else []
        branches.append(self._run(f"{p}_3x3", self._run(f"{p}_3x3_reduce", x)))
        double = self._run(f"{p}_double_3x3_reduce", x)
        branches.append(self._run(f"{p}_double_3x3_2", self._run(f"{p}_double_3x3_1", double)))
        if pool == "stride2":
            branches.append(nn.functional.max_pool2d(x, 3, stride=2, ceil_mode=True))
        else:
            pooled = (
                nn.functional.avg_pool2d(x, 3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
                if pool == "avg"
                else nn.functional.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
            )
            branches.append(self._run(f"{p}_pool_proj", pooled))
        return torch.cat(branches, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pool1_3x3_s2(self._run("conv1_7x7_s2", x))
        x = self._run("conv2_3x3", self._run("conv2_3x3_reduce", x))  # (N, 192, H/4, W/4)
        feats = [x]
        x = self.pool2_3x3_s2(x)
        for block in INCEPTION_BLOCKS:
            x = self._inception(block, x)
            if block in _STAGE_ENDS:
                feats.append(x)
        return feats
