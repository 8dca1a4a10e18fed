"""Running the app under uvicorn with a draining SIGTERM.

uvicorn's own SIGTERM stops listening at once and closes idle keep-alive connections; a load balancer still routing
to this replica would see connection errors. Here the first SIGTERM (or Ctrl-C) drains first: /readyz and every new
request answer 503 with Retry-After (the balancer takes the replica out), stream sessions end with an `end` event,
requests in flight finish (up to --drain-timeout); only then does uvicorn shut down. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from istpan.errors import UserError
from istpan.serve.app import create_app
from istpan.serve.config import ServeConfig
from istpan.serve.engine import Engine

__all__ = ["DrainingServer", "serve"]

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: object) -> None:
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Future | None = None

    async def serve(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None or self.should_exit:
            self.should_exit = self.force_exit = True  # second signal: now
            return
        log.info("%s: draining (new requests get 503; in-flight ones finish)", signal.Signals(sig).name)
        self._drain_task = asyncio.run_coroutine_threadsafe(self._drain(), self._loop)

    async def _drain(self) -> None:
        await self.state.drain(self.state.config.drain_timeout_s)
        self.should_exit = True


def serve(config: ServeConfig, *, log_level: str = "info") -> int:
    """Check the config, load the model, serve until SIGTERM / Ctrl-C (then drain). The model is loaded here, before
    uvicorn starts, so a bad checkpoint is one `error:` line and exit 2, not a failed application startup."""
    config.check()
    app = create_app(config, engine=Engine.load(config.checkpoint, device=config.device))
    sock = _bind(config.host, config.port)
    port = sock.getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"istpan serve: http://{host}:{port}/", flush=True)  # the port --port 0 got; what scripts wait for
    uv = uvicorn.Config(app, host=config.host, port=port, log_level=log_level, lifespan="on",
                        timeout_graceful_shutdown=5, server_header=False, proxy_headers=False)
    DrainingServer(uv, app.state.serve).run(sockets=[sock])
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here rather than by uvicorn so that `--port 0` (any free port) can say which port
    it got, and a caller never has to guess a free port and race another process for it."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None
    return sock
