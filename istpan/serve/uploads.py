"""Reading a multipart upload onto disk with limits enforced while reading, not after.

Starlette's `request.form()` spools the whole body before the handler runs and puts files in the system temp folder;
here the body goes chunk by chunk through python-multipart's streaming parser straight into the request's private
folder, and the request fails as soon as:
- the declared Content-Length, or the bytes read so far, pass the limit (413; nothing more is read);
- the client sends nothing for `read_timeout_s` (408: a slow or stalled client does not hold a slot forever);
- the body is not multipart, its framing is broken, or it ends before its closing boundary (400, one line).
The caller removes the folder whatever happens (app.py, in a `finally`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

__all__ = ["Upload", "UploadError", "read_upload"]

MAX_FIELDS = 16
MAX_FIELD_BYTES = 1024
_FRAMING_SLACK = 64 * 1024  # multipart headers and small fields around the file


class UploadError(Exception):
    """An upload that is refused: HTTP `status` and one line for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    path: Path | None = None  # where the video part was written
    filename: str = "upload"  # the client's name for it (base name only: never a path of ours or theirs)
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


class _Parts:
    """python-multipart callbacks: one file part (`file_field`) to disk, a few small text fields to memory."""

    def __init__(self, dest: Path, max_bytes: int, file_field: str) -> None:
        self.dest, self.max_bytes, self.file_field = dest, max_bytes, file_field
        self.upload = Upload()
        self.ended = False
        self._header_field, self._header_value = b"", b""
        self._headers: dict[bytes, bytes] = {}
        self._name, self._value = "", bytearray()
        self._file: Any = None

    def callbacks(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("on_part_begin", "on_part_data", "on_part_end",
                "on_header_field", "on_header_value", "on_header_end", "on_headers_finished", "on_end")}

    def on_part_begin(self) -> None:
        self._headers, self._value = {}, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition"))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in params:
            return
        if self._name != self.file_field:
            raise UploadError(400, f"unexpected file field {self._name!r}: send the video as field "
                              f"{self.file_field!r}")
        if self.upload.path is not None:
            raise UploadError(400, "one video per request")
        raw = params[b"filename"].decode("utf-8", "replace").replace("\\", "/")
        self.upload.filename = Path(raw).name[:200] or "upload"
        self.upload.path = self.dest / "video"  # our name: the client's never reaches the file system
        self._file = open(self.upload.path, "wb")  # noqa: SIM115 (closed in on_part_end or by read_upload)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise UploadError(413, f"upload larger than the limit of {self.max_bytes / 2**20:g} MB")
            self._file.write(data[start:end])
        else:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise UploadError(400, f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._name:
            if len(self.upload.fields) >= MAX_FIELDS:
                raise UploadError(400, f"more than {MAX_FIELDS} form fields")
            self.upload.fields[self._name] = self._value.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def read_upload(request: Request, dest: Path, *, max_bytes: int, read_timeout_s: float,
                      file_field: str = "video") -> Upload:
    """Read a multipart/form-data body into `dest` (an existing private folder); see the module docstring."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(400, f"send the video as multipart/form-data (field {file_field!r}), e.g. "
                          f"curl -F {file_field}=@clip.mp4")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + _FRAMING_SLACK:
        raise UploadError(413, f"upload larger than the limit of {max_bytes / 2**20:g} MB")
    parts = _Parts(dest, max_bytes, file_field)
    parser = MultipartParser(params[b"boundary"], parts.callbacks())
    chunks = request.stream().__aiter__()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout=read_timeout_s)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UploadError(408, f"no data from the client for {read_timeout_s:g} s") from None
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError as err:
        raise UploadError(400, f"broken multipart body ({err})") from None
    except ClientDisconnect:
        raise UploadError(499, "the client went away during the upload") from None
    finally:
        parts.close()
    if not parts.ended:
        raise UploadError(400, "truncated upload: the multipart body ends before its closing boundary")
    if parts.upload.path is None:
        raise UploadError(400, f"no video in the request: send it as the file field {file_field!r}")
    if parts.upload.size == 0:
        raise UploadError(400, f"{parts.upload.filename}: empty file (0 bytes)")
    return parts.upload
