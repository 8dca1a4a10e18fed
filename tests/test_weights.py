"""`model.pretrained=imagenet | torchvision:... | timm:...` through the libraries' own caches, never downloading.

The caches are built in a temp dir: torchvision's from the real ImageNet MobileNetV2 file (torch hub cache name
`mobilenet_v2-b0353104.pth` under `$TORCH_HOME/hub/checkpoints/`), timm's as a Hugging Face Hub cache snapshot
(`models--timm--<tag>/snapshots/<rev>/model.safetensors`) holding known random weights. HF_HUB_OFFLINE=1 throughout.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from istpan.errors import UserError
from istpan.models import create_model
from istpan.models.backbones import build_backbone

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 with empty torch hub and Hugging Face caches under tmp_path (constants are read at import,
    so the module attributes are patched as well as the environment)."""
    from huggingface_hub import constants

    hf_cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
    return tmp_path


def test_imagenet_from_a_warm_torch_hub_cache_equals_the_local_file(offline, mobilenet_v2_weights):
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(mobilenet_v2_weights, cache / "mobilenet_v2-b0353104.pth")
    local = build_backbone("mobilenetv2", pretrained=mobilenet_v2_weights).state_dict()
    for spec in ("imagenet", "torchvision:IMAGENET1K_V1", "torchvision:MobileNet_V2_Weights.IMAGENET1K_V1"):
        hub = build_backbone("mobilenetv2", pretrained=spec).state_dict()
        assert all(torch.equal(hub[k], local[k]) for k in local), spec
    model = create_model("istpan_mobilenetv2", num_classes=3, pretrained="imagenet")
    assert torch.equal(model.backbone.state_dict()["features.0.0.weight"], local["features.0.0.weight"])


def test_cold_torch_hub_cache_offline_says_which_file_to_put_where(offline):
    with pytest.raises(UserError) as err:
        build_backbone("mobilenetv2", pretrained="imagenet")
    text = str(err.value)
    assert "\n" not in text and "HF_HUB_OFFLINE=1" in text
    assert "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth" in text
    assert str(offline / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth") in text


def _timm_snapshot(root, repo: str, arch: str = "mobilenetv2_100") -> dict[str, torch.Tensor]:
    """A Hugging Face Hub cache entry for `repo` holding random weights of timm's full `arch`."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    weights = {k: v.contiguous() for k, v in timm.create_model(arch).state_dict().items()}
    entry = root / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(REVISION)
    (entry / "snapshots" / REVISION).mkdir(parents=True)
    save_file(weights, str(entry / "snapshots" / REVISION / "model.safetensors"))
    return weights


def test_timm_weights_from_a_warm_hugging_face_cache(offline):
    weights = _timm_snapshot(offline / "hf" / "hub", "timm/mobilenetv2_100.ra_in1k")
    for spec in ("imagenet", "timm:mobilenetv2_100.ra_in1k"):
        backbone = build_backbone("mobilenetv2_100", pretrained=spec)
        loaded = backbone.model.state_dict()  # features_only: the same keys minus the classifier
        assert loaded and all(torch.equal(v, weights[k]) for k, v in loaded.items() if k in weights), spec
        assert sum(k in weights for k in loaded) > 100


def test_a_timm_tag_brings_its_own_normalisation_into_the_checkpoint_meta(offline):
    """efficientnet_b0.ra4_e3600_r224_in1k expects mean = std = 0.5: the model's pretrained_cfg (what build_meta
    stores as the preprocessing) must say so, not ImageNet's."""
    tag = "efficientnet_b0.ra4_e3600_r224_in1k"
    _timm_snapshot(offline / "hf" / "hub", f"timm/{tag}", arch="efficientnet_b0")
    model = create_model("istpan_efficientnet_b0", num_classes=3, pretrained=f"timm:{tag}")
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)
    assert create_model("istpan_efficientnet_b0", num_classes=3).pretrained_cfg["mean"] == (0.485, 0.456, 0.406)


def test_cold_hugging_face_cache_offline_is_one_line(offline):
    with pytest.raises(UserError) as err:
        build_backbone("mobilenetv2_100", pretrained="imagenet")
    text = str(err.value)
    assert "\n" not in text and "timm/mobilenetv2_100.ra_in1k" in text
    assert "https://huggingface.co/timm/mobilenetv2_100.ra_in1k/resolve/main/model.safetensors" in text


@pytest.mark.parametrize("backbone, spec, words", [
    ("tiny", "imagenet", "neither torchvision nor timm has weights for the tiny backbone"),
    ("mobilenetv2", "torchvision:IMAGENET1K_V9", "torchvision:IMAGENET1K_V2"),  # names the known members
    ("mobilenetv2_100", "timm:resnet50.a1_in1k", "do not fit this model's mobilenetv2_100 backbone"),
    ("mobilenetv2_100", "timm:mobilenetv2_100.nope", "timm has no pretrained weights 'mobilenetv2_100.nope'"),
    ("mobilenetv2", "imagenett", "model.pretrained takes a local file, imagenet, timm:<name> or torchvision"),
])
def test_wrong_weight_names_are_one_line_errors(offline, backbone, spec, words):
    with pytest.raises(UserError) as err:
        build_backbone(backbone, pretrained=spec)
    assert words in str(err.value) and "\n" not in str(err.value)


class _RunsCode:
    """What a malicious .pth holds: unpickling it calls os.system (it would create `marker`)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_malicious_pretrained_file_is_refused_in_one_line_without_running_it(tmp_path, wrapped):
    """model.pretrained=FILE with a pickled os.system call: the code never runs, and the message says what the file is
    instead of quoting torch's advice to retry with weights_only=False (the same wording as a bad training
    checkpoint, from the one helper both use)."""
    marker = tmp_path / "it_ran"
    evil = tmp_path / "evil.pth"
    payload = _RunsCode(marker)
    torch.save({"state_dict": payload} if wrapped else payload, evil)
    with pytest.raises(UserError) as err:
        create_model("istpan_tiny", num_classes=3, pretrained=str(evil))
    text = str(err.value)
    assert not marker.exists()
    assert text.startswith(f"{evil}: not a plain-tensor checkpoint (it holds a Python object, posix.system)")
    assert "\n" not in text and "weights_only" not in text and "weights only" not in text.lower()
