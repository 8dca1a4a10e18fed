"""The ways in that users of the ecosystem expect: `python -m istpan`, global options anywhere on the line,
`torch.hub.load` (hubconf.py, always with source="local"; ImageNet weights only from a warm cache, never downloaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_weights import offline  # noqa: F401  (fixture: HF_HUB_OFFLINE=1, empty caches under tmp_path)

from istpan import __version__
from istpan.cli.main import build_parser, main
from istpan.errors import UserError
from istpan.models import create_model, list_models

ROOT = Path(__file__).resolve().parents[1]


def test_python_dash_m_istpan_is_the_istpan_command():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "istpan", "--version"], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == f"istpan {__version__}"
    bad = subprocess.run([sys.executable, "-m", "istpan", "configs", "--show", "no-such-config"], capture_output=True,
                         text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no-such-config")


@pytest.mark.parametrize("argv", [
    ["-v", "configs"], ["configs", "-v"], ["configs", "--verbose"], ["data", "check", "--config", "x", "-v"],
    ["-v", "data", "check", "--config", "x"],
])
def test_verbose_is_accepted_before_and_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True


def test_verbose_defaults_to_off_wherever_it_could_be_given():
    assert build_parser().parse_args(["configs"]).verbose is False
    assert build_parser().parse_args(["data", "check", "--config", "x"]).verbose is False


def test_verbose_after_the_subcommand_shows_the_traceback(capsys):
    assert main(["configs", "--show", "no-such-config"]) == 2  # one line
    assert capsys.readouterr().err.startswith("error: no-such-config")
    with pytest.raises(UserError, match="no-such-config"):  # -v: the full traceback, as before the subcommand
        main(["configs", "--show", "no-such-config", "-v"])


@pytest.mark.parametrize("argv", [["--version"], ["train", "--version"], ["data", "check", "--version"]])
def test_version_wherever_it_is_given(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"istpan {__version__}"


# ---------------------------------------------------------------- torch.hub


def _hub(name: str, **kwargs):
    return torch.hub.load(str(ROOT), name, source="local", trust_repo=True, verbose=False, **kwargs)


def test_hubconf_lists_every_registered_model_and_nothing_else():
    # What torch.hub.list does for a GitHub repo: the public callables of hubconf.py.
    hubconf = torch.hub._import_module("hubconf", str(ROOT / "hubconf.py"))
    entries = sorted(n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_"))
    assert entries == list_models()
    assert {"torch", "timm"} <= set(hubconf.dependencies)


def test_torch_hub_load_builds_the_same_model_as_create_model():
    torch.manual_seed(0)
    ours = create_model("istpan_tiny", num_classes=5, fuse="learned", num_scales=2)
    torch.manual_seed(0)
    hub = _hub("istpan_tiny", num_classes=5, fuse="learned", num_scales=2)
    assert hub.model_name == "istpan_tiny" and hub.model_options == ours.model_options
    theirs, mine = hub.state_dict(), ours.state_dict()
    assert theirs.keys() == mine.keys() and all(torch.equal(theirs[k], v) for k, v in mine.items())
    video = torch.randn(2, 3, 3, 112, 112)  # (B, K, 3, S, S)
    with torch.no_grad():
        assert torch.equal(hub.eval()(video).logits, ours.eval()(video).logits)
    with pytest.raises(UserError, match="unknown option"):
        _hub("istpan_tiny", num_classes=5, no_such_option=1)


def test_torch_hub_load_mobilenetv2_runs_a_clip():
    model = _hub("istpan_mobilenetv2", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 3, 112, 112)).logits.shape == (1, 5)


def test_pretrained_true_is_the_imagenet_backbone_from_the_cache(offline, mobilenet_v2_weights):  # noqa: F811
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):  # cold cache, offline: one line, nothing downloaded
        _hub("tsn_mobilenetv2", num_classes=3, pretrained=True)
    local = create_model("tsn_mobilenetv2", num_classes=3, pretrained=mobilenet_v2_weights).backbone.state_dict()
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "mobilenet_v2-b0353104.pth").write_bytes(mobilenet_v2_weights.read_bytes())
    for pretrained in (True, "imagenet", str(mobilenet_v2_weights)):
        hub = _hub("tsn_mobilenetv2", num_classes=3, pretrained=pretrained).backbone.state_dict()
        assert all(torch.equal(hub[k], v) for k, v in local.items()), pretrained
    random = _hub("tsn_mobilenetv2", num_classes=3, pretrained=False).backbone.state_dict()
    assert not torch.equal(random["features.0.0.weight"], local["features.0.0.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_loads_through_torch_hub(name):
    model = _hub(name, num_classes=7)
    assert model.model_name == name and model.head.out_features == 7
