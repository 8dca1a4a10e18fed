"""Exact resume: a run killed with SIGKILL (or stopped with Ctrl-C) mid-epoch and resumed takes exactly the steps of
an uninterrupted run: same losses, same LR, same data order, same final weights — raw and EMA, with the modern
recipe's random augmentations and label smoothing on."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from pausing import PausingChild
from test_train import (
    make_list_dataset,
    step_values,
    tiny_config,
)

from istpan.config import save_config
from istpan.files.checkpoint import load_checkpoint, read_progress
from istpan.training.train import train

EPOCHS = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Dataset and the uninterrupted reference run (2 epochs x 4 steps of batch 1)."""
    base = tmp_path_factory.mktemp("resume")
    data = make_list_dataset(base / "data", train=4, val=2)
    reference = train(_config(data, base / "reference"), progress=False)
    return base, data, reference


def _train_opts() -> dict:
    return {"epochs": EPOCHS, "batch_size": 1, "ema_decay": 0.9}


def _config(data: Path, out: Path, **train_opts):
    augment = {"policy": "randaugment", "random_erasing": 0.5, "mixup_alpha": 0.8, "label_smoothing": 0.1}
    return tiny_config(data, out, train={**_train_opts(), **train_opts}, augment=augment)


PAUSE_AT = 5  # global step: the first step of epoch 2 (4 steps per epoch)

# The child stops right after logging step PAUSE_AT (epoch 1 checkpointed, epoch 2 under way) until the test releases
# it: the signal lands mid-epoch on any machine load.
_PATCH = f"""
from istpan.training import run_log
log = run_log.RunLog.log
def paused_log(self, record, **kw):
    log(self, record, **kw)
    if record["type"] == "step" and record["global_step"] == {PAUSE_AT}:
        pause()
run_log.RunLog.log = paused_log
"""


def _start(cfg_path: Path, pause_dir: Path) -> PausingChild:
    """`istpan train` in a child process, stopped right after its first optimiser step of epoch 2."""
    child = PausingChild(pause_dir, patch=_PATCH, argv=["train", "--config", str(cfg_path), "--no-progress"],
                         stderr=subprocess.PIPE, text=True)
    child.wait_paused()
    return child


def _same_weights(a: str | Path, b: str | Path) -> bool:
    """Raw and EMA weights both identical."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert "model_ema" in ca and ca["eval_weights"] == cb["eval_weights"]
    return all(ca[w].keys() == cb[w].keys() and all(torch.equal(ca[w][k], cb[w][k]) for k in ca[w])
               for w in ("model", "model_ema"))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_continues_exactly(setup):
    base, data, reference = setup
    cfg = _config(data, base / "killed")
    save_config(cfg, base / "killed.yaml")
    proc = _start(base / "killed.yaml", base / "pause-killed").proc  # epoch 1 checkpointed, epoch 2 running
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(base / "killed" / "last.pt")["epoch"] == 1  # the epoch-1 checkpoint survived intact

    resumed = train(cfg, resume="auto", progress=False)
    assert step_values(base / "killed") == step_values(reference["run_dir"])  # every step: loss, LR
    assert _same_weights(resumed["last_checkpoint"], reference["last_checkpoint"])
    assert resumed["final"]["top1"] == reference["final"]["top1"]


@pytest.mark.slow
def test_ctrl_c_saves_mid_epoch_and_says_how_to_resume(setup):
    base, data, reference = setup
    cfg = _config(data, base / "interrupted")
    save_config(cfg, base / "interrupted.yaml")
    child = _start(base / "interrupted.yaml", base / "pause-interrupted")
    proc = child.proc
    proc.send_signal(signal.SIGINT)  # the flag is set while the child waits; released, it ends the step it is in
    child.release()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with: istpan train --config" in err
    state = load_checkpoint(base / "interrupted" / "last.pt")
    assert state["epoch"] == 1 and state["step_in_epoch"] == 1  # stopped after the step it was in: mid-epoch 2

    resumed = train(cfg, resume="auto", progress=False)
    assert step_values(base / "interrupted") == step_values(reference["run_dir"])
    assert _same_weights(resumed["last_checkpoint"], reference["last_checkpoint"])


def test_resume_never_starts_over(setup):
    base, data, _ = setup
    out = base / "fresh"
    cfg = _config(data, out, epochs=1)
    train(cfg, progress=False)
    again = train(cfg, resume="never", progress=False)
    assert len([r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                if r["type"] == "epoch"]) == 1
    assert again["history"][0]["epoch"] == 1


def _bytes_read() -> int:
    """Bytes this process has read through read() calls so far (/proc/self/io rchar; mapped pages do not count)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts bytes read in /proc/self/io (Linux)")
def test_auto_resume_reads_only_the_progress_of_the_checkpoint_it_does_not_take(setup, tmp_path):
    """Auto-resume compares last.pt and best.pt by epoch and run id. It used to load both whole (model, EMA and
    optimiser state twice in memory for a large model); now the one it does not take costs only its small pickled
    part. Measured in bytes read, not time: about one checkpoint, where it was two."""
    from istpan.training.train import _repair_run_dir, _resume_from

    base, _, _ = setup
    run = tmp_path / "r"
    run.mkdir()
    for name in ("last.pt", "best.pt"):
        (run / name).write_bytes((base / "reference" / name).read_bytes())
    sizes = {name: (run / name).stat().st_size for name in ("last.pt", "best.pt")}
    before = _bytes_read()
    path, state = _resume_from("auto", run)
    read = _bytes_read() - before
    assert path == run / "last.pt"  # same epoch and run: last.pt, as before
    reference = load_checkpoint(run / "last.pt")
    assert state.keys() == reference.keys() and state["epoch"] == reference["epoch"] == EPOCHS
    assert all(torch.equal(state["model"][k], v) for k, v in reference["model"].items())
    assert sizes["last.pt"] <= read < sizes["last.pt"] + sizes["best.pt"] // 4, (read, sizes)
    state["best_epoch"] = state["epoch"]  # as if the last epoch were the best: the repair checks what best.pt holds
    before = _bytes_read()
    _repair_run_dir(path, state, run)
    assert _bytes_read() - before < sizes["best.pt"] // 4
    assert read_progress(run / "best.pt")["epoch"] == EPOCHS  # best.pt held epoch 1: rewritten
