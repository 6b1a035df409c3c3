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
- with `sealing` (an encrypted repository, qbr.repository.chunk_crypto) chunk ids are keyed
  hashes and each chunk is compressed, then encrypted; the chunk list records each chunk's
  stored size and sha256, and reading decrypts with the run's identity.

Everything else (set records, the lock, listings, deletes) goes to the wrapped repository.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterable, Iterator

from qbr import faultpoints
from qbr.errors import ChecksumError, NotFoundError, QbrError
from qbr.records import SNAPSHOTS_PREFIX
from qbr.repository.base import ObjectInfo, PendingUpload, Repository
from qbr.repository.chunk_crypto import AGE_MAGIC, ChunkSealing
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

    def __init__(self, inner: Repository, *, compression: str = "zstd", level: int = 3, in_flight: int = IN_FLIGHT,
                 sealing: ChunkSealing | None = None) -> None:
        self.inner = inner
        self.sealing = sealing
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

    def cache_identity(self) -> str | None:
        return self.inner.cache_identity()

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

    @property
    def seals_chunks(self) -> bool:
        """Whether this repository encrypts each chunk itself (archives are given to it in clear)."""
        return self.sealing is not None

    def ready_to_write(self) -> None:
        """Before a backup makes a snapshot: an encrypted repository's chunk key is at hand and
        is the repository's (else one sentence, and nothing is written)."""
        if self.sealing is not None:
            self.sealing.writing_ids(self.inner)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, size: int | None = None) -> ObjectInfo:
        if not key.startswith(SNAPSHOTS_PREFIX):
            return self.inner.put_stream(key, chunks, size=size)  # type: ignore[call-arg]
        listing, _, info = self._put_archive(key, chunks)
        return ObjectInfo(key, listing.size, info.modified, info.etag)

    def put_sealed(self, key: str, chunks: Iterable[bytes], *, size: int | None = None) -> tuple[int, str]:
        """An archive given in clear, stored as encrypted chunks; the (size, sha256) of what its
        key holds (the chunk list), which the set records as the stored object."""
        _, raw, _ = self._put_archive(key, chunks)
        return len(raw), hashlib.sha256(raw).hexdigest()

    def _put_archive(self, key: str, chunks: Iterable[bytes]) -> tuple[ChunkList, bytes, ObjectInfo]:
        ids, seed = digest, 0
        if self.sealing is not None:  # keyed ids and keyed cut points
            ids, seed = self.sealing.writing_ids(self.inner), self.sealing.writing_seed(self.inner)
        writer = _ArchiveWriter(self, ids, seed)
        try:
            listing = writer.write(chunks)
        finally:
            writer.close()
        raw = listing.to_bytes()
        info = self.inner.put_bytes(key, raw)
        faultpoints.reached("chunks.list_written")
        writer.done()
        return listing, raw, info

    # -- reading an archive -------------------------------------------------------------------

    def read_list(self, key: str) -> ChunkList | None:
        """The chunk list at `key`, or None when the archive there is stored whole."""
        return self.read_list_raw(key)[0]

    def read_list_raw(self, key: str) -> tuple[ChunkList | None, bytes]:
        """(the chunk list at `key` or None, the bytes it was parsed from)."""
        with self.inner.open_read(key, 1 << 16) as pieces:
            first = next(pieces, b"")
            if not first.startswith(MAGIC):
                return None, b""
            raw = first + b"".join(pieces)
        return ChunkList.parse(raw, key), raw

    def list_digest(self, key: str) -> tuple[int, str] | None:
        """(size, sha256) of an encrypted archive's chunk list (what its set records as stored), or
        None when the archive at `key` is not one."""
        listing, raw = self.read_list_raw(key)
        return (len(raw), hashlib.sha256(raw).hexdigest()) if listing is not None and listing.keyed else None

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
        entries = iter(range(len(listing.chunks)))
        try:
            while True:
                while len(ahead) < READ_AHEAD and (i := next(entries, None)) is not None:
                    ahead.append(pool.submit(self.read_chunk, *listing.chunks[i], key, *self._stored_of(listing, i)))
                if not ahead:
                    return
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()

    @staticmethod
    def _stored_of(listing: ChunkList, i: int) -> tuple[tuple[int, str] | None, bool]:
        return (listing.stored[i] if listing.keyed else None), listing.keyed

    def read_chunk(self, chunk_id: str, length: int | None = None, archive: str = "",
                   stored: tuple[int, str] | None = None, keyed: bool = False) -> bytes:
        """One chunk's plain bytes, checked (its stored size and sha256 when the list recorded
        them, age's authentication when encrypted, its id); ChecksumError naming the chunk (and
        archive) if it is missing or damaged."""
        where = f" of archive {archive}" if archive else ""
        try:
            data = self.inner.get_bytes(chunk_key(chunk_id))
        except NotFoundError:
            raise ChecksumError(f"chunk {chunk_id}{where} is missing from the repository (run qbr verify)") from None
        try:
            check_stored(data, chunk_id, stored)
            ids = self._reading_ids(keyed)
            if data.startswith(AGE_MAGIC):
                data = self._open(data, chunk_id)
            return self.codec.decode(data, chunk_id, length, ids)
        except ChecksumError as error:
            raise ChecksumError(f"{error}{where} (run qbr verify)") from None

    def _reading_ids(self, keyed: bool) -> Callable[[bytes], str] | None:
        if not keyed:
            return digest
        return None if self.sealing is None else self.sealing.reading_ids(self.inner)

    def _open(self, data: bytes, chunk_id: str) -> bytes:
        from qbr import encryption

        if self.sealing is not None:
            try:
                return self.sealing.open(data, f"chunk {chunk_id}")
            except encryption.IdentityError:
                raise
            except QbrError as error:
                raise ChecksumError(f"{error}; it is damaged") from None
        identities = encryption.KEYRING.identities(f"reading the encrypted chunk {chunk_id}")
        return encryption.decrypt_bytes(data, identities, f"chunk {chunk_id}")

    def get_bytes(self, key: str) -> bytes:
        raw = self.inner.get_bytes(key)
        if not (key.startswith(SNAPSHOTS_PREFIX) and raw.startswith(MAGIC)):
            return raw
        listing = ChunkList.parse(raw, key)
        return b"".join(self.read_chunk(*listing.chunks[i], key, *self._stored_of(listing, i)) for i in range(len(listing.chunks)))

    def head(self, key: str) -> ObjectInfo | None:
        """For an archive, its size as read back (a chunked one's rebuilt size; an encrypted one's
        chunk list's size, which its set records as the stored size)."""
        info = self.inner.head(key)
        if info is None or not key.startswith(SNAPSHOTS_PREFIX):
            return info
        try:
            listing = self.read_list(key)
        except NotFoundError:
            return None
        return info if listing is None or listing.keyed else ObjectInfo(key, listing.size, info.modified, info.etag)

    def retain_chunks(self, archive_keys: list[str], mode: str, until: Any, parallelism: int = 8) -> int:
        """Object Lock: every chunk the chunk lists at `archive_keys` name retained until at least `until`."""
        from qbr.repository.chunk_gc import retain_chunks

        return retain_chunks(self, archive_keys, mode, until, parallelism)

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
        listing, raw = self.read_list_raw(key)
        if listing is None:
            return
        if listing.keyed and len(raw) != size:
            raise ChecksumError(f"the chunk list {key} is {len(raw)} bytes, its set recorded {size}; it was not restored")
        if not listing.keyed and listing.size != size:
            raise ChecksumError(f"the chunk list {key} holds {listing.size} bytes, its set recorded {size}; it was not restored")
        ids = sorted(listing.ids())
        with ThreadPoolExecutor(max_workers=CHECKS, thread_name_prefix="qbr-chunk-check") as pool:
            stored = list(pool.map(lambda c: self.inner.head(chunk_key(c)) is not None, ids))
        for chunk_id, there in zip(ids, stored):
            if not there:
                raise ChecksumError(f"chunk {chunk_id} of archive {key} is missing from the repository; it was not restored (run qbr verify)")


