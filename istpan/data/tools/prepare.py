"""`istpan data prepare`: a copy of a dataset made for sparse training reads.

Why: a training step reads 8 frames of a video, and what that costs is set by the file. A Kinetics download (340x256
H.264, one keyframe per 250 frames) makes the decoder go through almost every frame to reach 8 of them; a UCF101 AVI
(MPEG-4 part 2, packed B-frames, no trustworthy timestamps) can't be seeked at all. The copy fixes the shape once:

- `mp4`: H.264 in MP4, the short side resized to `short_side` (never upscaled), a keyframe (IDR) exactly every `gop`
  frames (no scene-cut keyframes, closed GOPs), B-frames that nothing references (b-pyramid off, so a sparse read
  skips every one it does not want), x264's fastdecode tune (CAVLC instead of CABAC, no deblocking filter: the
  frames that must be decoded decode faster), audio dropped, frame rate kept. Frame i of the copy is frame i of the
  source as istpan reads it (the i-th frame a full decode outputs, turned upright), resized: `iter_frames` feeds the
  encoder, and the copy's frame count is checked against the source's before the copy counts as done. x264 needs even
  sizes: an odd side loses its last row or column.
- `frames`: the TSN / MMAction2 layout the frames backend reads (`<video>/img_00001.jpg`, ...), JPEG `quality`.

Layout of OUT: `videos/<path relative to data.root>.mp4` or `frames/<path relative to data.root, no suffix>/`,
`train.txt` / `val.txt` / `classes.txt` (list format, a TAB before the 0-based label ids, so any path or class name
works), `prepared.yaml` (the input config reading the copy: `istpan train --config OUT/prepared.yaml`),
`istpan_index.sqlite` (the persistent video index of the mp4 copies, filled here) and `.istpan_prepare.jsonl` (one
line per finished video: source size and mtime, options, what was written).

Resumable and idempotent: each video is written to `<name>.part` (a suffix no reader lists) and renamed when complete
and checked, then logged. A rerun skips every video whose log line matches the source's size and mtime, the options
and the output on disk: it rewrites nothing; a source that changed since is redone. A video that fails (cannot be
decoded, no frame) is listed with its reason and left out of the lists; the command then exits 1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from istpan.data import index as video_index
from istpan.errors import UserError

__all__ = ["DEFAULT_GOP", "FORMS", "LOG_NAME", "PrepareOptions", "prepare_video", "target_path"]

FORMS = ("mp4", "frames")
DEFAULT_GOP = 8  # frames per keyframe; chosen by bench/prepare_gop.py (docs/data.md)
LOG_NAME = ".istpan_prepare.jsonl"
KILL_HOOK = "ISTPAN_PREPARE_KILL_AT"  # tests: SIGKILL this process half-way through the n-th video it writes (1-based)

log = logging.getLogger(__name__)
_started = 0  # videos this process has started writing (for the kill hook)


@dataclass(frozen=True)
class PrepareOptions:
    """What a copy is made with; stored in the log so that changed options redo the copies."""

    form: str = "mp4"
    short_side: int = 256
    gop: int = DEFAULT_GOP
    crf: int = 23  # x264's default quality, as MMAction2's resize tool; 18 doubles the disk and slows reads (docs)
    preset: str = "veryfast"  # x264 speed: preparing a large dataset takes CPU days at "medium"
    fastdecode: bool = True  # x264's tune: CAVLC, no deblocking, no weighted prediction: faster reads, +10 % disk
    quality: int = 95  # JPEG quality of `frames` (OpenCV's default, what TSN's extracted frames used)

    def check(self) -> None:
        """One line per bad value (the CLI prints it as `error: ...`)."""
        if self.form not in FORMS:
            raise UserError(f"--format {self.form}: choose from {', '.join(FORMS)}")
        if self.short_side <= 0:
            raise UserError(f"--short-side {self.short_side}: must be a positive number of pixels")
        if self.gop < 1:
            raise UserError(f"--gop {self.gop}: must be at least 1 (a keyframe every GOP frames)")
        if not 0 <= self.crf <= 51:
            raise UserError(f"--crf {self.crf}: x264's constant quality runs from 0 (lossless) to 51")
        if not 1 <= self.quality <= 100:
            raise UserError(f"--quality {self.quality}: JPEG quality runs from 1 to 100")


def target_path(src: str | Path, root: str | Path, out: str | Path, form: str) -> Path:
    """Where the copy of `src` goes: its path relative to `root` under OUT/videos (.mp4) or OUT/frames (a folder, no
    suffix). A source outside `root` keeps its absolute path under `_outside/`."""
    src = Path(os.path.abspath(src))
    rel = Path(os.path.relpath(src, os.path.abspath(root))) if root else None
    if rel is None or rel.parts[0] == "..":
        rel = Path("_outside", *src.parts[1:])
    return Path(out) / ("videos" if form == "mp4" else "frames") / (rel.with_suffix(".mp4") if form == "mp4" else
                                                                    rel.with_suffix(""))


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _maybe_killed(written: int, total: int) -> None:
    """The test hook: a deterministic kill in the middle of writing (a half-written `.part` is on disk)."""
    if os.environ.get(KILL_HOOK) == str(_started) and written >= max(total // 2, 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _copy_size(height: int, width: int, short_side: int) -> int | None:
    """The short side to read the source at: None (as it is) when it is already that small: never upscale."""
    return short_side if min(height, width) > short_side else None


def _write_mp4(src: Path, part: Path, opts: PrepareOptions, fps: float, total: int) -> int:
    from istpan.data.decode import iter_frames, video_info

    info = video_info(src)
    short = _copy_size(info.height, info.width, opts.short_side)
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    n = 0
    with av.open(str(part), mode="w", format="mp4") as container:
        stream = None
        for n, (_, frame) in enumerate(iter_frames(src, short_side=short), 1):
            rgb = frame.numpy()
            h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2  # 4:2:0 needs even sizes
            if stream is None:
                if h < 2 or w < 2:
                    raise UserError(f"{src}: frames of {rgb.shape[1]}x{rgb.shape[0]} are too small to encode")
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.codec_context.thread_count = 1  # the parallelism is across videos
                gop = f"keyint={opts.gop}:min-keyint={opts.gop}:scenecut=0:open-gop=0:b-pyramid=none"
                stream.options = {"crf": str(opts.crf), "preset": opts.preset, "threads": "1", "x264-params": gop,
                                  **({"tune": "fastdecode"} if opts.fastdecode else {})}
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
            video.pts, video.time_base = n - 1, 1 / rate  # one tick per frame: none dropped or duplicated
            for packet in stream.encode(video):
                container.mux(packet)
            _maybe_killed(n, total)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n


def _write_frames(src: Path, part: Path, opts: PrepareOptions, total: int) -> int:
    from istpan.data.decode import iter_frames, video_info

    info = video_info(src)
    short = _copy_size(info.height, info.width, opts.short_side)
    part.mkdir(parents=True)
    n = 0
    for n, (_, frame) in enumerate(iter_frames(src, short_side=short), 1):
        Image.fromarray(frame.numpy()).save(part / f"img_{n:05d}.jpg", quality=opts.quality)
        _maybe_killed(n, total)
    return n


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def prepare_video(job: dict) -> dict:
    """`_prepare_video`, leaving this process's active video index as it was (workers=1 runs in the caller)."""
    previous = video_index.active()
    try:
        return _prepare_video(job)
    finally:
        video_index.use(previous.path if previous is not None else None)


