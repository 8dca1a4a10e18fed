"""The modern training recipe: clip-consistent augmentation, mixup/cutmix with soft targets, label smoothing (CE and
BCE), gradient accumulation (single process and DDP), the backbone LR multiplier, EMA, and its config errors.

Accumulation is checked on a model without batch statistics (every BatchNorm replaced by torchvision's
FrozenBatchNorm2d, dropout 0): there, 4 batches of 2 must give the weights of 1 batch of 8.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_train import make_list_dataset, read_records, tiny_config
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from istpan.config import AugmentConfig, load_config
from istpan.data.transforms import train_transform
from istpan.errors import UserError
from istpan.files.checkpoint import load_checkpoint
from istpan.files.load import load_model
from istpan.models import create_model
from istpan.training.mixing import BatchMix, soft_targets
from istpan.training.optim import build_optimizer, build_scheduler
from istpan.training.run_log import RunLog
from istpan.training.train import train, train_one_epoch

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")

AUGMENTATIONS = {
    "randaugment": dict(policy="randaugment", randaugment_magnitude=15),
    "trivialaugment": dict(policy="trivialaugment"),
    "color_jitter": dict(color_jitter=0.4),
    "random_erasing": dict(random_erasing=1.0),
    "all": dict(policy="randaugment", color_jitter=0.4, random_erasing=0.5),
}


@pytest.mark.parametrize("crop", ["multiscale", "resized"])
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_identical_frames_stay_identical_after_every_augmentation(name, crop):
    frame = torch.randint(0, 256, (1, 3, 40, 48), dtype=torch.uint8)
    clip = frame.repeat(6, 1, 1, 1)  # (K, C, H, W): K identical frames
    aug = train_transform(input_size=32, crop=crop, **AUGMENTATIONS[name])
    plain = train_transform(input_size=32, crop=crop)
    changed = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out = aug(clip)  # (K, C, 32, 32)
        assert out.shape == (6, 3, 32, 32)
        assert all(torch.equal(out[0], out[k]) for k in range(1, 6)), f"{name}: frames of one clip differ"
        torch.manual_seed(seed)
        changed += not torch.allclose(out, plain(clip))
    assert changed > 0, f"{name} never changed a clip: it is not applied"


def test_bce_and_ce_label_smoothing():
    logits = torch.randn(4, 5)
    target = torch.tensor([0, 3, 1, 4])
    soft = soft_targets(target, num_classes=5, multi_label=False, smoothing=0.1)  # (B, C)
    assert torch.allclose(soft.sum(1), torch.ones(4))
    assert torch.allclose(F.cross_entropy(logits, soft), F.cross_entropy(logits, target, label_smoothing=0.1))
    multi_hot = torch.tensor([[1.0, 0, 1, 0, 0]])
    smoothed = soft_targets(multi_hot, num_classes=5, multi_label=True, smoothing=0.1)
    assert torch.allclose(smoothed, torch.tensor([[0.95, 0.05, 0.95, 0.05, 0.05]]))  # each class toward 0.5


def _mix(**kw) -> BatchMix:
    return BatchMix(AugmentConfig(**kw), num_classes=4, multi_label=False)


def test_mixup_blends_videos_and_targets_with_one_lambda():
    video = torch.randn(4, 3, 3, 8, 8)  # (B, K, C, H, W)
    target = torch.tensor([0, 1, 2, 3])  # distinct classes: the soft target shows lambda
    torch.manual_seed(0)
    mixed, soft = _mix(mixup_alpha=0.8)(video, target)
    lam = soft[0, 0].item()
    assert 0 < lam < 1 and soft[0, 3].item() == pytest.approx(1 - lam)  # clip 0 mixed with its neighbour, clip 3
    assert torch.allclose(mixed, lam * video + (1 - lam) * video.roll(1, 0), atol=1e-6)


def test_cutmix_pastes_one_box_into_every_frame_and_weighs_targets_by_area():
    video = torch.zeros(2, 4, 1, 16, 16)
    video[1] = 1.0
    for seed in range(5):
        torch.manual_seed(seed)
        mixed, soft = _mix(cutmix_alpha=1.0)(video, torch.tensor([0, 1]))
        pasted = mixed[0, :, 0] == 1.0  # (K, H, W): where clip 1 was pasted into clip 0
        assert all(torch.equal(pasted[0], pasted[k]) for k in range(4))  # same box in every frame
        assert soft[0, 1].item() == pytest.approx(pasted[0].float().mean().item())  # target share = pasted area


def test_mixing_multi_hot_targets_is_defined():
    mix = BatchMix(AugmentConfig(mixup_alpha=1.0, cutmix_alpha=1.0, label_smoothing=0.1), num_classes=3,
                   multi_label=True)
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for seed in range(6):
        torch.manual_seed(seed)
        _, soft = mix(torch.randn(2, 2, 3, 8, 8), target)
        smoothed = target * 0.9 + 0.05
        lam = (soft[0, 0] - smoothed[1, 0]) / (smoothed[0, 0] - smoothed[1, 0])  # solve for the clip's lambda
        assert torch.allclose(soft[0], lam * smoothed[0] + (1 - lam) * smoothed[1], atol=1e-6)
        assert soft.min() >= 0.05 - 1e-6 and soft.max() <= 0.95 + 1e-6


def test_recipe_off_returns_targets_untouched():
    video, target = torch.randn(2, 3, 3, 8, 8), torch.tensor([1, 2])
    out_video, out_target = _mix()(video, target)
    assert out_video is video and out_target is target  # integer targets: the plain recipe's loss, bit for bit


@pytest.mark.parametrize("override, words", [
    ("augment.policy=autoaugmentt", "augment.policy: unknown value 'autoaugmentt'"),
    ("augment.mixup_alpha=-0.2", "augment.mixup_alpha: -0.2 is out of range (must be >= 0.0)"),
    ("augment.label_smoothing=0.7", "augment.label_smoothing: 0.7 is out of range"),
    ("train.accumulate_steps=0", "train.accumulate_steps: 0 is out of range"),
    ("train.ema_decay=1.5", "train.ema_decay: 1.5 is out of range"),
    ("augment.mixupalpha=0.2", "unknown config key 'mixupalpha'"),
])
def test_bad_recipe_values_are_one_line_config_errors(override, words):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    assert words in str(err.value) and "\n" not in str(err.value)


def test_paper_configs_keep_tsn_recipe_and_folder_config_is_modern():
    for name in ("ucf101", "hmdb51", "charades", "kinetics"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.augment == AugmentConfig() and cfg.train.ema_decay == 0 and cfg.optim.backbone_lr_mult == 1
    modern = load_config(REPO / "configs" / "folder.yaml")
    a = modern.augment
    assert a.policy == "randaugment" and a.mixup_alpha > 0 and a.cutmix_alpha > 0 and a.label_smoothing > 0
    assert a.random_erasing > 0 and modern.train.ema_decay > 0 and modern.optim.backbone_lr_mult < 1
    assert modern.model.pretrained == "imagenet"


def test_backbone_lr_multiplier_holds_through_the_schedule():
    cfg = load_config(None, ["optim.backbone_lr_mult=0.1", "optim.lr=0.02"]).optim
    model = create_model("istpan_tiny", num_classes=3, input_size=32)
    opt = build_optimizer(model, cfg)
    backbone = {id(p) for p in model.backbone.parameters()}
    sched = build_scheduler(opt, cfg, steps_per_epoch=4, epochs=2)
    for _ in range(3):
        for group in opt.param_groups:
            in_backbone = {id(p) in backbone for p in group["params"]}
            assert len(in_backbone) == 1  # a group is all backbone or all new layers
            head_lr = opt.param_groups[0]["lr"]
            assert group["lr"] == pytest.approx(head_lr * (0.1 if in_backbone.pop() else 1.0))
        opt.step()
        sched.step()
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len([p for p in model.parameters() if p.requires_grad])


def _decay_of(opt: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): group["weight_decay"] for group in opt.param_groups for p in group["params"]}


def test_no_weight_decay_on_any_1d_parameter():
    """timm's rule: a 1-D parameter that is neither a bias nor in a norm layer (a layer-scale gamma) gets no decay."""

    class LayerScaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.LayerNorm(4)
            self.gamma = nn.Parameter(torch.full((4,), 1e-6))  # ConvNeXt's layer scale
            self.head = nn.Linear(4, 2)

    model = LayerScaled()
    decay = _decay_of(build_optimizer(model, load_config(None, ["optim.weight_decay=0.05"]).optim))
    assert decay[id(model.gamma)] == 0.0  # decayed (0.05) before
    assert decay[id(model.conv.bias)] == decay[id(model.norm.weight)] == decay[id(model.head.bias)] == 0.0
    assert decay[id(model.conv.weight)] == decay[id(model.head.weight)] == 0.05


