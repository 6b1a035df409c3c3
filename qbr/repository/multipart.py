"""S3 multipart uploads with several parts in flight, and the part size an object needs.

The reader (the caller's thread: download from Qdrant, sha256) fills one part while others
upload in threads of their own, so reading and uploading overlap. Each part is one buffer; a
part takes a slot before it starts filling and gives it back once uploaded, so at most
`in_flight` parts exist at once: memory is bounded by `in_flight x part size`, whatever the size
of the object. Part buffers are reused, filled in place, so the allocator is not churned (the
process's RSS stays flat too). A failed part stops the reader at its next part; the caller
then aborts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from qbr.errors import RepositoryError

MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 << 30  # S3's ceiling for one part
MAX_OBJECT_SIZE = 5 << 40  # S3's ceiling for one object (5 TiB)
DEFAULT_PART_SIZE = 8 * MIB  # what boto3's upload_fileobj uses
MAX_PARTS = 10_000  # S3's limit of parts in one upload
#: Parts of an object of unknown size double after every this many, so one can still reach S3's
#: 5 TiB limit within 10,000 parts (memory then grows with the size; pass the size to avoid it).
PARTS_PER_SIZE_STEP = 1_000
#: Parts held at once (filling or uploading) by an upload of known size: as many as fit in
#: UPLOAD_BUFFER, between 2 and MAX_IN_FLIGHT (4 x 8 MiB; 2 parts once parts are larger).
UPLOAD_BUFFER = 32 * MIB
MAX_IN_FLIGHT = 4
#: ... and by an upload of unknown size, whose parts grow with it (see part_size_at).
UNKNOWN_SIZE_IN_FLIGHT = 2


def part_size_for(size: int | None, preferred: int = DEFAULT_PART_SIZE) -> int:
    """The part size for an object of `size` bytes: `preferred`, or the smallest whole number of
    MiB that fits the object in MAX_PARTS parts, if that is larger. None (size unknown): `preferred`
    (the upload then doubles it as parts go by, see `part_size_at`).

    Parts are at least this size (a part ends with the chunk that fills it), so an object of
    `size` bytes never takes more than MAX_PARTS parts.
    """
    if size is None:
        return preferred
    if size < 0:
        raise ValueError("an object's size cannot be negative")
    if size > MAX_OBJECT_SIZE:
        raise ValueError(f"{size} bytes is more than one S3 object can hold (5 TiB)")
    needed = -(-size // MAX_PARTS)
    return max(preferred, -(-needed // MIB) * MIB)


def parts_in_flight(part_size: int, size_known: bool, requested: int | None = None) -> int:
    """How many parts an upload holds at once: `requested` if given, else 2 to 4 parts that fit in
    UPLOAD_BUFFER when the size is known (memory known before the first byte), 2 when it is not."""
    if requested is not None:
        return requested
    if not size_known:
        return UNKNOWN_SIZE_IN_FLIGHT
    return max(2, min(MAX_IN_FLIGHT, UPLOAD_BUFFER // part_size))


def part_size_at(number: int, part_size: int, size_known: bool) -> int:
    """The size of part `number` (1-based): fixed when the object's size was known, else doubling
    every PARTS_PER_SIZE_STEP parts."""
    if size_known:
        return part_size
    return min(MAX_PART_SIZE, part_size << ((number - 1) // PARTS_PER_SIZE_STEP))


def read_part(chunks: Iterator[bytes], size: int, buffer: bytearray | None = None) -> bytearray:
    """Up to about `size` bytes from `chunks`: every chunk until the part holds `size` or more
    (less only at the end), written into `buffer` (a used part's, refilled in place) if given.
    The iterator's own errors pass unchanged."""
    part = bytearray() if buffer is None else buffer
    filled = 0
    for chunk in chunks:
        end = filled + len(chunk)
        part[filled:end] = chunk  # in place while the buffer is long enough; it grows otherwise
        filled = end
        if filled >= size:
            break
    del part[filled:]
    return part


class PartUploads:
    """Parts uploading in threads, at most `in_flight` parts alive (filling or uploading).

    `take_slot()` before filling a part (it waits for a free slot, and raises the error of a part
    that failed meanwhile), `submit()` a filled part, `results()` for CompleteMultipartUpload's
    list, `close()` always (it waits for the parts still uploading)."""

    def __init__(self, upload: Callable[[int, bytearray], dict[str, Any]], in_flight: int) -> None:
        if in_flight < 1:
            raise ValueError("at least one part must be allowed in flight")
        self._upload = upload
        self._slots = threading.BoundedSemaphore(in_flight)
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="qbr-s3-part")
        self._futures: list[Future[dict[str, Any]]] = []
        self._free: list[bytearray] = []  # buffers of parts uploaded, to fill again
        self._error: BaseException | None = None
        self._guard = threading.Lock()
        self.in_flight = in_flight

    def take_slot(self) -> bytearray | None:
        """Wait for room for one more part; returns a used part's buffer to fill, if there is one."""
        self._slots.acquire()
        self._raise_failed(release=True)
        with self._guard:
            return self._free.pop() if self._free else None

    def give_back(self) -> None:
        """Return a slot taken for a part that was never submitted (the source had ended)."""
        self._slots.release()

    def submit(self, number: int, part: bytearray) -> None:
        """Upload `part` in a thread; the caller must drop its own reference to it."""
        self._futures.append(self._pool.submit(self._run, number, [part]))

    def _run(self, number: int, box: list[bytearray]) -> dict[str, Any]:
        part = box.pop()  # the pool's work item keeps `box`, not the part
        try:
            entry = self._upload(number, part)
            with self._guard:
                self._free.append(part)  # sent and answered: botocore is done with it
            return entry
        except BaseException as error:
            with self._guard:
                if self._error is None:
                    self._error = error
            raise
        finally:
            del part  # no other reference stays here: at most `in_flight` buffers exist
            self._slots.release()

    def _raise_failed(self, release: bool) -> None:
        with self._guard:
            error = self._error
        if error is not None:
            if release:
                self._slots.release()
            raise error

    def results(self) -> list[dict[str, Any]]:
        """Every part's entry in order, once all are uploaded; the first failure raises."""
        entries = []
        for future in self._futures:
            try:
                entries.append(future.result())
            except BaseException:
                break
        self._raise_failed(release=False)
        return entries

    def close(self) -> None:
        """Cancel parts not started, wait for those uploading (so an abort comes after them)."""
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._free.clear()


def upload_parts(
    first: list[bytearray],
    source: Iterator[bytes],
    upload: Callable[[int, bytearray], dict[str, Any]],
    *,
    what: str,
    part_size: int,
    size_known: bool,
    in_flight: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Upload the part in `first` (taken out of it, so the caller holds no reference) and every
    further part read from `source`, `in_flight` parts alive at most (None: parts_in_flight's
    choice); return CompleteMultipartUpload's
    list of parts and the bytes stored. Whatever fails, the parts still uploading are waited for
    before this raises, so the caller's abort comes after them."""
    uploads = PartUploads(upload, parts_in_flight(part_size, size_known, in_flight))
    try:
        uploads.take_slot()  # the first part's (no buffer to reuse yet)
        part = first.pop()
        stored, number = 0, 0
        while part:
            number += 1
            if number > MAX_PARTS:
                raise RepositoryError(f"{what} is too large for one S3 object ({stored} bytes in {MAX_PARTS} parts).")
            stored += len(part)
            uploads.submit(number, part)
            part = bytearray()  # the upload thread holds the only reference now
            part = read_part(source, part_size_at(number + 1, part_size, size_known), uploads.take_slot())
        uploads.give_back()
        return uploads.results(), stored
    finally:
        uploads.close()
