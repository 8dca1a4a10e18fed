"""Feature-level RGB + flow fusion: two backbones, one pyramid, so one IST-PAN layer attends over both streams.

The journal version of IST-PAN (Hu, Liu, Du et al., TPAMI 2022) studies ways to combine the RGB and flow streams.
This is the "one layer over both pyramids" one: the RGB maps and the flow maps are more scales of one pyramid.

    input (B·K, 3 + 2L, H, W)  ->  RGB frame (B·K, 3, H, W)      -> RGB backbone  -> r_1 .. r_S
                                   flow stack (B·K, 2L, H, W)    -> flow backbone -> f_1 .. f_S
    pyramid (N per stream): r_{S-N+1} .. r_{S-1}, f_{S-N+1} .. f_{S-1}, [r_S | f_S]

The top map is the channel concatenation of both top maps (same backbone family, so the same size), so the layer's
M = a·X_top pools RGB and flow features at the positions the joint attention chose; every other map only scores
positions (Y_j = W_j X_jᵀ + b_j, one W_j per map and stream). With attention off (TSN) this is the concatenation of
both streams' averaged features before one linear head. Neither stream's weights are shared: flow filters start
from TSN's cross-modality initialisation of the same ImageNet weights (istpan/models/backbones.py).

Late fusion (a weighted sum of two separately trained models' scores, TSN's way) needs no model: `istpan eval`
and `istpan predict` take two checkpoints (istpan/evaluation/fusion.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from istpan.models.backbones import Backbone, FeatureInfo, build_backbone

__all__ = ["TwoStreamBackbone"]


class TwoStreamBackbone(Backbone):
    """(N, 3 + 2L, H, W) -> per-stream stages but the last, then the concatenated top map (see the module doc).

    `feature_info` lists rgb stages 1..S-1, flow stages 1..S-1, then the joint top (C_rgb + C_flow channels);
    `pyramid_indices(n)` picks the last n-1 of each stream plus the top.
    """

    def __init__(self, name: str, *, flow_length: int, pretrained: str | Path | None = None) -> None:
        super().__init__()
        self.rgb = build_backbone(name, pretrained=pretrained)
        self.flow = build_backbone(name, pretrained=pretrained, in_chans=2 * flow_length)
        self.in_chans = 3 + 2 * flow_length
        self.default_input_size = self.rgb.default_input_size
        rgb, flow = self.rgb.feature_info, self.flow.feature_info
        self._stages = len(rgb)
        top = FeatureInfo(rgb[-1].num_chs + flow[-1].num_chs, rgb[-1].reduction)
        self.feature_info = [*rgb[:-1], *flow[:-1], top]

    @property
    def num_stages(self) -> int:
        return self._stages

    @property
    def streams(self) -> list[Backbone]:
        """The two backbones (partial BN keeps the first BatchNorm of each trainable)."""
        return [self.rgb, self.flow]

    def pyramid_indices(self, num_scales: int) -> list[int]:
        s = self._stages - 1  # per-stream stages before the top
        below = num_scales - 1
        return [*range(s - below, s), *range(2 * s - below, 2 * s), 2 * s]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        rgb = self.rgb(x[:, :3])  # S x (N, C_j, h_j, w_j)
        flow = self.flow(x[:, 3:])
        return [*rgb[:-1], *flow[:-1], torch.cat([rgb[-1], flow[-1]], dim=1)]  # top: (N, C_rgb + C_flow, h, w)

