"""Models by name: `create_model("istpan_mobilenetv2", num_classes=101, fuse="learned")`.

Names follow `<family>_<backbone>` with family `istpan` (pyramid attention over N stages), `istpan_single` (N = 1,
the single-scale attention baseline) and `tsn` (TSN average consensus, no attention), for every backbone in
`istpan.models.backbones.BACKBONES`. One flat registry, timm-style: a name maps to one builder function.

Every model carries `model_name`, `model_options` (all options resolved, defaults included, so
`create_model(model.model_name, num_classes=model.num_classes, **model.model_options)` rebuilds it exactly),
`pretrained_cfg` (mean/std/input_size its frames expect), `multi_label` and `num_classes`.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from istpan.errors import UserError
from istpan.modality import DEFAULT_FLOW_LENGTH, MODALITIES, in_channels, input_stats
from istpan.models.backbones import BACKBONES, Backbone, build_backbone
from istpan.models.classifier import HEADS, VideoClassifier
from istpan.models.pyramid_attention import FUSIONS, POOL_WEIGHTS, REDUCTIONS, TIME_ENCODINGS, PyramidAttention

__all__ = ["DEFAULT_OPTIONS", "create_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_log = logging.getLogger(__name__)

# Defaults for the options each choice the paper leaves open; docs/models.md says which are ours and why.
DEFAULT_OPTIONS: dict[str, Any] = dict(
    reduce="avg",  # R: area averaging keeps every position's evidence (strided sampling aliases)
    fuse="mean",  # F: parameter-free and keeps the score scale independent of N
    num_scales=3,  # N: the last three stages (every backbone here has 4 or 5)
    d=None,  # glimpses; None -> h·w of the top map at input_size (the paper's figure)
    input_size=None,  # None -> the backbone's usual size (224; 112 for tiny)
    pool_weights="softmax",  # M = a·X (rows sum to 1) rather than A·X, whose scale grows with sqrt(K·h·w)
    dropout=0.5,
    multi_label=False,
    time_encoding="none",  # ours, opt-in: "fourier" makes the attention order-aware (docs/models.md)
    head="mean",  # "glimpse" keeps the d glimpses apart in the head instead of averaging them
    modality="rgb",  # rgb | flow (2L-channel stacks) | rgb+flow (two backbones, one pyramid: models/two_stream.py)
    flow_length=DEFAULT_FLOW_LENGTH,  # L flow frames per segment (flow and rgb+flow)
)
_TSN_OPTIONS = ("input_size", "dropout", "multi_label", "modality", "flow_length")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register `fn(*, num_classes, pretrained=None, **options)` under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model '{fn.__name__}' is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, *, num_classes: int, pretrained: str | Path | None = None, **options: Any) -> nn.Module:
    """Build a registered model. `pretrained`: backbone weights, a local file or imagenet / timm:... / torchvision:...
    (istpan/models/weights.py)."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `istpan.models.list_models()`"
        raise UserError(f"unknown model '{name}'; {hint}")
    if num_classes < 1:
        raise UserError(f"{name}: num_classes must be >= 1, got {num_classes}")
    model = _MODELS[name](num_classes=num_classes, pretrained=pretrained, **options)
    model.model_name = name
    return model


def _resolve(name: str, allowed: tuple[str, ...], options: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"{name}: unknown option(s) {', '.join(unknown)} (known: {', '.join(allowed)})")
    resolved = {k: DEFAULT_OPTIONS[k] for k in allowed} | overrides | options
    for key, choices in (("reduce", REDUCTIONS), ("fuse", FUSIONS), ("pool_weights", POOL_WEIGHTS),
                         ("time_encoding", TIME_ENCODINGS), ("head", HEADS), ("modality", MODALITIES)):
        if key in resolved and resolved[key] not in choices:
            raise UserError(f"{name}: {key}={resolved[key]!r} is not one of {', '.join(choices)}")
    if int(resolved["flow_length"]) < 1:
        raise UserError(f"{name}: flow_length must be >= 1, got {resolved['flow_length']}")
    if not 0.0 <= float(resolved["dropout"]) < 1.0:
        raise UserError(f"{name}: dropout must be in [0, 1), got {resolved['dropout']}")
    return resolved


