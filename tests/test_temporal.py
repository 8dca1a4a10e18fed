"""Order-aware attention (time_encoding="fourier", head="glimpse"): the defaults stay the paper's layer, the option
sees frame order, and one set of parameters still takes any K, traces and exports."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from istpan.errors import UserError
from istpan.files.export import export_model
from istpan.losses import attention_losses, classification_loss
from istpan.models import create_model
from istpan.models.pyramid_attention import PyramidAttention

SIZE = 32  # tiny backbone at 32 px: top map 2x2, d = 4


def _phi(t: float) -> list[float]:
    return [math.sin(math.pi * 2**q * t) for q in range(4)] + [math.cos(math.pi * 2**q * t) for q in range(4)]


def _naive_layer(layer: PyramidAttention, feats: list[torch.Tensor], B: int):
    """The layer's math with Python loops over videos, positions, frames and glimpses (avg-pool R, mean F).

    With time_encoding="fourier": every score gets U·φ(t_k), t_k = (k + 0.5)/K, φ = [sin(π2^i t), cos(π2^i t)]_i<4,
    and each pooled row is followed by Σ a φ(t_k) and Σ a (x, y), x, y = (2·index + 1)/size − 1.
    """
    top = feats[-1]
    K, h, w = top.shape[0] // B, top.shape[-2], top.shape[-1]
    fourier = layer.time_proj is not None
    Ms, attns = [], []
    for b in range(B):
        rows = []  # per position p = (k, i, j): (list of per-scale features, k, x, y)
        for k in range(K):
            for i in range(h):
                for j in range(w):
                    per_scale = []
                    for f in feats:
                        s = f.shape[-1] // w
                        per_scale.append(f[b * K + k, :, i * s:(i + 1) * s, j * s:(j + 1) * s].mean((-2, -1)))
                    rows.append((per_scale, k, (2 * j + 1) / w - 1, (2 * i + 1) / h - 1))
        a = torch.zeros(layer.d, len(rows), dtype=top.dtype)
        for m in range(layer.d):
            logits = []
            for per_scale, k, _, _ in rows:
                phi = _phi((k + 0.5) / K)
                time_score = sum(layer.time_proj.weight[m, e] * phi[e] for e in range(8)) if fourier else 0.0
                ys = [proj.weight[m] @ x + proj.bias[m] + time_score for proj, x in zip(layer.proj, per_scale)]
                logits.append(sum(ys) / len(ys))
            a[m] = torch.stack(logits).softmax(0)
        X_top = torch.stack([per_scale[-1] for per_scale, _, _, _ in rows])  # (P, C_top)
        M = a @ X_top
        if fourier:
            extra = []
            for _, k, x, y in rows:
                extra.append([*_phi((k + 0.5) / K), x, y])
            M = torch.cat([M, a @ torch.tensor(extra, dtype=top.dtype)], dim=-1)
        Ms.append(M)
        attns.append(a)
    return torch.stack(Ms), torch.stack(attns)


@pytest.mark.parametrize("time_encoding", ["none", "fourier"])
def test_layer_matches_naive_reference(time_encoding):
    torch.manual_seed(0)
    B, K, chans = 2, 3, [3, 4]
    layer = PyramidAttention(chans, d=3, time_encoding=time_encoding).double()
    if layer.time_proj is not None:
        torch.nn.init.normal_(layer.time_proj.weight)  # it starts at zero; make the time term matter
    feats = [torch.randn(B * K, c, 2 * s, 2 * s, dtype=torch.float64) for c, s in zip(chans, (2, 1))]
    res = layer(feats, B)
    M, a = _naive_layer(layer, feats, B)
    torch.testing.assert_close(res.attn, a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.pooled, M, rtol=1e-10, atol=1e-12)
    assert res.features.shape == (B, K * 4, chans[-1])  # X_top itself never carries the extra channels


def test_defaults_are_the_papers_layer_and_head():
    """Default options add no parameter, keep the state-dict layout, and stay blind to frame order (any head)."""
    torch.manual_seed(1)
    model = create_model("istpan_tiny", num_classes=5, input_size=SIZE)
    assert model.model_options["time_encoding"] == "none" and model.model_options["head"] == "mean"
    assert not any("time_proj" in k or "glimpse_reduce" in k for k in model.state_dict())
    assert model.head.in_features == 128  # C_top of tiny
    for head in ("mean", "glimpse"):
        model = _calibrated(create_model("istpan_tiny", num_classes=5, input_size=SIZE, head=head))
        torch.nn.init.normal_(model.head.weight)
        video = torch.randn(2, 4, 3, SIZE, SIZE)
        torch.testing.assert_close(model(video.flip(1)).logits, model(video).logits, rtol=1e-5, atol=1e-5)


def _calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """Set BatchNorm statistics from one random batch: with the initial ones (mean 0, var 1) the untrained tiny
    backbone's top features are nearly constant, and every model would look order-blind for want of content."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics exactly
    with torch.no_grad():
        model.train()(torch.randn(2, 4, 3, SIZE, SIZE))
    return model.eval()


