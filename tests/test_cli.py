"""The command line as a user meets it: help, train -> eval -> predict -> export, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from references import naive_decode, naive_window_probs
from test_train import (
    make_list_dataset,
    tiny_config,
)

from istpan.cli.main import main
from istpan.config import save_config
from istpan.files.load import load_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`istpan train` on a config file plus overrides; returns (data dir, run dir)."""
    base = tmp_path_factory.mktemp("cli")
    data = make_list_dataset(base / "data", train=6, val=5)
    save_config(tiny_config(data, base / "unused"), base / "cfg.yaml")
    run = base / "run"
    assert main(["train", "--config", str(base / "cfg.yaml"), f"train.out_dir={run}", "train.epochs=1",
                 "--no-progress"]) == 0
    return data, run


def test_help_lists_the_engine_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("train", "eval", "predict", "export"):
        assert name in out
    for name in ("train", "eval", "predict", "export"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_eval_views_and_json(trained, tmp_path, capsys):
    _, run = trained
    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--views", "2x3", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    result = json.loads(report.read_text())
    assert result["num_videos"] == 5 and result["skipped"] == 0 and result["views"] == "2x3"
    assert f"top1 {result['top1']:.2f}" in out
    assert len(result["confusion"]) == 3 and sum(map(sum, result["confusion"])) == 5
    # 1x1 views reproduce the validation the training loop ran after its last epoch
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--json", str(report)]) == 0
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert json.loads(report.read_text())["top1"] == last["val"]["top1"]


def test_predict_json_and_unreadable_video(trained, tmp_path, capsys):
    data, run = trained
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x01garbage" * 100)
    code = main(["predict", str(data / "val_0.mp4"), str(broken), "--checkpoint", str(run / "last.pt"), "--topk", "2",
                 "--num-frames", "5", "--json"])
    captured = capsys.readouterr()
    assert code == 1  # one video failed, the other was still classified
    results = json.loads(captured.out)
    assert results[0]["num_frames"] == 5 and len(results[0]["top"]) == 2
    assert {t["class"] for t in results[0]["top"]} <= {"left", "right", "still"}
    assert results[1]["path"] == str(broken) and "error" in results[1]
    assert f"error: {broken}" in captured.err


def test_json_means_one_thing_in_eval_and_predict(trained, tmp_path, capsys):
    """--json FILE writes the document to FILE (the text stays on stdout); --json - prints it alone on stdout (the
    text goes to stderr), in eval as in predict; a FILE not ending in .json is refused before anything is written."""
    data, run = trained
    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--json", str(report)]) == 0
    assert f"wrote {report}" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--json", "-"]) == 0
    captured = capsys.readouterr()
    on_stdout = json.loads(captured.out)  # the JSON alone
    assert on_stdout == json.loads(report.read_text())
    assert f"top1 {on_stdout['top1']:.2f}" in captured.err
    video, preds = data / "val_0.mp4", tmp_path / "preds.json"
    assert main(["predict", str(video), "--checkpoint", str(run / "last.pt"), "--json", str(preds)]) == 0
    captured = capsys.readouterr()
    (result,) = json.loads(preds.read_text())
    assert result["path"] == str(video) and f"{video}: {result['top'][0]['class']}" in captured.out
    assert main(["predict", str(video), "--checkpoint", str(run / "last.pt"), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == [result]
    before = video.read_bytes()  # `--json VIDEO VIDEO` would read the first video as FILE: refused, not overwritten
    assert main(["predict", "--json", str(video), str(data / "val_1.mp4"), "--checkpoint", str(run / "last.pt")]) == 2
    assert "FILE must end in .json" in capsys.readouterr().err and video.read_bytes() == before


def test_predict_device_defaults_to_auto_like_training(trained, monkeypatch, capsys):
    import torch

    from istpan.cli.main import build_parser
    from istpan.cli.output import pick_device

    data, run = trained
    assert build_parser().parse_args(["predict", "x.mp4", "--checkpoint", "c"]).device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_device("cpu") == "cpu"
    assert main(["predict", str(data / "val_0.mp4"), "--checkpoint", str(run / "last.pt")]) == 0  # auto: the CPU here
    assert main(["predict", str(data / "val_0.mp4"), "--checkpoint", str(run / "last.pt"), "--device", "cuda"]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"


def test_export_command(trained, tmp_path, capsys):
    _, run = trained
    out = tmp_path / "model.ts"
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--format", "torchscript", "--out", str(out)]) == 0
    assert out.is_file() and "max_abs_diff=" in capsys.readouterr().out
    assert json.loads((tmp_path / "model.ts.json").read_text())["class_names"] == ["left", "right", "still"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "optim.lrr=1"], "unknown config key 'lrr'"),
        (["train", "data.root=/nonexistent/videos"], "data.root: '/nonexistent/videos' does not exist"),
        (["eval", "--checkpoint", "/nonexistent.pt"], "checkpoint not found"),
        (["predict", "x.mp4", "--checkpoint", "/nonexistent.pt"], "checkpoint not found"),
        (["eval", "--checkpoint", "CKPT", "--views", "2x4"], "expected CLIPSxCROPS"),
        (["export", "--checkpoint", "CKPT", "--format", "torchscript", "--tolerance", "-1"], "differs from PyTorch"),
    ],
)
def test_errors_are_one_line_without_traceback(trained, argv, needle, capsys):
    _, run = trained
    argv = [str(run / "last.pt") if a == "CKPT" else a for a in argv]
    if argv[0] == "export":
        argv += ["--out", str(run / "x.ts")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err and "Traceback" not in err


def test_predict_delegates_explain_and_sliding_windows(trained, tmp_path, capsys):
    data, run = trained
    video = str(data / "val_1.mp4")
    assert main(["predict", video, "--checkpoint", str(run / "last.pt"), "--explain", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "index.html").is_file()
    capsys.readouterr()
    assert main(["predict", video, "--checkpoint", str(run / "last.pt"), "--window", "4", "--stride", "2",
                 "--unit", "frames", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    # 8 frames, windows of 4 every 2: exactly these three, each the model on its 3 segment-centre frames
    assert [(w["start"], w["end"]) for w in result["windows"]] == [(0, 4), (2, 6), (4, 8)]
    model, description = load_model(run / "last.pt")
    pre = description.preprocessing
    assert pre.short_side == pre.resize == 36
    frames = naive_decode(video, 36)
    want = [naive_window_probs(model, frames, k=3, input_size=32, mean=pre.mean, std=pre.std, start=s, end=e)
            for s, e in ((0, 4), (2, 6), (4, 8))]
    for w, ref in zip(result["windows"], want, strict=True):
        assert w["scores"] == pytest.approx(ref.tolist(), abs=1e-5)
    assert result["scores"] == pytest.approx(torch.stack(want).mean(0).tolist(), abs=1e-5)  # --reduce mean
