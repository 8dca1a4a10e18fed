"""The IST-PAN layer against a naive per-position reference, and its invariances (any K, frame order)."""

from __future__ import annotations

import math

import pytest
import torch

from istpan.losses import attention_losses, classification_loss
from istpan.models import attention_maps, create_model
from istpan.models.pyramid_attention import FUSIONS, PyramidAttention, resize_map


def _naive_resize(x: torch.Tensor, s: int, mode: str) -> torch.Tensor:
    """Block reductions by explicit loops over output positions (integer ratio s)."""
    N, C, H, W = x.shape
    out = torch.empty(N, C, H // s, W // s, dtype=x.dtype)
    for i in range(H // s):
        for j in range(W // s):
            block = x[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s]
            if mode == "avg":
                out[:, :, i, j] = block.mean((-2, -1))
            elif mode == "max":
                out[:, :, i, j] = block.amax((-2, -1))
            else:  # strided: the first position of every block
                out[:, :, i, j] = x[:, :, i * s, j * s]
    return out


@pytest.mark.parametrize("mode", ["avg", "max", "strided"])
def test_resize_map_matches_block_reference(mode):
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(resize_map(x, (2, 3), mode), _naive_resize(x, 4, mode), rtol=0, atol=1e-12)


def test_bilinear_resize_keeps_channels_and_constant_maps():
    x = torch.full((1, 5, 8, 8), 2.5, dtype=torch.float64)
    y = resize_map(x, (2, 2), "bilinear")
    assert y.shape == (1, 5, 2, 2)
    torch.testing.assert_close(y, torch.full_like(y, 2.5))


def _naive_layer(layer: PyramidAttention, feats: list[torch.Tensor], B: int, fuse: str) -> tuple:
    """Y_j[m, k] = Σ_c W_j[m, c] x_jk[c] + b_j[m] by loops, F, softmax over the K·h·w positions, M = a X_top."""
    h, w = feats[-1].shape[-2:]
    K = feats[0].shape[0] // B
    Ms, attns = [], []
    for b in range(B):
        scores = []
        for f, proj in zip(feats, layer.proj):
            s = f.shape[-1] // w
            f = _naive_resize(f, s, layer.reduce) if s > 1 else f
            positions = [f[b * K + t, :, i, j] for t in range(K) for i in range(h) for j in range(w)]
            Y = torch.empty(layer.d, len(positions), dtype=f.dtype)
            for m in range(layer.d):
                for k, x in enumerate(positions):
                    Y[m, k] = sum(proj.weight[m, c] * x[c] for c in range(x.shape[0])) + proj.bias[m]
            scores.append(Y)
        if fuse == "sum":
            fused = sum(scores)
        elif fuse == "mean":
            fused = sum(scores) / len(scores)
        elif fuse == "max":
            fused = torch.stack(scores).amax(0)
        else:
            wts = torch.softmax(layer.fuse_logits, 0)
            fused = sum(wt * Y for wt, Y in zip(wts, scores))
        a = torch.exp(fused - fused.amax(1, keepdim=True))
        a = a / a.sum(1, keepdim=True)
        X_top = torch.stack([feats[-1][b * K + t, :, i, j] for t in range(K) for i in range(h) for j in range(w)])
        Ms.append(a @ X_top)
        attns.append(a)
    return torch.stack(Ms), torch.stack(attns)


@pytest.mark.parametrize("fuse", FUSIONS)
def test_layer_matches_naive_reference(fuse):
    torch.manual_seed(0)
    B, K, chans = 2, 3, [3, 4, 5]
    layer = PyramidAttention(chans, d=4, reduce="avg", fuse=fuse).double()
    if layer.fuse_logits is not None:
        layer.fuse_logits.data = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    feats = [torch.randn(B * K, c, 2 * s, 2 * s, dtype=torch.float64) for c, s in zip(chans, (4, 2, 1))]
    res = layer(feats, B)
    M, a = _naive_layer(layer, feats, B, fuse)
    torch.testing.assert_close(res.attn, a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.pooled, M, rtol=1e-10, atol=1e-12)
    assert res.features.shape == (B, K * 4, 5)


def test_rows_are_distributions_and_l2_rows_are_unit():
    torch.manual_seed(1)
    model = create_model("istpan_tiny", num_classes=4, input_size=64, pool_weights="l2").eval()
    out = model(torch.randn(2, 3, 3, 64, 64))
    a = out.attn.flatten(2)  # (B, d, P)
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:2]))
    for s in out.scale_attn:
        torch.testing.assert_close(s.flatten(2).sum(-1), torch.ones(a.shape[:2]))
    A = torch.nn.functional.normalize(a, dim=-1)
    torch.testing.assert_close(A.norm(dim=-1), torch.ones(a.shape[:2]))
    # pool_weights="l2": the pooled glimpses are A·X_top, i.e. the head sees the mean over glimpses of A·X.
    pooled, res = model.forward_features(torch.randn(1, 2, 3, 64, 64))
    torch.testing.assert_close(pooled, (torch.nn.functional.normalize(res.attn, dim=-1) @ res.features).mean(1))


