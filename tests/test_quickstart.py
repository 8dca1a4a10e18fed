"""The README's quick start, end to end through the CLI: a folder-per-class dataset, `data check`, `train` with the
modern recipe from the real ImageNet MobileNetV2 weights (`model.pretrained=imagenet`, from a torch hub cache built in
a temp dir, HF_HUB_OFFLINE=1: nothing is downloaded), `eval`, `predict --explain`, `export --format hf`. Small sizes,
same commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from videos import make_video

from istpan import Predictor
from istpan.cli.main import main

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine")
    for split, n in (("train", 3), ("val", 2)):
        for label in ("wave", "jump"):
            for i in range(n):
                make_video(root / split / label / f"{label} {i}.mp4", num_frames=12, size=(48, 64))
    return root


def test_readme_quick_start(folder_dataset, tmp_path, capsys, mobilenet_v2_weights, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(mobilenet_v2_weights, cache / "mobilenet_v2-b0353104.pth")  # torchvision's cache name
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    small = ["data.input_size=32", "data.short_side=36", "data.num_frames=2", "data.test_num_frames=2",
             "data.num_workers=0", "model.options.input_size=32", "train.epochs=1", "train.batch_size=2",
             "train.tensorboard=false"]
    common = ["--config", str(REPO_CONFIGS / "folder.yaml"), f"data.root={folder_dataset}"]
    assert main(["data", "check", *common, "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    # both splits found under <root>/train and <root>/val, every video of both classes usable
    classes = {split: sorted((c["name"], c["videos"], c["ok"]) for c in s["classes"])
               for split, s in report["splits"].items()}
    assert classes == {"train": [("jump", 3, 3), ("wave", 3, 3)], "val": [("jump", 2, 2), ("wave", 2, 2)]}
    assert report["clean"]

    run = tmp_path / "run"
    assert main(["train", *common, "model.pretrained=imagenet", f"train.out_dir={run}", *small]) == 0
    assert (run / "last.pt").is_file() and (run / "config.yaml").is_file()

    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--json", str(tmp_path / "eval.json")]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    # top-1 by hand: the Predictor's first class for each validation video against its folder's name
    predictor = Predictor.from_checkpoint(run / "last.pt")
    val = sorted((folder_dataset / "val").glob("*/*.mp4"))
    right = [r["top"][0]["class"] == p.parent.name for r, p in zip(predictor.predict(val, topk=1), val, strict=True)]
    assert metrics["num_videos"] == 4 and metrics["top1"] == pytest.approx(100 * sum(right) / 4)
    capsys.readouterr()

    clip = folder_dataset / "val" / "wave" / "wave 0.mp4"
    assert main(["predict", str(clip), "--checkpoint", str(run / "last.pt"), "--topk", "2", "--json",
                 "--explain", str(tmp_path / "explain")]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert {t["class"] for t in result["top"]} == {"jump", "wave"}
    assert (tmp_path / "explain" / "index.html").is_file()

    assert main(["export", "--checkpoint", str(run / "best.pt"), "--format", "hf", "--out", str(tmp_path / "my")]) == 0
    assert (tmp_path / "my" / "config.json").is_file() and (tmp_path / "my" / "model.safetensors").is_file()
