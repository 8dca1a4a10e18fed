"""POST /v1/predict: one uploaded video -> the per-video result (`istpan predict --json`'s schema).

    curl -F video=@clip.mp4 'http://127.0.0.1:8000/v1/predict?top_k=3'
    curl -F video=@clip.mp4 -F explain=true ...        # + links to the attention overlay (PNG, MP4, timeline)
    curl -F video=@clip.mp4 -F confidence=0.4 ...      # anytime: stop looking once the top-1 margin reaches 0.4

Options come as query parameters or form fields: top_k (1..classes, default 5), explain (true/false), confidence
(a top-1 margin in [0, 1]), max_frames (with confidence; default the checkpoint's K). A plain prediction is decoded
in the pool and batched with other requests' clips; explain and confidence run their own passes (one thread).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from istpan.errors import UserError
from istpan.serve.gate import error
from istpan.serve.security import UnsupportedMedia
from istpan.serve.uploads import UploadError, read_upload

__all__ = ["parse_options", "predict"]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def parse_options(values: dict[str, str], num_classes: int) -> dict[str, Any]:
    """Checked options from query parameters and form fields; UploadError(400) names the first bad one."""
    out: dict[str, Any] = {"top_k": min(5, num_classes), "explain": False, "confidence": None, "max_frames": None}
    unknown = set(values) - {"top_k", "topk", "explain", "confidence", "max_frames"}
    if unknown:
        raise UploadError(400, f"unknown option {sorted(unknown)[0]!r}: top_k, explain, confidence, max_frames")
    try:
        raw = values.get("top_k", values.get("topk"))
        if raw is not None:
            out["top_k"] = int(raw)
        if "confidence" in values and values["confidence"] != "":
            out["confidence"] = float(values["confidence"])
        if "max_frames" in values and values["max_frames"] != "":
            out["max_frames"] = int(values["max_frames"])
    except ValueError as err:
        raise UploadError(400, f"bad option value ({err})") from None
    flag = values.get("explain", "false").lower()
    if flag not in _TRUE + _FALSE:
        raise UploadError(400, f"explain must be true or false, got {values['explain']!r}")
    out["explain"] = flag in _TRUE
    if not 1 <= out["top_k"] <= max(1, num_classes):
        raise UploadError(400, f"top_k must be 1..{num_classes}, got {out['top_k']}")
    c = out["confidence"]
    if c is not None and not 0.0 <= c <= 1.0:
        raise UploadError(400, f"confidence is a top-1 margin p1 - p2 in [0, 1], got {c}")
    if out["max_frames"] is not None and (c is None or not 1 <= out["max_frames"] <= 64):
        raise UploadError(400, "max_frames goes with confidence and must be 1..64")
    if out["explain"] and c is not None:
        raise UploadError(400, "explain and confidence do not go together: explain draws one fixed-K pass")
    return out



async def predict(state: Any, request: Request) -> Response:
    cfg, metrics = state.config, state.metrics
    if not state.ready or state.engine is None:
        return error(503, "loading the model", retry_after=1)
    if state.predictions >= cfg.max_queue:  # before reading a byte: past capacity costs nothing
        metrics.rejected.labels("queue_full").inc()
        return error(503, f"busy: {cfg.max_queue} predictions in progress (--max-queue); retry shortly",
                      retry_after=1)
    state.predictions += 1
    metrics.inflight.inc()
    folder = state.uploads / secrets.token_hex(8)
    folder.mkdir(mode=0o700)
    name = "upload"
    try:
        upload = await read_upload(request, folder, max_bytes=cfg.max_upload_bytes,
                                   read_timeout_s=cfg.read_timeout_s)
        name = upload.filename
        options = parse_options({**dict(request.query_params), **upload.fields}, len(state.engine.class_names))
        result = await _answer(state, str(upload.path), name, options)
        return JSONResponse(result)
    except UploadError as err:
        if err.status == 413:
            metrics.rejected.labels("too_large").inc()
        return error(err.status, err.message)
    except UnsupportedMedia as err:
        metrics.decode_failures.labels("not_a_video").inc()
        return error(415, str(err).replace(str(folder / "video"), name))
    except UserError as err:  # VideoError, DecoderCrashed: a damaged or truncated video
        metrics.decode_failures.labels("undecodable").inc()
        return error(422, str(err).replace(str(folder / "video"), name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        state.predictions -= 1
        metrics.inflight.dec()


async def _answer(state: Any, path: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    engine, loop = state.engine, asyncio.get_running_loop()
    top_k = options["top_k"]
    if options["explain"]:
        key, outdir = state.artifacts.new()
        try:
            result = await loop.run_in_executor(state.slow, lambda: engine.explain(path, name, outdir, top_k=top_k))
        except BaseException:
            state.artifacts.discard(key)
            raise
        result["explain"] = _publish(outdir, key, result["explain"])
        return result
    if options["confidence"] is not None:
        return await loop.run_in_executor(state.slow, lambda: engine.anytime(
            path, name, confidence=options["confidence"], max_frames=options["max_frames"], top_k=top_k))
    clip = await state.pool.decode(path)
    probs = await state.batcher.submit(clip.views)
    return engine.result(name, clip, probs, top_k)


def _publish(outdir: Path, key: str, drawn: dict[str, Any]) -> dict[str, Any]:
    """Move the drawn files to the artifact folder's top level, drop the rest (the report and its results.json
    name our temp paths), and turn file names into links."""
    links: dict[str, Any] = {k: v for k, v in drawn.items() if k not in ("grid", "video", "timeline")}
    keep = {}
    for k in ("grid", "video", "timeline"):
        if drawn.get(k):
            src = outdir / drawn[k]
            keep[k] = f"{k}{src.suffix}"
            src.rename(outdir / keep[k])
    for child in outdir.iterdir():
        if child.name not in keep.values():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    links.update({k: f"/v1/artifacts/{key}/{keep[k]}" if k in keep else None for k in ("grid", "video", "timeline")})
    return links
