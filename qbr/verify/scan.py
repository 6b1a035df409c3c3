"""Reading archives: each stored archive streamed once, hashed, and (deep) walked as a tar.

Memory stays flat whatever the archive's size: bytes pass through one chunk at a time. With a
point counter, each shard holding segments is copied, as it streams past, into a shard snapshot
of its own in a temporary folder, and counted once the archive has been read.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

from qbr.errors import NotFoundError, QbrError
from qbr.transfer import Digest, tallied
from qbr.verify.engine import PointCounter
from qbr.verify.report import ArchiveScan, ShardScan

READ_CHUNK = 1 << 20


class _HashingReader(io.RawIOBase):
    """A read-only file over a chunk iterator that hashes and counts every byte it takes in.

    tarfile's stream mode reads it front to back; whatever tarfile leaves unread (end-of-archive
    padding, trailing garbage) is drained by `finish`, so size and sha256 cover the whole object.
    Holds at most one chunk."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._view = memoryview(b"")
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def _pull(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._hash.update(chunk)
                self.size += len(chunk)
                self._view = memoryview(chunk)
                return True
        return False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [bytes(self._view)]
            self._view = memoryview(b"")
            while self._pull():
                parts.append(bytes(self._view))
            self._view = memoryview(b"")
            return b"".join(parts)
        if not self._view and not self._pull():
            return b""
        piece = bytes(self._view[:size])
        self._view = self._view[size:]
        return piece

    def readinto(self, buffer: Any) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)

    def finish(self) -> str:
        self._view = memoryview(b"")
        while self._pull():
            self._view = memoryview(b"")
        return self._hash.hexdigest()


def scan_archive(repo: Any, key: str, kind: str, *, deep: bool, counter: PointCounter | None = None,
                 encrypted: bool = False) -> ArchiveScan:
    """Read one archive from a repository, streamed, once. An encrypted one is hashed as stored
    and, with `deep`, decrypted on the way (with the run's identity) and walked as plaintext."""
    try:
        sealed = getattr(repo, "list_digest", None)
        listed = sealed(key) if encrypted and deep and sealed is not None else None
        if listed is not None:  # chunks encrypted one by one (a dedup repository), decrypted as they are read
            from qbr import encryption

            encryption.KEYRING.identities("verify --deep of encrypted archives")
            with repo.open_read(key, READ_CHUNK) as chunks:
                plain = scan_stream(chunks, key, kind, deep=True, counter=counter)
            return replace(plain, size=listed[0], sha256=listed[1], plain_size=plain.size, plain_sha256=plain.sha256)
        with repo.open_read(key, READ_CHUNK) as chunks:
            tally = Digest()
            if encrypted:  # the stored object's BLAKE3 too: what records of encrypted archives keep
                chunks = tallied(chunks, tally)
            if not (encrypted and deep):
                scan = scan_stream(chunks, key, kind, deep=deep, counter=counter)
                return replace(scan, stored_blake3=tally.blake3) if encrypted else scan
            from qbr import encryption

            identities = encryption.KEYRING.identities("verify --deep of encrypted archives")
            stored = _HashingReader(chunks)
            plain = scan_stream(encryption.decrypt_stream(_pieces(stored), identities, f"archive {key}"),
                                key, kind, deep=True, counter=counter)
            return replace(plain, size=stored.size, sha256=stored.finish(), stored_blake3=tally.blake3,
                           plain_size=plain.size, plain_sha256=plain.sha256)
    except NotFoundError:
        return ArchiveScan(key, found=False, deep=deep)
    except QbrError as error:
        return ArchiveScan(key, read_error=str(error), deep=deep)


def _pieces(reader: _HashingReader) -> Iterator[bytes]:
    while chunk := reader.read(READ_CHUNK):
        yield chunk


def scan_stream(chunks: Iterable[bytes], key: str, kind: str, *, deep: bool, counter: PointCounter | None = None) -> ArchiveScan:
    """Hash (and with `deep`, walk as a tar) one archive's bytes in a single pass, memory flat.

    A NotFoundError or other QbrError from the chunk iterator propagates (scan_archive turns it
    into a finding); a malformed tar is a fact of the scan, not an error. `counter` counts the
    points of each shard holding segments (deep only); without one they are left uncounted."""
    reader = _HashingReader(chunks)
    if not deep:
        sha = reader.finish()
        return ArchiveScan(key, size=reader.size, sha256=sha)
    walk = _TarWalk(kind, counter)
    try:
        walk.run(reader)
        sha = reader.finish()
        return ArchiveScan(
            key,
            size=reader.size,
            sha256=sha,
            deep=True,
            tar_error=walk.tar_error,
            entries=frozenset(walk.entries),
            unsafe=tuple(walk.unsafe),
            shards=walk.shard_scans(),
            counter=None if counter is None else counter.name,
            method="" if counter is None else counter.method,
        )
    finally:
        walk.cleanup()


