"""Stream sessions: a live source classified with cached features (Predictor.stream), its decisions sent as SSE.

Each session runs in its own thread (opening and reading a source blocks); decisions are handed to the event loop
(`call_soon_threadsafe`) and fanned out to every subscriber's bounded queue (a slow reader loses old decisions,
never the server's memory). Every session ends with exactly one `end` event whose `reason` says why: the end of a
file, a source that stalled or disconnected (the source's own timeout), DELETE, or the server shutting down.

File sources are paced to their timestamps by default (`realtime`), so a file under --media-root plays like a camera;
with realtime off it is read as fast as it decodes.

SSE wire format: `event: decision|end|hello` + `data: <json>`; a comment line every HEARTBEAT_S keeps proxies from
closing an idle connection and lets the server notice a reader that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from istpan.errors import UserError
from istpan.serve.engine import Engine
from istpan.serve.metrics import Metrics

__all__ = ["StreamManager", "StreamOptions", "StreamSession", "StreamsFull"]

log = logging.getLogger(__name__)
HEARTBEAT_S = 15.0
SUBSCRIBER_QUEUE = 64
KEEP_ENDED_S = 300.0  # an ended session stays listed (with its reason) this long


class StreamsFull(Exception):
    """--max-streams sessions are running (503)."""


@dataclass
class StreamOptions:
    source: str  # as the client gave it (shown back); `opened` is what the server opens
    opened: str
    sample_fps: float | None = None
    every_frames: int | None = 1
    every_seconds: float | None = None
    top_k: int = 5
    realtime: bool = True


@dataclass
class StreamSession:
    id: str
    options: StreamOptions
    created: float = field(default_factory=time.time)
    state: str = "starting"  # starting -> running -> ended
    reason: str | None = None
    decisions: int = 0
    last: dict[str, Any] | None = None
    ended_at: float | None = None
    thread: threading.Thread | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    subscribers: set[asyncio.Queue] = field(default_factory=set)

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.options.source, "state": self.state, "reason": self.reason,
                "created": self.created, "decisions": self.decisions, "last": self.last,
                "events": f"/v1/streams/{self.id}/events"}

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    # --- in the event loop
    def publish(self, kind: str, data: dict[str, Any]) -> None:
        if self.state == "ended":
            return  # one end event per session; nothing after it
        if kind == "decision":
            self.state, self.decisions, self.last = "running", self.decisions + 1, data
        elif kind == "end":
            self.state, self.reason, self.ended_at = "ended", data["reason"], time.monotonic()
        for queue in self.subscribers:
            _put(queue, (kind, data))
            if kind == "end":
                _put(queue, None)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE)
        queue.put_nowait(("hello", self.info()))
        if self.state == "ended":
            queue.put_nowait(("end", {"reason": self.reason}))
            queue.put_nowait(None)
        else:
            self.subscribers.add(queue)
        return queue


def _put(queue: asyncio.Queue, item: Any) -> None:
    """Bounded fan-out: when a reader is behind, its oldest decision goes (the end marker always gets in)."""
    while queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


class StreamManager:
    """Starts, lists, stops stream sessions; at most `max_streams` running threads."""

    def __init__(self, engine: Engine, metrics: Metrics, *, max_streams: int, timeout_s: float) -> None:
        self.engine, self.metrics = engine, metrics
        self.max_streams, self.timeout_s = max_streams, timeout_s
        self.sessions: dict[str, StreamSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._active = 0  # session threads not yet finished (a stopped session counts until its thread exits)

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if s.ended_at and now - s.ended_at > KEEP_ENDED_S
                    and not s.alive]:
            del self.sessions[key]

    def running(self) -> int:
        return self._active

    def start(self, options: StreamOptions) -> StreamSession:
        self._loop = asyncio.get_running_loop()
        self._prune()
        with self._lock:
            if self._active >= self.max_streams:
                raise StreamsFull(f"{self.max_streams} stream sessions are running (--max-streams); stop one first")
            self._active += 1
            self.metrics.active_streams.set(self._active)
        session = StreamSession(id=secrets.token_hex(8), options=options)
        self.sessions[session.id] = session
        session.thread = threading.Thread(target=self._run, args=(session,), name=f"istpan-stream-{session.id}",
                                          daemon=True)
        session.thread.start()
        return session

    def stop(self, session: StreamSession, reason: str) -> None:
        session.stop_event.set()
        session.publish("end", {"reason": reason})

    def stop_all(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            if session.state != "ended":
                self.stop(session, reason)

    def list(self) -> list[dict[str, Any]]:
        self._prune()
        return [s.info() for s in self.sessions.values()]

    # --- in the session's thread
    def _emit(self, session: StreamSession, kind: str, data: dict[str, Any]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            self._loop.call_soon_threadsafe(session.publish, kind, data)

    def _frames(self, session: StreamSession, source: Any) -> Iterator[tuple[float, Any]]:
        """The source's (time_s, frame) pairs until stopped; a file is paced to its timestamps when realtime."""
        pace = session.options.realtime and source.kind == "file"
        start = time.monotonic()
        for t, frame in source:
            if session.stop_event.is_set():
                return
            if pace and session.stop_event.wait(max(0.0, start + t - time.monotonic())):
                return
            yield t, frame

    def _run(self, session: StreamSession) -> None:
        try:
            reason = self._classify(session)
            self._emit(session, "end", {"reason": reason})  # ignored when DELETE or shutdown already ended it
        finally:
            with self._lock:
                self._active -= 1
                self.metrics.active_streams.set(self._active)

    def _classify(self, session: StreamSession) -> str:
        """Run the session's decisions to the end; returns why it ended."""
        o = session.options
        try:
            with self.engine.open_source(o.opened, sample_fps=o.sample_fps, timeout_s=self.timeout_s) as source:
                for decision in self.engine.stream(self._frames(session, source), every_frames=o.every_frames,
                                                   every_seconds=o.every_seconds, top_k=o.top_k):
                    if session.stop_event.is_set():
                        break
                    self.metrics.stream_decisions.inc()
                    self._emit(session, "decision", decision)
        except UserError as err:  # SourceError: stalled, disconnected, cannot open; bad frames
            return str(err).replace(o.opened, o.source)
        except Exception as err: # a session's failure ends that session, with a reason
            log.exception("stream %s failed", session.id)
            return f"internal error ({type(err).__name__})"
        return "stopped" if session.stop_event.is_set() else "end of stream"


async def sse_events(session: StreamSession) -> AsyncIterator[str]:
    """A subscriber's Server-Sent Events until the session's end event (or the reader goes away)."""
    queue = session.subscribe()
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                return
            kind, data = item
            yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
    finally:
        session.subscribers.discard(queue)
