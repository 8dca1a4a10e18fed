"""Config: defaults, YAML on top, dotted overrides last, clear one-line errors, and the shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from istpan.config import config_from_dict, config_to_dict, load_config, save_config
from istpan.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "istpan" / "configs"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.05\ntrain:\n  epochs: 3\nmodel:\n  options: {dropout: 0.2}\n")
    cfg = load_config(path, ["optim.lr=1e-3", "train.amp=bf16", "optim.step_epochs=[2, 4]", "model.options.d=9"])
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float)  # YAML reads 1e-3 as a string
    assert cfg.train.epochs == 3 and cfg.train.amp == "bf16"
    assert cfg.optim.step_epochs == [2, 4]
    assert cfg.model.options == {"dropout": 0.2, "d": 9}  # a dotted override adds to the file's options


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.seed=7", "data.num_segments=3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optim.lrr=0.1"], "unknown config key 'lrr'"),
        (["optim.name=sgdd"], "choose one of: sgd, adamw"),
        (["train.epochs=many"], "expected a int"),
        (["optim"], "must look like key=value"),
        (["train=3"], "must be a mapping"),
    ],
)
def test_bad_overrides_are_one_line_user_errors(overrides, needle):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(UserError, match=r"bad.yaml: train.epoch: unknown config key"):
        load_config(bad)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_name_registered_models(path):
    from istpan.models import list_models

    cfg = load_config(path)
    assert cfg.model.name in list_models()


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"ucf101.yaml", "hmdb51.yaml", "charades.yaml", "folder.yaml", "list.yaml", "synthetic.yaml"} <= names
