"""A dedup repository: archives stored as content-defined chunks, each chunk stored once.

`ChunkedRepository` wraps a folder or S3 repository (whatever else wraps or protects it) and
changes only what happens to archives (keys under `snapshots/`):

- put_stream cuts the stream into chunks (qbr.repository.chunks), stores each chunk it has not
  stored before (compressed, under `chunks/`, several in flight), records them in the chunk
  index (qbr.repository.chunk_index) and writes the chunk list at the archive's key last, so an
  archive exists whole or not at all, as before. Memory: a few chunks in flight, whatever the
  archive's size. The caller's stream is consumed as given, so transfer.verified still hashes
  every byte and a mismatch it raises aborts the write before the chunk list is written.
- open_read and get_bytes rebuild the archive from its chunks, each checked against its hash;
  an archive stored whole (before dedup was turned on, or copied inside S3) reads as it is.
- presigned_get gives None: Qdrant cannot fetch a chunked archive by URL; restores upload it
  through qbr.

Everything else (set records, the lock, listings, deletes) goes to the wrapped repository.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any, Iterable, Iterator

from qbr import faultpoints
from qbr.errors import ChecksumError, NotFoundError
from qbr.records import SNAPSHOTS_PREFIX
from qbr.repository.base import ObjectInfo, PendingUpload, Repository
from qbr.repository.chunk_index import ChunkIndex, index_bytes, new_index_key
from qbr.repository.chunks import AVG_SIZE, MAGIC, MAX_SIZE, MIN_SIZE, ChunkList, Codec, chunk_key, chunker_params, cut, digest

IN_FLIGHT = 4  # chunks being compressed and stored at once (memory: this many chunks)
READ_AHEAD = 4  # chunks being fetched and checked ahead of the reader
BATCH = 64  # new chunks per confirmed index object
CHECKS = 16  # HEADs at once when a restore checks that every chunk of an archive is stored
ENCODING = "chunks"


class ChunkedRepository(Repository):
    """`inner` with its archives chunked, deduplicated and compressed."""

    archive_encoding = ENCODING

    def __init__(self, inner: Repository, *, compression: str = "zstd", level: int = 3, in_flight: int = IN_FLIGHT) -> None:
        self.inner = inner
        self.codec = Codec(compression, level)
        self.index = ChunkIndex(inner)
        self.in_flight = max(1, in_flight)
        # QBR_TEST_CHUNK_SIZE: a smaller average for tests, whose archives are kilobytes (never set in production).
        avg = int(os.environ.get("QBR_TEST_CHUNK_SIZE") or AVG_SIZE)
        self.sizes = {"avg_size": avg, "min_size": MIN_SIZE * avg // AVG_SIZE, "max_size": MAX_SIZE * avg // AVG_SIZE}
        self.params = chunker_params(**self.sizes)

    def __getattr__(self, name: str) -> Any:  # bucket, prefix, requests, store probes...: the wrapped store's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- delegated ----------------------------------------------------------------------------

    def describe(self) -> str:
        return self.inner.describe()

    def put_bytes(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> ObjectInfo:
        return self.inner.put_bytes(key, data, if_none_match=if_none_match, if_match=if_match)

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        return self.inner.get_with_info(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self.inner.delete(key, if_match=if_match)

    def presigned_get(self, key: str, expires_s: int = 900) -> str | None:
        if key.startswith(SNAPSHOTS_PREFIX):
            return None  # a chunked archive exists only as qbr rebuilds it
        return self.inner.presigned_get(key, expires_s)

    def pending_uploads(self) -> list[PendingUpload]:
        return self.inner.pending_uploads()

    def abort_upload(self, upload: PendingUpload) -> None:
        self.inner.abort_upload(upload)

    # -- writing an archive -------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], *, size: int | None = None) -> ObjectInfo:
        if not key.startswith(SNAPSHOTS_PREFIX):
            return self.inner.put_stream(key, chunks, size=size)  # type: ignore[call-arg]
        writer = _ArchiveWriter(self)
        try:
            listing = writer.write(chunks)
        finally:
            writer.close()
        raw = listing.to_bytes()
        info = self.inner.put_bytes(key, raw)
        faultpoints.reached("chunks.list_written")
        writer.done()
        return ObjectInfo(key, listing.size, info.modified, info.etag)

    # -- reading an archive -------------------------------------------------------------------

    def read_list(self, key: str) -> ChunkList | None:
        """The chunk list at `key`, or None when the archive there is stored whole."""
        with self.inner.open_read(key, 1 << 16) as pieces:
            first = next(pieces, b"")
            if not first.startswith(MAGIC):
                return None
            raw = first + b"".join(pieces)
        return ChunkList.parse(raw, key)

    @contextmanager
    def open_read(self, key: str, chunk_size: int = 1 << 20) -> Iterator[Iterator[bytes]]:
        if not key.startswith(SNAPSHOTS_PREFIX):
            with self.inner.open_read(key, chunk_size) as pieces:
                yield pieces
            return
        stack = ExitStack()
        with stack:
            pieces = stack.enter_context(self.inner.open_read(key, chunk_size))
            first = next(pieces, b"")
            if not first.startswith(MAGIC):
                yield itertools.chain([first] if first else [], pieces)
                return
            raw = first + b"".join(pieces)
        listing = ChunkList.parse(raw, key)
        with ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="qbr-chunk-read") as pool:
            yield self.rebuild(listing, key, pool)

    def rebuild(self, listing: ChunkList, key: str, pool: ThreadPoolExecutor) -> Iterator[bytes]:
        """The archive's bytes, chunk by chunk, each fetched ahead and checked against its hash."""
        ahead: deque[Future[bytes]] = deque()
        entries = iter(listing.chunks)
        try:
            while True:
                while len(ahead) < READ_AHEAD and (entry := next(entries, None)) is not None:
                    ahead.append(pool.submit(self.read_chunk, entry[0], entry[1], key))
                if not ahead:
                    return
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()

    def read_chunk(self, chunk_id: str, length: int | None = None, archive: str = "") -> bytes:
        """One chunk's plain bytes, checked; ChecksumError naming the chunk (and archive) if it is
        missing or damaged."""
        where = f" of archive {archive}" if archive else ""
        try:
            stored = self.inner.get_bytes(chunk_key(chunk_id))
        except NotFoundError:
            raise ChecksumError(f"chunk {chunk_id}{where} is missing from the repository (run qbr verify)") from None
        try:
            return self.codec.decode(stored, chunk_id, length)
        except ChecksumError as error:
            raise ChecksumError(f"{error}{where} (run qbr verify)") from None

    def get_bytes(self, key: str) -> bytes:
        raw = self.inner.get_bytes(key)
        if not (key.startswith(SNAPSHOTS_PREFIX) and raw.startswith(MAGIC)):
            return raw
        listing = ChunkList.parse(raw, key)
        return b"".join(self.read_chunk(c, n, key) for c, n in listing.chunks)

    def head(self, key: str) -> ObjectInfo | None:
        """For an archive, its size as read back (a chunked one's rebuilt size)."""
        info = self.inner.head(key)
        if info is None or not key.startswith(SNAPSHOTS_PREFIX):
            return info
        try:
            listing = self.read_list(key)
        except NotFoundError:
            return None
        return info if listing is None else ObjectInfo(key, listing.size, info.modified, info.etag)

    def scan_archives(self, keys: list[str], parallelism: int = 4) -> dict[str, Any]:
        """verify: the chunked archives among `keys` rebuilt and hashed, each chunk read once
        (qbr.repository.chunk_verify); `verify_stats` says how many chunks and fetches."""
        from qbr.repository.chunk_verify import scan_archives

        scans, self.verify_stats = scan_archives(self, keys, parallelism)
        return scans

    def check_archive(self, key: str, size: int) -> None:
        """Before a restore touches its target: the chunk list holds `size` bytes and every chunk it
        names is stored (asked of the store itself, CHECKS at once: the index is only a cache).
        Damage inside a chunk is caught as it streams, before the node sees the archive's end."""
        listing = self.read_list(key)
        if listing is None:
            return
        if listing.size != size:
            raise ChecksumError(f"the chunk list {key} holds {listing.size} bytes, its set recorded {size}; it was not restored")
        ids = sorted(listing.ids())
        with ThreadPoolExecutor(max_workers=CHECKS, thread_name_prefix="qbr-chunk-check") as pool:
            stored = list(pool.map(lambda c: self.inner.head(chunk_key(c)) is not None, ids))
        for chunk_id, there in zip(ids, stored):
            if not there:
                raise ChecksumError(f"chunk {chunk_id} of archive {key} is missing from the repository; it was not restored (run qbr verify)")