def _fourier_model(**options) -> torch.nn.Module:
    model = create_model("istpan_tiny", num_classes=6, input_size=SIZE, time_encoding="fourier", head="glimpse",
                         dropout=0.0, **options)
    torch.nn.init.normal_(model.attention.time_proj.weight)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # TSN's 0.001 init would make every logit ~0
    return _calibrated(model)


def test_fourier_sees_frame_order_for_any_k():
    torch.manual_seed(2)
    model = _fourier_model()
    for K in (1, 3, 8, 25):
        video = torch.randn(2, K, 3, SIZE, SIZE)
        out = model(video)
        assert out.logits.shape == (2, 6) and out.attn.shape == (2, 4, K, 2, 2)
        torch.testing.assert_close(out.attn.flatten(2).sum(-1), torch.ones(2, 4))
        if K > 1:
            assert (model(video.flip(1)).logits - out.logits).abs().max() > 1e-3
    # The head keeps time and place per glimpse, so the mean head's "fourier" is order-aware too, only less so.
    mean_head = _calibrated(create_model("istpan_tiny", num_classes=6, input_size=SIZE, time_encoding="fourier"))
    torch.nn.init.normal_(mean_head.head.weight)
    video = torch.randn(1, 5, 3, SIZE, SIZE)
    assert (mean_head(video.flip(1)).logits - mean_head(video).logits).abs().max() > 1e-4


def test_gradients_reach_the_new_parameters():
    torch.manual_seed(3)
    model = create_model("istpan_tiny", num_classes=3, input_size=SIZE, time_encoding="fourier", head="glimpse")
    out = model(torch.randn(2, 4, 3, SIZE, SIZE))
    losses = attention_losses(out)
    loss = classification_loss(out.logits, torch.tensor([0, 2]), multi_label=False)
    (loss + losses["interactive"] + losses["attn"]).backward()
    for param in (model.attention.time_proj.weight, model.glimpse_reduce.weight, model.head.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0  # time_proj starts at zero and still learns


def test_options_are_checked_and_rebuild_the_model():
    with pytest.raises(UserError, match="time_encoding='sinusoid' is not one of none, fourier"):
        create_model("istpan_tiny", num_classes=3, time_encoding="sinusoid")
    with pytest.raises(UserError, match="head='max' is not one of mean, glimpse"):
        create_model("istpan_tiny", num_classes=3, head="max")
    model = create_model("istpan_tiny", num_classes=3, input_size=SIZE, time_encoding="fourier", head="glimpse")
    rebuilt = create_model(model.model_name, num_classes=3, **model.model_options)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    tsn = create_model("tsn_tiny", num_classes=3, time_encoding="fourier", head="glimpse")  # dropped, like d
    assert "time_encoding" not in tsn.model_options and tsn.attention is None


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video).logits


def test_trace_keeps_k_dynamic():
    """Traced at K = 3, run at K = 1 and 6: frame times come from the input's shape, not a baked-in constant."""
    torch.manual_seed(4)
    model = _fourier_model()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about the spatial sizes, which are fixed per export
        traced = torch.jit.trace(_Logits(model), (torch.randn(1, 3, 3, SIZE, SIZE),), check_trace=False)
        for K in (1, 6):
            video = torch.randn(2, K, 3, SIZE, SIZE)
            torch.testing.assert_close(traced(video), model(video).logits, rtol=1e-4, atol=1e-5)


def test_torchscript_export_matches_pytorch_for_each_k(tmp_path):
    """Frame times depend on K: each K's export matches. (ONNX of the same model: test_export, one export.)"""
    torch.manual_seed(5)
    model = _fourier_model()
    for K in (2, 5):
        meta = {"preprocessing": {"num_segments": K, "input_size": SIZE}}
        result = export_model(model, meta, tmp_path / f"m{K}.ts", format="torchscript", tolerance=1e-4, seed=K)
        assert result["input_shape"] == [1, K, 3, SIZE, SIZE] and result["max_abs_diff"] <= 1e-4
    assert model(torch.randn(1, 5, 3, SIZE, SIZE)).logits.abs().max() > 0.01  # the compared logits are not ~0
