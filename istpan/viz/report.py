"""The static `index.html` of an explain run: one section per video, everything visible without a server.

Offline by construction: inline CSS, no script, no fonts or assets from anywhere; images and videos are referenced by
paths relative to the page (percent-encoded, since HMDB51 names carry `!`, `+`, spaces), so the folder can be zipped,
moved or opened from `file://` as it is. Every string that comes from a file name or a class name is HTML-escaped.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["slug", "write_report"]

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; border-bottom: 1px solid #ccc; word-break: break-all; }
table.topk { border-collapse: collapse; margin: .5em 0; } table.topk td { padding: 2px 8px; }
.bar { background: #4a90d9; height: 10px; display: inline-block; vertical-align: middle; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: .5em 0; } figcaption { color: #666; font-size: .9em; }
img, video { max-width: 100%; border: 1px solid #ddd; }
video { width: 320px; background: #000; }
.error { color: #b00; } .meta { color: #666; } nav a { margin-right: 1em; }
"""


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe version of a video or class name (HMDB51 names carry '!', '+', spaces)."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:limit].strip("._")
    return out or "video"


def _src(path: str | Path, outdir: Path) -> str:
    return quote(Path(os.path.relpath(Path(path).resolve(), outdir.resolve())).as_posix())


def _figure(path: str | Path | None, outdir: Path, caption: str) -> str:
    if not path:
        return ""
    alt = html.escape(caption, quote=True)
    img = f'<img src="{_src(path, outdir)}" alt="{alt}">'
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _topk_table(rows: Sequence[dict[str, Any]]) -> str:
    cells = "".join(
        f'<tr><td>{html.escape(str(r["class"]))}</td><td>{r["score"]:.3f}</td>'
        f'<td><span class="bar" style="width:{max(1, round(200 * r["score"]))}px"></span></td></tr>'
        for r in rows
    )
    return f'<table class="topk"><tr><th>class</th><th>score</th><th></th></tr>{cells}</table>' if rows else ""


def _segments_table(segments: Sequence[dict[str, Any]]) -> str:
    if not segments:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(str(s['class']))}</td><td>{s['start_s']:.2f}</td><td>{s['end_s']:.2f}</td>"
        f"<td>{s['peak']:.3f}</td></tr>"
        for s in segments
    )
    return ('<table class="topk"><tr><th>segment class</th><th>start (s)</th><th>end (s)</th><th>peak</th></tr>'
            f"{rows}</table>")


def _section(i: int, entry: dict[str, Any], outdir: Path) -> str:
    name = entry.get("name") or Path(entry.get("path", f"video {i}")).name
    parts = [f'<section id="v{i}"><h2>{html.escape(str(name))}</h2>']
    if entry.get("error"):
        parts.append(f'<p class="error">could not explain this video: {html.escape(str(entry["error"]))}</p>')
        return "".join(parts) + "</section>"
    if entry.get("video_frames"):
        fps = entry.get("fps") or 0.0
        parts.append(f'<p class="meta">{entry["video_frames"]} frames'
                     + (f" at {fps:.2f} fps ({entry['video_frames'] / fps:.1f} s)" if fps > 0 else "") + "</p>")
    parts.append(_topk_table(entry.get("top", [])))
    if entry.get("note"):
        parts.append(f'<p class="meta">{html.escape(str(entry["note"]))}</p>')
    parts.append(_figure(entry.get("grid"), outdir, "sampled frames with the fused attention overlaid"))
    parts.append(_figure(entry.get("levels_grid"), outdir, "attention of each pyramid level (rows) per frame"))
    media = []
    if entry.get("video"):
        media.append(f'<figure><video src="{_src(entry["video"], outdir)}" controls loop muted autoplay playsinline>'
                     "</video><figcaption>the video with the attention overlaid</figcaption></figure>")
    media.append(_figure(entry.get("timeline"), outdir, "attention mass over time"))
    parts.append(f'<div class="row">{"".join(media)}</div>')
    parts.append(_segments_table(entry.get("segments", [])))
    for label, plot in (entry.get("timelines") or {}).items():
        parts.append(_figure(plot, outdir, f"score timeline: {label}"))
    return "".join(parts) + "</section>"


def write_report(outdir: str | Path, entries: Sequence[dict[str, Any]], *, title: str = "istpan: where the model looks"
                 ) -> Path:
    """Write OUTDIR/index.html for the entries of `explain_videos` (or `sliding_window_predict` results).

    Keys used when present: name/path, error, num_frames, fps, topk, note, grid, levels_grid, video, timeline,
    segments, timelines. File paths may be absolute or relative to the working directory; the page links them
    relative to itself.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    nav = " ".join(
        f'<a href="#v{i}">{html.escape(str(e.get("name") or Path(e.get("path", "")).name))}</a>'
        for i, e in enumerate(entries)
    )
    body = "".join(_section(i, e, outdir) for i, e in enumerate(entries))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{_CSS}</style></head>'
        f"<body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>\n"
    )
    path = outdir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
