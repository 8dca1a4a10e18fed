"""`istpan export --format onnx --split`: the per-frame backbone and the K-frame head as two ONNX graphs.

A deployment that streams (or slides windows) without torch runs the frame graph once per sampled frame, keeps the
outputs in its own ring buffer, and runs the head graph over the last K of them, exactly as
`istpan.inference.stream` does with the PyTorch model:

    <stem>_frame.onnx   frames   float (N, 3, S, S), normalised    -> features (N, ΣC_j, h, w)   N dynamic
    <stem>_head.onnx    features float (B, K, ΣC_j, h, w)          -> logits   (B, classes)      B and K dynamic

The head has a dynamic K because the IST-PAN layer has no K-dependent parameter; the order-aware model's frame times
are (k + 0.5) / K of the buffer position (docs/latency.md). Each graph is run with onnxruntime on random inputs and
compared with PyTorch (the head at two values of K); `<stem>_split.json` is the sidecar (class names, preprocessing,
shapes).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.errors import UserError
from istpan.files.description import ModelDescription

__all__ = ["export_split"]


class _Frames(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, ΣC_j, h, w)
        return self.model.frame_features(frames)


class _Head(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, K, ΣC_j, h, w) -> (B, classes)
        return self.model.forward_clip(features).logits


def _onnx(module: nn.Module, example: torch.Tensor, path: Path, *, name: str, output: str,
          dynamic: dict[int, Any]) -> Any:
    """Export with torch.onnx (dynamo) and return an onnxruntime session on the written file."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise UserError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'istpan[export]'") from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[name], output_names=[output],
                                    dynamic_shapes={name: dynamic}, verbose=False)
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check(session: Any, module: nn.Module, x: torch.Tensor, name: str, path: Path, tolerance: float) -> float:
    (got,) = session.run(None, {name: x.numpy()})
    diff = (torch.from_numpy(got).float() - module(x).float()).abs().max().item()
    if not diff <= tolerance:
        raise UserError(f"{path}: exported graph differs from PyTorch by {diff:.3g} > tolerance {tolerance:g} "
                        f"(input {tuple(x.shape)})")
    return diff


@torch.no_grad()
def export_split(model: nn.Module, description: ModelDescription | dict[str, Any], out: str | Path, *,
                 num_frames: int | None = None, tolerance: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Write `<stem>_frame.onnx`, `<stem>_head.onnx` and `<stem>_split.json` next to `out`; check both graphs.

    Returns {"frame", "head", "sidecar", "feature_shape", "max_abs_diff": {"frame", "head"}, "tolerance"}.
    """
    if not hasattr(model, "frame_features"):
        raise UserError(f"--split needs a model with a per-frame / K-frame split, got {type(model).__name__}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    frame_path, head_path = Path(f"{stem}_frame.onnx"), Path(f"{stem}_head.onnx")
    model = model.cpu().eval()
    description = ModelDescription.from_dict(description, model=model)
    pre = description.preprocessing.with_frames(num_frames)
    k, size = pre.num_frames, pre.input_size
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(2 * k, 3, size, size, generator=g)  # (N, 3, S, S)
    frame_module, head_module = _Frames(model).eval(), _Head(model).eval()

    n = torch.export.Dim("frames", min=1, max=4096)
    session = _onnx(frame_module, frames, frame_path, name="frames", output="features", dynamic={0: n})
    diff_frame = max(_check(session, frame_module, x, "frames", frame_path, tolerance) for x in (frames, frames[:1]))

    feats = frame_module(frames).unflatten(0, (2, k))  # (2, K, ΣC_j, h, w): real features, not noise
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("k", min=1, max=1024)}
    session = _onnx(head_module, feats, head_path, name="features", output="logits", dynamic=dims)
    other_k = frame_module(torch.randn(k + 3, 3, size, size, generator=g))[None]  # (1, K + 3, ...): dynamic K
    diff_head = max(_check(session, head_module, x, "features", head_path, tolerance) for x in (feats, other_k))

    sidecar = Path(f"{stem}_split.json")
    feature_shape = list(feats.shape[2:])
    sidecar.write_text(json.dumps({
        "frame_graph": frame_path.name,
        "head_graph": head_path.name,
        "frame_input": "frames (N, 3, S, S), normalised as preprocessing says",
        "frame_output": f"features (N, {', '.join(map(str, feature_shape))})",
        "head_input": "features (B, K, ...) of K frames in time order, any K (a ring buffer of the last K)",
        "head_output": "logits (B, classes)",
        **description.with_preprocessing(pre).to_dict(),
        "feature_shape": feature_shape,
    }, indent=1))
    return {"frame": str(frame_path), "head": str(head_path), "sidecar": str(sidecar), "feature_shape": feature_shape,
            "max_abs_diff": {"frame": diff_frame, "head": diff_head}, "tolerance": tolerance}
