"""`istpan data shard` and `data.format=webdataset`: bytes unchanged, exactly-once epochs over any number of ranks and
workers, the same clips as from the files, exact mid-epoch resume, and bad shards skipped and counted."""

from __future__ import annotations

import copy
import json
import logging
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
from pausing import PausingChild
from test_train import make_list_dataset, tiny_config

from istpan.cli.main import main
from istpan.config import save_config
from istpan.data import index as video_index
from istpan.data.shard_loader import build_shard_loader, rank_range, resume_plan
from istpan.data.tools.shards import parse_size
from istpan.data.video_dataset import build_dataset


@pytest.fixture(autouse=True)
def _no_active_index():
    video_index.use(None)
    yield
    video_index.use(None)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, Path, dict]:
    """11 training videos (one of them broken) and 5 val videos, in shards of ~3 videos."""
    tmp = tmp_path_factory.mktemp("shards")
    data = make_list_dataset(tmp / "data", train=10, val=5, frames=8, size=32)
    (data / "broken.mp4").write_bytes(b"not a video at all" * 64)
    with (data / "train.txt").open("a") as fh:
        fh.write("broken.mp4 right\n")
    cfg = tiny_config(data, tmp / "run")
    save_config(cfg, tmp / "cfg.yaml")
    size = (data / "train_0.mp4").stat().st_size
    code = main(["data", "shard", "--config", str(tmp / "cfg.yaml"), "--out", str(tmp / "out"),
                 "--shard-size", str(3 * size), "--workers", "2", "--no-progress"])
    assert code == 1  # the broken video is left out and reported
    return data, tmp / "out", {"cfg": cfg}


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_parse_size():
    assert parse_size("1GB") == 10**9 and parse_size("512MiB") == 512 * 2**20 and parse_size("2e3") == 2000
    with pytest.raises(Exception, match="shard-size"):
        parse_size("big")


def test_shards_hold_the_files_bytes_labels_and_index(sharded):
    data, out, _ = sharded
    manifest = json.loads((out / "train.json").read_text())
    assert manifest["samples"] == 10 and len(manifest["shards"]) >= 3
    assert [s["path"] for s in manifest["skipped"]] == [str(data / "broken.mp4")]
    seen = {}
    for shard in manifest["shards"]:
        members = _members(out / shard["name"])
        docs = {k[: -len(".json")]: json.loads(v) for k, v in members.items() if k.endswith(".json")}
        assert len(docs) == shard["samples"]
        for key, doc in docs.items():
            video = members[f"{key}.video.mp4"]
            assert video == (data / doc["path"]).read_bytes()  # unchanged, not re-encoded
            assert doc["index"]["num_frames"] == 8 and len(doc["index"]["pts"]) == 8
            seen[doc["path"]] = doc["label"]
    lines = [line.split() for line in (data / "train.txt").read_text().splitlines() if "broken" not in line]
    classes = (data / "classes.txt").read_text().split()
    assert seen == {p: classes.index(c) for p, c in lines}
    assert json.loads((out / "val.json").read_text())["samples"] == 5


def test_rerun_rewrites_only_missing_shards(sharded, tmp_path):
    data, out, extra = sharded
    save_config(extra["cfg"], tmp_path / "cfg.yaml")
    first = out / "train-000001.tar"
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*.tar")}
    first.unlink()
    main(["data", "shard", "--config", str(tmp_path / "cfg.yaml"), "--out", str(out), "--shard-size",
          str(3 * (data / "train_0.mp4").stat().st_size), "--workers", "1", "--no-progress"])
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*.tar")}
    assert after.keys() == stamp.keys()
    assert [n for n in after if after[n] != stamp[n]] == [first.name]


def _shard_cfg(sharded, **data):
    _, out, extra = sharded
    cfg = extra["cfg"]
    d = type(cfg.data)(**{**vars(cfg.data), "format": "webdataset", "root": "",
                          "train_annotations": str(out / "train.json"), "val_annotations": str(out / "val.json"),
                          "shuffle_buffer": 4, **data})
    return d


