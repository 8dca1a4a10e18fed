"""`ModelDescription`: everything a trained model needs besides its weights, in one typed object.

Written by training (`describe_model`), stored as a plain dict (`to_dict`: built-in types only, so checkpoints load
with `weights_only=True`) in three places, and read back by `from_dict` in all three:

    checkpoint .pt     state["meta"]
    HF folder          config.json (the same keys, plus istpan_version and train_config)
    export sidecar     <file>.json / <stem>_split.json (the same keys, plus the graph's input/output)

`to_dict` and `from_dict` are the only code that touches the raw dict; every loader and command takes the typed
object. `from_dict` is also the one place older dicts are completed: checkpoints from before `Preprocessing.backend`
take the backend of the run config they carry, old partial preprocessing dicts take the model's own mean/std
(`Preprocessing.from_dict` completes the rest), a class list of the wrong length becomes "class i", and a sidecar
(no model name) gives a description without a model to build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from istpan.data.preprocess import Preprocessing

__all__ = ["ModelDescription", "describe_model"]


@dataclass(frozen=True)
class ModelDescription:
    """A trained model's name and options, classes and test-time preprocessing (see the module docstring)."""

    model_name: str  # registry name (`istpan.models.create_model`); "" for a sidecar that does not say
    model_options: Mapping[str, Any] = field(default_factory=dict)  # every option resolved (model.model_options)
    class_names: tuple[str, ...] = ()  # num_classes of them, in the head's order
    multi_label: bool = False  # sigmoid scores (Charades) instead of softmax
    preprocessing: Preprocessing = field(default_factory=Preprocessing)  # what the model sees: K, resize, crop, ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "model_options", dict(self.model_options))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_frames(self) -> int:
        """K: frames the model sees per video (or window) at test time."""
        return self.preprocessing.num_frames

    @property
    def modality(self) -> str:
        return self.preprocessing.modality

    @property
    def backend(self) -> str:
        return self.preprocessing.backend

    def with_preprocessing(self, preprocessing: Preprocessing) -> ModelDescription:
        return dataclasses.replace(self, preprocessing=preprocessing)

    # ------------------------------------------------------------------------------------------- (de)serialising

    def to_dict(self) -> dict[str, Any]:
        """Built-in types only; the keys checkpoints have always stored (so older istpan versions read it too)."""
        return {
            "model_name": self.model_name,
            "model_options": dict(self.model_options),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "multi_label": self.multi_label,
            "preprocessing": self.preprocessing.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | ModelDescription, *, model: Any = None,
                  run_config: Mapping[str, Any] | None = None) -> ModelDescription:
        """Inverse of `to_dict`, completing older dicts (module docstring). model: the built model, whose
        `pretrained_cfg` mean/std fill a preprocessing dict that lacks them; run_config: the run config a checkpoint
        carries (its `data.backend` fills a missing decode backend). Unknown keys (a newer istpan's) are ignored."""
        if isinstance(data, ModelDescription):
            return data
        d = dict(data or {})
        pre = d.get("preprocessing")
        if isinstance(pre, Preprocessing):
            preprocessing = pre
        else:
            pre = dict(pre or {})
            backend = ((run_config or {}).get("data") or {}).get("backend")
            if "backend" not in pre and backend:  # written before Preprocessing.backend existed
                pre["backend"] = backend
            stats = dict(getattr(model, "pretrained_cfg", None) or {})
            preprocessing = Preprocessing.from_dict(pre, mean=stats.get("mean"), std=stats.get("std"))
        num_classes = int(d.get("num_classes") or len(d.get("class_names") or []))
        names = list(d.get("class_names") or [])
        if len(names) != num_classes:
            names = [f"class {i}" for i in range(num_classes)]
        options = dict(d.get("model_options") or {})
        multi = d.get("multi_label", options.get("multi_label", getattr(model, "multi_label", False)))
        return cls(model_name=str(d.get("model_name") or ""), model_options=options, class_names=tuple(names),
                   multi_label=bool(multi), preprocessing=preprocessing)


def describe_model(model: Any, *, class_names: Sequence[str], data_cfg: Any) -> ModelDescription:
    """The description training writes: the model's name and resolved options, the run's classes, and the test-time
    preprocessing of its data config with the backbone's mean/std."""
    stats = dict(getattr(model, "pretrained_cfg", {}) or {})
    return ModelDescription(
        model_name=model.model_name,
        model_options=dict(model.model_options),
        class_names=tuple(class_names),
        multi_label=bool(getattr(model, "multi_label", False)),
        preprocessing=Preprocessing.from_data_config(data_cfg, mean=stats.get("mean"), std=stats.get("std")),
    )
