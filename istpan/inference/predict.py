"""Whole-video inference: K frames of a video as the checkpoint's `Preprocessing` says, one forward pass, top-k.

The checkpoint's meta carries the `Preprocessing` (sampling, short side, crop, mean/std, K), so a checkpoint is usable
without its config or dataset. With segment sampling the K frames are the centres of K equal segments over the whole
video (TSN's test protocol): exactly what `istpan eval` feeds the model for a 1x1 view.

One forward pass per video serves everyone: `infer_video` returns an `Inference` holding what the model saw (the uint8
views, for drawing) and what it said (the ModelOutput, attention included); `prediction_of` turns it into the
printed result and `istpan.inference.explain` draws from the very same object (`predictor.predict_videos` does both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.data.preprocess import Preprocessing
from istpan.files.description import ModelDescription
from istpan.inference.results import video_result

__all__ = ["Inference", "device_of", "infer_video", "prediction_of", "probabilities"]


@dataclass
class Inference:
    """One video through the model: what it saw and what it said (batch of one, on the CPU)."""

    path: str
    video_frames: int  # frames that decode in the whole video
    indices: list[int]  # (K,) the sampled frames
    views: torch.Tensor  # uint8 (K, s, s, 3): the model's crop of those frames (what overlays are drawn on)
    output: Any  # ModelOutput of the forward pass on those views, batch 1 (attention fields None for TSN)
    probs: torch.Tensor  # (C,) softmax or sigmoid of the logits


def device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")




def probabilities(logits: torch.Tensor, *, multi_label: bool) -> torch.Tensor:
    """Sigmoid for a multi-label head (Charades), softmax otherwise, over the last dim: (..., C) -> (..., C), float32.

    The one place that decision is made: evaluation, predict, windows, streaming and Predictor all call it.
    """
    return logits.float().sigmoid() if multi_label else logits.float().softmax(-1)




@torch.no_grad()
def infer_video(model: nn.Module, pre: Preprocessing, path: str | Path, *, multi_label: bool | None = None
                ) -> Inference:
    """Decode the K frames `pre` chooses, run the model once, keep views and output. Raises VideoError."""
    views, indices, n = pre.read(path)  # (K, s, s, 3) uint8
    model.eval()
    out = model(pre.to_input(views)[None].to(device_of(model)))  # (1, K, 3, s, s) -> ModelOutput
    multi = bool(getattr(model, "multi_label", False)) if multi_label is None else multi_label
    return Inference(path=str(path), video_frames=n, indices=indices, views=views, output=_cpu(out),
                     probs=probabilities(out.logits, multi_label=multi)[0].cpu())


def _cpu(out: Any) -> Any:
    """The ModelOutput with every tensor on the CPU (drawing and JSON happen there)."""
    import dataclasses

    def move(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().cpu()
        if isinstance(v, list):
            return [move(x) for x in v]
        return v

    if dataclasses.is_dataclass(out):
        return dataclasses.replace(out, **{f.name: move(getattr(out, f.name)) for f in dataclasses.fields(out)})
    return out


def prediction_of(inference: Inference, description: ModelDescription, *, topk: int = 5) -> dict[str, Any]:
    """The printed / JSON result of one video (`istpan.inference.results`: path, num_frames, video_frames,
    multi_label, top)."""
    return video_result(inference.path, num_frames=len(inference.indices), video_frames=inference.video_frames,
                        multi_label=description.multi_label, probs=inference.probs, names=description.class_names,
                        topk=topk)
