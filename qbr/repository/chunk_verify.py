"""`qbr verify` over a dedup repository: every chunk checked (stored size, decompresses, hash)
and every chunked archive's sha256 rebuilt, reading each chunk once.

The archives of successive sets are mostly the same chunks in the same order, so they are
hashed in lockstep: the archive that is furthest behind takes its next chunk, which is read
once and fed to every archive waiting for exactly that chunk. A small cache of recent chunks
covers what lockstep misses (chunks shared out of order); a chunk fetched twice is counted in
`stats` and costs only time.

An encrypted repository's chunk lists record each chunk's stored size and sha256, so verify
checks every stored chunk against them without the identity (each read once), and the list
itself against the sha256 its set recorded; `verify --deep` decrypts and rebuilds (qbr.verify.scan).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from qbr.errors import NotFoundError, QbrError
from qbr.repository.chunk_index import read_index_files
from qbr.repository.chunks import ChunkList, chunk_key
from qbr.verify.report import ArchiveScan

CACHE_BYTES = 64 << 20
READ_AHEAD = 4


@dataclass
class _Archive:
    key: str
    listing: ChunkList
    position: int = 0
    done: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    error: str | None = None

    def head(self) -> str | None:
        return self.listing.chunks[self.position][0] if self.position < len(self.listing.chunks) else None


class LockstepVerifier:
    def __init__(self, repo: Any, parallelism: int = 4) -> None:
        self.repo = repo
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(parallelism, READ_AHEAD)), thread_name_prefix="qbr-chunk-verify")
        self.cache: OrderedDict[str, bytes] = OrderedDict()
        self.cached = 0
        self.bad: dict[str, str] = {}
        self.fetching: dict[str, Future[bytes]] = {}
        self.stats = {"chunks": 0, "fetches": 0, "bytes_fetched": 0}
        self.seen: set[str] = set()
        files, _ = read_index_files(repo.inner)  # read only: verify never rewrites the index
        self.sizes = {c: n for f in files if not f.pending for c, n in f.chunks.items()}

    def _read(self, chunk_id: str, length: int) -> bytes:
        stored = self.repo.inner.get_bytes(chunk_key(chunk_id))
        indexed = self.sizes.get(chunk_id)
        if indexed is not None and indexed != len(stored):
            raise QbrError(f"chunk {chunk_id} is {len(stored)} bytes stored, the index recorded {indexed}; it is damaged")
        data = self.repo.codec.decode(stored, chunk_id, length)
        self.stats["bytes_fetched"] += len(stored)
        return data

    def _prefetch(self, chunk_id: str, length: int) -> None:
        if chunk_id not in self.cache and chunk_id not in self.fetching and chunk_id not in self.bad:
            self.fetching[chunk_id] = self.pool.submit(self._read, chunk_id, length)

    def chunk(self, chunk_id: str, length: int) -> bytes | None:
        """The chunk's checked bytes, or None if it is missing or damaged (said in self.bad)."""
        if chunk_id in self.bad:
            return None
        data = self.cache.get(chunk_id)
        if data is not None:
            self.cache.move_to_end(chunk_id)
            return data
        self._prefetch(chunk_id, length)
        future = self.fetching.pop(chunk_id)
        self.stats["fetches"] += 1
        if chunk_id not in self.seen:
            self.seen.add(chunk_id)
            self.stats["chunks"] += 1
        try:
            data = future.result()
        except NotFoundError:
            self.bad[chunk_id] = f"chunk {chunk_id} is missing from the repository"
            return None
        except QbrError as error:
            self.bad[chunk_id] = str(error).split(" (run qbr verify)")[0]
            return None
        self.cache[chunk_id] = data
        self.cached += len(data)
        while self.cached > CACHE_BYTES and len(self.cache) > 1:
            self.cached -= len(self.cache.popitem(last=False)[1])
        return data

    def run(self, listings: dict[str, ChunkList]) -> dict[str, ArchiveScan]:
        archives = {key: _Archive(key, listing) for key, listing in listings.items()}
        waiting: dict[str, set[str]] = {}
        heap: list[tuple[int, str]] = []
        for a in archives.values():
            if (head := a.head()) is not None:
                waiting.setdefault(head, set()).add(a.key)
                heapq.heappush(heap, (0, a.key))
        try:
            while heap:
                done, key = heapq.heappop(heap)
                a = archives[key]
                head = a.head()
                if done != a.done or head is None or a.error is not None or key not in waiting.get(head, ()):
                    continue  # advanced (or failed) already, with another archive's read
                length = a.listing.chunks[a.position][1]
                for cid, n in a.listing.chunks[a.position + 1 : a.position + READ_AHEAD]:
                    self._prefetch(cid, n)
                data = self.chunk(head, length)
                for other_key in sorted(waiting.pop(head, ())):
                    other = archives[other_key]
                    if data is None:
                        other.error = self.bad[head]
                        continue
                    other.sha.update(data)
                    other.done += len(data)
                    other.position += 1
                    if (nxt := other.head()) is not None:
                        waiting.setdefault(nxt, set()).add(other_key)
                        heapq.heappush(heap, (other.done, other_key))
        finally:
            for future in self.fetching.values():
                future.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)
        scans = {}
        for key, a in archives.items():
            if a.error is not None:
                scans[key] = ArchiveScan(key, read_error=a.error)
            else:
                scans[key] = ArchiveScan(key, size=a.done, sha256=a.sha.hexdigest())
        return scans


