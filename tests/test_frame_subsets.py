"""Random frame subsets in training (train.frame_subset_min, training/mixing.py FrameSubset): for anytime inference."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from istpan.config import load_config
from istpan.errors import UserError
from istpan.inference.anytime import DEFAULT_ORDER, anytime_scores, frame_order
from istpan.models import create_model
from istpan.training.mixing import FrameSubset
from istpan.training.optim import build_optimizer, build_scheduler
from istpan.training.run_log import RunLog
from istpan.training.train import _step_seed, train_one_epoch


def _numbered(batch: int = 3, k: int = 8) -> torch.Tensor:
    """(B, K, 1, 2, 2) video whose frame k of clip b is filled with 100·b + k: a kept frame shows where it came from."""
    return (100 * torch.arange(batch)[:, None] + torch.arange(k)[None]).float()[..., None, None, None].expand(
        batch, k, 1, 2, 2).clone()


def test_subset_keeps_time_order_and_own_times_and_one_draw_per_batch():
    video = _numbered()
    sizes = set()
    for seed in range(60):
        torch.manual_seed(seed)
        out, times = FrameSubset(1)(video)
        kept = out[0, :, 0, 0, 0].long()  # (n,) original frame indices of clip 0
        sizes.add(len(kept))
        assert out.shape[0] == 3 and out.shape[2:] == video.shape[2:]
        assert torch.all(kept[1:] > kept[:-1])  # distinct frames, in time order
        assert torch.equal(out[:, :, 0, 0, 0], 100 * torch.arange(3)[:, None] + kept[None])  # same frames every clip
        assert torch.allclose(times, (kept.float() + 0.5) / 8)  # each frame's own segment centre
    assert sizes == set(range(1, 9))  # every size 1..K occurs (uniform: 60 draws miss one with p < 0.02)


def test_subset_is_deterministic_from_the_seed_and_respects_the_minimum():
    video = _numbered()
    torch.manual_seed(5)
    a, ta = FrameSubset(6)(video)
    torch.manual_seed(5)
    b, tb = FrameSubset(6)(video)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    for seed in range(20):
        torch.manual_seed(seed)
        assert 6 <= FrameSubset(6)(video)[0].shape[1] <= 8
    torch.manual_seed(0)
    assert FrameSubset(20)(video)[0].shape[1] == 8  # a minimum above K keeps all K
    same, none = FrameSubset(0)(video)  # off: untouched
    assert same is video and none is None


def test_training_input_is_what_anytime_inference_sees():
    """The model on a kept subset with its times gives the anytime head's scores for those frames."""
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=4, input_size=32, time_encoding="fourier", head="glimpse").eval()
    frames = torch.randn(2, 8, 3, 32, 32)  # (B, N, C, H, W)
    scores = anytime_scores(model, frames)  # (B, 8, C) after 1..8 frames in the default order
    with torch.no_grad():
        for n in (1, 3, 5):
            keep = sorted(frame_order(DEFAULT_ORDER, 8)[:n])
            times = (torch.tensor(keep).float() + 0.5) / 8
            logits = model(frames[:, keep], times=times).logits
            assert torch.allclose(logits.softmax(-1), scores[:, n - 1], atol=1e-6)
            default = model(frames[:, keep]).logits  # times (k + 0.5) / n: other times, other logits
            assert (default - logits).abs().max() > 0.1 * logits.abs().max()


def test_training_step_uses_the_seeded_subset_with_its_times():
    """One optimiser step of the loop equals a hand-written step on the subset drawn from the step's seed."""
    cfg = load_config(None, ["train.partial_bn=false", "optim.lr=0.05", "optim.warmup_epochs=0",
                             "optim.clip_grad_norm=0", "train.log_every=0", "train.epochs=1", "train.seed=3",
                             "train.frame_subset_min=1"])
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=3, input_size=32, time_encoding="fourier", head="glimpse",
                         dropout=0.0)
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(7)
    batch = {"video": torch.randn(4, 8, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 2, 0])}

    opt = build_optimizer(model, cfg.optim)
    train_one_epoch(model, [batch], opt, build_scheduler(opt, cfg.optim, steps_per_epoch=1, epochs=1),
                    torch.amp.GradScaler("cpu", enabled=False), cfg=cfg, epoch=0, steps=1, device=torch.device("cpu"),
                    log=RunLog(Path("."), enabled=False, tensorboard=False, resume_step=None), progress=False,
                    subset=FrameSubset(cfg.train.frame_subset_min))

    torch.manual_seed(_step_seed(3, 0, 0, 0))
    video, times = FrameSubset(1)(batch["video"])
    assert video.shape[1] < 8  # this seed keeps a proper subset (the test would not see a dropped subset otherwise)

    def stepped(with_times: bool) -> torch.nn.Module:
        m = copy.deepcopy(ref).train()
        o = build_optimizer(m, cfg.optim)
        F.cross_entropy(m(video, times=times if with_times else None).logits, batch["label"]).backward()
        o.step()
        return m

    def diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
        sa, sb = a.state_dict(), b.state_dict()
        return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)

    assert diff(model, stepped(True)) < 1e-5
    assert diff(model, stepped(False)) > 1e-4  # the loop passes the kept frames' times on


def test_negative_minimum_is_a_config_error():
    with pytest.raises(UserError, match=r"train\.frame_subset_min"):
        load_config(None, ["train.frame_subset_min=-1"])