class _ArchiveWriter:
    """One archive's chunks on their way into the store: cut, hashed, new ones compressed and
    stored (IN_FLIGHT at once), confirmed in the index by batches."""

    def __init__(self, repo: ChunkedRepository) -> None:
        self.repo = repo
        self.known = repo.index.known()
        self.token = new_index_key()[:-len(".json")]
        self.marker = f"{self.token}.pending.json"
        self.pool = ThreadPoolExecutor(max_workers=repo.in_flight, thread_name_prefix="qbr-chunk-write")
        self.flying: deque[tuple[str, Future[int]]] = deque()
        self.batch: dict[str, int] = {}
        self.batches = 0
        self.mine: set[str] = set()
        self.announced = False

    def write(self, chunks: Iterable[bytes]) -> ChunkList:
        entries: list[tuple[str, int]] = []
        total = 0
        try:
            for data in cut(chunks, **self.repo.sizes):
                chunk_id = digest(data)
                entries.append((chunk_id, len(data)))
                total += len(data)
                if chunk_id in self.known or chunk_id in self.mine:
                    continue
                if not self.announced:  # a killed run leaves this, so the sweep looks for its chunks
                    self.repo.inner.put_bytes(self.marker, index_bytes({}, pending=True))
                    self.announced = True
                self.mine.add(chunk_id)
                while len(self.flying) >= self.repo.in_flight:
                    self._land()
                self.flying.append((chunk_id, self.pool.submit(self._store, chunk_id, data)))
            while self.flying:
                self._land()
            self._confirm()
        except BaseException:
            try:  # what was stored is confirmed, so the sweep finds it in the index without a listing
                self._drain()
                self.done()
            except Exception:
                pass
            raise
        return ChunkList(total, tuple(entries), self.repo.params)

    def _store(self, chunk_id: str, data: bytes) -> int:
        stored = self.repo.codec.encode(data)
        self.repo.inner.put_bytes(chunk_key(chunk_id), stored)
        faultpoints.reached("chunks.stored")
        return len(stored)

    def _land(self) -> None:
        chunk_id, future = self.flying.popleft()
        self.batch[chunk_id] = future.result()
        if len(self.batch) >= BATCH:
            self._confirm()

    def _confirm(self) -> None:
        if self.batch:
            self.batches += 1
            self.repo.index.confirm(f"{self.token}-{self.batches}.json", dict(self.batch))
            faultpoints.reached("chunks.indexed")
            self.batch.clear()

    def _drain(self) -> None:
        while self.flying:
            chunk_id, future = self.flying.popleft()
            try:
                self.batch[chunk_id] = future.result()
            except Exception:
                continue
        self._confirm()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def done(self) -> None:
        if self.announced:
            self.repo.inner.delete(self.marker)
