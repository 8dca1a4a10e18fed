"""The one loader: a trained model and its description from any of the four places a model lives.

    model, description = load_model("runs/ucf101/best.pt")   a checkpoint written by `istpan train`
    model, description = load_model("runs/ucf101")           a run folder: its best.pt, else its last.pt
    model, description = load_model("my-model")              a model folder in the HF layout (export --format hf)
    model, description = load_model("user/istpan-ucf101")    a Hub repo id (HF cache; HF_HUB_OFFLINE=1 works)
    loaded = load("runs/ucf101")     the same read, with the run config the file carries: LoadedModel(model,
                                     description, run_config, source)

Every command and the Python API (`istpan.Predictor.from_checkpoint`, `istpan.from_pretrained`) load through it, and
it reads the file once: the run config a checkpoint carries comes back with the model (`load`), so `istpan eval`,
anytime calibration and `export --format hf` need no second read. The weights used are the ones that validated better
(`eval_weights`: the EMA or the raw ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from istpan.errors import UserError
from istpan.files.checkpoint import load_checkpoint, load_weights
from istpan.files.description import ModelDescription
from istpan.files.pretrained import CONFIG_NAME, is_pretrained_folder, read_pretrained

__all__ = ["LoadedModel", "from_pretrained", "load", "load_model", "read_model_file", "resolve_source"]

RUN_FILES = ("best.pt", "last.pt")  # a run folder's checkpoints, in the order the loader prefers them


class LoadedModel(NamedTuple):
    """What `load` gives: the model in eval mode, its description, and what else the file carried."""

    model: nn.Module
    description: ModelDescription
    run_config: dict[str, Any] | None  # the resolved training config (checkpoints; HF folders that kept it)
    source: str  # the file or folder read (a run folder's best.pt / last.pt), or the Hub repo id
    # The run's validation metrics at its best epoch (checkpoints that validated; {} otherwise), for the model card
    validation: dict[str, float] = {}  # noqa: RUF012


def resolve_source(source: str | Path) -> Path | str:
    """The file or model folder to read for `source`: a run folder's best.pt (else last.pt); anything else as is
    (a .pt file, a model folder, or a Hub repo id, which `read_pretrained` resolves)."""
    path = Path(source)
    if path.is_dir() and not is_pretrained_folder(path) and not (path / CONFIG_NAME).is_file():
        for name in RUN_FILES:
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: no best.pt or last.pt in this folder; give a checkpoint written by `istpan train` "
                        "(or a model folder written by `istpan export --format hf`)")
    return path


def read_model_file(source: str | Path) -> tuple[dict[str, Any], str]:
    """The raw state of `source` (checkpoint dict; a model folder as the same dict without optimiser state) and the
    path read: one read, whatever the kind."""
    where = resolve_source(source)
    hub_id = not where.exists() and str(source).count("/") == 1 and where.suffix not in (".pt", ".pth")
    if where.is_dir() or hub_id:  # a model folder, or a Hub repo id "user/name"
        return read_pretrained(where), str(where)
    return load_checkpoint(where, device="cpu"), str(where)


def _eval_weights(state: dict[str, Any]) -> str:
    """The key of the weights to use for inference: the EMA when it validated better, else the raw weights."""
    key = state.get("eval_weights", "model")
    return key if key in ("model", "model_ema") and key in state else "model"


def load_model(source: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelDescription]:
    """The model of `source` in eval mode on `device`, and its description (the module docstring lists the sources).
    Any problem is one UserError line naming the file."""
    loaded = load(source, device=device)
    return loaded.model, loaded.description


def load(source: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model `source` was trained as, load its weights, return it in eval mode on `device` with its
    description, the run config the file carries and the path read."""
    from istpan.files.model_card import run_metrics
    from istpan.models import create_model  # the registry; imported here so reading files stays light

    state, path = read_model_file(source)
    config = state.get("config") if isinstance(state.get("config"), dict) else None
    first = ModelDescription.from_dict(state["meta"], run_config=config)
    if not first.model_name:
        raise UserError(f"{path}: the file does not name its model (model_name); use one written by istpan train")
    try:  # the weights come from this file: no `pretrained` backbone file
        model = create_model(first.model_name, num_classes=first.num_classes, **first.model_options)
    except (TypeError, UserError) as err:  # a model name / option of another istpan version
        raise UserError(f"{path}: checkpoint needs model {first.model_name!r}, unknown to this istpan ({err})") from err
    load_weights(model, state[_eval_weights(state)], source=path, model_name=first.model_name)
    description = ModelDescription.from_dict(state["meta"], model=model, run_config=config)  # + the model's stats
    return LoadedModel(model.to(device).eval(), description, config, path, run_metrics(state))


def from_pretrained(source: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """The model of a model folder or Hub repo id (or any source `load_model` takes) in eval mode, with its
    `description` (an `istpan.ModelDescription`), `class_names` and `preprocessing` attached. For predictions on
    videos use `istpan.Predictor.from_checkpoint(source)`, which wraps the same model with its preprocessing."""
    model, description = load_model(source, device=device)
    model.description = description
    model.class_names = list(description.class_names)
    model.preprocessing = description.preprocessing
    return model
