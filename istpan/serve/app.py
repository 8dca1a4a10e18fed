"""The FastAPI app: routes over the engine, the decode pool, the micro-batcher and the stream sessions.

    create_app(ServeConfig(checkpoint=...))   -> an ASGI app (uvicorn, or any ASGI server, or Ray Serve)

The app keeps no state between requests but its stream sessions and, for a while, explain outputs: replicas behind a
load balancer are interchangeable for /v1/predict (docs/serving.md). Every request's upload lives in its own folder
inside the server's private temp folder (mode 0700) and is removed when the request ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from istpan.serve.artifacts import ArtifactStore
from istpan.serve.config import ServeConfig
from istpan.serve.engine import Engine
from istpan.serve.gate import Gate, error
from istpan.serve.metrics import CONTENT_TYPE, Metrics
from istpan.serve.predict_route import predict
from istpan.serve.stream_routes import add_stream_routes

__all__ = ["ServeState", "create_app"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


class ServeState:
    """Everything one app holds: config, model, pools, sessions, counters; `app.state.serve`."""

    def __init__(self, config: ServeConfig, engine: Engine | None) -> None:
        self.config, self.engine = config, engine
        self.token = config.token()
        self.metrics = Metrics(config.max_batch)
        self.draining = False
        self.inflight = 0  # HTTP requests being answered (the gate counts them)
        self.predictions = 0  # predict requests admitted (bounded by max_queue)
        self._idle = asyncio.Event()
        self._idle.set()
        self.tmp: Path | None = None
        self.pool: Any = None
        self.batcher: Any = None
        self.streams: Any = None
        self.artifacts: ArtifactStore | None = None
        self.slow: Any = None  # thread for explain / anytime requests (their own forward passes)

    @property
    def uploads(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "uploads"

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.draining

    def request_started(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """SIGTERM: refuse new requests (503), end stream sessions with an event, wait for in-flight requests.
        Returns whether they all finished in time."""
        self.draining = True
        if self.streams is not None:
            self.streams.stop_all("the server is shutting down")
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            log.warning("%d requests still running after %g s of draining", self.inflight, timeout_s)
            return False

    async def start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from istpan.serve.batching import DecodePool, MicroBatcher
        from istpan.serve.streams import StreamManager

        cfg = self.config
        self.tmp = Path(tempfile.mkdtemp(prefix="istpan-serve-", dir=cfg.tmp_dir))  # mode 0700
        self.uploads.mkdir(mode=0o700)
        self.artifacts = ArtifactStore(self.tmp / "artifacts", cfg.artifact_ttl_s)
        loop = asyncio.get_running_loop()
        if self.engine is None:
            self.engine = await loop.run_in_executor(None, lambda: Engine.load(cfg.checkpoint, device=cfg.device))
        self.pool = DecodePool(self.engine.preprocessing, cfg.decode_workers)
        await loop.run_in_executor(None, self.pool.warm_up)
        self.slow = ThreadPoolExecutor(1, thread_name_prefix="istpan-slow")
        self.streams = StreamManager(self.engine, self.metrics, max_streams=cfg.max_streams,
                                     timeout_s=cfg.stream_timeout_s)
        batcher = MicroBatcher(self.engine.scores, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
                               metrics=self.metrics)
        batcher.start()
        self.batcher = batcher  # ready from here on

    async def sweep_artifacts(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.config.artifact_ttl_s / 4))
            if self.artifacts is not None:
                self.artifacts.sweep()

    async def stop(self) -> None:
        if self.streams is not None:
            self.streams.stop_all("the server is shutting down")
        if self.batcher is not None:
            await self.batcher.close()
        if self.pool is not None:
            self.pool.close()
        if self.slow is not None:
            self.slow.shutdown(wait=True)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def create_app(config: ServeConfig, *, engine: Engine | None = None) -> FastAPI:
    """The ASGI app for `config` (checked here); `engine` skips loading config.checkpoint (tests, Ray Serve)."""
    config.check()
    state = ServeState(config, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        sweeper = asyncio.get_running_loop().create_task(state.sweep_artifacts())
        try:
            yield
        finally:
            sweeper.cancel()
            await state.stop()

    app = FastAPI(title="istpan serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        return FileResponse(files[name]) if name in files else error(404, f"{name}: no such file")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if state.draining:
            return error(503, "draining: the server is shutting down", retry_after=5)
        if not state.ready:
            return error(503, "loading the model", retry_after=1)
        return JSONResponse({"status": "ready", "checkpoint": Path(config.checkpoint).name or None})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.export(), media_type=CONTENT_TYPE)

    @app.get("/v1/model")
    async def model() -> Response:
        if state.engine is None:
            return error(503, "loading the model", retry_after=1)
        return JSONResponse({**state.engine.describe(), "max_batch": config.max_batch,
                             "max_upload_mb": config.max_upload_mb, "media_root": config.media_root is not None})

    @app.post("/v1/predict")
    async def predict_video(request: Request) -> Response:
        return await predict(state, request)

    @app.get("/v1/artifacts/{key}/{name}")
    async def artifact(key: str, name: str) -> Response:
        path = state.artifacts.file(key, name) if state.artifacts else None
        if path is None:
            return error(404, "no such artifact (explain outputs are removed after "
                         f"{config.artifact_ttl_s:g} s)")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=60"})

    add_stream_routes(app, state)
    app.add_middleware(Gate, state=state)
    return app
