"""Export a trained model (torch.export, ONNX or TorchScript), run the export, and check it matches PyTorch.

The exported graph maps a float video (B, K, 3, S, S), already normalised as the checkpoint's meta says, to logits
(B, classes). K is the checkpoint's test K unless given (`--num-segments`). Dynamic axes: batch and K for
torch-export (a `.pt2` ExportedProgram, PyTorch's current format: `torch.export.load(path).module()(video)`), batch
for ONNX, none declared for TorchScript. The check runs the exported model (torch.export.load / onnxruntime /
torch.jit.load, always from the written file) and PyTorch on a random input (torch-export: also on another batch size
and K) and fails when the largest absolute difference of the logits exceeds the tolerance.

TorchScript is kept for deployments that still read it, but `torch.jit.trace` is deprecated upstream (PyTorch 2.14
warns on it): prefer torch-export, or ONNX outside PyTorch.

Beside the export, `<file>.json` (the sidecar, `write_sidecar`) says how to feed it without istpan: class names,
multi-label flag, input shape and the `Preprocessing` dict (frame sampling, resize, crop, mean/std) with the graph's K.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.files.description import ModelDescription

__all__ = ["FORMATS", "SUFFIXES", "export_model", "sidecar_path", "write_sidecar"]

FORMATS = ("torch-export", "onnx", "torchscript")
SUFFIXES = {"torch-export": ".pt2", "onnx": ".onnx", "torchscript": ".ts"}  # the default output file's suffix
# Largest batch and K the .pt2 program accepts (torch.export needs a bound to reason about the symbolic sizes).
MAX_DYNAMIC = 4096
log = logging.getLogger(__name__)


class _Logits(nn.Module):
    """The model with a plain tensor output: exporters need tensors, not the ModelOutput dataclass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:  # (B, K, 3, S, S) -> (B, classes)
        return self.model(video).logits


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path) -> torch.Tensor:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise UserError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'istpan[export]'") from err
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, input_names=["video"], output_names=["logits"],
            dynamic_shapes={"video": {0: batch}}, verbose=False,
        )
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"video": example.numpy()})
    return torch.from_numpy(out)


def _export_program(wrapper: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.export with batch and K symbolic; returns the program read back from `path`."""
    # torch.export specialises a size of 0 or 1 to a constant, so it traces at batch >= 2 and K >= 2.
    b, k = example.shape[:2]
    trace = torch.randn(max(b, 2), max(k, 2), *example.shape[2:], generator=torch.Generator().manual_seed(1))
    dims = {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC), 1: torch.export.Dim("num_frames", min=1,
                                                                                        max=MAX_DYNAMIC)}
    program = torch.export.export(wrapper, (trace,), dynamic_shapes={"video": dims})
    torch.export.save(program, str(path))
    return torch.export.load(str(path)).module()


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path) -> torch.Tensor:
    log.warning("TorchScript: torch.jit.trace is deprecated in PyTorch; --format torch-export writes a .pt2 program "
                "(torch.export), the current format")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python ints
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")  # the file, not the in-memory trace, is checked
    with torch.no_grad():
        return loaded(example)


@torch.no_grad()
def export_model(
    model: nn.Module,
    description: ModelDescription | dict[str, Any],
    out: str | Path,
    *,
    format: str = "onnx",
    num_frames: int | None = None,
    batch_size: int = 1,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the exported model to `out`; return {"path", "format", "input_shape", "max_abs_diff", "tolerance"}.

    Raises UserError when the export's output differs from PyTorch by more than `tolerance`.
    """
    if format not in FORMATS:
        raise UserError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    description = ModelDescription.from_dict(description, model=model)
    pre = description.preprocessing.with_frames(num_frames)
    k, size = pre.num_frames, pre.input_size
    channels = len(pre.mean)  # 3 for RGB, 2L for a flow checkpoint, 3 + 2L for rgb+flow (docs/flow.md)
    example = torch.randn(batch_size, k, channels, size, size, generator=torch.Generator().manual_seed(seed))
    wrapper = _Logits(model).eval()
    if format == "torch-export":
        program = _export_program(wrapper, example, out)
        # The graph's input and one of another batch size and K: both axes are really dynamic.
        other = torch.randn(batch_size + 1, k + 1, channels, size, size, generator=torch.Generator().manual_seed(2))
        diff = max(_max_diff(program(x), wrapper(x)) for x in (example, other))
    else:
        exporter = _export_onnx if format == "onnx" else _export_torchscript
        diff = _max_diff(exporter(wrapper, example, out), wrapper(example))
    result = {"path": str(out), "format": format, "input_shape": list(example.shape), "max_abs_diff": diff,
              "tolerance": tolerance}
    if not diff <= tolerance:
        raise UserError(f"{out}: exported {format} model differs from PyTorch by {diff:.3g} > tolerance {tolerance:g}")
    result["sidecar"] = str(write_sidecar(description, pre, out, input_shape=result["input_shape"]))
    return result


def _max_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    return (got.float() - expected.float()).abs().max().item()  # (B, classes) each


def sidecar_path(out: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.json`."""
    out = Path(out)
    return out.with_suffix(out.suffix + ".json")


def write_sidecar(description: ModelDescription, pre: Preprocessing, out: str | Path, *,
                  input_shape: list[int]) -> Path:
    """Write what a deployment needs besides the graph: the model's description (class names, multi-label flag,
    model name and options) with the graph's preprocessing (its K), and the input shape. `ModelDescription.from_dict`
    reads it back."""
    path = sidecar_path(out)
    path.write_text(json.dumps({
        "input": f"video (B, K, {len(pre.mean)}, S, S), normalised",
        "output": "logits (B, classes)",
        **description.with_preprocessing(pre).to_dict(),
        "input_shape": list(input_shape),
    }, indent=1))
    return path
