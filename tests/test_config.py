"""Config: defaults, YAML on top, dotted overrides last, clear one-line errors, and the shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from istpan.config import RANGES, config_from_dict, config_to_dict, load_config, save_config
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
    cfg = load_config(None, ["train.seed=7", "data.num_frames=3"])
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
        (["data.root=@videos"], "override 'data.root=@videos': the value is not valid YAML (found character '@'"),
        (["optim.step_epochs=[2, 4"], "the value is not valid YAML"),
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


def test_a_key_given_twice_or_broken_yaml_is_one_line(tmp_path):
    """PyYAML keeps the last of two equal keys without a word: editing the first would change nothing (two
    `augment:` sections shipped in folder.yaml and list.yaml that way). Its syntax errors span several lines."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  epochs: 3\noptim:\n  lr: 0.1\ntrain:\n  epochs: 5\n")
    with pytest.raises(UserError) as err:
        load_config(twice)
    assert str(err.value) == f"{twice}: not valid YAML (line 5: 'train' is given twice (only the last one would " \
                             "count); keep one)"
    nested = tmp_path / "nested.yaml"
    nested.write_text("model:\n  options: {dropout: 0.1, dropout: 0.5}\n")
    with pytest.raises(UserError, match="'dropout' is given twice"):
        load_config(nested)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data:\n  root: [x\nmodel: {}\n")
    with pytest.raises(UserError) as err:
        load_config(broken)
    assert str(err.value).startswith(f"{broken}: not valid YAML (line 3: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_name_registered_models(path):
    from istpan.models import list_models

    cfg = load_config(path)
    assert cfg.model.name in list_models()


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"ucf101.yaml", "hmdb51.yaml", "charades.yaml", "folder.yaml", "list.yaml", "synthetic.yaml"} <= names


@pytest.mark.parametrize(
    "overrides",
    [["data.num_frames=0"], ["data.test_num_frames=0"], ["data.input_size=0"], ["train.batch_size=0"],
     ["train.batch_size=-2"], ["optim.lr=-1"], ["data.num_workers=-1"], ["data.sampling=dense", "data.num_frames=0"],
     ["data.sampling=dense", "data.frame_stride=0"], ["optim.lr=.nan"], ["optim.step_epochs=[10, -1]"]],
    ids=lambda o: " ".join(o),
)
def test_out_of_range_numbers_are_one_line_errors(overrides):
    """Issue 10.6: each of these used to end in a traceback from the loader, the sampler or the optimiser."""
    key = overrides[-1].split("=")[0]
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    message = str(err.value)
    assert key in message and "out of range" in message and "\n" not in message


@pytest.mark.parametrize("dotted", sorted(RANGES))
def test_every_range_accepts_its_bound_and_refuses_past_it(dotted):
    """Every RANGES entry, generically: the bound itself loads, one step past it is refused, naming the field."""
    rng = RANGES[dotted]
    section, name = dotted.split(".")
    is_int = isinstance(getattr(getattr(load_config(), section), name), int)
    is_list = isinstance(getattr(getattr(load_config(), section), name), list)
    step = 1 if is_int or is_list else 1e-3

    def value(v):
        return f"[{v}]" if is_list else v

    if rng.ge is not None:
        assert load_config(None, [f"{dotted}={value(rng.ge)}"]) is not None
        with pytest.raises(UserError, match=dotted.replace(".", r"\.")):
            load_config(None, [f"{dotted}={value(rng.ge - step)}"])
    if rng.gt is not None:
        load_config(None, [f"{dotted}={value(rng.gt + step)}"])
        with pytest.raises(UserError, match=dotted.replace(".", r"\.")):
            load_config(None, [f"{dotted}={value(rng.gt)}"])
    if rng.le is not None:
        load_config(None, [f"{dotted}={value(rng.le)}"])
        with pytest.raises(UserError, match=dotted.replace(".", r"\.")):
            load_config(None, [f"{dotted}={value(rng.le + step)}"])


def test_ranges_cover_every_numeric_field():
    """A new numeric field must say its range (or be listed here as having none)."""
    unbounded: set[str] = set()
    cfg = load_config()
    numeric = {f"{section}.{name}" for section, sub in config_to_dict(cfg).items() if isinstance(sub, dict)
               for name, v in sub.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    numeric.add("optim.step_epochs")
    assert numeric - unbounded == set(RANGES)


def test_checkpoint_config_is_checked_too():
    data = config_to_dict(load_config())
    data["train"]["batch_size"] = 0
    with pytest.raises(UserError, match=r"train\.batch_size: 0 is out of range"):
        config_from_dict(data)


def test_packaged_config_by_name_from_any_directory(tmp_path, monkeypatch, capsys):
    """Issue 10.11: `--config ucf101` (and the README's `configs/ucf101.yaml`) outside the repository."""
    from istpan.cli.main import main

    monkeypatch.chdir(tmp_path)
    reference = load_config(CONFIGS / "ucf101.yaml")
    for name in ("ucf101", "ucf101.yaml", "configs/ucf101.yaml"):
        assert load_config(name) == reference
    mine = tmp_path / "ucf101.yaml"
    mine.write_text("train:\n  epochs: 2\n")
    assert load_config("ucf101.yaml").train.epochs == 2  # an existing file always wins over the packaged name
    with pytest.raises(UserError, match=r"ucf102: config file not found \(packaged configs: charades, .*ucf101"):
        load_config("ucf102")
    assert main(["configs"]) == 0
    shipped = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[: len(shipped)]]
    assert listed == shipped
    assert main(["configs", "--show", "hmdb51"]) == 0
    assert capsys.readouterr().out == (CONFIGS / "hmdb51.yaml").read_text()


@pytest.mark.parametrize(
    ("data_yaml", "overrides", "want"),
    [
        # segment / uniform sampling: num_segments and test_segments were K; clip_len did nothing
        ("num_segments: 5\n  test_segments: 25\n  clip_len: 16", [], (5, 25)),
        ("sampling: uniform\n  num_segments: 5", ["data.test_segments=7"], (5, 7)),
        # dense sampling: clip_len was K at training and test time; num_segments / test_segments did nothing
        ("sampling: dense\n  num_segments: 5\n  test_segments: 25\n  clip_len: 16", [], (16, 16)),
        ("num_segments: 5\n  clip_len: 16", ["data.sampling=dense"], (16, 16)),
        # the last assignment wins, old name or new
        ("num_segments: 5", ["data.num_frames=6"], (6, 8)),
        ("num_frames: 6", ["data.num_segments=5"], (5, 8)),
    ],
)
def test_old_names_of_k_map_exactly_and_warn_once(tmp_path, caplog, data_yaml, overrides, want):
    path = tmp_path / "old.yaml"
    path.write_text(f"data:\n  {data_yaml}\n")
    with caplog.at_level("WARNING", logger="istpan.config"):
        cfg = load_config(path, overrides)
    assert (cfg.data.num_frames, cfg.data.test_num_frames) == want
    old = [key for key in ("num_segments", "test_segments", "clip_len") if key in data_yaml + str(overrides)]
    warned = [r.getMessage() for r in caplog.records if r.name == "istpan.config"]
    assert len(warned) == len(old)  # one warning per old key, each naming the key to write instead
    for key, message in zip(old, warned):
        assert f"data.{key} is an old name: write data.{'test_' if key == 'test_segments' else ''}num_frames" in message
    assert "num_segments" not in config_to_dict(cfg)["data"] and "clip_len" not in config_to_dict(cfg)["data"]


def test_an_old_name_of_k_is_range_checked_like_the_new():
    with pytest.raises(UserError, match=r"data\.num_frames: 0 is out of range"):
        load_config(None, ["data.num_segments=0"])


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.prefix_loss=1", "train.frame_subset_min=2"], "one of them to 0"),
        (["train.prefix_loss=1", "train.compile=true"], "train.compile does not see"),
        (["model.options.modality=flow"], "model.options.modality='flow' but data.modality='rgb'; set only"),
        (["data.modality=flow", "model.options.flow_length=3"], "model.options.flow_length=3 but data.flow_length=5"),
    ],
)
def test_fields_that_constrain_each_other_are_checked_when_the_config_is_read(overrides, needle):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)
    if len(overrides) == 2 and not overrides[1].startswith("model."):  # each field alone is fine
        assert load_config(None, overrides[:1]) is not None and load_config(None, overrides[1:]) is not None
