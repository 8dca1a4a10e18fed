"""Pretrained backbone weights: from a local file, or from where users already keep them, loaded strictly, with
one-line errors a user can act on.

`pretrained=` (`model.pretrained` in a config) is one of

    /path/to/file.pth | .pt | .safetensors   a local state dict (wrappers like {'state_dict': ...} are unwrapped)
    imagenet                                 the backbone's ImageNet weights: torchvision's for `mobilenetv2`, timm's
                                             default tag for the timm backbones (resnet50, efficientnet_b0, ...)
    torchvision:<Weights>[.<member>]         e.g. torchvision:IMAGENET1K_V2 or MobileNet_V2_Weights.IMAGENET1K_V2
    timm:<name>[.<tag>]                      e.g. timm:resnet50.tv_in1k (the architecture must be the backbone's)

Hub weights go through the libraries' own caches: torchvision's URL into the torch hub cache
(`$TORCH_HOME/hub/checkpoints/<file>`, what `torchvision.models.mobilenet_v2(weights=...)` uses) and timm's
`create_model(pretrained=True)` through the Hugging Face Hub cache (`$HF_HOME/hub`). They are downloaded once when
online; with `HF_HUB_OFFLINE=1` (which istpan also honours for torchvision's files) nothing is downloaded, a warm cache
works and a cold one is a one-line error saying which file to put where.

Why not `module.load_state_dict(torch.load(path))` directly: a missing file, a truncated download or a checkpoint of
another architecture then surfaces as a traceback from deep inside torch. Here each of them is a `UserError` naming
the file and the first mismatched keys.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from istpan.errors import UserError

__all__ = [
    "PRETRAINED_FORMS",
    "hub_offline",
    "is_hub_weights",
    "load_state_dict_file",
    "load_strict",
    "load_tensors",
    "timm_pretrained_tag",
    "torchvision_weights_file",
]

PRETRAINED_FORMS = "a local file, imagenet, timm:<name> or torchvision:<weights>"

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_SHOW = 5  # how many mismatched keys an error message names


def load_tensors(path: str | Path, *, map_location: str | torch.device = "cpu",
                 instead: str = "a file of weights (a state dict of tensors)", mmap: bool = False) -> object:
    """`torch.load(path, weights_only=True)`: tensors and built-in types only, never code from the file.

    mmap=True maps the file instead of reading it: tensors are read only when touched (a file in the legacy,
    non-zip format is read whole, as torch cannot map it).

    When torch refuses a pickled object (a checkpoint of another tool, or a malicious file), its message advises
    retrying with `weights_only=False`, i.e. running whatever the file holds; we never do, so the refusal becomes a
    `UserError` saying what the file is and to use `instead`. Other failures (truncated, not a torch file) propagate
    for the caller to word (a training checkpoint and a backbone file call for different advice).
    """
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise on top of the one line below
            warnings.simplefilter("ignore")
            if mmap:
                try:
                    return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
                except RuntimeError:  # legacy format (or damaged: the plain load below says so)
                    pass
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # pickled objects (or random bytes) that weights_only refuses
        # torch names the refused global as "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module"
        found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(err), flags=re.IGNORECASE)
        what = f"it holds a Python object, {found.group(1)}" if found else "it holds something other than tensors"
        raise UserError(f"{path}: not a plain-tensor checkpoint ({what}); istpan reads only tensors and built-in "
                        f"types, never code, so use {instead}") from err


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `path` (unwrapping {'state_dict': ...} / {'model': ...}), or raise `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: pretrained checkpoint not found (model.pretrained takes {PRETRAINED_FORMS})")
    try:
        if path.suffix == ".safetensors":  # the Hugging Face format timm's hub weights come in
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = load_tensors(path)
    except UserError:
        raise
    except Exception as err:  # torch raises many types for corrupt/truncated/non-torch files
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({reason}); re-download or re-save it") from err
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: checkpoint holds no state dict of tensors (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel/DDP prefixes


def _first(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_strict(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    path: str | Path,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Load `state_dict` into `module`, requiring every key and shape to match (keys under `ignore_prefixes`,
    e.g. an ImageNet classifier the backbone drops, are skipped); raise `UserError` naming the first mismatches."""
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    missing = own.keys() - state_dict.keys()
    unexpected = state_dict.keys() - own.keys()
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in sorted(own.keys() & state_dict.keys()) if own[k].shape != state_dict[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_first(shapes)}")
    if problems:
        raise UserError(f"{path}: does not match {type(module).__name__} ({'; '.join(problems)})")
    module.load_state_dict(state_dict, strict=True)


