"""The chunk index of a dedup repository: which chunks exist, so a backup never lists them.

It lives in the repository, as small objects under `index/`, each written by one batch of one
backup (or by a sweep or a repair, merging others):

    {"qbr_chunk_index": 1, "pending": false, "chunks": {"<id>": <stored size>, ...},
     "sha256": {"<id>": "<stored sha256>", ...}}

(`sha256`, of each stored object, is what an encrypted repository's chunk lists record of the
chunks a backup did not store itself; an entry without one is hashed from the store once.)

It is a cache, never the only truth (the chunks under `chunks/` are): `qbr repair-index`
rebuilds it from a listing, and so does any reader that finds it missing or unreadable. Two
rules keep it safe to dedup against:

- an entry is written *confirmed* only after its chunk is stored, and removed before its chunk
  is deleted, so a confirmed entry always names a chunk that exists;
- before a batch of chunks is uploaded, its entries are written *pending* (the same object is
  then rewritten confirmed): a backup killed mid-batch leaves its chunks announced, so the
  sweep finds them without a listing. Backups never dedup against a pending entry.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qbr.errors import NotFoundError, QbrError
from qbr.repository.chunks import INDEX_PREFIX, chunk_id_of_key, chunk_key

INDEX_MAGIC = "qbr_chunk_index"


@dataclass(frozen=True)
class IndexFile:
    key: str
    modified: datetime
    pending: bool
    chunks: dict[str, int]  # id -> stored size
    digests: dict[str, str] = field(default_factory=dict)  # id -> stored sha256, where known


def index_bytes(chunks: dict[str, int], *, pending: bool, digests: dict[str, str] | None = None) -> bytes:
    body: dict[str, Any] = {INDEX_MAGIC: 1, "pending": pending, "chunks": dict(sorted(chunks.items()))}
    known = {c: d for c, d in (digests or {}).items() if c in chunks}
    if known:
        body["sha256"] = dict(sorted(known.items()))
    return json.dumps(body, separators=(",", ":")).encode()


def new_index_key(label: str = "") -> str:
    return f"{INDEX_PREFIX}{datetime.now().strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(6)}{label}.json"


def read_index_files(repo: Any, cache: Any = None) -> tuple[list[IndexFile], list[str]]:
    """Every index object (parsed), and the keys of those that cannot be read; through `cache`
    (a read_cache.ReadCache) when given, so an index object read before is not read again."""
    files, broken = [], []
    for info in repo.list(INDEX_PREFIX):
        try:
            data = json.loads(cache.read(repo, info) if cache is not None else repo.get_bytes(info.key))
            if data.get(INDEX_MAGIC) != 1:
                raise ValueError("not a chunk index")
            chunks = {str(k): int(v) for k, v in dict(data["chunks"]).items()}
            digests = {str(k): str(v) for k, v in dict(data.get("sha256") or {}).items()}
            files.append(IndexFile(info.key, info.modified, bool(data.get("pending")), chunks, digests))
        except NotFoundError:
            continue  # merged and removed since the listing
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            broken.append(info.key)
    return files, broken


def list_chunks(repo: Any) -> dict[str, int]:
    """The truth: every chunk object and its stored size, from a listing of `chunks/`."""
    return {cid: o.size for o in repo.list("chunks/") if (cid := chunk_id_of_key(o.key)) is not None}


def rebuild(repo: Any) -> tuple[int, int]:
    """Replace the index by one object listing every chunk stored; returns (chunks, old objects removed).

    The new object is written before the old ones go, so a reader never finds less than the truth."""
    old = [o.key for o in repo.list(INDEX_PREFIX)]
    found = list_chunks(repo)
    key = new_index_key("-rebuilt")
    repo.put_bytes(key, index_bytes(found, pending=False))
    for stale in old:
        repo.delete(stale)
    return len(found), len(old)


class ChunkIndex:
    """The index as one process uses it: loaded once, added to as chunks are stored. Thread-safe."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._known: dict[str, int] | None = None
        self._digests: dict[str, str] = {}
        self._storing: dict[str, Any] = {}  # id -> Future of (stored size, sha256): chunks being stored by this process

    def _load(self) -> dict[str, int]:
        files, broken = read_index_files(self.repo)
        confirmed = any(not f.pending for f in files)
        if broken or (not confirmed and next(iter(self.repo.list("chunks/")), None) is not None):
            rebuild(self.repo)  # automatic: a cache that is missing or damaged is made again from the truth
            files, broken = read_index_files(self.repo)
            if broken:
                raise QbrError(f"the chunk index of {self.repo.describe()} cannot be read ({broken[0]}); run qbr repair-index")
        known: dict[str, int] = {}
        for f in files:
            if not f.pending:
                known.update(f.chunks)
                self._digests.update(f.digests)
        return known

    def known(self) -> dict[str, int]:
        with self._lock:
            if self._known is None:
                self._known = self._load()
            return self._known

    def has(self, chunk_id: str) -> bool:
        return chunk_id in self.known()

    def stored_size(self, chunk_id: str) -> int | None:
        return self.known().get(chunk_id)

    def digest(self, chunk_id: str) -> str | None:
        """The stored object's sha256, if an index object recorded it."""
        self.known()
        return self._digests.get(chunk_id)

    def storing(self, chunk_id: str, submit: Any) -> tuple[Any, bool]:
        """(the future storing `chunk_id`, whether this call started it): two archives written at
        once store a chunk they share once (an encrypted chunk is different bytes each time it is
        encrypted, so the second upload would change what the first archive's list recorded)."""
        with self._lock:
            future = self._storing.get(chunk_id)
            if future is not None and not (future.done() and (future.cancelled() or future.exception() is not None)):
                return future, False
            future = self._storing[chunk_id] = submit()
            return future, True

    def exists(self, chunk_id: str) -> bool:
        """Whether a chunk is stored: the index, else the store itself (a HEAD)."""
        return self.has(chunk_id) or self.repo.head(chunk_key(chunk_id)) is not None

    def announce(self, key: str, chunks: dict[str, int]) -> None:
        """Before a batch is uploaded: its chunks, pending, under `key`."""
        self.repo.put_bytes(key, index_bytes(chunks, pending=True))

    def confirm(self, key: str, chunks: dict[str, int], digests: dict[str, str] | None = None) -> None:
        """After a batch is stored: the same object, confirmed; and this process dedups against it."""
        self.repo.put_bytes(key, index_bytes(chunks, pending=False, digests=digests))
        with self._lock:
            if self._known is not None:
                self._known.update(chunks)
            self._digests.update(digests or {})

    def forget(self, chunk_ids: set[str]) -> None:
        with self._lock:
            if self._known is not None:
                for cid in chunk_ids:
                    self._known.pop(cid, None)
            for cid in chunk_ids:
                self._digests.pop(cid, None)
                self._storing.pop(cid, None)

    def reset(self) -> None:
        with self._lock:
            self._known = None
            self._digests = {}
