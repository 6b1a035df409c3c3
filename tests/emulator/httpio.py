"""Request bodies read as streams: Content-Length or chunked, and multipart parsed on the fly.

The `cgi` module is gone and uploads can be larger than memory, so the multipart parser writes
the file part straight to disk while hashing it.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from tests.emulator.errors import ApiError, bad_request

CHUNK = 64 * 1024


class BodyReader(Protocol):
    def read(self, n: int = CHUNK) -> bytes: ...

    @property
    def finished(self) -> bool: ...


class LengthReader:
    """A body with a Content-Length (zero when the request has none)."""

    def __init__(self, rfile: BinaryIO, length: int):
        self.rfile = rfile
        self.remaining = length

    def read(self, n: int = CHUNK) -> bytes:
        if self.remaining <= 0:
            return b""
        data = self.rfile.read(min(n, self.remaining))
        if not data:
            raise ConnectionError("client closed the connection before sending the whole body")
        self.remaining -= len(data)
        return data

    @property
    def finished(self) -> bool:
        return self.remaining <= 0


class ChunkedReader:
    """A `Transfer-Encoding: chunked` body (what httpx sends for generator content)."""

    def __init__(self, rfile: BinaryIO):
        self.rfile = rfile
        self.left = 0
        self.done = False

    def read(self, n: int = CHUNK) -> bytes:
        if self.done:
            return b""
        if self.left == 0:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection inside a chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise bad_request("malformed chunked transfer encoding") from None
            if size == 0:
                while True:  # trailers up to the empty line
                    trailer = self.rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                self.done = True
                return b""
            self.left = size
        data = self.rfile.read(min(n, self.left))
        if not data:
            raise ConnectionError("client closed the connection inside a chunk")
        self.left -= len(data)
        if self.left == 0:
            self.rfile.readline(3)  # CRLF after the chunk
        return data

    @property
    def finished(self) -> bool:
        return self.done


def open_body(rfile: BinaryIO, headers) -> LengthReader | ChunkedReader:
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return ChunkedReader(rfile)
    try:
        length = int(headers.get("Content-Length") or 0)
    except ValueError:
        raise bad_request("invalid Content-Length") from None
    return LengthReader(rfile, length)


def read_all(body: BodyReader, limit: int = 64 * 1024 * 1024) -> bytes:
    parts = []
    total = 0
    while True:
        data = body.read(CHUNK)
        if not data:
            return b"".join(parts)
        total += len(data)
        if total > limit:
            raise ApiError(413, "Payload too large")
        parts.append(data)


def drain(body: BodyReader, limit: int) -> bool:
    """Discard what is left of a body (up to `limit` bytes); True when it was all read."""
    total = 0
    while not body.finished and total < limit:
        data = body.read(CHUNK)
        if not data:
            break
        total += len(data)
    return body.finished


@dataclass(frozen=True)
class SavedUpload:
    filename: str | None
    size: int
    sha256: str


def multipart_boundary(content_type: str | None) -> bytes:
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise bad_request("Content type must be multipart/form-data")
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip().strip('"').encode("latin-1")
    raise bad_request("multipart/form-data without a boundary")


def save_multipart_file(body: BodyReader, boundary: bytes, field_name: str, target: Path) -> SavedUpload | None:
    """Stream the multipart part named `field_name` into `target`, hashing it; other parts are skipped.

    Returns None when the body has no such part. Memory stays at about one read chunk.
    """
    delimiter = b"--" + boundary
    part_end = b"\r\n" + delimiter
    buf = bytearray()
    saved: SavedUpload | None = None

    def fill() -> bool:
        data = body.read(CHUNK)
        if not data:
            return False
        buf.extend(data)
        return True

    # preamble up to the first delimiter
    while True:
        i = buf.find(delimiter)
        if i >= 0:
            del buf[: i + len(delimiter)]
            break
        if len(buf) > len(delimiter):
            del buf[: len(buf) - len(delimiter)]
        if not fill():
            raise bad_request("multipart body has no boundary")
    while True:
        while len(buf) < 2:
            if not fill():
                raise bad_request("multipart body ends early")
        if buf[:2] == b"--":
            break  # closing delimiter
        while True:
            j = buf.find(b"\r\n\r\n")
            if j >= 0:
                break
            if len(buf) > 64 * 1024 or not fill():
                raise bad_request("malformed multipart part headers")
        raw_headers = bytes(buf[:j]).lstrip(b"\r\n").lstrip()
        del buf[: j + 4]
        headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(raw_headers + b"\r\n\r\n")
        disposition = headers.get("Content-Disposition")
        name = disposition.params.get("name") if disposition is not None else None
        filename = disposition.params.get("filename") if disposition is not None else None
        sink = None
        digest = None
        size = 0
        if name == field_name and saved is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            sink = open(target, "wb")
            digest = hashlib.sha256()
        try:
            keep = len(part_end) - 1
            while True:
                k = buf.find(part_end)
                if k >= 0:
                    out = memoryview(buf)[:k]
                    if sink is not None:
                        sink.write(out)
                        digest.update(out)
                    size += k
                    out.release()
                    del buf[: k + len(part_end)]
                    break
                if len(buf) > keep:
                    n = len(buf) - keep
                    out = memoryview(buf)[:n]
                    if sink is not None:
                        sink.write(out)
                        digest.update(out)
                    size += n
                    out.release()
                    del buf[:n]
                if not fill():
                    raise bad_request("multipart body ends inside a part")
        finally:
            if sink is not None:
                sink.close()
        if digest is not None:
            saved = SavedUpload(filename, size, digest.hexdigest())
    return saved


class CountingReader:
    """Counts the body bytes read through it (request accounting)."""

    def __init__(self, inner: BodyReader, on_read=None):
        self.inner = inner
        self.count = 0
        self.on_read = on_read

    def read(self, n: int = CHUNK) -> bytes:
        data = self.inner.read(n)
        self.count += len(data)
        if self.on_read is not None:
            self.on_read(len(data))
        return data

    @property
    def finished(self) -> bool:
        return self.inner.finished
