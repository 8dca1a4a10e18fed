"""Models: multi-scale backbones, the IST-PAN layer, TSN baselines, and the name -> builder registry.

    from istpan.models import create_model
    model = create_model("istpan_tiny", num_classes=10)
    out = model(video)            # video (B, K, 3, H, W) -> out.logits (B, 10), out.attn (B, d, K, h, w), ...
"""

from istpan.models.classifier import ModelOutput, VideoClassifier, attention_maps
from istpan.models.registry import DEFAULT_OPTIONS, create_model, list_models, register_model

__all__ = [
    "DEFAULT_OPTIONS",
    "ModelOutput",
    "VideoClassifier",
    "attention_maps",
    "create_model",
    "list_models",
    "register_model",
]
