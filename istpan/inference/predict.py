"""Whole-video inference: K frames of a video as the checkpoint's `Preprocessing` says, one forward pass, top-k.

The checkpoint's meta carries the `Preprocessing` (sampling, short side, crop, mean/std, K), so a checkpoint is usable
without its config or dataset. With segment sampling the K frames are the centres of K equal segments over the whole
video (TSN's test protocol): exactly what `istpan eval` feeds the model for a 1x1 view.

One forward pass per video serves everyone: `infer_video` returns an `Inference` holding what the model saw (the uint8
views, for drawing) and what it said (the ModelOutput, attention included); `predict_videos` turns it into the
printed result and `istpan.inference.explain` draws from the very same object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.files.description import ModelDescription

__all__ = [
    "Inference",
    "device_of",
    "infer_video",
    "predict_videos",
    "prediction_of",
    "probabilities",
    "topk_classes",
]


@dataclass
class Inference:
    """One video through the model: what it saw and what it said (batch of one, on the CPU)."""

    path: str
    num_frames: int  # frames that decode in the whole video
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




def topk_classes(scores: torch.Tensor, names: Sequence[str], k: int, *, key: str = "label") -> list[dict[str, Any]]:
    """[{key: name, index, score}] for the k best classes of scores (C,), best first."""
    values, indices = scores.topk(max(1, min(k, len(scores))))
    return [{key: names[i], "index": int(i), "score": float(v)} for v, i in zip(values.tolist(), indices.tolist())]


@torch.no_grad()
def infer_video(model: nn.Module, pre: Preprocessing, path: str | Path, *, multi_label: bool | None = None
                ) -> Inference:
    """Decode the K frames `pre` chooses, run the model once, keep views and output. Raises VideoError."""
    views, indices, n = pre.read(path)  # (K, s, s, 3) uint8
    model.eval()
    out = model(pre.to_input(views)[None].to(device_of(model)))  # (1, K, 3, s, s) -> ModelOutput
    multi = bool(getattr(model, "multi_label", False)) if multi_label is None else multi_label
    return Inference(path=str(path), num_frames=n, indices=indices, views=views, output=_cpu(out),
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
    """The printed / JSON result of one video: {"path", "frames", "num_segments", "multi_label", "top"}."""
    return {
        "path": inference.path,
        "frames": inference.num_frames,
        "num_segments": len(inference.indices),
        "multi_label": description.multi_label,
        "top": topk_classes(inference.probs, description.class_names, topk, key="class"),
    }


def predict_videos(
    model: nn.Module,
    description: ModelDescription | dict[str, Any],
    paths: Sequence[str | Path],
    *,
    topk: int = 5,
    num_segments: int | None = None,
    device: str | torch.device | None = None,
    explain: str | Path | None = None,
    levels: bool = False,
) -> list[dict[str, Any]]:
    """One result per path, in order: {"path", "frames", "num_segments", "top": [{"class", "index", "score"}], ...}.

    A video that cannot be read gives {"path", "error"} instead of stopping the others. `num_segments` overrides K
    (the model takes any K). The model is used on the device it is on (`device` moves it there first). With
    `explain=OUTDIR` the same forward pass is also drawn (`istpan.inference.explain`: overlays, report, results.json).
    """
    if device is not None:
        model.to(device)
    description = ModelDescription.from_dict(description, model=model)
    pre = description.preprocessing.with_frames(num_segments)
    multi = description.multi_label
    explainer = None
    if explain is not None:
        from istpan.inference.explain import Explainer  # imports this module: not at the top

        explainer = Explainer(description, pre, explain, levels=levels, topk=topk)
    results = []
    for path in paths:
        try:
            inference = infer_video(model, pre, path, multi_label=multi)
        except UserError as err:  # VideoError: missing, unreadable, no decodable frame
            results.append({"path": str(path), "error": str(err)})
            if explainer is not None:
                explainer.failed(path, err)
            continue
        results.append(prediction_of(inference, description, topk=topk))
        if explainer is not None:
            explainer.add(inference)
    if explainer is not None:
        explainer.finish()
    return results
