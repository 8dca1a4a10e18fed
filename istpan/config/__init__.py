"""Run configuration: dataclasses with defaults in code, YAML files on top, dotted `key=value` overrides last.

Why dataclasses and not a config framework: every field, its type and its default are visible in one file
(`schema.py`), an unknown key is an error (a typo never silently does nothing), and the resolved config is plain YAML
saved beside the run (the dinov2 / nanoGPT habit, without MMAction2's `_base_` chains). `checks.py` says what a
config may hold (choices, ranges, fields that constrain each other, the old names of K); `loading.py` reads YAML
files, dotted overrides and stored configs, and writes them.
"""

from __future__ import annotations

from istpan.config.checks import CHOICES, LEGACY_KEYS, RANGES, Range, validate
from istpan.config.loading import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    packaged_config_summary,
    packaged_configs,
    resolve_config,
    save_config,
)
from istpan.config.schema import AugmentConfig, Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

__all__ = [
    "CHOICES",
    "LEGACY_KEYS",
    "RANGES",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "Range",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "packaged_config_summary",
    "packaged_configs",
    "resolve_config",
    "save_config",
    "validate",
]
