"""Video classifiers built from the same parts: backbone on every frame, then IST-PAN or TSN consensus, then a head.

    video (B, K, 3, H, W) -> frames (B·K, 3, H, W) -> backbone -> N maps (B·K, C_j, h_j, w_j)
      IST-PAN: pyramid attention over the K·h·w positions -> M (B, d, C_top) -> mean over glimpses -> (B, C_top)
      TSN:     global average pool per frame -> (B, K, C_top) -> average consensus over K -> (B, C_top)
    -> dropout -> linear -> logits (B, classes)

TSN averages class scores over segments; with a linear head that equals the head of the averaged features, which is
what we compute. The loss (softmax or sigmoid) lives outside the model (istpan/losses.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from istpan.errors import UserError
from istpan.models.backbones import Backbone
from istpan.models.pyramid_attention import AttentionResult, PyramidAttention

__all__ = ["ModelOutput", "VideoClassifier", "attention_maps"]


@dataclass
class ModelOutput:
    """Everything a forward produces; the attention fields are None / [] for TSN."""

    logits: torch.Tensor  # (B, num_classes) raw scores
    attn: torch.Tensor | None = None  # (B, d, K, h, w) fused softmax attention a
    scale_attn: list[torch.Tensor] = field(default_factory=list)  # N x (B, d, K, h, w) softmax(Y_j)
    features: torch.Tensor | None = None  # (B, K·h·w, C_top) X_top, what M pools


class VideoClassifier(nn.Module):
    """Backbone + (IST-PAN | TSN average consensus) + dropout + linear head, on (B, K, 3, H, W) videos of any K.

    `attention=None` gives TSN. `scales` picks which backbone stages feed the attention (their indices, shallow ->
    deep, the last being the top map).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_classes: int,
        attention: PyramidAttention | None,
        scales: list[int],
        dropout: float = 0.5,
        multi_label: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.attention = attention
        self.scales = scales
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.feature_info[scales[-1]].num_chs, num_classes)
        nn.init.normal_(self.head.weight, std=0.001)  # TSN's head init: starts near uniform scores
        nn.init.zeros_(self.head.bias)

    def forward_features(self, video: torch.Tensor) -> tuple[torch.Tensor, AttentionResult | None]:
        """video (B, K, 3, H, W) -> pooled video feature (B, C_top) and the attention result (None for TSN)."""
        if video.dim() != 5:
            raise ValueError(f"expected video of shape (B, K, 3, H, W), got {tuple(video.shape)}")
        batch = video.shape[0]
        maps = self.backbone(video.flatten(0, 1))  # N x (B·K, C_j, h_j, w_j)
        feats = [maps[i] for i in self.scales]
        if self.attention is None:
            return feats[-1].mean((-2, -1)).unflatten(0, (batch, -1)).mean(1), None  # (B, C_top): TSN consensus
        res = self.attention(feats, batch)
        return res.pooled.mean(1), res  # mean over the d glimpses: (B, C_top)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(pooled))  # (B, num_classes)

    def forward(self, video: torch.Tensor) -> ModelOutput:
        pooled, res = self.forward_features(video)
        logits = self.forward_head(pooled)
        if res is None:
            return ModelOutput(logits=logits)
        h, w = res.size

        def grid(a: torch.Tensor) -> torch.Tensor:
            return a.unflatten(-1, (-1, h, w))  # (B, d, P) -> (B, d, K, h, w)

        return ModelOutput(logits, grid(res.attn), [grid(s) for s in res.scale_attn], res.features)


def attention_maps(out: ModelOutput, *, level: int | None = None) -> torch.Tensor:
    """Per-frame spatial heatmaps (B, K, h, w) from the fused attention (or scale `level`'s own softmax(Y_j)).

    Glimpses are summed and divided by d, so one video's map is a distribution over its K·h·w positions (sums to 1):
    comparable across models with different d, and its argmax is where the model looks (pointing game).
    """
    if out.attn is None:
        raise UserError("this model has no attention (TSN); attention maps need an istpan_* model")
    attn = out.attn if level is None else out.scale_attn[level]  # (B, d, K, h, w)
    return attn.mean(1)
