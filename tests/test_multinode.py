"""Two "nodes" on this machine: two torchrun agents (one process each) meeting through a c10d rendezvous on
localhost, exactly as docs/scale.md and scripts/slurm_train.sh launch a multi-node job.

What must hold: the job's numbers are the numbers of one process (validation equals `istpan eval` of the same
checkpoint; every training clip counted once), and when one node dies mid-epoch the other fails instead of hanging,
and relaunching the job resumes from the last checkpoint and finishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pausing import child_program, release, wait_for_markers
from test_train import make_list_dataset, read_records, tiny_config

from istpan.cli.main import main
from istpan.config import save_config

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed")]


def _agents(cfg: Path, cwd: Path, job: str, *extra: str, program: Path | None = None,
            store: Path | None = None) -> list[subprocess.Popen]:
    """Two agents of one job, as two nodes would start them (same command, same endpoint).

    The rendezvous goes through a file (c10d's FileStore: `store_type=file`) rather than a TCP port we would have to
    pick free, release and hope nobody takes before torchrun binds it. `program` (a Python file) replaces
    `-m istpan.cli.main`."""
    store = store or cwd / f"rdzv-{job}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    target = [str(program)] if program else ["-m", "istpan.cli.main"]
    cmd = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", str(store), "--rdzv-conf", "store_type=file", "--rdzv-id", job, "--max-restarts", "0",
           *target, "train", "--config", str(cfg), *extra]
    return [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True) for _ in range(2)]


def _kill_node(agent: subprocess.Popen) -> None:
    """SIGKILL an agent and every process under it, as a node's power loss would. torchrun starts each worker in a
    session of its own (start_new_session), so killing the agent's process group alone leaves its worker running:
    the job then finishes on both workers and the test never sees a node die."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while we looked
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [agent.pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(pid, signal.SIGKILL)


def _wait(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    return [(p.wait(timeout=timeout), p.stdout.read()) for p in procs]


def test_two_nodes_match_one_process(tmp_path):
    data = make_list_dataset(tmp_path / "data", train=6, val=5)
    cfg = tiny_config(data, tmp_path / "run", train={"epochs": 1, "batch_size": 1})
    save_config(cfg, tmp_path / "cfg.yaml")
    results = _wait(_agents(tmp_path / "cfg.yaml", tmp_path, "two-nodes", "--no-progress"))
    assert [code for code, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    epoch = read_records(tmp_path / "run", "epoch")
    assert len(epoch) == 1 and epoch[0]["train"]["clips"] == 6  # 3 steps x 2 nodes x 1 clip
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--json", str(tmp_path / "one.json")]) == 0
    one, two = json.loads((tmp_path / "one.json").read_text()), epoch[0]["val"]
    assert two["num_videos"] == one["num_videos"] == 5
    for key in ("top1", "top5", "mean_class_acc"):
        assert two[key] == one[key]
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)


# Both workers stop right after logging the first step of epoch 2 (4 steps per epoch): last.pt holds epoch 1.
_PATCH = """
from istpan.training import run_log
log = run_log.RunLog.log
def paused_log(self, record, **kw):
    log(self, record, **kw)
    if record["type"] == "step" and record["global_step"] == 5:
        pause()
run_log.RunLog.log = paused_log
"""


def test_a_node_killed_mid_epoch_fails_the_job_and_a_relaunch_resumes(tmp_path):
    data = make_list_dataset(tmp_path / "data", train=8, val=2)  # 4 steps per epoch and node
    cfg = tiny_config(data, tmp_path / "run", train={"epochs": 3, "batch_size": 1})
    save_config(cfg, tmp_path / "cfg.yaml")
    program = tmp_path / "paused_istpan.py"
    program.write_text(child_program(tmp_path / "pause", _PATCH))
    (tmp_path / "pause").mkdir()
    agents = _agents(tmp_path / "cfg.yaml", tmp_path, "killed", "--no-progress", program=program)
    try:
        wait_for_markers(tmp_path / "pause", 2, agents)  # both workers inside epoch 2, epoch 1 checkpointed
        _kill_node(agents[1])  # the whole "node": agent and its worker
        agents[1].wait()
        release(tmp_path / "pause")  # the surviving worker goes on to its next step's all-reduce with a dead peer
        code, out = _wait(agents[:1], timeout=300)[0]
    finally:
        for agent in agents:
            if agent.poll() is None:
                _kill_node(agent)
    assert code != 0, out[-2000:]  # the surviving node fails: no hang, no half-job success
    assert len(read_records(tmp_path / "run", "epoch")) == 1

    results = _wait(_agents(tmp_path / "cfg.yaml", tmp_path, "relaunched"))  # says where it resumes
    assert [c for c, _ in results] == [0, 0], results[0][1][-2000:]
    assert any("at epoch 2" in o and "resuming from" in o for _, o in results)
    epochs = read_records(tmp_path / "run", "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and epochs[-1]["train"]["clips"] == 8