def _indices(loader) -> list[int]:
    return [i for batch in loader for i in batch["index"].tolist()]


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 2), (3, 1), (4, 0)])
def test_every_sample_once_per_epoch_across_ranks_and_workers(sharded, world, workers):
    d = _shard_cfg(sharded)
    evals, trains = [], []
    for rank in range(world):
        common = dict(batch_size=2, num_workers=workers, seed=0, rank=rank, world=world)
        evals.append(_indices(build_shard_loader(d, split="train", train=False, **common)))
        loader = build_shard_loader(d, split="train", train=True, **common)
        loader.sampler.set_epoch(1)
        got = list(loader)
        assert len(got) == len(loader)  # every rank takes the same number of steps (DDP needs it)
        trains.append([i for b in got for i in b["index"].tolist()])
    assert sorted(i for r in evals for i in r) == list(range(10))  # evaluation: exactly once, no padding
    per_rank = rank_range(10, 0, world, pad=True)[1]
    assert all(len(t) == per_rank // 2 * 2 for t in trains)  # same steps on every rank, last partial batch dropped
    flat = [i for t in trains for i in t]
    if per_rank % 2 == 0:  # nothing dropped: every sample, plus at most world - 1 wrap-around repeats
        assert set(flat) == set(range(10)) and len(flat) - 10 <= world - 1


def test_clips_from_shards_equal_clips_from_files(sharded):
    _, out, extra = sharded
    d = _shard_cfg(sharded)
    loader = build_shard_loader(d, split="val", train=False, batch_size=2, num_workers=0, seed=0)
    from_shards = {}
    for batch in loader:
        for i, video in zip(batch["index"].tolist(), batch["video"]):
            from_shards[i] = video
    order = []
    manifest = json.loads((out / "val.json").read_text())
    for shard in manifest["shards"]:
        members = _members(out / shard["name"])
        order += sorted((k, json.loads(v)["path"]) for k, v in members.items() if k.endswith(".json"))
    files = build_dataset(extra["cfg"].data, split="val", train=False)
    by_path = {Path(r.path).name: i for i, r in enumerate(files.records)}
    assert len(from_shards) == 5
    for i, (_, path) in enumerate(order):
        assert torch.equal(from_shards[i], files[by_path[Path(path).name]]["video"])


def test_resume_plan_follows_round_robin_chunks():
    # 2 workers of 5 and 4 samples, chunks of 2: w0[0:2] w1[0:2] w0[2:4] w1[2:4] w0[4:5]
    assert resume_plan([5, 4], 2, 0) == ([0, 0], 0)
    assert resume_plan([5, 4], 2, 2) == ([2, 0], 1)  # worker 1's chunk is next: it becomes DataLoader worker 0
    assert resume_plan([5, 4], 2, 3) == ([2, 1], 1)  # cut inside worker 1's chunk: it re-sends from the cut
    assert resume_plan([5, 4], 2, 8) == ([4, 4], 0)
    assert resume_plan([1, 3, 2], 1, 5) == ([1, 2, 2], 1)


@pytest.mark.parametrize("done", [1, 2])
def test_resume_mid_epoch_continues_with_the_same_batches(sharded, done):
    d = _shard_cfg(sharded)
    common = dict(batch_size=2, num_workers=2, seed=3, rank=1, world=2)
    full = build_shard_loader(d, split="train", train=True, **common)
    full.sampler.set_epoch(2)
    whole = [(b["index"].tolist(), b["video"]) for b in full]
    resumed = build_shard_loader(d, split="train", train=True, **common)
    resumed.sampler.set_epoch(2)
    resumed.sampler.skip(done * 2)  # what the training loop does after `done` finished steps
    rest = [(b["index"].tolist(), b["video"]) for b in resumed]
    assert [r[0] for r in rest] == [w[0] for w in whole[done:]]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(rest, whole[done:]))
    assert len(list(resumed)) == len(whole)  # the skip was for that pass only


