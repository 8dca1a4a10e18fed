"""The training loop end to end on tiny generated videos: files it writes, seeded repeatability, schedule, partial BN,
losses logged apart, bf16, clear errors, and `evaluate` against a direct computation.

`make_list_dataset` and `tiny_config` are shared with test_resume / test_ddp / test_cli / test_export.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from references import charades_ap_loop
from videos import make_frames, make_video

from istpan.config import Config, config_from_dict, config_to_dict
from istpan.errors import UserError
from istpan.evaluation.evaluate import evaluate, video_scores
from istpan.files.checkpoint import load_checkpoint
from istpan.files.load import load_model
from istpan.training.optim import apply_partial_bn, lr_factor
from istpan.training.train import train

CLASSES = ["left", "right", "still"]


def make_list_dataset(root: Path, *, train: int = 6, val: int = 5, frames: int = 8, size: int = 32) -> Path:
    """Real MP4s + list files (`path label`) + classes.txt. Class = direction the bright square moves."""
    root.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {"train": [], "val": []}
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            label = i % len(CLASSES)
            clip = make_frames(frames, (size, size), seed=i + (100 if split == "val" else 0))
            if label == 1:
                clip = clip[::-1]  # reversed time: the square moves the other way
            elif label == 2:
                clip = np.repeat(clip[:1], frames, axis=0)
            name = f"{split}_{i}.mp4"
            make_video(root / name, np.ascontiguousarray(clip))
            rows[split].append(f"{name} {CLASSES[label]}")
    for split, lines in rows.items():
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def tiny_config(data: Path, out: Path, /, **sections) -> Config:
    """A config that trains istpan_tiny on 32 px, K=3 clips in a second or two; `sections` update data/model/..."""
    cfg = {
        "data": dict(format="list", root=str(data), train_annotations=str(data / "train.txt"),
                     val_annotations=str(data / "val.txt"), classes=str(data / "classes.txt"),
                     num_frames=3, test_num_frames=3, input_size=32, short_side=36, num_workers=0),
        "model": dict(name="istpan_tiny", options={"input_size": 32, "dropout": 0.3}),
        "optim": dict(name="sgd", lr=0.05, warmup_epochs=0.5, clip_grad_norm=5.0),
        "train": dict(epochs=2, batch_size=2, beta=0.1, gamma=0.01, partial_bn=False, log_every=1, tensorboard=False,
                      out_dir=str(out)),
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return config_from_dict(cfg)


def read_records(run_dir: Path, kind: str) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_list_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory) -> tuple[Config, dict]:
    cfg = tiny_config(dataset, tmp_path_factory.mktemp("run") / "r", train={"tensorboard": True})
    return cfg, train(cfg, progress=False)


def test_run_directory_holds_config_metrics_checkpoints(run):
    cfg, result = run
    out = Path(result["run_dir"])
    assert config_from_dict(yaml.safe_load((out / "config.yaml").read_text())) == cfg
    steps = read_records(out, "step")
    epochs = read_records(out, "epoch")
    assert len(steps) == 2 * 3 and len(epochs) == 2  # 6 videos / batch 2 = 3 steps per epoch
    for record in steps:  # the three loss terms are logged apart, and add up with beta and gamma
        total = record["ce"] + cfg.train.beta * record["interactive"] + cfg.train.gamma * record["attn"]
        assert record["loss"] == pytest.approx(total, rel=1e-5)
        assert record["interactive"] != 0 and record["attn"] != 0
    assert epochs[-1]["val"]["num_videos"] == 5 and epochs[-1]["val"]["skipped"] == 0
    assert list((out / "tb").glob("events.out.tfevents.*"))
    state = load_checkpoint(result["last_checkpoint"])
    assert state["epoch"] == 2 and state["meta"]["class_names"] == CLASSES
    assert result["best_checkpoint"] and Path(result["best_checkpoint"]).is_file()


def test_checkpoint_is_usable_without_config(run, dataset):
    _, result = run
    model, meta = load_model(result["last_checkpoint"])
    assert meta.model_name == "istpan_tiny" and meta.preprocessing.input_size == 32
    video = torch.randn(1, 3, 3, 32, 32)
    trained = load_checkpoint(result["last_checkpoint"])["model"]
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    assert model(video).logits.shape == (1, 3)


def step_values(run_dir: Path) -> list[dict]:
    """What must repeat exactly: every step's losses and LR (timings excluded)."""
    return [{k: r[k] for k in ("global_step", "loss", "ce", "interactive", "attn", "lr")}
            for r in read_records(run_dir, "step")]