@pytest.mark.slow
def test_convnext_layer_scale_gammas_get_no_decay():
    model = create_model("istpan_convnext_tiny", num_classes=3)
    decay = _decay_of(build_optimizer(model, load_config(None, ["optim.weight_decay=0.05"]).optim))
    gammas = [p for name, p in model.named_parameters() if name.endswith(".gamma")]
    assert len(gammas) == 18 and all(decay[id(p)] == 0.0 for p in gammas)
    assert all(decay[id(p)] == 0.05 for p in model.parameters() if p.ndim > 1 and p.requires_grad)


# -- gradient accumulation ------------------------------------------------------------------------------------------

def frozen_bn_model(seed: int = 0) -> nn.Module:
    """istpan_tiny with every BatchNorm frozen (no batch statistics) and no dropout."""
    torch.manual_seed(seed)
    model = create_model("istpan_tiny", num_classes=3, input_size=32, dropout=0.0)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features)
                frozen.weight.copy_(child.weight.detach() * 1.5)
                frozen.bias.copy_(child.bias.detach() + 0.1)
                frozen.running_mean.copy_(torch.randn(child.num_features) * 0.1)
                frozen.running_var.copy_(torch.rand(child.num_features) + 0.5)
                setattr(module, name, frozen)
            else:
                swap(child)

    swap(model)
    return model


