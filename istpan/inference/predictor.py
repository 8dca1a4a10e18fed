"""`Predictor`: a trained checkpoint ready for programs, on files, frame arrays and tensors, batched.

    from istpan import Predictor
    predictor = Predictor.from_checkpoint("runs/ucf101/best.pt", device="cuda")   # or the run folder
    predictor.predict("clip.mp4")                       # {"path", "num_frames", "video_frames", "top": [...], ...}
    predictor.predict(["a.mp4", "b.avi"], topk=3)       # one dict per input, forward passes batched
    Predictor.from_checkpoint("best.pt", backend="frames").predict("rawframes/v_Archery_g01_c01")  # frame folder
    predictor.predict(frames)                           # uint8 (T, H, W, 3) array or tensor: one video's frames
    predictor.scores([frames_a, frames_b])              # probabilities (N, C)

What the model sees is the checkpoint's `Preprocessing` (`predictor.preprocessing`): K frames chosen among the T
given, short side resized, centre crop, mean/std. A file is decoded as `istpan predict` decodes it (same frames, same
scores); an array is taken as decoded frames and goes through the same view and normalisation (`Preprocessing.view`
resizes its short side with torchvision, where a file is resized by the decoder: equal up to resampling).

Accepted inputs (one, or a list/tuple of them):
    str | Path                        a video file (any length), or a folder of frames with backend="frames"
    uint8 (T, H, W, 3)                one video's RGB frames, numpy or torch; (B, T, H, W, 3): B videos
    float tensor (K, 3, S, S)         a clip already preprocessed (`preprocessing.to_input`); (B, K, 3, S, S): B clips

    for decision in predictor.stream(frames):           # any iterable of uint8 (H, W, 3) frames, or a source:
        print(decision["time_s"], decision["top"][0])   # a file, "/dev/video0", "rtsp://...", "-" (stdin)

`stream` runs each frame through the backbone once and decides over the last K frames' cached features
(istpan/inference/stream.py); `preprocess_frame` is its per-frame step.

Every mode of `istpan predict` is a method here, with one result schema (`istpan.inference.results`):

    predictor.predict(paths_or_arrays)                  whole videos, batched forward passes
    predictor.predict_videos(paths, explain="out/")     one pass per video, drawn (attention overlays, report)
    predictor.predict_windows(paths, window=4, stride=2)   sliding windows over untrimmed videos
    predictor.predict_anytime(paths, confidence=0.4, max_frames=8)   stop when the prediction is clear
    predictor.predict_list("videos.txt", "preds.jsonl")   millions of videos, resumable, torchrun
    predict_fused([rgb, flow], paths, weights=[1, 1.5])  late fusion of several predictors' scores
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from istpan.errors import UserError
from istpan.files.description import ModelDescription
from istpan.inference.predict import device_of, probabilities
from istpan.inference.results import error_record, top_classes

__all__ = ["Predictor", "predict_fused"]


def _describe(x: Any) -> str:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        kind = "array" if isinstance(x, np.ndarray) else "tensor"
        return f"{str(x.dtype).replace('torch.', '')} {kind} of shape {tuple(x.shape)}"
    return type(x).__name__


class Predictor:
    """A model in eval mode with its class names and `Preprocessing`; see the module docstring."""

    def __init__(self, model: nn.Module, description: ModelDescription | dict[str, Any], *,
                 device: str | torch.device | None = None, num_frames: int | None = None,
                 backend: str | None = None) -> None:
        self.model = model.eval() if device is None else model.to(device).eval()
        description = ModelDescription.from_dict(description, model=model)
        self.preprocessing = description.preprocessing.with_frames(num_frames).with_backend(backend)
        self.description = description.with_preprocessing(self.preprocessing)
        self.multi_label = description.multi_label
        self.class_names = list(description.class_names)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        num_frames: int | None = None, backend: str | None = None) -> Predictor:
        """Load a checkpoint written by `istpan train` (a .pt file or the run folder: best.pt, else last.pt), a model
        folder or a Hub repo id (`istpan.files.load`). num_frames: K (default: the checkpoint's); backend: how paths
        are decoded (pyav, opencv, frames); None: the checkpoint's (its run's data.backend)."""
        from istpan.files.load import load_model

        model, description = load_model(path, device=device)
        return cls(model, description, num_frames=num_frames, backend=backend)

    @property
    def device(self) -> torch.device:
        return device_of(self.model)

    # ------------------------------------------------------------------------------------------- preprocessing

    def preprocess_frame(self, frame: torch.Tensor | np.ndarray) -> torch.Tensor:
        """One decoded RGB frame uint8 (H, W, 3) -> float (3, S, S), the per-frame step of a stream."""
        frame = torch.as_tensor(frame)
        if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[-1] != 3:
            raise UserError(f"frame: expected uint8 RGB (H, W, 3), got {_describe(frame)}")
        return self.preprocessing.frame_input(frame)

    def preprocess(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """One video's decoded RGB frames uint8 (T, H, W, 3) -> the model's clip float (K, 3, S, S)."""
        clip, _ = self._frames_clip(torch.as_tensor(frames), "frames")
        return clip

    def _frames_clip(self, frames: torch.Tensor, name: str) -> tuple[torch.Tensor, dict[str, Any]]:
        if frames.shape[0] == 0:
            raise UserError(f"{name}: no frames (T = 0)")
        indices = self.preprocessing.indices(int(frames.shape[0]))  # (K,)
        clip = self.preprocessing.to_input(self.preprocessing.view(frames[indices]))  # (K, 3, S, S)
        return clip, {"num_frames": len(indices), "video_frames": int(frames.shape[0])}

    def _clips(self, item: Any, name: str) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        """(clip float (K, 3, S, S), info) for each video in one input item; a bad item is one UserError line."""
        if isinstance(item, (str, Path)):
            views, indices, n = self.preprocessing.read(item)  # VideoError names the file
            yield self.preprocessing.to_input(views), {"path": str(item), "num_frames": len(indices),
                                                       "video_frames": n}
            return
        if not isinstance(item, (np.ndarray, torch.Tensor)):
            raise UserError(f"{name}: expected a video path, uint8 frames (T, H, W, 3) or a float clip (K, 3, S, S), "
                            f"got {_describe(item)}")
        x = torch.as_tensor(item)
        s = self.preprocessing.input_size
        if x.dtype == torch.uint8 and x.dim() in (4, 5) and x.shape[-1] == 3:  # frames (T, H, W, 3) or (B, ...)
            for video in (x if x.dim() == 5 else [x]):
                yield self._frames_clip(video, name)
        elif x.is_floating_point() and x.dim() in (4, 5) and tuple(x.shape[-3:]) == (3, s, s):  # model input
            for clip in (x if x.dim() == 5 else [x]):
                yield clip.float(), {"num_frames": int(clip.shape[0]), "video_frames": int(clip.shape[0])}
        else:
            raise UserError(f"{name}: expected uint8 RGB frames (T, H, W, 3) or a float clip (K, 3, {s}, {s}) "
                            f"preprocessed as predictor.preprocessing says (either with a leading batch axis), "
                            f"got {_describe(item)}")

    # ------------------------------------------------------------------------------------------- prediction

    @torch.no_grad()
    def _run(self, items: Sequence[Any], batch_size: int, errors: str) -> Iterator[tuple[dict[str, Any], Any]]:
        """(info, probs (C,) or None) per video, in order; clips of equal shape share forward passes."""
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if errors not in ("raise", "report"):
            raise UserError(f"errors must be 'raise' or 'report', got {errors!r}")
        pending: list[tuple[dict[str, Any], torch.Tensor | None]] = []

        def flush() -> Iterator[tuple[dict[str, Any], Any]]:
            clips = [c for _, c in pending if c is not None]
            probs: list[torch.Tensor] = []
            for start in range(0, len(clips), batch_size):  # equal shapes in one batch, else one by one
                chunk = clips[start:start + batch_size]
                groups = [chunk] if all(c.shape == chunk[0].shape for c in chunk) else [[c] for c in chunk]
                for group in groups:
                    logits = self.model(torch.stack(group).to(self.device)).logits  # (b, K, 3, S, S) -> (b, C)
                    probs.extend(probabilities(logits, multi_label=self.multi_label).cpu())
            it = iter(probs)
            for info, clip in pending:
                yield info, (next(it) if clip is not None else None)
            pending.clear()

        for i, item in enumerate(items):
            name = str(item) if isinstance(item, (str, Path)) else f"input {i}"
            try:
                for clip, info in self._clips(item, name):
                    pending.append((info, clip))
            except UserError as err:
                if errors == "raise":
                    raise
                pending.append((error_record(item if isinstance(item, (str, Path)) else f"input {i}", err), None))
            if sum(c is not None for _, c in pending) >= batch_size:
                yield from flush()
        yield from flush()

    def predict(self, inputs: Any, *, topk: int = 5, batch_size: int = 8, errors: str = "raise"
                ) -> dict[str, Any] | list[dict[str, Any]]:
        """Top-k classes per video: {"path", "num_frames", "video_frames", "multi_label", "top": [{"class", "index",
        "score"}]} (`istpan.inference.results`; no "path" for an array). One input -> one dict; a
        list (or a 5-D batch) -> a list of dicts, in order.

        errors="raise": the first bad input raises a one-line UserError (VideoError for a file);
        errors="report": it gives the error record {"path", "error"} and the others are still predicted.
        """
        single = not isinstance(inputs, (list, tuple)) and not (
            isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim == 5)
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        out = []
        for info, probs in self._run(items, batch_size, errors):
            if probs is not None:
                info = {**info, "multi_label": self.multi_label, "top": top_classes(probs, self.class_names, topk)}
            out.append(info)
        return out[0] if single else out

    def stream(self, frames: Any, *, every_frames: int | None = 1, every_seconds: float | None = None,
               fps: float | None = None, sample_fps: float | None = None, timeout_s: float = 10.0, topk: int = 5
               ) -> Iterator[dict[str, Any]]:
        """Decisions over a stream, as frames arrive: {"time_s", "frame", "num_frames", "window_s", "multi_label",
        "top", "latency_ms"} once K frames are in, then every `every_frames` frames or `every_seconds` of stream time.

        frames: any iterable of uint8 (H, W, 3) frames (numpy or torch; time = index / fps), of (time_s, frame)
        pairs, or a source to open: a file, "/dev/videoN", an rtsp/http URL or "-" (stdin), read at `sample_fps`
        frames per second (every frame when None) and ended with an error after `timeout_s` seconds without data.
        A frame of the wrong shape or dtype is one UserError line.
        """
        from istpan.inference.stream import stream_decisions

        if isinstance(frames, (str, Path)):
            from istpan.data.sources import open_source

            with open_source(frames, sample_fps=sample_fps, timeout_s=timeout_s,
                             short_side=self.preprocessing.decode_short_side) as source:
                yield from self.stream(source, every_frames=every_frames, every_seconds=every_seconds, topk=topk)
            return
        yield from stream_decisions(self.model, self.preprocessing, frames, class_names=self.class_names, topk=topk,
                                    every_frames=every_frames, every_seconds=every_seconds, fps=fps,
                                    multi_label=self.multi_label)

    def scores(self, inputs: Any, *, batch_size: int = 8) -> torch.Tensor:
        """Probabilities (N, C) (softmax, or sigmoid for a multi-label checkpoint), one row per video."""
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        rows = [probs for _, probs in self._run(items, batch_size, "raise")]
        return torch.stack(rows) if rows else torch.empty(0, len(self.class_names))

    # ------------------------------------------------------------------------------------------- the other modes

    def predict_videos(self, paths: Sequence[str | Path], *, topk: int = 5, explain: str | Path | None = None,
                       levels: bool = False) -> list[dict[str, Any]]:
        """One forward pass per video (`videos.predict_videos`); with `explain=OUTDIR` also drawn (overlays, report,
        results.json). Bad videos give the error record."""
        from istpan.inference.videos import predict_videos

        return predict_videos(self.model, self.description, paths, topk=topk, explain=explain, levels=levels)

    def predict_windows(self, paths: Sequence[str | Path], *, window: float, stride: float | None = None,
                        unit: str = "seconds", reduce: str = "mean", threshold: float = 0.5, topk: int = 5,
                        outdir: str | Path | None = None) -> list[dict[str, Any]]:
        """Sliding windows of K frames over each video (`windows.predict_windows`): the video result plus windows,
        segments and, with `outdir`, per-class timelines and a report."""
        from istpan.inference.windows import predict_windows

        return predict_windows(self.model, self.description, paths, window=window, stride=stride, unit=unit,
                               reduce=reduce, threshold=threshold, topk=topk, outdir=outdir)

    def predict_anytime(self, paths: Sequence[str | Path], *, confidence: Any = None, max_frames: int | None = None,
                        order: str | Sequence[int] | None = None, topk: int = 5) -> list[dict[str, Any]]:
        """Frames coarse to fine until the prediction is clear (`videos.predict_anytime`): `num_frames` is the frames
        used, "max_frames" N."""
        from istpan.inference.videos import predict_anytime

        return predict_anytime(self.model, self.description, paths, max_frames=max_frames, confidence=confidence,
                               order=order, topk=topk)

    def predict_list(self, list_file: str | Path, out: str | Path, *, root: str | Path = "", topk: int = 5,
                     batch_size: int = 8, workers: int = 2) -> dict[str, Any]:
        """Every video of a list file into a JSONL file, resumable, on every torchrun rank (`batch.predict_list`)."""
        from istpan.inference.batch import predict_list

        return predict_list(self, list_file, out, root=root, topk=topk, batch_size=batch_size, workers=workers)


def predict_fused(predictors: Sequence[Predictor], paths: Sequence[str | Path], *,
                  weights: Sequence[float] | None = None, topk: int = 5, names: Sequence[str] = ()
                  ) -> list[dict[str, Any]]:
    """Late fusion: each predictor predicts every video as it alone would (its own preprocessing: frames for RGB,
    flow computed on the fly for a flow model), then the probabilities are averaged with `weights` (`videos.
    fuse_scores`). One result per video, in order, with "fuse_weights"; a video any model cannot read gives the error
    record. names: what to call each predictor in errors (e.g. its checkpoint)."""
    from istpan.inference.videos import fuse_scores, parse_fuse_weights

    weights = parse_fuse_weights(weights, len(predictors))
    first, names = predictors[0], list(names) or [f"model {i}" for i in range(len(predictors))]
    for name, pred in zip(names[1:], predictors[1:]):
        if pred.class_names != first.class_names or pred.multi_label != first.multi_label:
            raise UserError(f"{name}: its classes differ from {names[0]}'s; late fusion needs models of the same "
                            "classes, in the same order")
    runs = [list(p._run(list(paths), 8, "report")) for p in predictors]  # per model: (info, probs (C,) or None)
    results = []
    for path, outputs in zip(paths, zip(*runs)):
        errors = [info["error"] for info, probs in outputs if probs is None]
        if errors:
            results.append(error_record(path, errors[0]))
            continue
        fused = fuse_scores([probs[None] for _, probs in outputs], weights)[0]  # (C,)
        info = outputs[0][0]
        results.append({**info, "path": str(path), "multi_label": first.multi_label, "fuse_weights": weights,
                        "top": top_classes(fused, first.class_names, topk)})
    return results
