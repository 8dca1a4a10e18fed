"""A tiny istpan checkpoint for inference tests (predict, Predictor, batch predict, export): one copy of the recipe.

    from checkpoints import tiny_checkpoint     # pytest puts tests/ on sys.path (no tests/__init__.py)
    model, meta, path = tiny_checkpoint(tmp_path / "model.pt")
    model, meta, path = tiny_checkpoint(tmp_path / "m.pt", time_encoding="fourier", head="glimpse")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from istpan.config import DataConfig
from istpan.files.checkpoint import build_meta, save_checkpoint
from istpan.models import create_model


def tiny_checkpoint(path: Path, **options: Any) -> tuple[torch.nn.Module, dict, Path]:
    """istpan_tiny (4 classes "abcd", 32 px, test_num_frames=3, short side 36) saved at `path` as epoch 1.

    The weights are nudged by seeded noise so the logits are far from zero (and the time preference of the
    order-aware options is non-zero): a test comparing two inference paths then compares real, distinct scores.
    """
    torch.manual_seed(0)
    model = create_model("istpan_tiny", num_classes=4, input_size=32, **options)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    meta = build_meta(model, class_names=list("abcd"),
                      data_cfg=DataConfig(input_size=32, short_side=36, test_num_frames=3))
    path = save_checkpoint({"model": model.state_dict(), "meta": meta, "epoch": 1}, path)
    return model, meta, path
