"""/v1/streams: start (POST), list (GET), follow (GET .../events, Server-Sent Events), stop (DELETE).

    curl -X POST -H 'Content-Type: application/json' -d '{"source": "rtsp://cam/live", "sample_fps": 8}' \
         http://127.0.0.1:8000/v1/streams                       # -> 201 {"id", "events": "/v1/streams/<id>/events"}
    curl -N http://127.0.0.1:8000/v1/streams/<id>/events        # event: decision / event: end
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from istpan.serve.gate import error
from istpan.serve.security import SourceRefused, check_source
from istpan.serve.streams import StreamOptions, StreamsFull, sse_events

__all__ = ["add_stream_routes", "stream_options"]

_FIELDS = {"source", "sample_fps", "every_frames", "every_seconds", "top_k", "realtime"}



class BadRequest(Exception):
    pass


def _number(body: dict[str, Any], key: str, kind: type, low: float, high: float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise BadRequest(f"{key} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
    if not low <= value <= high:
        raise BadRequest(f"{key} must be in [{low:g}, {high:g}], got {value}")
    return kind(value)


def stream_options(body: Any, media_root: str | None, num_classes: int) -> StreamOptions:
    """A checked StreamOptions from the JSON body; BadRequest or SourceRefused say what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object: {"source": "rtsp://..." | "/dev/video0" | "<file under --media-root>"}')
    unknown = set(body) - _FIELDS
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}: {', '.join(sorted(_FIELDS))}")
    source = body.get("source")
    if not isinstance(source, str):
        raise BadRequest("source: a string is needed (a URL, /dev/videoN, or a file under --media-root)")
    opened = check_source(source, media_root)
    every_seconds = _number(body, "every_seconds", float, 0.01, 3600)
    every_frames = _number(body, "every_frames", int, 1, 10000)
    realtime = body.get("realtime", True)
    if not isinstance(realtime, bool):
        raise BadRequest(f"realtime must be true or false, got {realtime!r}")
    top_k = _number(body, "top_k", int, 1, num_classes) or min(5, num_classes)
    return StreamOptions(source=source, opened=opened, sample_fps=_number(body, "sample_fps", float, 0.1, 240),
                         every_frames=None if every_seconds is not None else (every_frames or 1),
                         every_seconds=every_seconds, top_k=top_k, realtime=realtime)


def add_stream_routes(app: FastAPI, state: Any) -> None:
    def session_or_404(stream_id: str) -> Any:
        return state.streams.sessions.get(stream_id) if state.streams is not None else None

    @app.post("/v1/streams", status_code=201)
    async def start_stream(request: Request) -> Response:
        if not state.ready:
            return error(503, "loading the model", retry_after=1)
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the body is not JSON")
        try:
            options = stream_options(body, state.config.media_root, len(state.engine.class_names))
            session = state.streams.start(options)
        except BadRequest as err:
            return error(400, str(err))
        except SourceRefused as err:
            return error(404 if err.missing else 403 if err.forbidden else 400, str(err))
        except StreamsFull as err:
            state.metrics.rejected.labels("streams_full").inc()
            return error(503, str(err), retry_after=5)
        return JSONResponse(session.info(), status_code=201)

    @app.get("/v1/streams")
    async def list_streams() -> dict[str, Any]:
        return {"streams": state.streams.list() if state.streams is not None else []}

    @app.get("/v1/streams/{stream_id}")
    async def get_stream(stream_id: str) -> Response:
        session = session_or_404(stream_id)
        return JSONResponse(session.info()) if session else error(404, f"no stream {stream_id}")

    @app.get("/v1/streams/{stream_id}/events")
    async def stream_events(stream_id: str) -> Response:
        session = session_or_404(stream_id)
        if session is None:
            return error(404, f"no stream {stream_id}")
        return StreamingResponse(sse_events(session), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.delete("/v1/streams/{stream_id}")
    async def stop_stream(stream_id: str) -> Response:
        session = session_or_404(stream_id)
        if session is None:
            return error(404, f"no stream {stream_id}")
        state.streams.stop(session, "stopped by DELETE")
        return JSONResponse(session.info())
