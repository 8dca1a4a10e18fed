"""DDP under torchrun with 2 CPU processes (gloo) compared with 1 process.

The validation the two ranks run together must give exactly the numbers of a 1-process `istpan eval` of the same
checkpoint (every video scored once, no padding duplicates: 5 videos over 2 ranks); training must count every clip
of the epoch once and leave files written by rank 0 only; and the weights after a 2-process epoch must equal a
by-hand DDP reference computed in this process (BatchNorm statistics are per rank, so "1 process with batch 2B" is
not the right reference).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import (
    make_list_dataset,
    read_records,
    tiny_config,
)

from istpan.cli.main import main
from istpan.config import save_config

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.slow  # two torchrun launches, ~35 s: `make test` runs them, `make test-fast` does not


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "istpan.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not TORCHRUN.is_file() and shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_gloo_processes_match_one_process(tmp_path, capsys):
    data = make_list_dataset(tmp_path / "data", train=6, val=5)
    cfg = tiny_config(data, tmp_path / "ddp", train={"epochs": 1, "batch_size": 1, "tensorboard": True})
    save_config(cfg, tmp_path / "cfg.yaml")

    # -- training: 2 ranks x batch 1
    proc = _torchrun(["train", "--config", str(tmp_path / "cfg.yaml"), "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    epoch = read_records(tmp_path / "ddp", "epoch")
    assert len(epoch) == 1  # one writer
    assert epoch[0]["train"]["clips"] == 6  # 3 steps x 2 ranks x 1 clip: every training video once
    assert epoch[0]["val"]["num_videos"] == 5 and epoch[0]["val"]["skipped"] == 0
    assert len(read_records(tmp_path / "ddp", "step")) == 3
    assert len(list((tmp_path / "ddp" / "tb").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.pt")) == ["best.pt", "last.pt"]

    # -- the validation the 2 ranks ran together vs `istpan eval` of the same checkpoint in 1 process
    assert main(["eval", "--checkpoint", str(tmp_path / "ddp" / "last.pt"), "--json", str(tmp_path / "one.json")]) == 0
    one, two = json.loads((tmp_path / "one.json").read_text()), epoch[0]["val"]
    assert two["num_videos"] == one["num_videos"] == 5
    for key in ("top1", "top5", "mean_class_acc"):
        assert two[key] == one[key]
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)


def _simulated_ddp_weights(cfg, world: int) -> dict:
    """One epoch of DDP done by hand in this process: each rank's step on its DistributedSampler shard, gradients
    averaged, rank 0's BatchNorm buffers kept (DDP broadcasts them from rank 0 before every forward)."""
    import torch
    from torch.utils.data import DistributedSampler

    from istpan.data import build_dataset
    from istpan.models import create_model
    from istpan.training.optim import build_optimizer, build_scheduler
    from istpan.training.train import _step_seed, compute_losses

    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model.name, num_classes=3, **cfg.model.options)
    dataset = build_dataset(cfg.data, split="train", train=True, seed=cfg.train.seed)
    dataset.set_epoch(0)
    shards = []
    for rank in range(world):
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed)
        sampler.set_epoch(0)
        shards.append(list(sampler))
    steps = len(shards[0]) // cfg.train.batch_size
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch=steps, epochs=cfg.train.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for step in range(steps):
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        grads = [torch.zeros_like(p) for p in params]
        for rank in reversed(range(world)):  # rank 0 last: its buffer updates are the ones that persist
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
            rows = shards[rank][step * cfg.train.batch_size:(step + 1) * cfg.train.batch_size]
            items = [dataset[i] for i in rows]
            video = torch.stack([it["video"] for it in items])
            label = torch.stack([it["label"] for it in items])
            torch.manual_seed(_step_seed(cfg.train.seed, 0, step, rank))
            loss = compute_losses(model(video), label, multi_label=False, beta=cfg.train.beta,
                                  gamma=cfg.train.gamma)["loss"]
            for g, d in zip(grads, torch.autograd.grad(loss, params)):
                g += d / world
        for p, g in zip(params, grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad_norm)
        optimizer.step()
        scheduler.step()
    return model.state_dict()


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed")
def test_two_processes_train_exactly_like_a_hand_made_ddp_step(tmp_path):
    """The weights after a 2-process epoch equal a by-hand reference: shards, gradient averaging, seeds, buffers."""
    import torch

    from istpan.files.checkpoint import load_checkpoint

    data = make_list_dataset(tmp_path / "data", train=6, val=0)
    (data / "val.txt").write_text("")
    cfg = tiny_config(data, tmp_path / "ddp", data={"val_annotations": ""}, train={"epochs": 1, "batch_size": 1})
    save_config(cfg, tmp_path / "cfg.yaml")
    proc = _torchrun(["train", "--config", str(tmp_path / "cfg.yaml"), "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    reference = _simulated_ddp_weights(cfg, world=2)
    for key, value in reference.items():
        assert torch.allclose(trained[key].float(), value.float(), atol=1e-5), key
