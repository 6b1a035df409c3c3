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
        self._identity = encoding in ("", "identity")
        self.size: int | None = self._raw_length if self._identity else None

    def __iter__(self) -> Iterator[bytes]:
        # Plain bytes (what qbr asks for) are read raw, as the socket delivers them (64 KiB), and
        # cut here into chunks of exactly `chunk_size`: httpx's own chunker copies every byte
        # twice more through a BytesIO, which cost a quarter of the download's CPU. Exact sizes
        # keep the chunk count of a transfer the same from run to run.
        pieces = self._response.iter_raw() if self._identity else self._response.iter_bytes()
        try:
            yield from _exact_chunks(pieces, self._chunk_size)
        except httpx.TransportError:
            raise self._interrupted(self._response.num_bytes_downloaded) from None
        got = self._response.num_bytes_downloaded
        if self._raw_length is not None and got != self._raw_length:
            raise self._interrupted(got)


def _exact_chunks(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """`pieces` regrouped into chunks of exactly `size` bytes (the last may be shorter), each
    byte copied once (a piece that is already one whole chunk, not at all)."""
    held: list[bytes | memoryview] = []
    filled = 0
    for piece in pieces:
        view = memoryview(piece)  # slices of a view copy nothing
        start = 0
        while start < len(view):
            end = start + size - filled
            if end > len(view):
                held.append(view[start:] if start else piece)
                filled += len(view) - start
                break
            if not held and start == 0 and end == len(view):
                yield bytes(piece)  # exactly one chunk already: no copy for bytes
            else:
                held.append(view[start:end])
                yield b"".join(held)
            held, filled = [], 0
            start = end
    if held:
        yield b"".join(held)


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


