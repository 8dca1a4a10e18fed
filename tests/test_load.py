"""The one loader (`istpan.files.load`) on its four sources, the model description it returns, and one read of the
file per command. Uses the committed legacy fixture (tests/fixtures/legacy, test_legacy_formats.py): no training."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_legacy_formats import CLASSES, EXPECTED, LEGACY, hf_folder, legacy_preprocessing, probs_of  # noqa: F401

import istpan
from istpan.errors import UserError
from istpan.files.checkpoint import save_checkpoint
from istpan.files.description import ModelDescription
from istpan.files.load import load, load_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _check(model: torch.nn.Module, description: ModelDescription) -> None:
    assert torch.allclose(probs_of(model), EXPECTED, atol=2e-6) and not model.training
    assert description.class_names == tuple(CLASSES) and description.num_classes == 3
    assert description.model_name == "istpan_tiny" and description.preprocessing == legacy_preprocessing()
    assert description.num_frames == 3 and description.modality == "rgb" and description.backend == "pyav"


def test_a_checkpoint_file():
    _check(*load_model(LEGACY / "run" / "best.pt"))
    loaded = load(LEGACY / "run" / "best.pt")
    assert loaded.run_config["data"]["input_size"] == 32 and loaded.source == str(LEGACY / "run" / "best.pt")


def test_a_run_folder_takes_best_else_last(tmp_path):
    _check(*load_model(LEGACY / "run"))
    assert load(LEGACY / "run").source == str(LEGACY / "run" / "best.pt")
    shutil.copy(LEGACY / "run" / "best.pt", tmp_path / "last.pt")
    assert load(tmp_path).source == str(tmp_path / "last.pt")
    (tmp_path / "last.pt").unlink()
    with pytest.raises(UserError, match=r"no best\.pt or last\.pt"):
        load_model(tmp_path)


def test_a_model_folder(hf_folder):  # noqa: F811
    _check(*load_model(hf_folder))
    assert load(hf_folder).run_config["data"]["input_size"] == 32  # config.json keeps the train config
    model = istpan.from_pretrained(hf_folder)
    assert model.description == load_model(hf_folder)[1] and model.class_names == CLASSES


def test_a_hub_repo_id_from_the_cache_offline(hf_folder, tmp_path, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    entry = tmp_path / "hub" / "models--someone--legacy-tiny"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(REVISION)
    shutil.copytree(hf_folder, entry / "snapshots" / REVISION)
    _check(*load_model("someone/legacy-tiny"))
    with pytest.raises(UserError, match="hf download someone/other"):
        load_model("someone/other")


def test_description_round_trips_and_completes_old_dicts():
    state = torch.load(LEGACY / "run" / "best.pt", map_location="cpu", weights_only=True)
    description = ModelDescription.from_dict(state["meta"])
    assert ModelDescription.from_dict(description.to_dict()) == description
    written, meta = description.to_dict(), dict(state["meta"])
    # the keys checkpoints have always had (older istpan reads them), K renamed: num_frames, and the old names = K
    meta["preprocessing"] = {**meta["preprocessing"], "num_frames": 3, "num_segments": 3, "clip_len": 3}
    assert written == meta
    old = {k: v for k, v in state["meta"].items()}
    old["preprocessing"] = {k: v for k, v in old["preprocessing"].items() if k != "backend"}
    assert ModelDescription.from_dict(old, run_config={"data": {"backend": "frames"}}).backend == "frames"
    assert ModelDescription.from_dict({**old, "class_names": ["x"]}).class_names == ("class 0", "class 1", "class 2")
    sidecar = json.loads((LEGACY / "export" / "model.ts.json").read_text())
    from_sidecar = ModelDescription.from_dict(sidecar)
    assert from_sidecar.model_name == "" and from_sidecar.class_names == tuple(CLASSES)
    assert from_sidecar.preprocessing == description.preprocessing


def test_a_file_without_model_name_is_one_line(tmp_path):
    state = torch.load(LEGACY / "run" / "best.pt", map_location="cpu", weights_only=True)
    path = save_checkpoint({**state, "meta": {**state["meta"], "model_name": ""}}, tmp_path / "nameless.pt")
    with pytest.raises(UserError, match="does not name its model"):
        load_model(path)


def test_each_command_reads_the_file_once(tmp_path, monkeypatch, capsys):
    """predict, export --format hf and the Predictor read the checkpoint file once (eval: test_hub's commands)."""
    from istpan.cli.main import main
    from istpan.files import checkpoint

    reads = []
    real = checkpoint.load_tensors
    monkeypatch.setattr(checkpoint, "load_tensors", lambda path, **kw: reads.append(str(path)) or real(path, **kw))
    assert main(["export", "--checkpoint", str(LEGACY / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert reads == [str(LEGACY / "run" / "best.pt")]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["train_config"]["data"]["input_size"] == 32
    reads.clear()
    istpan.Predictor.from_checkpoint(LEGACY / "run")
    assert reads == [str(LEGACY / "run" / "best.pt")]