def _prepare_video(job: dict) -> dict:
    """Write one copy (runs in a worker process): `job` has src, out, options (a dict), index (the copy's index file
    or None), src_index (the sources' index file or None).
    Returns the log line of a finished copy, or {"src", "error"}."""
    from istpan.data.decode import VideoError, count_frames, index_entry, video_info

    global _started
    _started += 1
    src, out = Path(job["src"]), Path(job["out"])
    opts = PrepareOptions(**job["options"])
    part = _part(out)
    _remove(part)  # what a killed run left
    try:
        video_index.use(job.get("src_index"))  # the source's own index (data.index), so each source is scanned once
        st = src.stat()
        total = count_frames(src)
        if total == 0:
            raise VideoError(src, "no frame decodes")
        out.parent.mkdir(parents=True, exist_ok=True)
        if opts.form == "mp4":
            written = _write_mp4(src, part, opts, video_info(src).fps, total)
        else:
            written = _write_frames(src, part, opts, total)
        if written != total:  # the source changed under us, or decoding is not deterministic: never keep it
            raise VideoError(src, f"{written} frames written but {total} decode")
        _remove(out)
        os.replace(part, out)
        if opts.form == "mp4":
            video_index.use(job["index"])
            entry = index_entry(out)  # one scan of the copy: fills the index and checks it decodes whole
            if entry["num_frames"] != total or entry["errors"]:
                _remove(out)
                raise VideoError(src, f"the copy decodes {entry['num_frames']} frames of {total}")
    except (UserError, OSError, av.error.FFmpegError, ValueError) as err:
        _remove(part)
        reason = str(err) if str(err).startswith(str(src)) else f"{src}: {err}"
        return {"src": str(src), "error": reason}
    ost = out.stat()
    return {"src": str(src), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "out": str(out), "frames": total,
            "options": asdict(opts), "out_mtime_ns": ost.st_mtime_ns,
            "out_bytes": ost.st_size if opts.form == "mp4" else sum(f.stat().st_size for f in out.iterdir())}