def accumulation_batches(clips: range, batch: int) -> list[dict]:
    g = torch.Generator().manual_seed(7)
    video = torch.randn(16, 3, 3, 32, 32, generator=g)  # (N, K, C, H, W)
    label = torch.randint(0, 3, (16,), generator=g)
    idx = list(clips)
    return [{"video": video[idx[i:i + batch]], "label": label[idx[i:i + batch]]} for i in range(0, len(idx), batch)]


def run_steps(model: nn.Module, batches: list[dict], accumulate: int, **train_kw) -> nn.Module:
    cfg = load_config(None, [f"train.accumulate_steps={accumulate}", "train.partial_bn=false", "train.beta=0.1",
                             "train.gamma=0.01", "optim.lr=0.05", "optim.warmup_epochs=0", "optim.clip_grad_norm=0",
                             "train.log_every=0", "train.epochs=1", *[f"train.{k}={v}" for k, v in train_kw.items()]])
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps_per_epoch=len(batches) // accumulate, epochs=1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stats = train_one_epoch(model, batches, opt, sched, scaler, cfg=cfg, epoch=0, steps=len(batches),
                            device=torch.device("cpu"), log=RunLog(Path("."), enabled=False, tensorboard=False,
                                                                    resume_step=None), progress=False)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    assert stats["clips"] == world * sum(len(b["label"]) for b in batches)  # every clip once, summed over ranks
    return model


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def test_four_batches_of_two_equal_one_batch_of_eight():
    big = run_steps(frozen_bn_model(), accumulation_batches(range(16), 8), accumulate=1)  # 2 steps of 8
    small = run_steps(frozen_bn_model(), accumulation_batches(range(16), 2), accumulate=4)  # 2 steps of 4 x 2
    untrained = frozen_bn_model()
    assert _max_diff(big, untrained) > 1e-3  # it trained
    assert _max_diff(big, small) < 1e-6


