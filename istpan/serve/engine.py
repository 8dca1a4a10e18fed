"""The one adapter between the service and `istpan.inference`: everything the server asks of a model goes here.

Kept to one file on purpose: the Predictor is the front door of inference, and when its API moves (result schema,
loader) this is the only file of `istpan.serve` that changes. Result schema, as `istpan predict --json` writes it per
video: {"path", "num_frames" (K the model saw), "video_frames" (frames that decode in the video), "multi_label",
"top": [{"class", "index", "score"}]}, plus "frames_used"/"max_frames" with `confidence`, "explain" with `explain`.

Decoding runs in worker processes (`decode_clip`, given the checkpoint's `Preprocessing`); the forward pass of a batch
of decoded clips runs in the server process (`Engine.scores`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.serve.security import probe_media

__all__ = ["DecodedClip", "Engine", "decode_clip"]


@dataclass
class DecodedClip:
    """What a decode worker sends back: the model's K views (uint8, small to pickle) and where they came from."""

    views: np.ndarray  # uint8 (K, S, S, 3)
    indices: list[int]  # (K,) frame numbers sampled
    video_frames: int  # frames that decode in the whole video


def decode_clip(pre: Preprocessing, path: str) -> DecodedClip:
    """In a decode worker: refuse what is not a plain video container (probe_media: UnsupportedMedia), then decode
    the K frames the checkpoint samples (VideoError naming the file when it is damaged or truncated)."""
    probe_media(path)
    views, indices, n = pre.read(path)  # (K, S, S, 3) uint8
    return DecodedClip(views.numpy(), list(indices), int(n))


class Engine:
    """A loaded checkpoint as the server uses it: scores of decoded clips, results, anytime, explain, streams."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    @classmethod
    def load(cls, checkpoint: str | Path, *, device: str = "cpu") -> Engine:
        from istpan.inference.predictor import Predictor

        return cls(Predictor.from_checkpoint(checkpoint, device=device))

    # ------------------------------------------------------------------------------------------- description

    @property
    def preprocessing(self) -> Preprocessing:
        return self.predictor.preprocessing

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    def describe(self) -> dict[str, Any]:
        """What GET /v1/model says: enough for a client to know what it talks to."""
        pre = self.preprocessing
        return {"classes": self.class_names, "num_frames": pre.num_frames, "input_size": pre.input_size,
                "multi_label": bool(self.predictor.multi_label), "modality": pre.modality}

    # ------------------------------------------------------------------------------------------- whole videos

    @torch.no_grad()
    def scores(self, clips: list[np.ndarray]) -> torch.Tensor:
        """One forward pass over decoded clips' views uint8 (K, S, S, 3) each -> probabilities (N, C)."""
        inputs = [self.preprocessing.to_input(torch.from_numpy(v)) for v in clips]  # (K, 3, S, S) each
        return self.predictor.scores(inputs, batch_size=max(1, len(inputs)))

    def result(self, name: str, clip: DecodedClip, probs: torch.Tensor, top_k: int) -> dict[str, Any]:
        """The per-video result of a batched prediction (the schema in the module docstring)."""
        from istpan.inference.results import top_classes

        return {"path": name, "num_frames": len(clip.indices), "video_frames": clip.video_frames,
                "multi_label": bool(self.predictor.multi_label),
                "top": top_classes(probs, self.class_names, top_k)}

    def anytime(self, path: str, name: str, *, confidence: float, max_frames: int | None, top_k: int
                ) -> dict[str, Any]:
        """`istpan predict --max-frames N --confidence X` on one video: frames looked at until the top-1 margin
        reaches X (at most N, the checkpoint's K by default); reports frames_used."""

        probe_media(path)
        p = self.predictor
        n = max_frames or self.preprocessing.num_frames
        (r,) = p.predict_anytime([path], max_frames=n, confidence=confidence, topk=top_k)
        if "error" in r:
            raise UserError(r["error"].replace(path, name))
        return {"path": name, "num_frames": r["num_frames"], "video_frames": r["video_frames"],
                "frames_used": r["num_frames"], "max_frames": r["max_frames"], "multi_label": r["multi_label"],
                "top": r["top"][:top_k]}

    def explain(self, path: str, name: str, outdir: Path, *, top_k: int) -> dict[str, Any]:
        """One forward pass drawn: the result plus {"explain": {"grid", "video", "timeline", "note"}} with file names
        relative to `outdir` (the caller turns them into links)."""
        from istpan.inference.explain import explain_videos

        probe_media(path)
        p = self.predictor
        (entry,) = explain_videos(p.model, p.description, [path], outdir, topk=top_k,
                                  num_frames=self.preprocessing.num_frames)
        if entry.get("error"):
            raise UserError(str(entry["error"]).replace(path, name))
        files = {key: str(Path(entry[key]).relative_to(outdir)) if entry.get(key) else None
                 for key in ("grid", "video", "timeline")}
        top = entry["top"]
        return {"path": name, "num_frames": len(entry["frame_indices"]), "video_frames": entry["video_frames"],
                "multi_label": bool(p.multi_label), "top": top,
                "explain": {**files, "note": entry.get("note"), "attention_mass": entry.get("attention_mass")}}

    # ------------------------------------------------------------------------------------------- streams

    def stream(self, frames: Iterable[tuple[float, torch.Tensor]], *, every_frames: int | None,
               every_seconds: float | None, top_k: int) -> Iterator[dict[str, Any]]:
        """Decisions over (time_s, frame) pairs as they arrive: Predictor.stream (one backbone pass per frame)."""
        return self.predictor.stream(frames, every_frames=every_frames, every_seconds=every_seconds, topk=top_k)

    def open_source(self, spec: str, *, sample_fps: float | None, timeout_s: float) -> Any:
        """A live source (istpan.data.sources) decoded at the short side this checkpoint's frames need."""
        from istpan.data.sources import open_source

        return open_source(spec, sample_fps=sample_fps, timeout_s=timeout_s,
                           short_side=self.preprocessing.decode_short_side)
