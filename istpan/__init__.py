"""istpan: video action classification with Interaction-aware Spatio-Temporal Pyramid Attention.

`from istpan import Predictor` is the entry point for programs (see `istpan.engine.predictor`);
`istpan.from_pretrained(folder_or_hub_repo_id)` / `istpan.save_pretrained(model, meta, folder)` read and write
shareable model folders (`istpan.models.hub`). They are imported on first use (PEP 562) so that `import istpan` and
`istpan --help` stay free of torch's start-up time.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Predictor", "Preprocessing", "__version__", "from_pretrained", "save_pretrained"]

_LAZY = {"Predictor": "istpan.engine.predictor", "Preprocessing": "istpan.data.preprocess",
         "from_pretrained": "istpan.models.hub", "save_pretrained": "istpan.models.hub"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'istpan' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
