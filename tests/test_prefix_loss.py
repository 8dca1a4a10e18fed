"""The anytime prefix loss (train.prefix_loss, training/prefix_loss.py): what it computes and that 0 changes nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from istpan.config import load_config
from istpan.errors import UserError
from istpan.models import create_model
from istpan.training.optim import build_optimizer, build_scheduler
from istpan.training.prefix_loss import forward_with_prefixes, prefix_ce, prefix_sizes
from istpan.training.run_log import RunLog
from istpan.training.train import _step_seed, train_one_epoch

SPREAD_8 = [2, 6, 4, 0, 3, 7, 5, 1]  # the anytime order for N = 8, as docs/latency.md states it


def _model(dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=3, input_size=32, time_encoding="fourier", head="glimpse",
                         dropout=dropout)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # the init's near-zero logits would hide any difference
    return model


def _naive_prefix_ce(model: torch.nn.Module, video: torch.Tensor, target: torch.Tensor, sizes: list[int]):
    """Each prefix as its own clip: the first n frames of the spread order, in time order, at times (k + 0.5) / 8,
    the whole model (backbone included) run again on them."""
    losses = []
    for n in sizes:
        keep = sorted(SPREAD_8[:n])
        times = (torch.tensor(keep, dtype=torch.float32) + 0.5) / 8
        losses.append(F.cross_entropy(model(video[:, keep], times=times).logits, target))
    return sum(losses) / len(losses)


def test_prefix_loss_equals_a_naive_per_prefix_computation():
    model = _model().eval()
    g = torch.Generator().manual_seed(1)
    video, target = torch.randn(2, 8, 3, 32, 32, generator=g), torch.tensor([0, 2])
    with torch.no_grad():
        out, logits = forward_with_prefixes(model, video, list(range(1, 8)))
        assert torch.allclose(out.logits, model(video).logits, atol=1e-6)  # the K-frame output is model(video)'s
        assert len(logits) == 7
        got = prefix_ce(logits, target, multi_label=False)
        want = _naive_prefix_ce(model, video, target, list(range(1, 8)))
        assert torch.allclose(got, want, atol=1e-5)
        # a prefix is not the same clip at the default times (k + 0.5) / n: the times matter and are the anytime ones
        plain = model(video[:, sorted(SPREAD_8[:3])]).logits
        assert (plain - logits[2]).abs().max() > 0.1 * plain.abs().max()
        assert want > 0.1  # not a vanishing loss that any computation would match


def test_final_target_is_the_detached_k_frame_prediction():
    """prefix_target=final: each prefix's cross-entropy against softmax of the K-frame logits, which get no gradient
    from it (the K-frame output learns from the label only)."""
    g = torch.Generator().manual_seed(2)
    full = torch.randn(3, 5, generator=g, requires_grad=True)
    prefixes = [torch.randn(3, 5, generator=g, requires_grad=True) for _ in range(2)]
    got = prefix_ce(prefixes, torch.tensor([0, 1, 2]), multi_label=False, full_logits=full)
    p = full.detach().softmax(-1)
    want = sum(-(p * x.log_softmax(-1)).sum(-1).mean() for x in prefixes) / 2
    assert torch.allclose(got, want, atol=1e-6)
    got.backward()
    assert full.grad is None and all(x.grad is not None for x in prefixes)
    # multi-label: sigmoid targets, binary cross-entropy
    got = prefix_ce(prefixes[:1], torch.zeros(3, 5), multi_label=True, full_logits=full)
    assert torch.allclose(got, F.binary_cross_entropy_with_logits(prefixes[0], full.detach().sigmoid()))


def test_prefix_sizes():
    assert prefix_sizes("all", 8) == list(range(1, 8))
    assert prefix_sizes("all", 1) == []
    drawn = set()
    for seed in range(40):
        torch.manual_seed(seed)
        (n,) = prefix_sizes("one", 4)
        drawn.add(n)
    assert drawn == {1, 2, 3}  # never K itself (the K-frame loss is there already), every proper prefix
    with pytest.raises(ValueError):
        prefix_sizes("some", 8)


def _one_step(model: torch.nn.Module, batch: dict, overrides: list[str]):
    cfg = load_config(None, ["train.partial_bn=false", "optim.lr=0.05", "optim.warmup_epochs=0",
                             "optim.clip_grad_norm=0", "train.log_every=0", "train.epochs=1", "train.seed=3",
                             *overrides])
    opt = build_optimizer(model, cfg.optim)
    return cfg, train_one_epoch(
        model, [batch], opt, build_scheduler(opt, cfg.optim, steps_per_epoch=1, epochs=1),
        torch.amp.GradScaler("cpu", enabled=False), cfg=cfg, epoch=0, steps=1, device=torch.device("cpu"),
        log=RunLog(Path("."), enabled=False, tensorboard=False, resume_step=None), progress=False)


def _hand_step(ref: torch.nn.Module, cfg, batch: dict, weight: float, final: bool = False) -> torch.nn.Module:
    """One optimiser step written out: CE on all K frames (+ weight x the naive prefix CE), seeded as the loop is."""
    m = copy.deepcopy(ref).train()
    o = build_optimizer(m, cfg.optim)
    torch.manual_seed(_step_seed(3, 0, 0, 0))
    video, label = batch["video"], batch["label"]
    if not weight:
        loss = F.cross_entropy(m(video).logits, label)  # today's step
    else:  # in train mode BatchNorm normalises over the frames in a pass: the backbone sees all K frames once
        feats = m.frame_features(video.flatten(0, 1)).unflatten(0, (4, 8))
        logits = m.forward_clip(feats).logits
        loss = F.cross_entropy(logits, label)
        goal = logits.detach().softmax(-1) if final else label
        for n in range(1, 8):
            keep = sorted(SPREAD_8[:n])
            times = (torch.tensor(keep, dtype=torch.float32) + 0.5) / 8
            loss = loss + weight / 7 * F.cross_entropy(m.forward_clip(feats[:, keep], times=times).logits, goal)
    loss.backward()
    o.step()
    return m


def _states(a: torch.nn.Module, b: torch.nn.Module) -> tuple[bool, float]:
    """(every parameter and buffer equal bit for bit, largest parameter difference)."""
    same = all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    sa, sb = dict(a.named_parameters()), dict(b.named_parameters())
    return same, max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def test_zero_weight_is_bit_identical_and_a_weight_trains_the_prefixes():
    """Off: the loop's step is bit for bit the plain K-frame step (dropout on, so the RNG use must match too). On: it
    is the K-frame step plus the weighted naive prefix loss."""
    g = torch.Generator().manual_seed(7)
    batch = {"video": torch.randn(4, 8, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 2, 0])}
    ref = _model(dropout=0.3)

    model = copy.deepcopy(ref)
    cfg, stats = _one_step(model, batch, ["train.prefix_loss=0"])
    same, _ = _states(model, _hand_step(ref, cfg, batch, 0.0))
    assert same and "prefix" not in stats  # the logs of a run without it stay as they were

    ref0 = _model(dropout=0.0)
    model = copy.deepcopy(ref0)
    cfg, stats = _one_step(model, batch, ["train.prefix_loss=0.5"])
    assert stats["prefix"] > 0
    assert _states(model, _hand_step(ref0, cfg, batch, 0.5))[1] < 1e-5
    assert _states(model, _hand_step(ref0, cfg, batch, 0.0))[1] > 1e-4  # the prefix term did move the weights

    model = copy.deepcopy(ref0)
    cfg, _ = _one_step(model, batch, ["train.prefix_loss=0.5", "train.prefix_target=final"])
    assert _states(model, _hand_step(ref0, cfg, batch, 0.5, final=True))[1] < 1e-5
    assert _states(model, _hand_step(ref0, cfg, batch, 0.5))[1] > 1e-4  # not the label's step


def test_config_checks(tmp_path):
    with pytest.raises(UserError, match=r"train\.prefix_loss"):
        load_config(None, ["train.prefix_loss=-0.5"])
    with pytest.raises(UserError, match=r"train\.prefix_sizes"):
        load_config(None, ["train.prefix_sizes=some"])
    with pytest.raises(UserError, match=r"train\.prefix_target"):
        load_config(None, ["train.prefix_target=teacher"])
    with pytest.raises(UserError, match="one of them to 0"):  # when the config is read (issue 20), not in train()
        load_config(None, ["train.prefix_loss=1", "train.frame_subset_min=2", f"train.out_dir={tmp_path}"])
