"""`istpan export`: torch.export (.pt2), ONNX or TorchScript, checked against PyTorch; or a Hugging Face folder."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]

EXAMPLES = """examples:
  istpan export --checkpoint runs/ucf101_split1/best.pt --format torch-export   # best.pt2: torch.export.load(...)
  istpan export --checkpoint runs/ucf101_split1/best.pt --format onnx
  istpan export --checkpoint best.pt --format torchscript --out model.ts --num-segments 16   # torch.jit: deprecated
  istpan export --checkpoint best.pt --format onnx --split --out model.onnx   # model_frame.onnx + model_head.onnx
  istpan export --checkpoint runs/mine/best.pt --format hf --out my-model   # config.json + model.safetensors
  hf upload <user>/<repo> my-model                                           # then: --checkpoint <user>/<repo>
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export a checkpoint to torch.export (.pt2), ONNX or TorchScript (output checked against "
        "PyTorch), or a shareable Hugging Face model folder",
        description="Export the model of a checkpoint. Input: float video (B, K, 3, S, S) normalised as the "
        "checkpoint's meta says; output: logits (B, classes). The export is run on a random input and the largest "
        "absolute difference to PyTorch is printed; the command fails above --tolerance.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True,
                   help="a .pt file written by istpan train, or a model folder / Hub repo id (export --format hf)")
    p.add_argument("--format", required=True, choices=("torch-export", "onnx", "torchscript", "hf"),
                   help="torch-export: a .pt2 program (torch.export; dynamic batch and K) for torch.export.load; "
                   "torchscript: torch.jit.trace, deprecated upstream; "
                   "hf: a folder with config.json + model.safetensors that --checkpoint and "
                   "istpan.from_pretrained read (upload it with hf upload)")
    p.add_argument("--out", help="output file or, for hf, folder (default: beside the checkpoint, .pt2 / .onnx / .ts / "
                   "_hf)")
    p.add_argument("--num-segments", type=int, default=None, help="K of the exported graph (default: checkpoint's)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |export - PyTorch| of the logits")
    p.add_argument("--split", action="store_true", help="with --format onnx: two graphs for streaming, the per-frame "
                   "backbone (<stem>_frame.onnx) and the head over K frames' features (<stem>_head.onnx, any K)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from istpan.errors import UserError
    from istpan.files.export import SUFFIXES, export_model
    from istpan.files.load import load

    if args.num_segments is not None and args.num_segments < 1:
        raise UserError(f"--num-segments must be >= 1, got {args.num_segments}")
    if args.split and args.format != "onnx":
        raise UserError("--split writes two ONNX graphs: use it with --format onnx")
    model, meta, run_config, _ = load(args.checkpoint)  # one read: the model, its description, run config
    if args.split:
        from istpan.files.export_split import export_split

        out = args.out or str(Path(args.checkpoint).with_suffix(".onnx"))
        result = export_split(model, meta, out, num_segments=args.num_segments, tolerance=args.tolerance)
        diff, shape = result["max_abs_diff"], ", ".join(map(str, result["feature_shape"]))
        print(f"wrote {result['frame']} (frames (N, 3, S, S) -> features (N, {shape})), {result['head']} "
              f"(features (B, K, {shape}) -> logits, any K) and {result['sidecar']}")
        print(f"max_abs_diff frame={diff['frame']:.3g} head={diff['head']:.3g} (tolerance {args.tolerance:g}): ok")
        return 0
    if args.format == "hf":
        from istpan.files.pretrained import save_pretrained

        folder = args.out or str(Path(args.checkpoint).with_suffix("")) + "_hf"
        save_pretrained(model, meta, folder, train_config=run_config)
        print(f"wrote {folder}/config.json and model.safetensors; share it with: hf upload "
              f"<user>/<repo> {folder}")
        return 0
    out = args.out or str(Path(args.checkpoint).with_suffix(SUFFIXES[args.format]))
    result = export_model(model, meta, out, format=args.format, num_segments=args.num_segments,
                          tolerance=args.tolerance)
    dynamic = "; any batch and K" if args.format == "torch-export" else ""
    print(f"wrote {result['path']} ({args.format}, input {tuple(result['input_shape'])}{dynamic}) and "
          f"{result['sidecar']}")
    print(f"max_abs_diff={result['max_abs_diff']:.3g} (tolerance {args.tolerance:g}): ok")
    return 0
