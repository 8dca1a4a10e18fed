"""`ServeConfig`: every setting of `istpan serve` in one dataclass, checked once (the CLI only fills it in)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from istpan.errors import UserError

__all__ = ["LOOPBACK_HOSTS", "ServeConfig"]

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """What `istpan serve` runs with; defaults are the CLI's. Sizes in MB, times in seconds unless named _ms."""

    checkpoint: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    token_file: str | None = None
    max_upload_mb: float = 100.0
    max_batch: int = 8  # clips per forward pass
    max_wait_ms: float = 10.0  # how long the first clip of a batch waits for others
    max_queue: int = 32  # predict requests admitted at once (reading, decoding, waiting, running); then 503
    max_streams: int = 4
    media_root: str | None = None  # stream sources that are files must resolve inside this folder
    decode_workers: int = 2  # decoding processes
    device: str = "cpu"
    read_timeout_s: float = 30.0  # a client that sends nothing for this long while uploading gets 408
    artifact_ttl_s: float = 600.0  # explain outputs are removed this long after they were made
    stream_timeout_s: float = 10.0  # a stream source silent this long ends its session
    drain_timeout_s: float = 30.0  # SIGTERM: how long in-flight requests may take before the server stops anyway
    tmp_dir: str | None = None  # parent of the private temp folder (default: the system's)

    def token(self) -> str | None:
        """The bearer token from --token-file (whitespace stripped), or None without one."""
        if self.token_file is None:
            return None
        path = Path(self.token_file)
        try:
            token = path.read_text().strip()
        except OSError as err:
            raise UserError(f"{path}: cannot read the token file ({err.strerror or err})") from err
        if len(token) < 16:
            raise UserError(f"{path}: the token must be at least 16 characters (got {len(token)})")
        return token

    def check(self) -> None:
        """One UserError line for the first bad setting."""
        if not is_loopback(self.host) and self.token_file is None:
            raise UserError(f"--host {self.host} is reachable from other machines: give --token-file FILE (a bearer "
                            "token clients must send), or keep the default 127.0.0.1")
        for name in ("max_batch", "max_queue", "max_streams", "decode_workers"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("max_upload_mb", "read_timeout_s", "artifact_ttl_s", "stream_timeout_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise UserError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        if self.media_root is not None and not Path(self.media_root).is_dir():
            raise UserError(f"--media-root {self.media_root}: not a folder")
        if not 0 <= self.port < 65536:
            raise UserError(f"--port must be 0-65535 (0: any free port), got {self.port}")
        self.token()  # readable and long enough

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
