"""Model files written before the model description (issue 20): they still load, and give the scores they gave.

tests/fixtures/legacy/ was written once by istpan at commit 2c89111 (tests/fixtures/make_legacy.py says how); the
probabilities below are what that commit's `load_model(best.pt)` gave on `fixed_input()`, printed by that script.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import istpan
from istpan.data.preprocess import Preprocessing
from istpan.files.load import load_model
from istpan.inference.predictor import Predictor

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
# softmax of the logits on fixed_input(), rounded to 6 digits, recorded at 2c89111 (make_legacy.py prints them)
EXPECTED = torch.tensor([[0.91137, 0.040362, 0.048268], [0.592246, 0.197458, 0.210295]])
CLASSES = ["left", "right", "still"]


def fixed_input() -> torch.Tensor:
    """make_legacy.py's input: (2, K=3, 3, 32, 32), seed 0, the first clip's top half brighter."""
    x = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[0, :, :, :16] += 2.0
    return x


def probs_of(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(fixed_input()).logits.softmax(-1)


def legacy_preprocessing() -> Preprocessing:
    """What the checkpoint's run trained on: 32 px crops of frames decoded at short side 36, K = 3 segments."""
    return Preprocessing(input_size=32, short_side=36, resize=36, num_frames=3, frame_stride=2)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """legacy/hf/config.json with its weights file, written from best.pt as save_pretrained wrote it (the same
    tensors, safetensors' own format; not committed: 1.2 MB)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("legacy") / "hf"
    folder.mkdir()
    shutil.copy(LEGACY / "hf" / "config.json", folder / "config.json")
    state = torch.load(LEGACY / "run" / "best.pt", map_location="cpu", weights_only=True)
    weights = {k: v.contiguous() for k, v in state["model"].items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt", "istpan_model": "istpan_tiny"})
    return folder


def test_legacy_checkpoint_file_gives_its_recorded_scores():
    model, meta = load_model(LEGACY / "run" / "best.pt")
    assert torch.allclose(probs_of(model), EXPECTED, atol=2e-6)
    assert list(meta.class_names) == CLASSES and not meta.multi_label
    assert meta.preprocessing == legacy_preprocessing()


def test_legacy_run_folder_gives_its_recorded_scores():
    predictor = Predictor.from_checkpoint(LEGACY / "run")
    assert torch.allclose(probs_of(predictor.model), EXPECTED, atol=2e-6)
    assert predictor.class_names == CLASSES and predictor.preprocessing == legacy_preprocessing()


def test_legacy_hf_folder_gives_its_recorded_scores(hf_folder):
    model = istpan.from_pretrained(hf_folder)
    assert torch.allclose(probs_of(model), EXPECTED, atol=2e-6)
    assert model.class_names == CLASSES and model.preprocessing == legacy_preprocessing()


@pytest.mark.parametrize("name", ["model.ts.json", "model_split.json"])
def test_legacy_export_sidecars_describe_the_model(name):
    sidecar = json.loads((LEGACY / "export" / name).read_text())
    assert sidecar["class_names"] == CLASSES and sidecar["multi_label"] is False
    assert Preprocessing.from_dict(sidecar["preprocessing"]) == legacy_preprocessing()
