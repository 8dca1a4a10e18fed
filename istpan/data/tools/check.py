"""`istpan data check`: decode every video of a dataset once and report what would go wrong in training.

Found: missing files, files that can't be opened (not a video, zero bytes, no video stream), videos where no frame
decodes, truncated or damaged videos (fewer frames than the container claims, packets that fail to decode), annotation
lines that were skipped (unknown labels, malformed lines) and the number of videos per class. The report is
`report.json` (for scripts) and `summary.txt` (for people); the exit status is 1 when anything is wrong.

Videos are scanned in worker processes: decoding is CPU-bound and PyAV holds the GIL for part of it.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from istpan.data import index as video_index
from istpan.data._backends import frames_errors
from istpan.data.datasets import Annotations
from istpan.data.decode import VideoError, count_frames, decode_errors, video_info
from istpan.errors import UserError

__all__ = ["VideoCheck", "check_dataset", "check_video", "write_report"]

# How many fewer frames than the container claims still count as healthy: HMDB51's AVIs claim one frame too many.
_MISSING_FRAMES_OK = 1


@dataclass
class VideoCheck:
    path: str
    status: str  # ok | missing | unreadable | no_frames | truncated | damaged
    reason: str = ""
    frames: int = 0  # frames that decode
    claimed_frames: int = 0  # what the container says


def check_video(path: str, backend: str = "pyav") -> VideoCheck:
    """Decode one video fully (no RGB conversion) and classify it."""
    if not os.path.exists(path):
        dangling = os.path.islink(path)
        return VideoCheck(path, "missing", "link target does not exist" if dangling else "file not found")
    try:
        frames = count_frames(path, backend=backend)
        claimed = video_info(path, backend="frames" if backend == "frames" else "pyav").claimed_frames
        errors = decode_errors(path) if backend == "pyav" else frames_errors(Path(path)) if backend == "frames" else []
    except VideoError as err:
        return VideoCheck(path, "unreadable", err.reason)
    except Exception as err:  # a decoder failure decode.py did not foresee is still a finding, not a crash
        return VideoCheck(path, "unreadable", f"{type(err).__name__}: {err}")
    if frames == 0:
        return VideoCheck(path, "no_frames", "no frame decodes", frames, claimed)
    if claimed - frames > _MISSING_FRAMES_OK:
        return VideoCheck(path, "truncated", f"container claims {claimed} frames, only {frames} decode", frames,
                          claimed)
    if errors:
        what = "frame images" if backend == "frames" else "packets"
        return VideoCheck(path, "damaged", f"{len(errors)} {what} fail to decode (first: {errors[0]})", frames,
                          claimed)
    return VideoCheck(path, "ok", "", frames, claimed)


def _check_all(paths: list[str], *, backend: str, workers: int, progress: bool,
               index: str | None = None) -> list[VideoCheck]:
    bar = dict(total=len(paths), desc="checking videos", unit="video", disable=not progress, dynamic_ncols=True)
    if workers <= 1 or len(paths) < 2:
        video_index.use(index)
        return [check_video(p, backend) for p in tqdm(paths, **bar)]
    # Each worker reads and fills the persistent index: a later run (or a second check) decodes nothing again.
    with ProcessPoolExecutor(max_workers=workers, initializer=video_index.use, initargs=(index,)) as pool:
        chunk = max(1, min(32, len(paths) // (workers * 8)))
        return list(tqdm(pool.map(check_video, paths, [backend] * len(paths), chunksize=chunk), **bar))


def check_dataset(
    splits: dict[str, Annotations], *, backend: str = "pyav", workers: int = 1, progress: bool = True,
    index: str | None = None,
) -> dict:
    """Scan every video of the given splits ({"train": Annotations, ...}) and return the report as a dict.
    `index`: the persistent video index file to read and fill (istpan.data.index), None for none."""
    unique = sorted({r.path for ann in splits.values() for r in ann.records})
    results = dict(zip(unique, _check_all(unique, backend=backend, workers=workers, progress=progress, index=index)))
    report: dict = {"backend": backend, "splits": {}}
    for name, ann in splits.items():
        checks = [results[r.path] for r in ann.records]
        per_class: Counter = Counter()
        ok_per_class: Counter = Counter()
        for rec, chk in zip(ann.records, checks):
            for label in rec.label if isinstance(rec.label, list) else [rec.label]:
                per_class[label] += 1
                ok_per_class[label] += chk.status == "ok"
        frames = [c.frames for c in checks if c.status == "ok"]
        report["splits"][name] = {
            "videos": len(checks),
            "ok": sum(c.status == "ok" for c in checks),
            "by_status": dict(Counter(c.status for c in checks)),
            "frames": _frame_stats(frames),
            "classes": [{"name": n, "videos": per_class[i], "ok": ok_per_class[i]} for i, n in
                        enumerate(ann.class_names)],
            "empty_classes": [n for i, n in enumerate(ann.class_names) if ok_per_class[i] == 0],
            "annotation_problems": ann.problems,
            "video_problems": [asdict(c) for c in checks if c.status != "ok"],
        }
    report["clean"] = all(not s["video_problems"] and not s["annotation_problems"] for s in report["splits"].values())
    return report


def _frame_stats(frames: list[int]) -> dict:
    if not frames:
        return {}
    return {"min": min(frames), "median": statistics.median(frames), "max": max(frames)}


def _summary_lines(report: dict) -> Iterable[str]:
    yield "istpan data check: " + ("no problems found" if report["clean"] else "PROBLEMS FOUND")
    for name, s in report["splits"].items():
        yield ""
        yield f"[{name}] {s['videos']} videos, {s['ok']} ok" + (
            f"; frames per video min {s['frames']['min']}, median {s['frames']['median']}, max {s['frames']['max']}"
            if s["frames"] else "")
        for status, n in sorted(s["by_status"].items()):
            if status != "ok":
                yield f"  {status}: {n}"
        if s["empty_classes"]:
            yield f"  classes without a usable video ({len(s['empty_classes'])}): {', '.join(s['empty_classes'][:20])}"
        counts = [c["ok"] for c in s["classes"]]
        if counts:
            yield f"  usable videos per class: min {min(counts)}, max {max(counts)} over {len(counts)} classes"
        for p in s["video_problems"][:50]:
            yield f"  {p['status']}: {p['path']}: {p['reason']}"
        if len(s["video_problems"]) > 50:
            yield f"  ... and {len(s['video_problems']) - 50} more video problems (see report.json)"
        for p in s["annotation_problems"][:20]:
            yield f"  annotation: {p}"
        if len(s["annotation_problems"]) > 20:
            yield f"  ... and {len(s['annotation_problems']) - 20} more annotation problems (see report.json)"


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path, str]:
    """Write report.json and summary.txt into out_dir; return both paths and the summary text."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; --out names the folder for report.json and summary.txt")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the report folder ({err.strerror})") from None
    summary = "\n".join(_summary_lines(report)) + "\n"
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "summary.txt").write_text(summary)
    return out / "report.json", out / "summary.txt", summary
