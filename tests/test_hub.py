"""Shareable model folders (Hugging Face layout): export, `istpan.from_pretrained`, `--checkpoint FOLDER` in every
command, Hub repo ids from the Hugging Face cache offline, and loading that never runs code from the folder."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from test_train import make_list_dataset, tiny_config

import istpan
from istpan.cli.main import main
from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.files.checkpoint import load_checkpoint
from istpan.files.description import ModelDescription
from istpan.files.load import load_model
from istpan.training.train import train

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("hub")
    data = make_list_dataset(base / "data", train=4, val=3)
    result = train(tiny_config(data, base / "run", train={"epochs": 1, "ema_decay": 0.5}), progress=False)
    folder = base / "my-model"
    assert main(["export", "--checkpoint", result["last_checkpoint"], "--format", "hf", "--out", str(folder)]) == 0
    return base, data, result["last_checkpoint"], folder


def test_folder_holds_config_and_safetensors_of_the_used_weights(exported):
    _, _, ckpt, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]  # card
    config = json.loads((folder / "config.json").read_text())
    state = load_checkpoint(ckpt)
    meta = state["meta"]
    assert config["model_name"] == "istpan_tiny" and config["class_names"] == meta["class_names"]
    assert config["model_options"] == meta["model_options"] and config["num_classes"] == 3
    assert Preprocessing.from_dict(config["preprocessing"]) == ModelDescription.from_dict(meta).preprocessing
    assert config["train_config"] == state["config"]
    from safetensors.torch import load_file

    weights, used = load_file(str(folder / "model.safetensors")), state[state["eval_weights"]]
    assert weights.keys() == used.keys() and all(torch.equal(weights[k], used[k]) for k in used)


def test_from_pretrained_gives_the_checkpoints_model(exported):
    _, _, ckpt, folder = exported
    model = istpan.from_pretrained(folder)
    reference, _ = load_model(ckpt)
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(video).logits, reference(video).logits)
    assert model.class_names == ["left", "right", "still"] and model.preprocessing.input_size == 32


def test_every_command_takes_the_folder_as_checkpoint(exported, capsys, tmp_path):
    _, data, ckpt, folder = exported
    outputs = {}
    for source in (ckpt, folder):
        assert main(["predict", str(data / "val_0.mp4"), "--checkpoint", str(source), "--json"]) == 0
        outputs[str(source)] = json.loads(capsys.readouterr().out)[0]["top"]
        assert main(["eval", "--checkpoint", str(source), "--json", str(tmp_path / "e.json")]) == 0
        outputs[f"eval {source}"] = json.loads((tmp_path / "e.json").read_text())["top1"]
        capsys.readouterr()
    assert outputs[str(ckpt)] == outputs[str(folder)]
    assert outputs[f"eval {ckpt}"] == outputs[f"eval {folder}"]
    assert main(["export", "--checkpoint", str(folder), "--format", "torchscript", "--out",
                 str(tmp_path / "m.ts")]) == 0
    assert istpan.Predictor.from_checkpoint(folder).class_names == ["left", "right", "still"]


def test_hub_repo_id_from_a_warm_cache_offline_and_cold_cache_error(exported, tmp_path, monkeypatch):
    from huggingface_hub import constants

    _, _, _, folder = exported
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError) as err:
        istpan.from_pretrained("someone/istpan-tiny-demo")
    assert "hf download someone/istpan-tiny-demo" in str(err.value) and "\n" not in str(err.value)

    entry = tmp_path / "hub" / "models--someone--istpan-tiny-demo"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(REVISION)
    shutil.copytree(folder, entry / "snapshots" / REVISION)
    model = istpan.from_pretrained("someone/istpan-tiny-demo")
    reference = istpan.from_pretrained(folder)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


class _Boom:
    def __reduce__(self):
        return (open, ("MARKER_PATH", "w"))  # what an unsafe unpickle of this file would execute


def test_loading_never_executes_code_from_the_folder(exported, tmp_path):
    _, _, _, folder = exported
    hostile = tmp_path / "hostile"
    shutil.copytree(folder, hostile)
    marker = tmp_path / "executed"
    (hostile / "modeling_istpan.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (hostile / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom()).replace(b"MARKER_PATH", str(marker).encode()))
    config = json.loads((hostile / "config.json").read_text())
    (hostile / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_istpan.M"},
                                                     "trust_remote_code": True}))
    istpan.from_pretrained(hostile)
    assert not marker.exists()


def test_broken_folders_are_one_line_errors(exported, tmp_path):
    _, _, _, folder = exported
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    del config["class_names"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config\.json: missing class_names") as err:
        istpan.from_pretrained(broken)
    assert "\n" not in str(err.value)
    (broken / "model.safetensors").unlink()
    with pytest.raises(UserError, match="not a model folder"):
        load_model(broken)
