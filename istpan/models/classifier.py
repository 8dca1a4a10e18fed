"""Video classifiers built from the same parts: backbone on every frame, then IST-PAN or TSN consensus, then a head.

    video (B, K, 3, H, W) -> frames (B·K, 3, H, W) -> backbone -> N maps (B·K, C_j, h_j, w_j)
      IST-PAN: pyramid attention over the K·h·w positions -> M (B, d, C) -> mean over glimpses -> (B, C)
      TSN:     global average pool per frame -> (B, K, C_top) -> average consensus over K -> (B, C_top)
    -> dropout -> linear -> logits (B, classes)

    head="glimpse" (ours, opt-in, IST-PAN only) keeps the glimpses apart instead of averaging them:
      M (B, d, C) -> dropout -> shared linear C -> r per glimpse -> flatten (B, d·r) -> linear -> logits (B, classes)
    d is fixed at construction, so the head's size still does not depend on K. It is what lets an order-aware layer
    (time_encoding="fourier") compare glimpses: "the early glimpse looked left, the late one right" is a difference
    between two rows, which the mean over rows erases.

TSN averages class scores over segments; with a linear head that equals the head of the averaged features, which is
what we compute. The loss (softmax or sigmoid) lives outside the model (istpan/losses.py).

Split for streaming (a feature cache): `frame_features` is everything that sees one frame (backbone, R), cached per
frame; `forward_clip` is everything that sees the K frames together (the layer, consensus, head). `forward` is their
composition, so a ring buffer of the last K frames' features gives the same logits as recomputing the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from istpan.errors import UserError
from istpan.models.backbones import Backbone
from istpan.models.pyramid_attention import AttentionResult, PyramidAttention, resize_map

__all__ = ["HEADS", "ModelOutput", "VideoClassifier", "attention_maps"]

HEADS = ("mean", "glimpse")
GLIMPSE_DIM = 16  # r: per-glimpse reduction of the glimpse head (small: the head sees d·r features)


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
    deep, the last being the top map). `head`: "mean" over glimpses (the paper) or "glimpse" (see the module doc).
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
        head: str = "mean",
    ) -> None:
        super().__init__()
        if head not in HEADS or (head == "glimpse" and attention is None):
            raise ValueError(f"bad head {head!r}: one of {', '.join(HEADS)}; 'glimpse' needs attention")
        self.backbone = backbone
        self.attention = attention
        self.scales = scales
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.dropout = nn.Dropout(dropout)
        channels = backbone.feature_info[scales[-1]].num_chs + (attention.extra_channels() if attention else 0)
        self.glimpse_reduce = None
        if head == "glimpse":
            self.glimpse_reduce = nn.Linear(channels, GLIMPSE_DIM)
            channels = attention.d * GLIMPSE_DIM
        self.head = nn.Linear(channels, num_classes)
        nn.init.normal_(self.head.weight, std=0.001)  # TSN's head init: starts near uniform scores
        nn.init.zeros_(self.head.bias)

    @property
    def frame_channels(self) -> list[int]:
        """Channels of each part of a frame's cached features: C_j of the N scales (IST-PAN) or [C_top] (TSN)."""
        return [self.backbone.feature_info[i].num_chs for i in self.scales]

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The per-frame half of the model: frames (N, 3, H, W) -> cached features (N, ΣC_j, h, w).

        IST-PAN: the N scales' maps after the sampling function R (each frame's maps are resized on their own, so R
        is per-frame work), concatenated along channels at the top map's h x w. TSN: the top map's global average
        pool, (N, C_top, 1, 1). Everything that looks at more than one frame (the layer's projections, fusion,
        softmax over K·h·w, time encoding, consensus) is in `forward_clip`, so a stream computes this once per frame.
        """
        return self.frame_features_from_maps(self.backbone(frames))

    def frame_features_from_maps(self, maps: list[torch.Tensor | None]) -> torch.Tensor:
        """`frame_features` from the backbone's stage maps (N, C_j, h_j, w_j), every stage, shallow -> deep (None
        for a stage this model does not use). Why: a cache of raw stage maps (istpan/experiments/features.py) serves
        models that differ in R or N; the R-resized concatenation is specific to one model."""
        feats = [maps[i] for i in self.scales]
        if self.attention is None:
            return feats[-1].mean((-2, -1), keepdim=True)  # (N, C_top, 1, 1)
        size = (int(feats[-1].shape[-2]), int(feats[-1].shape[-1]))
        return torch.cat([resize_map(f, size, self.attention.reduce) for f in feats], dim=1)  # (N, ΣC_j, h, w)

    def clip_features(
        self, feats: torch.Tensor, *, times: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, AttentionResult | None]:
        """Cached features of K frames (B, K, ΣC_j, h, w) -> pooled video feature and attention result (None: TSN).

        The feature is (B, C) (TSN, head="mean") or the glimpses themselves (B, d, C) for head="glimpse". `times`
        (K,) in (0, 1): each frame's normalised time for time_encoding="fourier" (default (k + 0.5) / K, the segment
        centres a K-frame clip is sampled at); ignored by order-blind models.
        """
        if feats.dim() != 5:
            raise ValueError(f"expected cached features of shape (B, K, C, h, w), got {tuple(feats.shape)}")
        batch = feats.shape[0]
        flat = feats.flatten(0, 1)  # (B·K, ΣC_j, h, w)
        if self.attention is None:
            return flat.flatten(1).unflatten(0, (batch, -1)).mean(1), None  # (B, C_top): TSN average consensus
        res = self.attention(list(flat.split(self.frame_channels, dim=1)), batch, times=times)
        if self.glimpse_reduce is not None:
            return res.pooled, res  # (B, d, C): the head keeps the glimpses apart
        return res.pooled.mean(1), res  # mean over the d glimpses: (B, C)

    def forward_features(
        self, video: torch.Tensor, *, times: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, AttentionResult | None]:
        """video (B, K, 3, H, W) -> `clip_features` of its frames' `frame_features` (`times` (K,) as there)."""
        if video.dim() != 5:
            raise ValueError(f"expected video of shape (B, K, 3, H, W), got {tuple(video.shape)}")
        feats = self.frame_features(video.flatten(0, 1)).unflatten(0, tuple(video.shape[:2]))  # (B, K, ΣC_j, h, w)
        return self.clip_features(feats, times=times)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) or, for head="glimpse", (B, d, C) -> logits (B, num_classes)."""
        x = self.dropout(pooled)
        if self.glimpse_reduce is not None:
            x = self.glimpse_reduce(x).flatten(1)  # (B, d, C) -> (B, d, r) -> (B, d·r)
        return self.head(x)  # (B, num_classes)

    def forward_clip(self, feats: torch.Tensor, *, times: torch.Tensor | None = None) -> ModelOutput:
        """The K-frame half: cached features (B, K, ΣC_j, h, w) of `frame_features` -> ModelOutput.

        `model(video)` is exactly `model.forward_clip(model.frame_features(frames).unflatten(0, (B, K)))`.
        """
        pooled, res = self.clip_features(feats, times=times)
        return self._output(self.forward_head(pooled), res)

    def forward(self, video: torch.Tensor, *, times: torch.Tensor | None = None) -> ModelOutput:
        """video (B, K, 3, H, W) -> ModelOutput; `times` (K,): the frames' own times when they are not the K segment
        centres (a random frame subset in training, train.frame_subset_min)."""
        pooled, res = self.forward_features(video, times=times)
        return self._output(self.forward_head(pooled), res)

    @staticmethod
    def _output(logits: torch.Tensor, res: AttentionResult | None) -> ModelOutput:
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
