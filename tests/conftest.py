"""Shared fixtures: paths to the real clips and weights that live beside the repository (test fixtures only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ISTPAN_SHARED", REPO.parent / "shared"))  # real clips + weights, beside the repo
CLIPS = SHARED / "clips"
WEIGHTS = SHARED / "weights"

# Tiny models on a 2-core machine: one intra-op thread is as fast as two when idle and ~10x faster when the other
# core is busy (measured here); subprocess tests set the same in their children.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    if not CLIPS.is_dir():
        pytest.skip(f"real clips not found at {CLIPS}")
    return CLIPS


@pytest.fixture(scope="session")
def mobilenet_v2_weights() -> Path:
    path = WEIGHTS / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        pytest.skip(f"pretrained MobileNetV2 checkpoint not found at {path}")
    return path
