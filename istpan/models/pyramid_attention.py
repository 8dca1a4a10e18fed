"""The IST-PAN layer: spatio-temporal pyramid attention over the K·h·w positions of one video (Du et al., 2018).

For N backbone stages j (shallow -> deep; the last one is the "top" map of size h x w):

    X_j = R(f_j)  stacked over the K frames          (B, P, C_j)    P = K·h·w, R resizes to h x w, keeps C_j
    Y_j = W_j X_jᵀ + b_j                             (B, d, P)      d glimpse rows; no parameter depends on K
    a   = softmax_P(F(Y_1, ..., Y_N))                (B, d, P)      fused attention, one distribution per glimpse
    A   = a / ‖a‖₂ (row-wise)                        (B, d, P)      what l_interactive (Eq. 6) constrains
    M   = A X_top  (or a X_top, option pool_weights) (B, d, C_top)  with d = h·w: one frame-sized map per video

Because the K frames only ever appear as more positions of one softmax, the layer takes any K and is invariant to
the order of the frames. Options the paper leaves open (R, F, d, which weights pool M) are constructor arguments; the
defaults and the reasons for them are in docs/models.md.

`time_encoding="fourier"` (ours, opt-in) makes the layer order-aware without any parameter that depends on K:

    φ(t_k)  fixed sin/cos features of the normalised frame time t_k = (k + 0.5) / K     (K, E)
    Y_j    += U φ(t)  broadcast over the h·w positions of frame k                        (B, d, P)   U: nn.Linear(E, d)
    M       = [a X_top | a φ(t) | a pos]  when and where each glimpse looked              (B, d, C_top + E + 2)

so a glimpse can prefer early or late frames, and its pooled row says when and where it looked. The classifier needs
a head that keeps glimpse identity (`head="glimpse"`) to use it: averaging the glimpses mixes the rows' times and
positions (docs/models.md, "Order-aware attention").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FUSIONS",
    "POOL_WEIGHTS",
    "REDUCTIONS",
    "TIME_ENCODINGS",
    "AttentionResult",
    "PyramidAttention",
    "fourier_features",
    "frame_times",
    "resize_map",
]

REDUCTIONS = ("avg", "max", "bilinear", "strided")
FUSIONS = ("sum", "mean", "max", "learned")
POOL_WEIGHTS = ("softmax", "l2")
TIME_ENCODINGS = ("none", "fourier")
NUM_FREQUENCIES = 4  # φ(t) = sin/cos(π 2^i t), i < 4: E = 8 features, finest period 1/4 of the clip


def frame_times(like: torch.Tensor) -> torch.Tensor:
    """Normalised times t_k = (k + 0.5) / K of the K entries of `like` (K,), as float tensors in (0, 1).

    Built with cumsum over ones rather than torch.arange(K): K then stays a tensor dimension under torch.jit.trace
    and ONNX export (a Python int taken from a shape would be baked into the traced graph).
    """
    ones = torch.ones_like(like)  # (K,)
    return (ones.cumsum(0) - 0.5) / ones.sum()  # (K,)


def fourier_features(t: torch.Tensor, num_frequencies: int = NUM_FREQUENCIES) -> torch.Tensor:
    """φ(t) = [sin(π 2^i t), cos(π 2^i t)]_i for t (K,) in (0, 1) -> (K, 2·num_frequencies).

    The lowest frequency spans half a period over the clip, so cos(π t) alone is monotone in t (early vs late);
    the higher ones separate nearby frames. Fixed, so no parameter depends on K.
    """
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, dtype=t.dtype, device=t.device)  # (F,)
    angles = t[:, None] * freqs  # (K, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (K, 2F)


def _grid_positions(size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Normalised (x, y) in (-1, 1) of the h·w positions of one frame, row-major like flatten(2): (h·w, 2)."""
    h, w = size
    ys = (torch.arange(h, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / h) - 1.0  # (h,)
    xs = (torch.arange(w, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / w) - 1.0  # (w,)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).flatten(0, 1)  # (h·w, 2) as (x, y)


def resize_map(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """The sampling function R: bring a (N, C, H, W) map to `size`, keeping its channels.

    `strided` keeps every s-th position (x[..., ::s, ::s]). When H, W are multiples of `size` (the usual case: stage
    strides are powers of two), pooling uses fixed kernels, which every ONNX exporter handles; otherwise adaptive
    pooling / nearest sampling.
    """
    H, W = int(x.shape[-2]), int(x.shape[-1])
    if tuple(size) == (H, W):
        return x
    sh, sw = H // size[0], W // size[1]
    exact = sh * size[0] == H and sw * size[1] == W
    if mode == "avg":
        return F.avg_pool2d(x, (sh, sw)) if exact else F.adaptive_avg_pool2d(x, size)
    if mode == "max":
        return F.max_pool2d(x, (sh, sw)) if exact else F.adaptive_max_pool2d(x, size)
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    if mode == "strided":
        return x[..., ::sh, ::sw] if exact else F.interpolate(x, size=size, mode="nearest")
    raise ValueError(f"unknown reduce mode '{mode}' (known: {', '.join(REDUCTIONS)})")


@dataclass
class AttentionResult:
    """What the layer hands on: the pooled glimpses and every attention, so losses and plots recompute nothing."""

    pooled: torch.Tensor  # (B, d, C_top) M; (B, d, C_top + E + 2) with time_encoding="fourier"
    attn: torch.Tensor  # (B, d, P)          fused softmax attention a
    scale_attn: list[torch.Tensor]  # N x (B, d, P)   softmax(Y_j)
    features: torch.Tensor  # (B, P, C_top)  X_top
    size: tuple[int, int]  # (h, w) of the top map: P = K·h·w


class PyramidAttention(nn.Module):
    """IST-PAN over N multi-scale maps. `proj[j]` is (W_j, b_j) as one nn.Linear(C_j -> d).

    Args:
        in_channels: C_j of the N stages used, shallow -> deep (the last is the top map).
        d: number of glimpse rows (the paper's figure uses d = h·w of the top map).
        reduce: R, how shallower maps are brought to the top map's size.
        fuse: F, how the N score matrices are combined before the softmax ("learned": convex softmax weights).
        pool_weights: "softmax" pools M with a (rows sum to 1, scale independent of K), "l2" with A (Fig. 1).
        time_encoding: "none" (the paper: order-invariant) or "fourier" (order-aware scores and pooled rows, above).
    """

    def __init__(
        self,
        in_channels: list[int],
        *,
        d: int,
        reduce: str = "avg",
        fuse: str = "mean",
        pool_weights: str = "softmax",
        time_encoding: str = "none",
    ) -> None:
        super().__init__()
        if (reduce not in REDUCTIONS or fuse not in FUSIONS or pool_weights not in POOL_WEIGHTS
                or time_encoding not in TIME_ENCODINGS):
            raise ValueError(f"bad option: reduce={reduce!r} fuse={fuse!r} pool_weights={pool_weights!r} "
                             f"time_encoding={time_encoding!r}")
        self.d, self.reduce, self.fuse, self.pool_weights = d, reduce, fuse, pool_weights
        self.time_encoding = time_encoding
        self.proj = nn.ModuleList(nn.Linear(c, d) for c in in_channels)
        # Zero logits = equal weights: "learned" starts as "mean" and moves along the simplex.
        self.fuse_logits = nn.Parameter(torch.zeros(len(in_channels))) if fuse == "learned" else None
        self.time_proj = None
        if time_encoding == "fourier":
            # U: zero at the start, so the attention starts as the paper's and learns how much time to prefer.
            self.time_proj = nn.Linear(2 * NUM_FREQUENCIES, d, bias=False)
            nn.init.zeros_(self.time_proj.weight)

    def extra_channels(self) -> int:
        """Channels the pooled rows carry beyond C_top: E time features + (x, y) with "fourier", else 0."""
        return 0 if self.time_proj is None else 2 * NUM_FREQUENCIES + 2

    def _fuse(self, scores: list[torch.Tensor]) -> torch.Tensor:
        if self.fuse == "sum":
            return sum(scores[1:], scores[0])
        if self.fuse == "mean":
            return sum(scores[1:], scores[0]) / len(scores)
        if self.fuse == "max":
            return torch.stack(scores).amax(0)  # (B, d, P)
        weights = self.fuse_logits.softmax(0)  # (N,) convex
        return sum((wt * y for wt, y in zip(weights[1:], scores[1:])), weights[0] * scores[0])

    def forward(self, feats: list[torch.Tensor], batch: int, *, times: torch.Tensor | None = None) -> AttentionResult:
        """feats: N maps (B·K, C_j, h_j, w_j), shallow -> deep, frames of one video contiguous; batch: B.

        `times` (K,): the frames' normalised times in (0, 1) for time_encoding="fourier"; default (k + 0.5) / K. A
        subset of a video's frames (anytime inference) passes where in the video they are, so frame k keeps its time.
        """
        top = feats[-1]
        size = (int(top.shape[-2]), int(top.shape[-1]))  # plain ints: spatial size is fixed per export, K is not
        # The top map is laid out position-major once (it is pooled and returned); its scores come from that copy, so
        # the widest map is read once. Shallower maps are scored in place with a 1x1 convolution (no copy).
        x_top = top.flatten(2).unflatten(0, (batch, -1)).transpose(2, 3).flatten(1, 2)  # (B, K·h·w, C_top)
        scores = []
        for f, proj in zip(feats[:-1], self.proj[:-1]):
            f = resize_map(f, size, self.reduce)  # (B·K, C_j, h, w): W_j X_jᵀ + b_j at every position = 1x1 conv
            y = F.conv2d(f, proj.weight[:, :, None, None], proj.bias).flatten(2)  # (B·K, d, h·w)
            scores.append(y.unflatten(0, (batch, -1)).transpose(1, 2).flatten(2))  # (B, d, K·h·w)
        scores.append(self.proj[-1](x_top).transpose(1, 2))  # (B, d, K·h·w)
        phi = None
        if self.time_proj is not None:
            if times is None:
                times = frame_times(top[:, 0, 0, 0].unflatten(0, (batch, -1))[0])  # (K,)
            phi = fourier_features(times.to(top.dtype))  # (K, E)
            # U φ(t_k) is the same for the h·w positions of frame k; it is added to every scale's Y_j (not only to the
            # fused score), so softmax(Y_j), which l_attn compares with a, sees the same time preference.
            time_scores = self.time_proj(phi).t()[:, :, None].expand(-1, -1, size[0] * size[1])  # (d, K, h·w)
            scores = [y + time_scores.flatten(1) for y in scores]  # (B, d, P)
        attn = self._fuse(scores).softmax(-1)  # (B, d, P)
        weights = F.normalize(attn, dim=-1) if self.pool_weights == "l2" else attn
        pooled = weights @ x_top  # (B, d, C_top)
        if phi is not None:
            grid = weights.unflatten(-1, (-1, size[0] * size[1]))  # (B, d, K, h·w)
            when = grid.sum(-1) @ phi  # (B, d, E): Σ_k a_mk φ(t_k)
            where = grid.sum(2) @ _grid_positions(size, x_top)  # (B, d, 2): attention-weighted (x, y)
            pooled = torch.cat([pooled, when, where], dim=-1)  # (B, d, C_top + E + 2)
        return AttentionResult(pooled, attn, [s.softmax(-1) for s in scores], x_top, size)