# -- weights from where users keep them ------------------------------------------------------------------------------

def is_hub_weights(spec: str | Path | None) -> bool:
    """True for `imagenet`, `timm:...` and `torchvision:...` (anything else is a local file)."""
    return isinstance(spec, str) and (spec == "imagenet" or spec.startswith(("timm:", "torchvision:")))


def hub_offline() -> bool:
    """HF_HUB_OFFLINE=1: never download (the Hugging Face Hub's switch, honoured for torchvision's files too)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def torchvision_weights_file(spec: str, *, enum_name: str, default: str = "IMAGENET1K_V1") -> Path:
    """The local file of torchvision weights `spec` ("imagenet" = `default`) in the torch hub cache, downloaded there
    through torch.hub (hash-checked, as torchvision does) when missing and allowed."""
    import torchvision

    member = default if spec == "imagenet" else spec.removeprefix("torchvision:")
    name = member if "." in member else f"{enum_name}.{member}"
    enum = getattr(torchvision.models, enum_name)
    try:
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        weights = None
    if weights is None or type(weights) is not enum:
        known = ", ".join(f"torchvision:{w.name}" for w in enum)
        raise UserError(f"model.pretrained={spec}: not weights of this backbone (known: imagenet, {known})")
    filename = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    if hub_offline():
        raise UserError(f"model.pretrained={spec}: {filename} is not in the torch hub cache and HF_HUB_OFFLINE=1 "
                        f"forbids downloading; put {weights.url} at {cached}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(filename)
    try:
        torch.hub.download_url_to_file(weights.url, str(cached), match.group(1) if match else None,
                                       progress=sys.stderr.isatty())
    except Exception as err:  # URLError (no network), HTTP errors, hash mismatch of a broken download
        raise UserError(f"model.pretrained={spec}: could not download {weights.url} ({err}); put that file at "
                        f"{cached}") from err
    return cached


def timm_pretrained_tag(spec: str, arch: str) -> str:
    """`imagenet` -> timm's default pretrained tag of `arch`; `timm:<arch>[.<tag>]` -> that, checked to be `arch`."""
    import timm

    name = arch if spec == "imagenet" else spec.removeprefix("timm:")
    if name.split(".")[0] != arch:
        raise UserError(f"model.pretrained={spec}: timm weights of '{name.split('.')[0]}' do not fit this model's "
                        f"{arch} backbone; use timm:{arch}[.<tag>] (tags: timm.list_pretrained('{arch}*'))")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # an unknown tag raises inside timm
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"model.pretrained={spec}: timm has no pretrained weights '{name}' (see "
                        f"timm.list_pretrained('{arch}*'))")
    return name if "." in name else f"{name}.{cfg.tag}" if cfg.tag else name


def timm_missing_weights_error(spec: str, tag: str, err: Exception) -> UserError:
    """One line saying which file to put where, when timm could not get `tag`'s weights (offline, cold cache)."""
    import timm
    from huggingface_hub import constants

    cfg = timm.models.get_pretrained_cfg(tag)
    if cfg.hf_hub_id:
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{cfg.hf_hub_filename or 'model.safetensors'}"
        where = (f"run `hf download {cfg.hf_hub_id}` online to fill the Hugging Face cache "
                 f"({constants.HF_HUB_CACHE}), or download {url} and set model.pretrained=<that file>")
    else:
        where = f"put {cfg.url} at {Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(cfg.url)}"
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return UserError(f"model.pretrained={spec}: timm weights {tag} are not available ({first}); {where}")