def check_keyed(repo: Any, keyed: dict[str, tuple[ChunkList, bytes]], stats: dict[str, int],
                parallelism: int = 4) -> dict[str, ArchiveScan]:
    """Scans of encrypted archives: every chunk they name fetched once and checked against the
    stored size and sha256 each list recorded; an archive's size and sha256 are its list's."""
    wanted: dict[str, set[tuple[int, str]]] = {}
    for listing, _ in keyed.values():
        for (chunk_id, _), stored in zip(listing.chunks, listing.stored):
            wanted.setdefault(chunk_id, set()).add(stored)

    def one(chunk_id: str) -> tuple[str, str | None, int]:
        try:
            data = repo.inner.get_bytes(chunk_key(chunk_id))
        except NotFoundError:
            return chunk_id, f"chunk {chunk_id} is missing from the repository", 0
        got = (len(data), hashlib.sha256(data).hexdigest())
        if any(stored != got for stored in wanted[chunk_id]):
            return chunk_id, (f"chunk {chunk_id} is {got[0]} stored bytes that do not match the size and sha256 "
                              "its chunk list recorded; it is damaged"), len(data)
        return chunk_id, None, len(data)

    with ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="qbr-chunk-verify") as pool:
        found = list(pool.map(one, sorted(wanted)))
    bad = {chunk_id: problem for chunk_id, problem, _ in found if problem is not None}
    stats["chunks"] += len(found)
    stats["fetches"] += len(found)
    stats["bytes_fetched"] += sum(n for _, _, n in found)
    scans = {}
    for key, (listing, raw) in keyed.items():
        problem = next((bad[c] for c, _ in listing.chunks if c in bad), None)
        scans[key] = (ArchiveScan(key, read_error=problem) if problem is not None
                      else ArchiveScan(key, size=len(raw), sha256=hashlib.sha256(raw).hexdigest()))
    return scans


def scan_archives(repo: Any, keys: list[str], parallelism: int = 4) -> tuple[dict[str, ArchiveScan], dict[str, int]]:
    """Scans of the chunked archives among `keys` (archives stored whole are left to the caller)."""
    listings: dict[str, ChunkList] = {}
    keyed: dict[str, tuple[ChunkList, bytes]] = {}
    scans: dict[str, ArchiveScan] = {}
    for key in keys:
        try:
            listing, raw = repo.read_list_raw(key)
        except NotFoundError:
            scans[key] = ArchiveScan(key, found=False)
            continue
        except QbrError as error:
            scans[key] = ArchiveScan(key, read_error=str(error))
            continue
        if listing is not None and listing.keyed:
            keyed[key] = (listing, raw)
        elif listing is not None:
            listings[key] = listing
    verifier = LockstepVerifier(repo, parallelism)
    scans.update(verifier.run(listings))
    if keyed:
        scans.update(check_keyed(repo, keyed, verifier.stats, parallelism))
    return scans, verifier.stats
