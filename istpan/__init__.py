"""istpan: video action classification with Interaction-aware Spatio-Temporal Pyramid Attention.

`from istpan import Predictor` is the entry point for programs (see `istpan.inference.predictor`);
`istpan.from_pretrained(folder_or_hub_repo_id)` / `istpan.save_pretrained(model, description, folder)` read and write
shareable model folders (`istpan.files.load`, `istpan.files.pretrained`); `istpan.load_model(source)` reads any of
a checkpoint, a run folder, a model folder or a Hub repo id into (model, description, run config, source), and
`istpan.ModelDescription` is what a trained model carries besides its weights. They are imported on first use
(PEP 562) so that `import istpan` and `istpan --help` stay free of torch's start-up time.
"""

from __future__ import annotations

from typing import Any

from istpan._version import __version__

__all__ = ["ModelDescription", "Predictor", "Preprocessing", "__version__", "from_pretrained", "load_model",
           "save_pretrained"]

_LAZY = {"Predictor": "istpan.inference.predictor", "Preprocessing": "istpan.data.preprocess",
         "ModelDescription": "istpan.files.description", "load_model": "istpan.files.load",
         "from_pretrained": "istpan.files.load", "save_pretrained": "istpan.files.pretrained"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'istpan' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
