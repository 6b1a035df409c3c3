"""A local copy of the small objects every plan reads (set records, and a dedup repository's chunk
lists), reused while the store's listing shows the same etag and size: a quiet tick then costs the
listings alone, not a GET per kept set and per archive.

Like restic's cache (~/.cache/restic), it is never the truth: an entry is used only when the
listing just taken names the object with the etag and size the entry was stored with, so a
record rewritten or deleted by another host is read again (or dropped). It holds the bytes the
bucket holds (a sealed record stays sealed), never a credential. Any trouble with the folder
(read-only home, full disk) turns the cache off for the run; it never fails one.

Where: $QBR_CACHE_DIR, else $XDG_CACHE_HOME/qbr, else ~/.cache/qbr; QBR_NO_CACHE=1 turns it off.
Only remote repositories use it (a folder's own files are as quick to read as a copy of them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from qbr.repository.base import ObjectInfo

CACHE_DIR_ENV = "QBR_CACHE_DIR"
NO_CACHE_ENV = "QBR_NO_CACHE"


def cache_root() -> Path | None:
    """The folder under which each store's copies go, or None when the cache is turned off."""
    if os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        return None
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qbr"


class ReadCache:
    """Reads of small objects through a folder of copies keyed by (key, etag, size), each checked
    against the sha256 it was written with."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.hits = 0
        self._used: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def for_repository(cls, repo: Any) -> ReadCache:
        """The cache of `repo`'s store (one folder per endpoint, bucket and prefix); a cache that
        keeps nothing for a repository that does not say who it is, or when the cache is off."""
        identity = repo.cache_identity() if hasattr(repo, "cache_identity") else None
        root = cache_root()
        if identity is None or root is None:
            return cls(None)
        return cls(root / hashlib.sha256(identity.encode()).hexdigest()[:32])

    def read(self, repo: Any, listed: ObjectInfo) -> bytes:
        """The bytes of `listed` (as the listing just taken saw it): the copy when it is that
        version, else a GET, kept for the next run. NotFoundError passes unchanged."""
        copy = self.copy_of(listed)
        if copy is not None:
            return copy
        data, info = repo.get_with_info(listed.key)
        if info.etag:
            self.keep(ObjectInfo(listed.key, len(data), info.modified, info.etag), data)
        return data

    def copy_of(self, listed: ObjectInfo) -> bytes | None:
        """The copy kept for `listed`'s version (key, etag and size), or None; either way the copy
        is in use, so prune() keeps it."""
        name = _name(listed.key)
        with self._lock:
            self._used.add(name)
        folder = self.folder
        copy = _load(folder / name, listed) if folder is not None and listed.etag else None
        if copy is not None:
            with self._lock:
                self.hits += 1
        return copy

    def keep(self, version: ObjectInfo, data: bytes) -> None:
        """Keep `data` as what the object is at `version` (its key, etag and size): the object's
        bytes, or what a reader made of them (b"" for "not a chunk list")."""
        folder = self.folder  # once: a failed write turns it off for the other threads too
        if folder is None or not version.etag:
            return
        with self._lock:
            self._used.add(_name(version.key))
        if not _store(folder, _name(version.key), version, data):
            self.folder = None  # the folder cannot be written: no cache for the rest of the run

    def prune(self) -> None:
        """Drop the copies of objects this run did not read (deleted, or no longer listed), and
        temp files a run cut short left (one still writing then keeps no copy: no harm)."""
        if self.folder is None:
            return
        try:
            for path in self.folder.iterdir():
                if path.name not in self._used:
                    path.unlink(missing_ok=True)
        except OSError:
            pass


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _load(path: Path, listed: ObjectInfo) -> bytes | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    head, sep, body = raw.partition(b"\n")
    try:
        meta = json.loads(head) if sep else {}
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    fits = (meta.get("key"), meta.get("etag"), meta.get("size"), meta.get("sha256")) == (
        listed.key, listed.etag, listed.size, hashlib.sha256(body).hexdigest())
    return body if fits else None  # a copy damaged on this disk is read again from the store


def _store(folder: Path, name: str, version: ObjectInfo, data: bytes) -> bool:
    """Write the copy whole or not at all (temp + rename); False when the folder refuses."""
    temp = folder / f"{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    head = {"key": version.key, "etag": version.etag, "size": version.size, "sha256": hashlib.sha256(data).hexdigest()}
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(json.dumps(head).encode() + b"\n" + data)
        os.replace(temp, folder / name)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        return False
    return True
