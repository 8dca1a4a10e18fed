"""The ASGI middleware every request passes: drain, token, counting, metrics, security headers.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses (SSE) pass through unbuffered and a request that is cancelled
still leaves the counters right. Public without a token: the page and its static files, /healthz and /readyz (load
balancers probe them); everything else needs `Authorization: Bearer <token>` when the server has one.
"""

from __future__ import annotations

import json
import time
from typing import Any

from istpan.serve.security import token_matches

__all__ = ["Gate", "error"]

_PUBLIC = ("/", "/healthz", "/readyz", "/favicon.ico")
_PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; "
             "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def error(status: int, message: str, *, retry_after: int | None = None) -> Any:
    """Every error the API sends: {"error": one line}, with Retry-After when retrying later can help."""
    from fastapi.responses import JSONResponse

    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _public(path: str) -> bool:
    return path in _PUBLIC or path.startswith("/static/")


def route_label(scope: dict[str, Any]) -> str:
    """The route template (/v1/streams/{stream_id}/events), never the raw path: metrics labels stay bounded."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


async def send_json(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class Gate:
    """Wraps the FastAPI app; `state` is the app's ServeState (token, draining flag, in-flight count, metrics)."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st, path = self.state, scope["path"]
        started = time.perf_counter()
        status = {"code": 499}  # stays 499 when the client goes away before any response

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                if path == "/":
                    headers.append((b"content-security-policy", _PAGE_CSP.encode()))
                if st.draining:
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        st.request_started()
        try:
            if st.draining and path != "/healthz":
                st.metrics.rejected.labels("draining").inc()
                await send_json(send_wrapped, 503, {"error": "the server is shutting down; retry on another "
                                                    "replica"}, [(b"retry-after", b"5")])
            elif st.token and not _public(path) and not token_matches(st.token, _header(scope, b"authorization")):
                await send_json(send_wrapped, 401, {"error": "missing or wrong token: send Authorization: Bearer "
                                                    "<token>"}, [(b"www-authenticate", b"Bearer")])
            else:
                await self.app(scope, receive, send_wrapped)
        finally:
            st.request_finished()
            label = route_label(scope)
            st.metrics.requests.labels(label, str(status["code"])).inc()
            st.metrics.latency.labels(label).observe(time.perf_counter() - started)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None
