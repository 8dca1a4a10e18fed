"""Trained models users can share: a folder in the Hugging Face layout, local or on the Hub.

    my-model/
      config.json          {"istpan_version", "model_name", "model_options", "num_classes", "class_names",
                            "multi_label", "preprocessing": Preprocessing.to_dict(), "train_config": {...} | absent}
      model.safetensors    the weights (the EMA ones when they validated better)

Write one with `istpan export --checkpoint best.pt --format hf --out my-model` (or `save_pretrained`), upload it with
`hf upload <user>/<repo> my-model`, and load it anywhere with `istpan.from_pretrained("my-model")` /
`istpan.from_pretrained("<user>/<repo>")`, or as `--checkpoint my-model` in every command: `istpan.files.load` reads
a folder (or a Hub repo id) into the same dict a .pt file gives.

Loading never executes code from the folder: JSON and safetensors only (no pickle, no `trust_remote_code`), and from
the Hub only `config.json` and `model.safetensors` are fetched (through the Hugging Face cache; HF_HUB_OFFLINE=1
works from a warm cache). The model class always comes from this istpan's own registry, by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from torch import nn

from istpan.errors import UserError
from istpan.files.description import ModelDescription

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "is_pretrained_folder", "read_pretrained", "save_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_REQUIRED = ("model_name", "model_options", "num_classes", "class_names", "preprocessing")


def is_pretrained_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def save_pretrained(model: nn.Module, description: ModelDescription | dict[str, Any], folder: str | Path, *,
                    train_config: dict[str, Any] | None = None) -> Path:
    """Write `model`'s weights and its description (or a checkpoint's meta dict) as a HF folder."""
    from safetensors.torch import save_file

    from istpan._version import __version__

    description = ModelDescription.from_dict(description, model=model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "istpan_version": __version__,
        **description.to_dict(),
        **({"train_config": train_config} if train_config else {}),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "istpan_model": description.model_name})
    return folder


def _local_folder(source: str | Path) -> Path:
    """A local folder, or the Hub snapshot of repo id `source` (config.json and model.safetensors only)."""
    path = Path(source)
    if path.exists():
        if not is_pretrained_folder(path):
            raise UserError(f"{path}: not a model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}; write one with "
                            "`istpan export --format hf`)")
        return path
    if not _REPO_ID.match(str(source)):
        raise UserError(f"{source}: no such file or folder (give a checkpoint, a model folder or a Hub repo id "
                        "user/name)")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(str(source), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as err:  # offline and not cached, unknown repo, no network, gated repo
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"{source}: no such local file or folder, and not available from the Hugging Face Hub "
                        f"({first}); download it with `hf download {source}` where there is network, or "
                        "give a local checkpoint / folder") from err
    if not is_pretrained_folder(folder):
        raise UserError(f"{source}: the Hub repo has no {CONFIG_NAME} + {WEIGHTS_NAME} written by istpan")
    return folder


def read_pretrained(source: str | Path) -> dict[str, Any]:
    """A model folder or Hub repo id as a checkpoint dict: {"model": weights, "meta": ..., "config": ... if stored}."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = _local_folder(source)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{folder / CONFIG_NAME}: not valid JSON ({err})") from err
    missing = [k for k in _REQUIRED if not isinstance(config, dict) or k not in config]
    if missing:
        raise UserError(f"{folder / CONFIG_NAME}: missing {', '.join(missing)}; is it a folder written by istpan?")
    try:
        weights = load_file(str(folder / WEIGHTS_NAME))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{folder / WEIGHTS_NAME}: cannot read the weights ({err})") from err
    state: dict[str, Any] = {"model": weights, "meta": ModelDescription.from_dict(config),
                             "istpan_version": config.get("istpan_version")}
    if isinstance(config.get("train_config"), dict):
        state["config"] = config["train_config"]
    return state