def read_log(out: Path) -> dict[str, dict]:
    """The last log line of every source (a line cut off by a kill is ignored)."""
    done: dict[str, dict] = {}
    path = out / LOG_NAME
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[entry["src"]] = entry
    return done


def is_done(entry: dict | None, src: str, opts: PrepareOptions) -> bool:
    """A copy stands when its source, the options and the output on disk are as logged."""
    if entry is None or entry.get("options") != asdict(opts):
        return False
    try:
        st, ost = os.stat(src), os.stat(entry["out"])
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (entry["size"], entry["mtime_ns"]) and ost.st_mtime_ns == entry[
        "out_mtime_ns"]


def run_jobs(jobs: list[dict], out: Path, *, workers: int, progress: bool, initial: int) -> list[dict]:
    """Write the copies in parallel with a progress bar; each finished one is logged at once (a kill loses none)."""
    results = []
    bar = tqdm(total=initial + len(jobs), initial=initial, desc="preparing", unit="video", disable=not progress,
               dynamic_ncols=True)
    with open(out / LOG_NAME, "a") as logfile:
        def done(result: dict) -> None:
            if "error" not in result:
                logfile.write(json.dumps(result) + "\n")
                logfile.flush()
            results.append(result)
            bar.update(1)

        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for fut in as_completed([pool.submit(prepare_video, job) for job in jobs]):
                    done(fut.result())
        else:
            for job in jobs:
                done(prepare_video(job))
    bar.close()
    return results


# ---------------------------------------------------------------------------------------------- a whole dataset
def _input_folder(d) -> Path:
    """The folder the dataset's videos are under (data.root; else the annotations' folder)."""
    if d.root:
        return Path(d.root)
    ann = Path(d.train_annotations)
    return ann if ann.is_dir() else ann.parent


def check_out(out: Path, d) -> None:
    """OUT must not be inside the input (a later listing of the input would find the copies) and must be writable."""
    inside = Path(os.path.realpath(_input_folder(d)))
    real = Path(os.path.realpath(out))
    if real == inside or inside in real.parents:
        raise UserError(f"--out {out}: is inside the dataset's folder {inside}; write the copy elsewhere")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".istpan_write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--out {out}: cannot write there ({err.strerror or err})") from err