def check_stored(data: bytes, chunk_id: str, stored: tuple[int, str] | None) -> None:
    """A stored chunk against the (size, sha256) its chunk list recorded (no key needed)."""
    if stored is not None and (len(data) != stored[0] or hashlib.sha256(data).hexdigest() != stored[1]):
        raise ChecksumError(f"chunk {chunk_id} is {len(data)} stored bytes that do not match the size and sha256 "
                            "its chunk list recorded; it is damaged")


class _ArchiveWriter:
    """One archive's chunks on their way into the store: cut, hashed, new ones compressed and
    stored (IN_FLIGHT at once), confirmed in the index by batches."""

    def __init__(self, repo: ChunkedRepository, ids: Callable[[bytes], str], seed: int = 0) -> None:
        self.repo = repo
        self.ids = ids
        self.seed = seed
        self.known = repo.index.known()
        self.token = new_index_key()[:-len(".json")]
        self.marker = f"{self.token}.pending.json"
        self.pool = ThreadPoolExecutor(max_workers=repo.in_flight, thread_name_prefix="qbr-chunk-write")
        self.flying: deque[tuple[str, Future[tuple[int, str]]]] = deque()
        self.others: list[tuple[str, Future[tuple[int, str]]]] = []  # stored by another archive of this process
        self.results: dict[str, tuple[int, str]] = {}  # (stored size, sha256) of the chunks stored for this archive
        self.batch: dict[str, int] = {}
        self.digests: dict[str, str] = {}
        self.batches = 0
        self.mine: set[str] = set()
        self.announced = False

    def write(self, chunks: Iterable[bytes]) -> ChunkList:
        entries: list[tuple[str, int]] = []
        total = 0
        try:
            for data in cut(chunks, **self.repo.sizes, seed=self.seed):
                chunk_id = self.ids(data)
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
                future, started = self.repo.index.storing(chunk_id, lambda: self.pool.submit(self._store, chunk_id, data))
                (self.flying.append if started else self.others.append)((chunk_id, future))
            while self.flying:
                self._land()
            for chunk_id, future in self.others:
                self.results[chunk_id] = future.result()
            self._confirm()
            stored = tuple(self._stored(c) for c, _ in entries) if self.repo.sealing is not None else ()
            self._confirm()
        except BaseException:
            try:  # what was stored is confirmed, so the sweep finds it in the index without a listing
                self._drain()
                self.done()
            except Exception:
                pass
            raise
        chunker = {**self.repo.params, "seed": "keyed"} if self.seed else self.repo.params  # never the seed itself
        return ChunkList(total, tuple(entries), chunker, stored)

    def _store(self, chunk_id: str, data: bytes) -> tuple[int, str]:
        stored = self.repo.codec.encode(data)
        if self.repo.sealing is not None:  # compressed first: ciphertext does not compress
            stored = self.repo.sealing.seal(stored)
        self.repo.inner.put_bytes(chunk_key(chunk_id), stored)
        faultpoints.reached("chunks.stored")
        return len(stored), hashlib.sha256(stored).hexdigest()

    def _stored(self, chunk_id: str) -> tuple[int, str]:
        """(stored size, sha256) of a chunk this archive names: as stored now, as the index
        recorded it, or (an index rebuilt from a listing) read back once and indexed."""
        found = self.results.get(chunk_id)
        if found is None:
            size, sha = self.known.get(chunk_id), self.repo.index.digest(chunk_id)
            if size is None or sha is None:
                data = self.repo.inner.get_bytes(chunk_key(chunk_id))
                size, sha = len(data), hashlib.sha256(data).hexdigest()
                self.batch[chunk_id], self.digests[chunk_id] = size, sha
            found = self.results[chunk_id] = (size, sha)
        return found

    def _land(self) -> None:
        chunk_id, future = self.flying.popleft()
        self._landed(chunk_id, future.result())
        if len(self.batch) >= BATCH:
            self._confirm()

    def _landed(self, chunk_id: str, result: tuple[int, str]) -> None:
        self.results[chunk_id] = result
        self.batch[chunk_id], self.digests[chunk_id] = result

    def _confirm(self) -> None:
        if self.batch:
            self.batches += 1
            digests = dict(self.digests) if self.repo.sealing is not None else None  # what encrypted chunk lists record
            self.repo.index.confirm(f"{self.token}-{self.batches}.json", dict(self.batch), digests)
            faultpoints.reached("chunks.indexed")
            self.batch.clear()
            self.digests.clear()

    def _drain(self) -> None:
        while self.flying:
            chunk_id, future = self.flying.popleft()
            try:
                self._landed(chunk_id, future.result())
            except Exception:
                continue
        self._confirm()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def done(self) -> None:
        if self.announced:
            self.repo.inner.delete(self.marker)