def test_seeded_runs_are_identical(run, dataset, tmp_path):
    _, result = run
    again = train(tiny_config(dataset, tmp_path / "again"), progress=False)
    assert step_values(result["run_dir"]) == step_values(tmp_path / "again")
    a, b = load_checkpoint(result["last_checkpoint"])["model"], load_checkpoint(again["last_checkpoint"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["final"]["top1"] == result["final"]["top1"]


def test_an_old_config_trains_the_same_and_warns(run, dataset, tmp_path, caplog):
    """The old names of K (data.num_segments / test_segments) still read: the same config, the same run, a warning
    naming the key to write instead; the run's saved config.yaml uses the new names."""
    cfg, result = run
    old = config_to_dict(cfg)
    old["data"]["num_segments"], old["data"]["test_segments"] = old["data"].pop("num_frames"), old["data"].pop(
        "test_num_frames")
    old["train"]["out_dir"] = str(tmp_path / "old")
    with caplog.at_level("WARNING", logger="istpan.config"):
        old_cfg = config_from_dict(old)
    warned = [r.getMessage() for r in caplog.records if r.name == "istpan.config"]
    assert len(warned) == 2 and "write data.num_frames" in warned[0] and "write data.test_num_frames" in warned[1]
    assert dataclasses.replace(old_cfg, train=cfg.train) == cfg
    again = train(old_cfg, progress=False)
    assert step_values(result["run_dir"]) == step_values(tmp_path / "old")
    a, b = load_checkpoint(result["last_checkpoint"])["model"], load_checkpoint(again["last_checkpoint"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())["data"]
    assert (saved["num_frames"], saved["test_num_frames"]) == (3, 3) and "num_segments" not in saved


def test_logged_lr_follows_warmup_then_cosine(run):
    cfg, result = run
    lrs = [r["lr"] for r in read_records(result["run_dir"], "step")]  # LR after each optimiser step
    base, steps = cfg.optim.lr, result["steps_per_epoch"]
    warmup = round(cfg.optim.warmup_epochs * steps)
    total = cfg.train.epochs * steps
    for i, lr in enumerate(lrs):
        s = i + 1  # the scheduler has stepped s times
        expected = base * (s + 1) / warmup if s < warmup else base * 0.5 * (1 + math.cos(math.pi * (s - warmup) /
                                                                                          (total - warmup)))
        assert lr == pytest.approx(expected, abs=1e-12)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_step_schedule():
    from istpan.config import OptimConfig

    cfg = OptimConfig(schedule="step", warmup_epochs=0, step_epochs=[2, 4], step_gamma=0.1)
    factors = [lr_factor(e * 10, cfg=cfg, steps_per_epoch=10, epochs=6) for e in range(6)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_partial_bn_keeps_all_but_first_bn_frozen():
    from istpan.models import create_model

    model = create_model("istpan_tiny", num_classes=3, input_size=32)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in bns]
    model.train()
    assert apply_partial_bn(model) == len(bns) - 1
    model(torch.randn(2, 3, 3, 32, 32) * 3 + 1)
    assert not torch.equal(bns[0].running_mean, before[0])  # the first BN still adapts
    assert all(torch.equal(bn.running_mean, b) for bn, b in zip(bns[1:], before[1:]))
    assert all(not p.requires_grad for bn in bns[1:] for p in bn.parameters())


def test_bf16_amp_trains_on_cpu_like_fp32(dataset, tmp_path):
    """Same seed, data and init: bf16 autocast must really run (losses not bit-identical to fp32) and stay within
    bf16's precision of the fp32 run, step by step and in validation (measured: ~5e-4 relative after 3 steps)."""
    runs = {amp: train(tiny_config(dataset, tmp_path / amp, train={"amp": amp, "epochs": 1}), progress=False)
            for amp in ("none", "bf16")}
    losses = {amp: torch.tensor([r["loss"] for r in read_records(r["run_dir"], "step")]) for amp, r in runs.items()}
    assert len(losses["bf16"]) == len(losses["none"]) >= 3 and torch.isfinite(losses["bf16"]).all()
    assert not torch.equal(losses["bf16"], losses["none"])  # autocast was on
    torch.testing.assert_close(losses["bf16"], losses["none"], rtol=2e-2, atol=0.0)
    val = {amp: read_records(r["run_dir"], "epoch")[-1] for amp, r in runs.items()}
    assert val["bf16"]["val"]["loss"] == pytest.approx(val["none"]["val"]["loss"], rel=2e-2)


def test_wrong_dataset_path_and_wrong_checkpoint_are_user_errors(dataset, tmp_path, run):
    cfg = tiny_config(dataset, tmp_path / "x", data={"root": str(tmp_path / "nowhere")})
    with pytest.raises(UserError, match=r"data.root: .*nowhere' does not exist"):
        train(cfg, progress=False)
    _, result = run
    other = tiny_config(dataset, tmp_path / "y", model={"name": "tsn_tiny", "options": {"input_size": 32}})
    with pytest.raises(UserError, match=r"checkpoint is for model 'istpan_tiny' with 3 classes, but this run uses "
                                         r"'tsn_tiny'"):
        train(other, resume=result["last_checkpoint"], progress=False)
    renamed = tmp_path / "classes.txt"
    renamed.write_text("left\nstill\nright\n")  # same count, other order: labels would silently change meaning
    reordered = tiny_config(dataset, tmp_path / "z", data={"classes": str(renamed)})
    with pytest.raises(UserError, match=r"checkpoint's class 1 is 'right' but this dataset's is 'still'"):
        train(reordered, resume=result["last_checkpoint"], progress=False)


def test_evaluate_counts_each_video_once_and_averages_views(run, dataset):
    _, result = run
    model, _ = load_model(result["last_checkpoint"])
    g = torch.Generator().manual_seed(0)
    videos = torch.randn(5, 2, 3, 3, 32, 32, generator=g)  # (N, V, K, 3, h, w): 2 views per video
    labels = torch.tensor([0, 1, 2, 0, 1])
    batches = [
        {"video": videos[:2], "label": labels[:2], "index": torch.tensor([0, 1]), "skipped": 0},
        {"video": videos[2:5], "label": labels[2:5], "index": torch.tensor([2, 3, 4]), "skipped": 1},
        {"video": videos[:1], "label": labels[:1], "index": torch.tensor([0]), "skipped": 0},  # a padding duplicate
    ]
    out = evaluate(model, batches, multi_label=False, device="cpu", return_scores=True)
    assert out["num_videos"] == 5 and out["skipped"] == 1
    with torch.no_grad():  # direct: softmax of each view, averaged
        expected = torch.stack([model(videos[i]).logits.softmax(-1).mean(0) for i in range(5)])
    assert torch.allclose(out["scores"], expected, atol=1e-6)
    assert out["top1"] == pytest.approx(100 * (expected.argmax(1) == labels).float().mean().item())
    _, probs = video_scores(model, videos[:1, 0])  # a 5-D batch is one view
    assert torch.allclose(probs[0], model(videos[:1, 0]).logits.softmax(-1)[0].detach(), atol=1e-6)


def test_multilabel_run_reports_map_and_wap(tmp_path):
    data = make_list_dataset(tmp_path / "data", train=4, val=3)
    for split, rows in (("train", ["train_0.mp4 left,still", "train_1.mp4 right", "train_2.mp4 still,right",
                                   "train_3.mp4 left"]),
                        ("val", ["val_0.mp4 left", "val_1.mp4 right,still", "val_2.mp4 still"])):
        (data / f"{split}.txt").write_text("\n".join(rows) + "\n")
    cfg = tiny_config(data, tmp_path / "ml", data={"multi_label": True}, train={"epochs": 1})
    result = train(cfg, progress=False)
    model, meta = load_model(result["last_checkpoint"])
    assert meta.multi_label and model.multi_label
    # mAP and wAP by hand: the saved model's scores on the 3 validation videos, the official AP loop per class
    from istpan import Predictor

    classes = (data / "classes.txt").read_text().split()
    scores = Predictor(model, meta).scores([data / f"val_{i}.mp4" for i in range(3)])  # (3, 3)
    targets = [[int(c in labels) for c in classes] for labels in ({"left"}, {"right", "still"}, {"still"})]
    aps = [charades_ap_loop(scores[:, c].tolist(), [t[c] for t in targets]) for c in range(3)]
    positives = [sum(t[c] for t in targets) for c in range(3)]
    assert result["metric"] == "mAP" and result["final"]["classes_without_positives"] == 0
    assert result["final"]["mAP"] == pytest.approx(100 * sum(aps) / 3)
    assert result["final"]["wAP"] == pytest.approx(100 * sum(a * p for a, p in zip(aps, positives)) / 4)
    assert result["best"] == pytest.approx(result["final"]["mAP"])  # one epoch: the best is the last


def test_unreadable_validation_video_is_counted_as_skipped(tmp_path):
    data = make_list_dataset(tmp_path / "data", train=4, val=3)
    (data / "broken.mp4").write_bytes(b"not a video" * 50)
    with (data / "val.txt").open("a") as f:
        f.write("broken.mp4 left\n")
    result = train(tiny_config(data, tmp_path / "run", train={"epochs": 1}), progress=False)
    assert result["final"]["num_videos"] == 3 and result["final"]["skipped"] == 1


def test_predict_sees_what_eval_sees(run, dataset):
    """`istpan predict` on a file gives the very probabilities `istpan eval` (1x1 view) computes for it."""
    from istpan.data import build_dataset, build_loader
    from istpan.inference.videos import predict_videos

    cfg, result = run
    model, meta = load_model(result["last_checkpoint"])
    val = build_dataset(cfg.data, split="val", train=False)
    loader = build_loader(val, batch_size=2, train=False, num_workers=0, seed=0)
    scores = evaluate(model, loader, multi_label=False, device="cpu", return_scores=True)["scores"]  # (N, C)
    predicted = predict_videos(model, meta, [r.path for r in val.records], topk=3)
    for row, pred in zip(scores, predicted):
        by_class = {t["index"]: t["score"] for t in pred["top"]}
        assert torch.allclose(torch.tensor([by_class[i] for i in range(3)]), row, atol=1e-6)


def test_resuming_a_finished_run_reports_its_results(run):
    cfg, result = run
    again = train(cfg, resume="auto", progress=False)
    assert again["final"]["top1"] == result["final"]["top1"] and again["best"] == result["best"]
    assert len(read_records(result["run_dir"], "epoch")) == 2  # nothing trained, nothing logged twice


def test_folder_dataset_trains_from_root_alone(dataset, tmp_path):
    """configs/folder.yaml sets only data.root: <root>/train/<class>/*.mp4 and <root>/val/<class>/*.mp4."""
    root = tmp_path / "videos"
    for split, rows in (("train", (dataset / "train.txt").read_text().split("\n")),
                        ("val", (dataset / "val.txt").read_text().split("\n"))):
        for name, label in (row.split() for row in rows if row):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            (root / split / label / name).symlink_to(dataset / name)
    cfg = tiny_config(dataset, tmp_path / "run", train={"epochs": 1},
                      data=dict(format="folder", root=str(root), train_annotations="", val_annotations="", classes=""))
    result = train(cfg, progress=False)
    assert result["class_names"] == sorted(CLASSES)
    assert result["final"]["num_videos"] == 5  # <root>/val is validated without data.val_annotations


def test_checkpoint_of_an_unknown_model_names_the_file(run, tmp_path):
    """A checkpoint from another istpan version (model or option unknown here) says which file and what to do."""
    from istpan.files.checkpoint import save_checkpoint

    _, result = run
    state = load_checkpoint(result["last_checkpoint"])
    for key, value in (("model_name", "istpan_future"), ("model_options", {"warp": 3})):
        path = save_checkpoint({**state, "meta": {**state["meta"], key: value}}, tmp_path / f"{key}.pt")
        with pytest.raises(UserError, match=rf"{path}: checkpoint needs model .* unknown to this istpan"):
            load_model(path)
