"""DDP under torchrun with 2 CPU processes (gloo) compared with 1 process.

The validation the two ranks run together must give exactly the numbers of a 1-process `istpan eval` of the same
checkpoint (every video scored once, no padding duplicates: 5 videos over 2 ranks); training must count every clip
of the epoch once and leave files written by rank 0 only.
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
    one_thread,  # noqa: F401  (autouse fixture: one intra-op thread)
    read_records,
    tiny_config,
)

from istpan.cli.main import main
from istpan.config import save_config

TORCHRUN = Path(sys.executable).with_name("torchrun")


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