def _label_text(label, multi: bool) -> str:
    """0-based ids; the list format marks a multi-label record by a comma, so one label is written twice."""
    if not multi:
        return str(label)
    ids = [int(i) for i in label]
    return ",".join(map(str, ids * 2 if len(ids) == 1 else ids))


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:  # a rerun rewrites nothing
        path.write_text(text)


def prepare_dataset(cfg, out: str | Path, opts: PrepareOptions, *, workers: int = 1, progress: bool = True) -> dict:
    """Prepare every video of the config's splits into `out`; write the lists and `prepared.yaml`. Returns counts,
    `failed` (one line each) and the config's path."""
    from istpan.config import save_config
    from istpan.data.video_dataset import has_split, load_split

    opts.check()
    d, out = cfg.data, Path(out)
    if d.format == "webdataset":
        raise UserError("data prepare: the config reads shards (data.format=webdataset); give the video files' config")
    splits = {s: load_split(d, s) for s in ("train", "val") if has_split(d, s)}
    if not splits or not any(a.records for a in splits.values()):
        raise UserError("data prepare: the annotations list no video; set data.train_annotations (or data.root)")
    check_out(out, d)
    root = str(_input_folder(d))
    videos = list(dict.fromkeys(os.path.abspath(r.path) for a in splits.values() for r in a.records))  # each once
    targets = {v: target_path(v, root, out, opts.form) for v in videos}
    owner: dict[Path, str] = {}
    failed = []
    for v, t in targets.items():
        if t in owner:  # a.avi and a.mp4 side by side
            failed.append(f"{v}: its copy {t} would overwrite the copy of {owner[t]}")
        owner.setdefault(t, v)
    logged = read_log(out)
    index = str(out / video_index.DEFAULT_NAME) if opts.form == "mp4" else None
    todo = [v for v in videos if owner[targets[v]] == v and not is_done(logged.get(v), v, opts)]
    src_index = video_index.index_path_for(d.index, root=d.root, annotations=d.train_annotations)
    jobs = [{"src": v, "out": str(targets[v]), "options": asdict(opts), "index": index,
             "src_index": str(src_index) if src_index else None} for v in todo]
    results = run_jobs(jobs, out, workers=workers, progress=progress, initial=len(videos) - len(todo))
    failed += [r["error"] for r in results if "error" in r]
    logged = read_log(out)
    good = {v for v in videos if owner[targets[v]] == v and is_done(logged.get(v), v, opts)}
    multi = d.multi_label or d.format == "charades"
    unlisted = 0
    for split, ann in splits.items():
        lines = []
        for r in ann.records:
            src = os.path.abspath(r.path)
            if src not in good:
                continue
            if multi and not r.label:
                unlisted += 1  # the list format has no way to say "no label"
                continue
            rel = os.path.relpath(targets[src], out)
            lines.append(f"{rel}\t{_label_text(r.label, multi)}\n")
        _write_if_changed(out / f"{split}.txt", "".join(lines))
    class_names = next(iter(splits.values())).class_names
    _write_if_changed(out / "classes.txt", "".join(f"{name}\n" for name in class_names))
    where = out.resolve()
    new = dataclasses.replace(cfg, data=dataclasses.replace(
        d, format="list", root=str(where), classes=str(where / "classes.txt"),
        train_annotations=str(where / "train.txt"), val_annotations=str(where / "val.txt") if "val" in splits else "",
        multi_label=multi, backend="pyav" if opts.form == "mp4" else "frames", index="auto"))
    config_path = out / "prepared.yaml"
    tmp = out / "prepared.yaml.part"
    save_config(new, tmp)
    if config_path.is_file() and config_path.read_text() == tmp.read_text():
        tmp.unlink()
    else:
        os.replace(tmp, config_path)
    return {"videos": len(videos), "written": sum("error" not in r for r in results),
            "already": sum(owner[targets[v]] == v for v in videos) - len(todo), "failed": failed,
            "unlisted": unlisted, "config": str(config_path), "bytes_in": sum(os.path.getsize(v) for v in good),
            "bytes_out": sum(logged[v]["out_bytes"] for v in good)}