def test_truncated_shard_and_failing_url_are_skipped_and_counted(sharded, tmp_path, caplog):
    _, out, _ = sharded
    manifest = json.loads((out / "train.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    for s in manifest["shards"]:
        (bad / s["name"]).write_bytes((out / s["name"]).read_bytes())
    victim = manifest["shards"][0]
    (bad / victim["name"]).write_bytes((out / victim["name"]).read_bytes()[:3000])  # truncated mid-video
    (bad / "train.json").write_text(json.dumps(manifest))
    d = _shard_cfg(sharded, train_annotations=str(bad / "train.json"))
    with caplog.at_level(logging.WARNING):
        batches = list(build_shard_loader(d, split="train", train=False, batch_size=2, num_workers=0, seed=0))
    assert len(batches) == 5 and sum(b["skipped"] for b in batches) == victim["samples"]
    lines = [r.getMessage() for r in caplog.records if "shard" in r.getMessage()]
    assert len(lines) == 1 and victim["name"] in lines[0]

    caplog.clear()
    d = _shard_cfg(sharded, root="pipe:cat /nonexistent/{}")  # every URL fails
    with caplog.at_level(logging.WARNING):
        batches = list(build_shard_loader(d, split="train", train=False, batch_size=2, num_workers=0, seed=0))
    assert sum(b["skipped"] for b in batches) == 10 and sum(b["video"].shape[0] for b in batches) == 0
    assert len([r for r in caplog.records if "shard" in r.getMessage()]) == len(manifest["shards"])


def test_training_and_eval_from_shards(sharded, tmp_path):
    from istpan.training.train import train

    cfg = copy.deepcopy(sharded[2]["cfg"])
    cfg.data = _shard_cfg(sharded)
    cfg.train.out_dir = str(tmp_path / "run")
    cfg.train.epochs = 1
    result = train(cfg, progress=False)
    assert result["steps_per_epoch"] == 5
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in records if r["type"] == "epoch")
    assert epoch["train"]["clips"] == 10 and epoch["val"]["num_videos"] == 5
    # `istpan eval` of the checkpoint reads the same shards and gives the numbers of the run's validation
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--json", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["num_videos"] == 5 and again["top1"] == epoch["val"]["top1"]
    assert again["loss"] == pytest.approx(epoch["val"]["loss"], abs=1e-6)


# The child stops right after logging step 7 (5 steps per epoch: the 2nd step of epoch 2) until the test releases it.
_PAUSE_AT_STEP_7 = """
from istpan.training import run_log
log = run_log.RunLog.log
def paused_log(self, record, **kw):
    log(self, record, **kw)
    if record["type"] == "step" and record["global_step"] == 7:
        pause()
run_log.RunLog.log = paused_log
"""


@pytest.mark.slow
def test_training_from_shards_killed_or_interrupted_mid_epoch_resumes_exactly(sharded, tmp_path):
    """`data.format=webdataset`: a run stopped mid-epoch 2 by SIGKILL (resumes from the epoch-1 checkpoint) or by
    Ctrl-C (saves after step 2 of epoch 2 and resumes there, the shard readers skipping what was consumed) takes the
    steps of the uninterrupted run: same losses and LR at every step, same final weights."""
    from test_train import step_values

    from istpan.files.checkpoint import load_checkpoint
    from istpan.training.train import train

    def config(name: str):
        cfg = copy.deepcopy(sharded[2]["cfg"])
        cfg.data = _shard_cfg(sharded)
        cfg.train.out_dir, cfg.train.epochs = str(tmp_path / name), 2
        save_config(cfg, tmp_path / f"{name}.yaml")
        return cfg

    reference = train(config("reference"), progress=False)
    assert reference["steps_per_epoch"] == 5
    for name, sig in (("killed", signal.SIGKILL), ("interrupted", signal.SIGINT)):
        cfg = config(name)
        child = PausingChild(tmp_path / f"pause-{name}", patch=_PAUSE_AT_STEP_7, stderr=subprocess.PIPE, text=True,
                             argv=["train", "--config", str(tmp_path / f"{name}.yaml"), "--no-progress"])
        child.wait_paused()
        child.proc.send_signal(sig)
        child.release()
        _, err = child.proc.communicate(timeout=120)
        assert child.proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
        state = load_checkpoint(tmp_path / name / "last.pt")
        assert (state["epoch"], state.get("step_in_epoch", 0)) == ((1, 0) if sig == signal.SIGKILL else (1, 2))
        resumed = train(cfg, resume="auto", progress=False)
        assert step_values(tmp_path / name) == step_values(reference["run_dir"]), name
        a, b = (load_checkpoint(r["last_checkpoint"])["model"] for r in (resumed, reference))
        assert all(torch.equal(a[k], b[k]) for k in a), name