@pytest.mark.parametrize("fuse", ["mean", "learned"])
def test_gradients_reach_every_projection(fuse):
    torch.manual_seed(2)
    model = create_model("istpan_tiny", num_classes=3, input_size=64, num_scales=4, fuse=fuse)
    out = model(torch.randn(2, 2, 3, 64, 64))
    losses = attention_losses(out)
    loss = classification_loss(out.logits, torch.tensor([0, 2]), multi_label=False)
    (loss + losses["interactive"] + losses["attn"]).backward()
    layer = model.attention
    assert len(layer.proj) == 4
    for proj in layer.proj:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
        assert proj.bias.grad is not None and proj.bias.grad.abs().sum() > 0
    if fuse == "learned":
        assert layer.fuse_logits.grad.abs().sum() > 0


def test_any_k_with_the_same_parameters():
    torch.manual_seed(3)
    model = create_model("istpan_tiny", num_classes=5, input_size=64).eval()
    n_params = sum(p.numel() for p in model.parameters())
    for K in (1, 3, 8, 25):
        out = model(torch.randn(1, K, 3, 64, 64))
        d = model.model_options["d"]
        assert out.logits.shape == (1, 5)
        assert out.attn.shape == (1, d, K, 4, 4)
        assert out.features.shape == (1, K * 16, 128)
        assert attention_maps(out).shape == (1, K, 4, 4)
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_frame_order_does_not_matter_and_repeats_do_not_either():
    """The layer attends over a set of positions: permuting frames permutes the attention and keeps the logits;
    showing every frame twice splits each weight in two and keeps the logits too."""
    torch.manual_seed(4)
    model = create_model("istpan_tiny", num_classes=6, input_size=64, fuse="learned").eval()
    video = torch.randn(2, 5, 3, 64, 64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        out, out_perm = model(video), model(video[:, perm])
        out_twice = model(video.repeat_interleave(2, dim=1))
    torch.testing.assert_close(out_perm.logits, out.logits, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out_perm.attn, out.attn[:, :, perm], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out_twice.logits, out.logits, rtol=1e-4, atol=1e-6)


def test_attention_maps_are_distributions_per_video():
    torch.manual_seed(5)
    model = create_model("istpan_tiny", num_classes=2, input_size=64).eval()
    out = model(torch.randn(3, 4, 3, 64, 64))
    maps = attention_maps(out)
    torch.testing.assert_close(maps.sum((1, 2, 3)), torch.ones(3))
    assert attention_maps(out, level=0).shape == maps.shape
    assert not math.isclose(attention_maps(out, level=0).std().item(), maps.std().item(), rel_tol=1e-9)


def test_training_steps_fit_a_batch_and_lower_the_attention_losses():
    """End to end through backbone, layer, head and both normalised losses: a few Adam steps fit 4 random videos,
    and optimising the attention losses alone lowers each of them (they are trainable, not constants)."""
    torch.manual_seed(6)
    video, label = torch.randn(4, 2, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    model = create_model("istpan_tiny", num_classes=4, input_size=32, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        out = model(video)
        ce = classification_loss(out.logits, label, multi_label=False)
        att = attention_losses(out)
        opt.zero_grad()
        (ce + 0.1 * att["interactive"] + 0.01 * att["attn"]).backward()
        opt.step()
        first = ce.item() if first is None else first
    assert ce.item() < first / 4

    for key in ("interactive", "attn"):
        model = create_model("istpan_tiny", num_classes=4, input_size=32)
        opt = torch.optim.Adam(model.attention.parameters(), lr=1e-2)
        values = []
        for _ in range(30):
            loss = attention_losses(model(video))[key]
            opt.zero_grad()
            loss.backward()
            opt.step()
            values.append(loss.item())
        assert values[-1] < values[0] - 1e-3, (key, values[0], values[-1])
