"""Archives moving through the client: a snapshot download as a stream of chunks, and an
upload as a multipart body built on the fly, so memory stays flat whatever the size."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import httpx

from qbr.qdrant.shapes import TransferInterrupted


class SnapshotStream:
    """A snapshot download in progress: `size` (Content-Length or None) and its byte chunks.

    Iterate once. A body cut short (fewer bytes than announced, or a connection dropped
    mid-way) raises `TransferInterrupted`; the caller restarts the transfer.
    """

    def __init__(
        self, response: httpx.Response, chunk_size: int, interrupted: Callable[[int], TransferInterrupted]
    ) -> None:
        self._response = response
        self._chunk_size = chunk_size
        self._interrupted = interrupted
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        length = response.headers.get("content-length")
        self._raw_length = int(length) if length and length.isdigit() else None
        # With a content encoding the announced length is that of the encoded bytes.
        self.size: int | None = self._raw_length if encoding in ("", "identity") else None

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._response.iter_bytes(self._chunk_size):
                if chunk:
                    yield chunk
        except httpx.TransportError:
            raise self._interrupted(self._response.num_bytes_downloaded) from None
        got = self._response.num_bytes_downloaded
        if self._raw_length is not None and got != self._raw_length:
            raise self._interrupted(got)


def multipart_body(
    boundary: str, filename: str, chunks: Iterable[bytes], size: int | None, on_mismatch: Callable[[int], Exception]
) -> Iterator[bytes]:
    """multipart/form-data with one file field `snapshot`, produced as it is sent."""
    yield multipart_preamble(boundary, filename)
    sent = 0
    for chunk in chunks:
        if not chunk:
            continue
        sent += len(chunk)
        if size is not None and sent > size:
            raise on_mismatch(sent)
        yield bytes(chunk)
    if size is not None and sent != size:
        raise on_mismatch(sent)
    yield multipart_epilogue(boundary)


def multipart_preamble(boundary: str, filename: str) -> bytes:
    safe = filename.replace("\\", "/").rsplit("/", 1)[-1]
    safe = "".join(ch for ch in safe if ch not in '\r\n"') or "snapshot"
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="snapshot"; filename="{safe}"\r\n'
        "Content-Type: application/octet-stream\r\n"
        "\r\n"
    ).encode("utf-8")


def multipart_epilogue(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("ascii")


