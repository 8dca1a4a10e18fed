"""`istpan serve`: the Predictor behind HTTP (FastAPI on uvicorn), for uploads and live streams.

    from istpan.serve import ServeConfig, create_app
    app = create_app(ServeConfig(checkpoint="runs/demo/istpan_tiny"))      # any ASGI server, or Ray Serve

Modules: config (ServeConfig), engine (the one adapter over `istpan.inference.Predictor`), batching (decode pool and
micro-batcher), uploads (multipart read with limits), security (token, stream sources, media probing), streams (stream
sessions and Server-Sent Events), artifacts (explain outputs with a time limit), metrics (Prometheus), app (routes),
server (uvicorn with a draining SIGTERM). Needs the `serve` extra: pip install 'istpan[serve]'.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:  # FastAPI is an optional extra: import it only when asked for
    if name == "ServeConfig":
        from istpan.serve.config import ServeConfig

        return ServeConfig
    if name == "create_app":
        from istpan.serve.app import create_app

        return create_app
    if name == "serve":
        from istpan.serve.server import serve

        return serve
    raise AttributeError(name)
