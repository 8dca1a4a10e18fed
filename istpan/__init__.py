"""istpan: video action classification with Interaction-aware Spatio-Temporal Pyramid Attention.

`from istpan import Predictor` is the entry point for programs (see `istpan.engine.predictor`); it is imported on
first use (PEP 562) so that `import istpan` and `istpan --help` stay free of torch's start-up time.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Predictor", "Preprocessing", "__version__"]

_LAZY = {"Predictor": "istpan.engine.predictor", "Preprocessing": "istpan.data.preprocess"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'istpan' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
