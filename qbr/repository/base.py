"""What every backup repository offers: whole objects under relative keys, written atomically.

A repository is an S3 prefix or a local folder with the same layout. Everything above this
layer (sets, archives, state, locks) speaks only this interface, so the two kinds behave the
same way and the shared test suite can hold them to it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from qbr.errors import RepositoryError

#: Names starting with this are qbr's own bookkeeping in a local folder (temp files of writes in
#: flight, the lock file); they are never keys, never listed, and no key segment may start so.
RESERVED_PREFIX = ".qbr-"


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object. `etag` is opaque: compare it, pass it to `if_match`, never parse it."""

    key: str
    size: int
    modified: datetime  # aware, UTC
    etag: str | None


@dataclass(frozen=True)
class PendingUpload:
    """A write that started and never finished (an S3 multipart upload, a local temp file)."""

    key: str
    upload_id: str
    initiated: datetime  # aware, UTC


class PreconditionFailed(RepositoryError):
    """A conditional write lost: the object already exists, or its etag moved."""


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative `/`-separated key; raise RepositoryError if not.

    A key is built from manifest and Qdrant names (collections, backups); a hostile name must
    never reach outside the repository, so anything that could climb, be absolute, or be read
    differently by a filesystem and by S3 is refused.
    """
    if not isinstance(key, str) or key == "":
        raise RepositoryError("a repository key must not be empty.")
    if "\x00" in key or "\\" in key:
        raise RepositoryError(f"repository key {key!r} contains a NUL or backslash; use '/'-separated names.")
    if key.startswith("/"):
        raise RepositoryError(f"repository key {key!r} is absolute; keys are relative to the repository.")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise RepositoryError(
                f"repository key {key!r} has an empty, '.' or '..' segment; keys must stay inside the repository."
            )
        if segment.startswith(RESERVED_PREFIX):
            raise RepositoryError(f"repository key {key!r} uses the reserved name prefix {RESERVED_PREFIX!r}.")
    return key


def validate_prefix(prefix: str) -> str:
    """Return a listing prefix ("" or a partial key, may end with '/') if it is safe."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class Repository(ABC):
    """A place that stores backup archives and set records: an S3 prefix or a local folder."""

    @abstractmethod
    def describe(self) -> str:
        """Where this is, for people: "s3://bucket/prefix" or the folder path; never credentials."""

    def cache_identity(self) -> str | None:
        """Who this store is, for a local copy of its set records (read_cache); None: no copy."""
        return None

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        """Store everything `chunks` yields under `key`, atomically, with memory bounded by one part.

        The object appears whole or not at all. An exception raised by `chunks` propagates
        unchanged after the partial write is discarded.
        """

    @abstractmethod
    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        """Store `data` under `key`, atomically.

        if_none_match: create only if absent. if_match: replace only if the current etag equals
        it (a missing object does not match). Losing either raises PreconditionFailed.
        """

    @abstractmethod
    def open_read(self, key: str, chunk_size: int = 1 << 20) -> AbstractContextManager[Iterator[bytes]]:
        """Stream an object in chunks of at most `chunk_size`; NotFoundError if it is absent."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole; NotFoundError if it is absent."""

    @abstractmethod
    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        """Read a small object whole, with the info (etag) of exactly the version read.

        Use this to read-modify-write with `if_match`: a separate head() and get_bytes() can see
        two different versions.
        """

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Info about `key`, or None if it is absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, keys relative to the repository, sorted."""

    @abstractmethod
    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove `key`; a missing key is fine.

        if_match: remove it only if its current etag equals this (what a lock's holder read or
        wrote); another etag, or a missing object, raises PreconditionFailed and removes nothing.
        """

    @abstractmethod
    def presigned_get(self, key: str, expires_s: int = 900) -> str | None:
        """A short-lived URL that lets someone else (Qdrant) GET the object; None if impossible.

        The URL is a secret: never log it or put it in a message, plan or state.
        """

    @abstractmethod
    def pending_uploads(self) -> list[PendingUpload]:
        """Writes that started and never finished, under this repository."""

    @abstractmethod
    def abort_upload(self, upload: PendingUpload) -> None:
        """Discard an unfinished write; one already gone is fine."""
