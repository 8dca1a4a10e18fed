"""The HF folder's model card, parsed the way the Hub parses it (huggingface_hub's own readers), and --push-to-hub
against a stand-in for the Hub API (the network is never used)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from istpan.errors import UserError
from istpan.files.model_card import push_to_hub, run_metrics, write_model_card

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.fixture
def folder(tmp_path):
    """An HF folder's config.json (written by istpan export --format hf at 2c89111) with its training config."""
    out = tmp_path / "my-model"
    out.mkdir()
    shutil.copy(LEGACY / "hf" / "config.json", out / "config.json")
    return out


def _checkpoint_state(best_epoch=2):
    return {"best_epoch": best_epoch, "history": [
        {"epoch": 1, "train_loss": 1.2, "val_top1": 40.0, "val_top5": 90.0, "val_mean_class_acc": 38.0},
        {"epoch": 2, "train_loss": 0.9, "val_top1": 62.5, "val_top5": 100.0, "val_mean_class_acc": 61.0,
         "val_loss": 0.8, "val_num_videos": 8},
        {"epoch": 3, "train_loss": 0.7, "val_top1": 50.0, "val_top5": 100.0, "val_mean_class_acc": 49.0},
    ]}


def test_run_metrics_are_the_best_epochs_validation():
    assert run_metrics(_checkpoint_state()) == {"top1": 62.5, "top5": 100.0, "mean_class_acc": 61.0}
    assert run_metrics(_checkpoint_state(best_epoch=None)) == {"top1": 50.0, "top5": 100.0, "mean_class_acc": 49.0}
    assert run_metrics({"history": [{"epoch": 1, "train_loss": 1.0}]}) == {}  # never validated
    assert run_metrics({}) == {}
    multi = {"best_epoch": 1, "history": [{"epoch": 1, "val_mAP": 31.5, "val_wAP": 40.0}]}
    assert run_metrics(multi) == {"mAP": 31.5, "wAP": 40.0}


def test_model_card_front_matter_is_what_the_hub_parses(folder):
    config = json.loads((folder / "config.json").read_text())
    path = write_model_card(folder, metrics=run_metrics(_checkpoint_state()), repo_id="someone/istpan-tiny")
    assert path == folder / "README.md"
    meta = metadata_load(path)  # the YAML block between the --- lines, as the Hub reads it
    assert meta["library_name"] == "istpan" and meta["pipeline_tag"] == "video-classification"
    assert meta["license"] == "mit" and {"istpan", "video-classification", "istpan_tiny"} <= set(meta["tags"])
    assert meta["classes"] == config["class_names"] == ["left", "right", "still"]
    assert meta["preprocessing"] == config["preprocessing"] and meta["multi_label"] is False
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "someone/istpan-tiny"
    got = {r.metric_type: r.metric_value for r in results}
    assert got == {"accuracy": 62.5, "top_5_accuracy": 100.0, "mean_class_accuracy": 61.0}
    assert {r.task_type for r in results} == {"video-classification"}
    card = ModelCard.load(path)
    assert card.data.library_name == "istpan" and card.data.eval_results[0].metric_value == 62.5
    assert "istpan predict video.mp4 --checkpoint someone/istpan-tiny" in card.text
    assert "K = 3 frames of 32x32 pixels" in card.text and "`still`" in card.text


def test_model_card_without_metrics_has_no_model_index(folder):
    meta = metadata_load(write_model_card(folder, license="apache-2.0"))
    assert "model-index" not in meta and meta["license"] == "apache-2.0"
    assert "Evaluation" not in (folder / "README.md").read_text()


def test_model_card_of_a_folder_without_config_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"config\.json: cannot read"):
        write_model_card(tmp_path)


class StandInHub:
    """Records what push_to_hub asks of huggingface_hub's HfApi and reads the uploaded files at call time."""

    def __init__(self, fail: Exception | None = None):
        self.calls, self.uploaded, self.fail = [], {}, fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        if self.fail is not None:
            raise self.fail

    def upload_folder(self, *, folder_path, repo_id, **kwargs):
        self.calls.append(("upload_folder", repo_id, kwargs))
        self.uploaded = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}

        class Commit:
            commit_url = f"https://hub.invalid/{repo_id}/commit/0"

        return Commit()


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(folder):
    write_model_card(folder, repo_id="someone/istpan-tiny")
    hub = StandInHub()
    url = push_to_hub(folder, "someone/istpan-tiny", private=True, api=hub)
    assert url == "https://hub.invalid/someone/istpan-tiny/commit/0"
    (create, upload) = hub.calls
    assert create == ("create_repo", "someone/istpan-tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    assert upload[:2] == ("upload_folder", "someone/istpan-tiny") and upload[2]["repo_type"] == "model"
    assert set(hub.uploaded) == {"config.json", "README.md"}
    assert hub.uploaded["README.md"] == (folder / "README.md").read_bytes()


def _hub_error(status: int, message: str) -> Exception:
    """The error huggingface_hub raises for an HTTP status (its HTTP library's Response, with a request)."""
    import importlib

    from huggingface_hub import errors

    http = importlib.import_module(errors.Response.__module__.split(".")[0])
    response = errors.Response(status, request=http.Request("POST", "https://hub.invalid/api/repos/create"))
    return errors.HfHubHTTPError(message, response=response)


def test_push_to_hub_failure_is_one_line_naming_the_login(folder):
    with pytest.raises(UserError) as err:
        push_to_hub(folder, "someone/x", api=StandInHub(fail=_hub_error(401, "401 Client Error: Unauthorized\nmore")))
    assert "\n" not in str(err.value) and "someone/x" in str(err.value) and "hf auth login" in str(err.value)


# ---------------------------------------------------------------- istpan export --format hf [--push-to-hub]


def test_export_hf_writes_the_card_and_pushes_through_the_hub_api(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from istpan.cli.main import main
    from istpan.files.load import load_model

    hubs = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: hubs.append(StandInHub()) or hubs[-1])
    best = tmp_path / "best.pt"
    shutil.copy(LEGACY / "run" / "best.pt", best)  # written by istpan train: history with validation metrics
    out = tmp_path / "my-model"
    assert main(["export", "--checkpoint", str(best), "--format", "hf", "--out", str(out),
                 "--push-to-hub", "someone/istpan-tiny", "--private", "--license", "apache-2.0"]) == 0
    meta = metadata_load(out / "README.md")
    assert meta["library_name"] == "istpan" and meta["license"] == "apache-2.0"
    _, results = model_index_to_eval_results(meta["model-index"])
    assert {r.metric_type for r in results} == {"accuracy", "top_5_accuracy", "mean_class_accuracy"}
    (hub,) = hubs
    assert hub.calls[0][2]["private"] is True
    assert set(hub.uploaded) == {"config.json", "model.safetensors", "README.md"}
    assert "pushed to https://huggingface.co/someone/istpan-tiny" in capsys.readouterr().out
    model, _ = load_model(out)  # the card beside config.json changes nothing for loading
    assert model.model_name == "istpan_tiny"


@pytest.mark.parametrize(("extra", "needle"), [
    (["--format", "onnx", "--push-to-hub", "a/b"], "use them with --format hf"),
    (["--format", "hf", "--private"], "give --push-to-hub REPO_ID too"),
])
def test_export_push_options_misused_are_one_line(extra, needle, capsys):
    from istpan.cli.main import main

    assert main(["export", "--checkpoint", str(LEGACY / "run" / "best.pt"), *extra]) == 2
    assert needle in capsys.readouterr().err
