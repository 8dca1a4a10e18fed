"""`istpan predict --explain OUTDIR`: per video, what the model predicts and where in space and time it looks.

The model runs once per video (`istpan.inference.predict.infer_video`, the checkpoint's own K and preprocessing); the
printed prediction and the pictures (`istpan.viz.explain.draw_explanation`) come from that one forward pass.

Per video, OUTDIR/<nn>_<name>/ holds the pictures (see istpan.viz.explain); OUTDIR/index.html shows all of them
offline and OUTDIR/results.json has the numbers. Entry keys: the per-video result of every mode (path, num_frames = K,
video_frames, multi_label, top = [{class, index, score}]; istpan/inference/results.py), then name, fps,
frame_indices (the K sampled frames), attention_mass ([K] or None for TSN), grid / levels_grid / video / timeline
(file paths or None), note; a broken video is the error record {path, error} (one bad file does not stop the
others).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.files.description import ModelDescription
from istpan.inference.predict import Inference, infer_video
from istpan.inference.results import error_record, video_result

__all__ = ["Explainer", "explain_videos"]

log = logging.getLogger(__name__)


class Explainer:
    """Collects explained videos into OUTDIR, one `add` per inference (or `failed` per unreadable video);
    `finish` writes index.html and results.json and returns the entries."""

    def __init__(self, description: ModelDescription, pre: Preprocessing, outdir: str | Path, *, levels: bool = False,
                 topk: int = 5) -> None:
        self.description, self.pre, self.outdir = description, pre, Path(outdir)
        self.levels, self.topk = levels, topk
        self.entries: list[dict[str, Any]] = []
        self.outdir.mkdir(parents=True, exist_ok=True)

    def add(self, inference: Inference) -> dict[str, Any]:
        from istpan.data import video_info
        from istpan.models import attention_maps
        from istpan.viz.explain import draw_explanation
        from istpan.viz.report import slug

        path = Path(inference.path)
        try:
            fps = video_info(path, backend=self.pre.backend).fps  # 0.0 for a folder of frames
            out = inference.output
            entry = video_result(
                path, num_frames=len(inference.indices), video_frames=inference.video_frames,
                multi_label=self.description.multi_label, probs=inference.probs, names=self.description.class_names,
                topk=self.topk, name=path.name, fps=fps, frame_indices=list(inference.indices),
                attention_mass=None if out.attn is None else attention_maps(out)[0].float().sum((1, 2)).tolist())
            vdir = self.outdir / f"{len(self.entries):02d}_{slug(path.stem)}"
            entry.update(draw_explanation(inference, self.pre, vdir, fps=fps if fps > 0 else 25.0,
                                          levels=self.levels))
        except UserError as err:  # e.g. the file changed or broke between the prediction and the overlay video
            log.warning("no explanation for %s", err)  # its prediction was made: the caller reports no error
            return self.failed(path, err)
        self.entries.append(entry)
        return entry

    def failed(self, path: str | Path, err: Exception) -> dict[str, Any]:
        """Record a video that could not be explained in the report; saying so to the user is the caller's job (the
        CLI prints one `error:` line per failed video, a second line here would name it twice)."""
        entry = error_record(path, err)
        self.entries.append(entry)
        return entry

    def finish(self) -> list[dict[str, Any]]:
        from istpan.viz.report import write_report

        write_report(self.outdir, self.entries)
        (self.outdir / "results.json").write_text(json.dumps(self.entries, indent=2))
        return self.entries


def explain_videos(model: nn.Module, description: ModelDescription | dict[str, Any], paths: Sequence[str | Path],
                   outdir: str | Path, *, levels: bool = False, topk: int = 5, num_frames: int | None = None
                   ) -> list[dict[str, Any]]:
    """Explain each video (one forward pass each) and write OUTDIR/index.html and OUTDIR/results.json.

    `num_frames` overrides the checkpoint's K (the model takes any K), as `istpan predict --num-frames` does.
    Returns one entry per video (see the module docstring).
    """
    description = ModelDescription.from_dict(description, model=model)
    pre = description.preprocessing.with_frames(num_frames)
    explainer = Explainer(description, pre, outdir, levels=levels, topk=topk)
    multi = description.multi_label
    for path in paths:
        try:
            inference = infer_video(model, pre, path, multi_label=multi)
        except UserError as err:  # VideoError is a UserError: unreadable or missing file
            explainer.failed(path, err)
            continue
        explainer.add(inference)
    return explainer.finish()
