"""What training and evaluation do when things go wrong: a kill between the two checkpoint writes, temp files left by
a kill mid-write, datasets where nothing decodes, nothing to train, a run folder of another model, eval's confusion
matrix and more workers than CPUs. Each test failed before the behaviour it checks was in place.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_train import make_list_dataset, read_records, tiny_config
from videos import make_video

import istpan.training.train as train_module
from istpan.cli.eval import _confusion_text
from istpan.cli.main import main
from istpan.config import save_config
from istpan.data import build as builders
from istpan.data.build import build_data, class_names_of
from istpan.files.checkpoint import load_checkpoint, save_checkpoint
from istpan.training.train import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The tiny 3-class list dataset plus `broken_train.txt` / `broken_val.txt` listing only undecodable videos."""
    data = make_list_dataset(tmp_path_factory.mktemp("data"), train=6, val=5)
    good = (data / "train_0.mp4").read_bytes()
    broken = {
        "zero.mp4": b"",  # 0 bytes
        "random.mp4": bytes(torch.randint(256, (4000,), generator=torch.Generator().manual_seed(0)).tolist()),
        "cut.mp4": good[: len(good) // 2],  # MP4 cut at 50 %
        "tail.mp4": good[len(good) // 10:],  # header gone
    }
    for name, payload in broken.items():
        (data / name).write_bytes(payload)
    make_video(data / "one_frame.avi", num_frames=1, codec="mpeg4")
    (data / "one_frame.avi").write_bytes((data / "one_frame.avi").read_bytes()[:300])  # cut inside the one frame
    names = [*broken, "one_frame.avi"]
    (data / "broken_train.txt").write_text("".join(f"{n} left\n" for n in names[:4]))
    (data / "broken_val.txt").write_text("".join(f"{n} right\n" for n in names))
    return data


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """A 1-epoch `istpan train` run folder (last.pt, best.pt, config.yaml)."""
    run = tmp_path_factory.mktemp("run") / "r"
    train(tiny_config(dataset, run, train={"epochs": 1}), progress=False)
    return run


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    return line


def _logged_best(run_dir: Path, metric: str = "top1") -> int:
    """The epoch the run log calls best: the first epoch with the highest validation metric."""
    epochs = read_records(run_dir, "epoch")
    top = max(r["val"][metric] for r in epochs)
    return next(r["epoch"] for r in epochs if r["val"][metric] == top)


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after the raise runs, nothing catches it."""


def test_best_pt_holds_the_logged_best_after_a_kill_between_the_two_writes(dataset, tmp_path, monkeypatch):
    reference = train(tiny_config(dataset, tmp_path / "reference"), progress=False)
    cfg = tiny_config(dataset, tmp_path / "killed")
    writes: list[str] = []
    real_save = train_module.save_checkpoint

    def dies_on_second_write(state, path):  # epoch 1 is best (first validation): it writes two files
        writes.append(Path(path).name)
        if len(writes) == 2:
            raise _Killed
        return real_save(state, path)

    monkeypatch.setattr(train_module, "save_checkpoint", dies_on_second_write)
    with pytest.raises(_Killed):
        train(cfg, progress=False)
    monkeypatch.undo()
    run = tmp_path / "killed"
    assert [r["epoch"] for r in read_records(run, "epoch")] == [1]
    # as the kill left it, best.pt holds the epoch the log calls best
    assert (run / "best.pt").is_file() and load_checkpoint(run / "best.pt")["epoch"] == _logged_best(run) == 1

    resumed = train(cfg, progress=False)
    assert [r["epoch"] for r in read_records(run, "epoch")] == [1, 2]  # epoch 1 kept, not trained twice
    best_epoch = _logged_best(run)
    assert resumed["best_epoch"] == best_epoch == reference["best_epoch"]
    assert load_checkpoint(run / "best.pt")["epoch"] == best_epoch
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    ref, got = load_checkpoint(reference["last_checkpoint"])["model"], load_checkpoint(run / "last.pt")["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # the interrupted run ends where the uninterrupted one did


def test_resume_repairs_best_pt_and_removes_temp_files_of_a_killed_write(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, run, train={"epochs": 1})
    train(cfg, progress=False)
    best = load_checkpoint(run / "best.pt")
    # what the old write order left after a kill between last.pt and best.pt: last.pt says epoch 1 is best, no best.pt
    (run / "best.pt").unlink()
    # a kill inside torch.save leaves save_checkpoint's temp files; an unrelated file stays
    temps = [Path(tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=run)[1]) for name in ("last.pt", "best.pt")]
    (run / "notes.tmp").write_text("mine")

    result = train(cfg, progress=False)  # nothing left to train: only the repairs run
    assert not any(p.exists() for p in temps) and (run / "notes.tmp").read_text() == "mine"
    assert result["best_epoch"] == 1 == _logged_best(run) and (run / "best.pt").is_file()
    repaired = load_checkpoint(run / "best.pt")
    assert repaired["epoch"] == 1 and all(torch.equal(repaired["model"][k], v) for k, v in best["model"].items())


def test_training_on_videos_that_all_fail_stops_without_a_checkpoint(dataset, tmp_path, capsys):
    cfg = tiny_config(dataset, tmp_path / "run", data={"train_annotations": str(dataset / "broken_train.txt")})
    save_config(cfg, tmp_path / "cfg.yaml")
    code, _, err = _cli(["train", "--config", str(tmp_path / "cfg.yaml"), "--no-progress"], capsys)
    assert code == 2
    assert "training: no clip could be decoded: 4 of 4 failed; see " in _error_line(err)
    assert not list((tmp_path / "run").glob("*.pt"))


def test_training_whose_validation_videos_all_fail_stops_after_saving(dataset, tmp_path, capsys):
    cfg = tiny_config(dataset, tmp_path / "run", data={"val_annotations": str(dataset / "broken_val.txt")},
                      train={"epochs": 3})
    save_config(cfg, tmp_path / "cfg.yaml")
    code, _, err = _cli(["train", "--config", str(tmp_path / "cfg.yaml"), "--no-progress"], capsys)
    assert code == 2 and "validation: no clip could be decoded: 5 of 5 failed; see " in _error_line(err)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # the epoch's training is kept
    assert not (tmp_path / "run" / "best.pt").exists()


def test_bad_clips_are_named_once_per_run_and_counted_in_its_summary(dataset, tmp_path, capsys, caplog):
    """Two decoding workers per loader, two epochs, a broken file in both splits: each file is named once (it was
    once per worker that met it), skipped every time (counted per epoch) and counted once in the run's summary."""
    broken = ["random.mp4", "zero.mp4"]
    (tmp_path / "train.txt").write_text((dataset / "train.txt").read_text() + "".join(f"{n} left\n" for n in broken))
    (tmp_path / "val.txt").write_text((dataset / "val.txt").read_text() + "random.mp4 right\n")
    cfg = tiny_config(dataset, tmp_path / "run", data={"train_annotations": str(tmp_path / "train.txt"),
                                                       "val_annotations": str(tmp_path / "val.txt"), "num_workers": 2})
    save_config(cfg, tmp_path / "cfg.yaml")
    code, out, err = _cli(["train", "--config", str(tmp_path / "cfg.yaml")], capsys)
    assert code == 0 and "Traceback" not in err
    named = [r.getMessage() for r in caplog.records if "skipping unreadable video" in r.getMessage()]
    assert sorted(sum(str(dataset / n) in line for line in named) for n in broken) == [1, 1] and len(named) == 2
    assert "skipped 2 unreadable videos" in out
    epochs = read_records(tmp_path / "run", "epoch")
    assert len(epochs) == 2 and all(e["train"]["skipped"] >= 2 and e["val"]["skipped"] == 1 for e in epochs)


def test_nothing_to_train_is_an_error(dataset, tmp_path, capsys):
    save_config(tiny_config(dataset, tmp_path / "run"), tmp_path / "cfg.yaml")
    code, out, err = _cli(["train", "--config", str(tmp_path / "cfg.yaml"), "train.epochs=0"], capsys)
    assert code == 2 and "train.epochs=0: nothing to train" in _error_line(err) and "done" not in out
    assert not list((tmp_path / "run").glob("*.pt"))


def test_eval_on_videos_that_all_fail_is_one_line(trained, dataset, capsys):
    code, out, err = _cli(["eval", "--checkpoint", str(trained / "last.pt"),
                           f"data.val_annotations={dataset / 'broken_val.txt'}"], capsys)
    assert code == 2 and "top1" not in out
    assert "validation: no clip could be decoded: 5 of 5 failed; see " in _error_line(err)


def test_rerun_with_other_model_options_says_what_differs(trained, dataset, tmp_path, capsys):
    config = str(trained / "config.yaml")
    code, _, err = _cli(["train", "--config", config, "model.options.time_encoding=fourier",
                         "model.options.head=glimpse", "--no-progress"], capsys)
    line = _error_line(err)
    assert code == 2 and "time_encoding=none (this run: fourier)" in line and "head=mean (this run: glimpse)" in line
    assert "train.out_dir" in line and "--resume never" in line

    # --resume CK whose weights are not those of the model its meta names (edited, or another istpan)
    state = load_checkpoint(trained / "last.pt")
    from istpan.models import create_model

    other = create_model("istpan_tiny", num_classes=3, input_size=32, time_encoding="fourier", head="glimpse")
    state["model"] = other.state_dict()
    save_checkpoint(state, tmp_path / "odd.pt")
    code, _, err = _cli(["train", "--config", config, f"train.out_dir={tmp_path / 'new'}", "--resume",
                         str(tmp_path / "odd.pt"), "--no-progress"], capsys)
    assert code == 2 and f"{tmp_path / 'odd.pt'}: weights do not fit model 'istpan_tiny'" in _error_line(err)


def test_eval_prints_the_confusion_matrix_and_draws_it_beside_the_json(trained, tmp_path, capsys):
    code, out, _ = _cli(["eval", "--checkpoint", str(trained / "best.pt")], capsys)
    assert code == 0
    lines = out.splitlines()
    start = lines.index("confusion matrix (rows: true class, columns: predicted class number)")
    rows = [ln.split() for ln in lines[start + 2:start + 5]]
    assert [r[1] for r in rows] == ["left", "right", "still"]
    printed = [[int(v) for v in r[2:]] for r in rows]

    report = tmp_path / "eval.json"
    assert _cli(["eval", "--checkpoint", str(trained / "best.pt"), "--json", str(report)], capsys)[0] == 0
    result = json.loads(report.read_text())
    assert printed == result["confusion"] and sum(map(sum, printed)) == result["num_videos"] == 5
    with Image.open(tmp_path / "eval.confusion.png") as png:
        assert png.format == "PNG" and min(png.size) >= 200


def test_confusion_of_many_classes_lists_the_largest_mistakes():
    c = 25
    confusion = [[10 if i == j else 0 for j in range(c)] for i in range(c)]
    confusion[3][7], confusion[5][1] = 4, 6
    text = _confusion_text(confusion, [f"class{i}" for i in range(c)], json_given=False)
    assert text.splitlines()[0] == ("most frequent confusions (true -> predicted): class5 -> class1 (6), "
                                    "class3 -> class7 (4)")
    assert "25x25" in text and "--json" in text


def test_more_workers_than_cpus_are_capped_with_one_note(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(builders, "_noted_workers", set())  # the note is once per process
    cfg = tiny_config(dataset, tmp_path / "run", data={"num_workers": 64})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_loader, val_loader = build_data(cfg, distributed=False, class_names=class_names_of(cfg), mean=None,
                                              std=None)
    cpus = len(os.sched_getaffinity(0))
    assert train_loader.num_workers == val_loader.num_workers == cpus
    assert not [w for w in caught if "worker" in str(w.message)]
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "num_workers" in ln]
    assert notes == [f"note: data.num_workers=64 is more than the {cpus} CPUs available; using {cpus}"]