def _member_path(name: str) -> tuple[str, ...] | None:
    """Split a member name into parts; None if it would climb out of (or start above) its folder."""
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/"):
        return None
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if any(p == ".." for p in parts) or "\\" in name:
        return None
    return parts


def _label(shard: int | None) -> str:
    return "root" if shard is None else str(shard)


class _TarWalk:
    """One streamed pass over a snapshot tar: entries, shards holding segments, their spools and counts."""

    def __init__(self, kind: str, counter: PointCounter | None) -> None:
        self.kind = kind
        self.counter = counter
        self.entries: set[str] = set()
        self.unsafe: list[str] = []
        self.tar_error: str | None = None
        self.segments: set[int | None] = set()
        self.points: dict[int | None, int] = {}
        self.errors: dict[int | None, str] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._spools: dict[int | None, tarfile.TarFile] = {}

    def run(self, reader: _HashingReader) -> None:
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    self._member(tar, member)
        except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeDecodeError) as error:
            self.tar_error = str(error) or error.__class__.__name__
        for spool in self._spools.values():
            spool.close()
        if self.counter is not None and self.tar_error is None:
            for shard in sorted((self.segments & set(self._spools)) - set(self.errors), key=lambda s: -1 if s is None else s):
                self._count(shard)

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _member_path(member.name)
        if parts is None:
            self.unsafe.append(member.name)
            return
        if not parts:
            return
        for depth in range(1, min(2, len(parts)) + 1):
            self.entries.add("/".join(parts[:depth]))
        if self.kind == "collection":
            if not parts[0].isdigit():
                return
            shard: int | None = int(parts[0])
            rest = parts[1:]
        else:
            shard, rest = None, parts
        if rest and rest[0] == "segments":
            self.segments.add(shard)
        self._spool(tar, member, shard, rest)

    def _spool(self, tar: tarfile.TarFile, member: tarfile.TarInfo, shard: int | None, rest: tuple[str, ...]) -> None:
        """With a point counter at hand, copy the shard's members into a shard snapshot tar of its own."""
        if self.counter is None or not rest or not (member.isfile() or member.isdir()):
            return
        if shard in self.errors:
            return
        try:
            spool = self._spools.get(shard)
            if spool is None:
                spool = self._spools[shard] = tarfile.open(self._path(f"shard-{_label(shard)}.tar"), "w", format=tarfile.GNU_FORMAT)
            info = tarfile.TarInfo("/".join(rest))
            info.mode, info.mtime = member.mode, member.mtime
            if member.isdir():
                info.type = tarfile.DIRTYPE
                spool.addfile(info)
            else:
                info.size = member.size
                spool.addfile(info, tar.extractfile(member))
        except OSError as error:  # the temp folder, not the archive, failed (full disk): say so, keep reading
            self.errors[shard] = f"cannot copy the shard to a temp folder: {error.strerror or error}; set TMPDIR"

    def _path(self, name: str) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="qbr-verify-")
        return Path(self._tmp.name) / name

    def _count(self, shard: int | None) -> None:
        assert self.counter is not None
        try:
            self.points[shard] = int(self.counter.count(self._path(f"shard-{_label(shard)}.tar"), self._path(f"unpacked-{_label(shard)}")))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # the counter's errors; a Rust panic arrives as a BaseException (PanicException)
            self.errors[shard] = (str(error) or error.__class__.__name__).splitlines()[0]

    def shard_scans(self) -> dict[int | None, ShardScan]:
        return {
            s: ShardScan(segments=s in self.segments, points=self.points.get(s), count_error=self.errors.get(s))
            for s in self.segments | set(self.errors)
        }

    def cleanup(self) -> None:
        for spool in self._spools.values():
            spool.close()
        if self._tmp is not None:
            self._tmp.cleanup()