_DDP_WORKER = """
import gc, sys, torch, torch.distributed as dist
sys.path.insert(0, TESTS)
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from istpan.runtime.distributed import init_distributed
from test_recipe import accumulation_batches, frozen_bn_model, run_steps
torch.set_num_threads(1)
init_distributed(torch.device("cpu"))
rank = dist.get_rank()
forwards, synced = [0], set()  # which forward/backward passes (1-based) all-reduced gradients
def counting_hook(state, bucket):
    synced.add(forwards[0])
    return allreduce_hook(state, bucket)
inner = frozen_bn_model()
inner.register_forward_pre_hook(lambda module, args: forwards.__setitem__(0, forwards[0] + 1))
model = torch.nn.parallel.DistributedDataParallel(inner)
model.register_comm_hook(None, counting_hook)
batches = accumulation_batches(range(8 * rank, 8 * rank + 8), 2)  # this rank's 8 clips: 2 steps of 2 x 2
run_steps(model, batches, accumulate=2)
if rank == 0:
    torch.save({"state": inner.state_dict(), "synced": sorted(synced)}, OUT)
# Leave together, with DDP's reducer (its pending gloo work holds Python callbacks) gone before the group: rank 1
# exiting while rank 0 still saved ended once in SIGABRT ("terminate called without an active exception") when two
# full suites ran side by side.
dist.barrier()
del model
gc.collect()
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.is_file() and shutil.which("torchrun") is None, reason="torchrun not installed")
def test_accumulation_under_two_gloo_processes_equals_one_big_batch(tmp_path):
    script = tmp_path / "worker.py"
    out = tmp_path / "rank0.pt"
    script.write_text(_DDP_WORKER.replace("TESTS", repr(str(Path(__file__).parent))).replace("OUT", repr(str(out))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(out, weights_only=True)
    # global batch 8 per step = 2 ranks x 2 accumulated batches of 2; the reference: batches of 8 in one process
    big = run_steps(frozen_bn_model(), [{"video": torch.cat([a["video"], b["video"]]),
                                         "label": torch.cat([a["label"], b["label"]])}
                                        for a, b in zip(accumulation_batches(range(8), 4),
                                                        accumulation_batches(range(8, 16), 4))], accumulate=1)
    diff = max((big.state_dict()[k] - v).abs().max().item() for k, v in result["state"].items())
    assert diff < 1e-6
    assert result["synced"] == [2, 4]  # of 4 backward passes only each group's last all-reduced: no_sync before


# -- the whole recipe through `train` ------------------------------------------------------------------------------

MODERN = {"policy": "randaugment", "color_jitter": 0.3, "random_erasing": 0.25, "mixup_alpha": 0.8,
          "cutmix_alpha": 1.0, "label_smoothing": 0.1}


@pytest.mark.parametrize("multi_label", [False, True])
def test_modern_recipe_trains_and_keeps_raw_and_ema_weights(tmp_path, multi_label):
    data = make_list_dataset(tmp_path / "data", train=6, val=3)
    cfg = tiny_config(data, tmp_path / "run", augment=MODERN,
                      data={"multi_label": multi_label},
                      optim={"backbone_lr_mult": 0.5},
                      train={"epochs": 2, "batch_size": 2, "accumulate_steps": 2, "ema_decay": 0.9})
    result = train(cfg, progress=False)
    steps = read_records(tmp_path / "run", "step")
    assert [r["global_step"] for r in steps] == [1, 2, 3, 4]  # 3 batches / 2 per step -> 2 optimiser steps / epoch
    epoch = read_records(tmp_path / "run", "epoch")[-1]
    metric = "mAP" if multi_label else "top1"
    val = epoch["val"]
    assert val["weights"] in ("raw", "ema")
    assert val[metric] == max(val[f"raw_{metric}"], val[f"ema_{metric}"])  # the better one is reported
    state = load_checkpoint(result["last_checkpoint"])
    assert state["model"].keys() == state["model_ema"].keys()
    assert any(not torch.equal(state["model"][k], state["model_ema"][k]) for k in state["model"])
    model, _ = load_model(result["last_checkpoint"])
    chosen = state[state["eval_weights"]]
    assert state["eval_weights"] == ("model_ema" if val["weights"] == "ema" else "model")
    assert all(torch.equal(v, chosen[k]) for k, v in model.state_dict().items())


def test_wandb_offline_run_gets_the_logged_scalars_and_resume_continues_it(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the optional wandb extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network, no account: the run is written under the run folder
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = make_list_dataset(tmp_path / "data", train=4, val=2)
    cfg = tiny_config(data, tmp_path / "run", train={"epochs": 1, "wandb": True, "wandb_project": "istpan-test"})
    train(cfg, progress=False)
    run_id = load_checkpoint(tmp_path / "run" / "last.pt")["run_id"]
    files = list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1  # the W&B run id is the checkpoint's run id
    loss = read_records(tmp_path / "run", "step")[-1]["loss"]
    record = _wandb_logs(tmp_path / "run" / "wandb", run_id, repr(loss)[:8].encode())  # W&B's binary log (protobuf
    assert b"train/loss" in record and b"val/top1" in record and repr(loss)[:8].encode() in record  # records)

    cfg.train.epochs = 2  # resume: the same W&B run continues (no new run id), and gets epoch 2's scalars
    train(cfg, progress=False)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(f"-{run_id}" in r.name for r in runs)  # no other run id
    # W&B names the folder after the start second (and appends -1 when a resume starts within the same second), so
    # check the resumed epoch's last loss in the bytes of this run id's logs rather than the folder names.
    loss2 = read_records(tmp_path / "run", "step")[-1]["loss"]
    assert loss2 != loss
    logs = _wandb_logs(tmp_path / "run" / "wandb", run_id, repr(loss2)[:8].encode())
    assert repr(loss2)[:8].encode() in logs


def _wandb_logs(folder: Path, run_id: str, expected: bytes, timeout_s: float = 15.0) -> bytes:
    """The bytes of this run id's W&B logs once `expected` is in them (or after `timeout_s`). Offline W&B writes from
    its own service process, and `finish()` can return before the last records are on disk: measured here, 2 resumes
    in 12 had them only after a short wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        logs = b"".join(f.read_bytes() for f in folder.glob(f"offline-run-*-{run_id}*/*.wandb"))
        if expected in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.1)


def test_wandb_without_the_package_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    data = make_list_dataset(tmp_path / "data", train=2, val=0)
    cfg = tiny_config(data, tmp_path / "run", data={"val_annotations": ""}, train={"epochs": 1, "wandb": True})
    with pytest.raises(UserError, match=r"pip install 'istpan\[wandb\]'"):
        train(cfg, progress=False)
