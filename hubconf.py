"""torch.hub entry points: every registered istpan model by name.

    model = torch.hub.load("<owner>/istpan", "istpan_mobilenetv2", num_classes=101, pretrained=True)
    model = torch.hub.load("/path/to/istpan", "istpan_tiny", source="local", num_classes=5)
    torch.hub.list("/path/to/istpan", source="local")   # the names: istpan_*, istpan_single_*, tsn_*

`pretrained` follows torchvision's and timm's hub entries: False (default) builds random weights, True loads the
backbone's ImageNet weights (istpan's own "imagenet", through torchvision's / timm's caches; trained video models are
shared as Hugging Face folders instead: `istpan.from_pretrained`), and a string is passed on as `model.pretrained`
(`imagenet`, `timm:<tag>`, `torchvision:<weights>` or a local file; docs/training.md). Other keyword arguments are
the model's options (`fuse="learned"`, `num_scales=2`, `time_encoding="fourier"` ...; docs/models.md).
"""

from __future__ import annotations

# Every public callable here is an entry point to torch.hub.list, so imports keep a leading underscore.
from collections.abc import Callable as _Callable
from typing import Any as _Any

from torch import nn as _nn

from istpan.models import create_model as _create_model
from istpan.models import list_models as _list_models

# torch.hub checks these import before calling an entry point.
dependencies = ["torch", "torchvision", "timm", "safetensors", "huggingface_hub"]


def _entry(name: str) -> _Callable[..., _nn.Module]:
    def entry(*, num_classes: int, pretrained: bool | str = False, **options: _Any) -> _nn.Module:
        weights = "imagenet" if pretrained is True else (pretrained or None)
        return _create_model(name, num_classes=num_classes, pretrained=weights, **options)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{name}(*, num_classes, pretrained=False, **options): video (B, K, 3, S, S) -> "
                     f"ModelOutput(logits (B, num_classes), ...). pretrained=True: ImageNet backbone weights.")
    return entry


for _name in _list_models():
    globals()[_name] = _entry(_name)
