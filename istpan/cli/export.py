"""`istpan export`: torch.export (.pt2), ONNX or TorchScript, checked against PyTorch; or a Hugging Face folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from istpan.files.load import LoadedModel

__all__ = ["add_parser", "run"]

EXAMPLES = """examples:
  istpan export --checkpoint runs/ucf101_split1/best.pt --format torch-export   # best.pt2: torch.export.load(...)
  istpan export --checkpoint runs/ucf101_split1/best.pt --format onnx
  istpan export --checkpoint best.pt --format torchscript --out model.ts --num-frames 16   # torch.jit: deprecated
  istpan export --checkpoint best.pt --format onnx --split --out model.onnx   # model_frame.onnx + model_head.onnx
  istpan export --checkpoint runs/mine/best.pt --format hf --out my-model   # config.json, model.safetensors, README.md
  hf upload <user>/<repo> my-model                                           # then: --checkpoint <user>/<repo>
  istpan export --checkpoint runs/mine/best.pt --format hf --push-to-hub <user>/<repo> [--private]   # both at once
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
                   "hf: a folder with config.json + model.safetensors + a README.md model card that --checkpoint "
                   "and istpan.from_pretrained read (upload it with hf upload, or --push-to-hub)")
    p.add_argument("--out", help="output file or, for hf, folder (default: beside the checkpoint, .pt2 / .onnx / .ts / "
                   "_hf)")
    p.add_argument("--num-frames", type=int, default=None, dest="num_frames",
                   help="K of the exported graph (default: the checkpoint's)")
    p.add_argument("--num-segments", type=int, dest="num_frames", help=argparse.SUPPRESS)  # the old name of K
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |export - PyTorch| of the logits")
    p.add_argument("--split", action="store_true", help="with --format onnx: two graphs for streaming, the per-frame "
                   "backbone (<stem>_frame.onnx) and the head over K frames' features (<stem>_head.onnx, any K)")
    hub = p.add_argument_group("hf format")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hugging Face Hub model repo "
                     "(created if missing) with huggingface_hub's token (`hf auth login` or HF_TOKEN)")
    hub.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    hub.add_argument("--license", default="mit", help="the model card's license (an id the Hub knows, e.g. mit, "
                     "apache-2.0, cc-by-nc-4.0, other; default mit, istpan's own: say what your training data allow)")
    p.set_defaults(run=run)
    return p


def _export_hf(args: argparse.Namespace, loaded: LoadedModel) -> int:
    """The HF folder, its model card (with the run's best-epoch validation metrics when the checkpoint has them) and,
    if asked, the upload."""
    from istpan.files.model_card import push_to_hub, write_model_card
    from istpan.files.pretrained import save_pretrained

    folder = args.out or str(Path(args.checkpoint).with_suffix("")) + "_hf"
    save_pretrained(loaded.model, loaded.description, folder, train_config=loaded.run_config)
    metrics = loaded.validation
    write_model_card(folder, metrics=metrics, license=args.license, repo_id=args.push_to_hub)
    print(f"wrote {folder}/config.json, model.safetensors and README.md (model card"
          f"{', with validation ' + ', '.join(metrics) if metrics else ''})")
    if args.push_to_hub:
        url = push_to_hub(folder, args.push_to_hub, private=args.private)
        print(f"pushed to https://huggingface.co/{args.push_to_hub} ({url}); load it with --checkpoint "
              f"{args.push_to_hub}")
    else:
        print(f"share it with: hf upload <user>/<repo> {folder}   (or --push-to-hub <user>/<repo>)")
    return 0


def run(args: argparse.Namespace) -> int:
    from istpan.errors import UserError
    from istpan.files.export import SUFFIXES, export_model
    from istpan.files.load import load

    if args.num_frames is not None and args.num_frames < 1:
        raise UserError(f"--num-frames must be >= 1, got {args.num_frames}")
    if args.split and args.format != "onnx":
        raise UserError("--split writes two ONNX graphs: use it with --format onnx")
    if args.format != "hf" and (args.push_to_hub or args.private):
        raise UserError("--push-to-hub and --private upload an HF folder: use them with --format hf")
    if args.private and not args.push_to_hub:
        raise UserError("--private makes the repo of --push-to-hub private: give --push-to-hub REPO_ID too")
    loaded = load(args.checkpoint)  # one read: the model, its description, run config, validation metrics
    model, meta = loaded.model, loaded.description
    if args.split:
        from istpan.files.export_split import export_split

        out = args.out or str(Path(args.checkpoint).with_suffix(".onnx"))
        result = export_split(model, meta, out, num_frames=args.num_frames, tolerance=args.tolerance)
        diff, shape = result["max_abs_diff"], ", ".join(map(str, result["feature_shape"]))
        print(f"wrote {result['frame']} (frames (N, 3, S, S) -> features (N, {shape})), {result['head']} "
              f"(features (B, K, {shape}) -> logits, any K) and {result['sidecar']}")
        print(f"max_abs_diff frame={diff['frame']:.3g} head={diff['head']:.3g} (tolerance {args.tolerance:g}): ok")
        return 0
    if args.format == "hf":
        return _export_hf(args, loaded)
    out = args.out or str(Path(args.checkpoint).with_suffix(SUFFIXES[args.format]))
    result = export_model(model, meta, out, format=args.format, num_frames=args.num_frames,
                          tolerance=args.tolerance)
    dynamic = "; any batch and K" if args.format == "torch-export" else ""
    print(f"wrote {result['path']} ({args.format}, input {tuple(result['input_shape'])}{dynamic}) and "
          f"{result['sidecar']}")
    print(f"max_abs_diff={result['max_abs_diff']:.3g} (tolerance {args.tolerance:g}): ok")
    return 0