def _build(
    name: str, backbone_name: str, *, attention: bool, num_classes: int, pretrained: str | Path | None, **options: Any
) -> VideoClassifier:
    single = name.startswith("istpan_single_")
    if not attention:
        # A TSN baseline run with the same config as its IST-PAN run: attention options are known but mean nothing
        # here, so they are dropped (and not recorded in model_options) rather than refused.
        ignored = sorted(set(options) & (set(DEFAULT_OPTIONS) - set(_TSN_OPTIONS)))
        if ignored:
            _log.info("%s: ignoring attention option(s) %s (TSN has no attention)", name, ", ".join(ignored))
        options = {k: v for k, v in options.items() if k not in ignored}
    allowed = tuple(DEFAULT_OPTIONS) if attention else _TSN_OPTIONS
    opts = _resolve(name, allowed, options, **({"num_scales": 1} if single else {}))
    modality, flow_length = opts["modality"], int(opts["flow_length"])
    if modality == "rgb+flow":
        from istpan.models.two_stream import TwoStreamBackbone

        backbone: Backbone = TwoStreamBackbone(backbone_name, flow_length=flow_length, pretrained=pretrained)
    else:
        backbone = build_backbone(backbone_name, pretrained=pretrained, in_chans=in_channels(modality, flow_length))
    stages = backbone.num_stages
    opts["input_size"] = int(opts["input_size"] or backbone.default_input_size)
    attn_module, scales = None, backbone.pyramid_indices(1)
    if attention:
        if single and opts["num_scales"] != 1:
            raise UserError(f"{name}: single-scale model takes num_scales=1, got {opts['num_scales']}")
        if not 1 <= int(opts["num_scales"]) <= stages:
            raise UserError(f"{name}: num_scales must be in 1..{stages} for backbone {backbone_name}")
        top = backbone.feature_info[-1]
        opts["d"] = int(opts["d"] or math.ceil(opts["input_size"] / top.reduction) ** 2)
        if opts["d"] < 1:
            raise UserError(f"{name}: d (number of glimpses) must be >= 1, got {opts['d']}")
        scales = backbone.pyramid_indices(int(opts["num_scales"]))
        attn_module = PyramidAttention(
            [backbone.feature_info[i].num_chs for i in scales],
            d=opts["d"], reduce=opts["reduce"], fuse=opts["fuse"], pool_weights=opts["pool_weights"],
            time_encoding=opts["time_encoding"],
        )
    model = VideoClassifier(
        backbone, num_classes=num_classes, attention=attn_module, scales=scales,
        dropout=float(opts["dropout"]), multi_label=bool(opts["multi_label"]),
        head=opts["head"] if attention else "mean",
    )
    model.model_options = opts
    mean, std = input_stats(modality, flow_length, backbone.mean, backbone.std)  # the backbone's weights' own
    model.pretrained_cfg = dict(mean=mean, std=std, input_size=opts["input_size"])
    return model


def _make_builder(name: str, backbone_name: str, attention: bool) -> Callable[..., nn.Module]:
    def builder(*, num_classes: int, pretrained: str | Path | None = None, **options: Any) -> nn.Module:
        return _build(name, backbone_name, attention=attention, num_classes=num_classes, pretrained=pretrained,
                      **options)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name}: {'IST-PAN' if attention else 'TSN'} on the {backbone_name} backbone."
    return builder


# istpan_<bb> (N scales), istpan_single_<bb> (N = 1) and tsn_<bb> (no attention) for every backbone.
for _bb in BACKBONES:
    for _family, _attention in (("istpan", True), ("istpan_single", True), ("tsn", False)):
        register_model(_make_builder(f"{_family}_{_bb}", _bb, _attention))
