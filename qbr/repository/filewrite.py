"""Writing a stream of chunks into an open file, for the local repository's temp files.

Past the first MiB the writes run in a thread of their own (a ChunkWorker: write() releases the
GIL), so the next chunk is downloaded and hashed while this one is written. Past CACHE_DROP_EVERY
bytes, what was written leaves the page cache as it goes (written back first, then dropped):
archives are not read again soon, and pages freed on the way are reused for the next ones
instead of fresh memory, which on some VMs costs more system time than the copy itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import BinaryIO

from qbr import faultpoints
from qbr.transfer import ChunkWorker

CACHE_DROP_EVERY = 8 << 20
_DROP_WINDOW = 8  # steps of CACHE_DROP_EVERY behind the write that each advice covers


def drop_cache(fd: int, start: int = 0, length: int = 0) -> None:
    """Advice only: write back [start, start+length) of `fd` and drop what is clean (0 = to the end)."""
    try:
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass


def write_chunks(
    out: BinaryIO,
    chunks: Iterable[bytes],
    *,
    on_chunk: Callable[[bytes], object] | None,
    error: Callable[[OSError], Exception],
) -> int:
    """Write every chunk to `out` in order and return the bytes written; `on_chunk(chunk)` runs
    after each write (an md5 for an etag). A failed write raises `error(os_error)`; an exception
    raised by `chunks` propagates unchanged, once the writes given so far are done."""
    written = 0

    def write(chunk: bytes) -> None:
        nonlocal written
        try:
            out.write(chunk)
        except OSError as failure:
            raise error(failure) from failure
        if on_chunk is not None:
            on_chunk(chunk)
        written += len(chunk)
        if written // CACHE_DROP_EVERY != (written - len(chunk)) // CACHE_DROP_EVERY:
            start = max(0, written - _DROP_WINDOW * CACHE_DROP_EVERY)
            drop_cache(out.fileno(), start, written - CACHE_DROP_EVERY - start)
        faultpoints.reached("local.chunk_written")

    writer = ChunkWorker(write, "qbr-write", depth=1)  # one chunk waits while one is written
    size = 0
    try:
        for chunk in chunks:
            chunk = chunk if type(chunk) is bytes else bytes(chunk)  # it is written later
            writer.put(chunk)
            size += len(chunk)
        writer.finish()
    finally:
        writer.close()
    return size
