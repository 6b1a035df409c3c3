"""A repository in a local folder: the embedded default, needs no service.

Every write goes to a temp file in the target's own folder, is fsynced, and is renamed into
place (then the folder is fsynced), so an object appears whole or not at all and survives a
crash. Renames, creates and deletes are serialised across processes by an flock on one lock
file, which makes `if_match` a true compare-and-swap, like S3's conditional writes. An object's
etag is its file's identity, never a hash of its bytes (file_etag.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat as stat_kinds
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from qbr import faultpoints
from qbr.errors import NotFoundError, RepositoryError
from qbr.repository.base import (
    RESERVED_PREFIX,
    ObjectInfo,
    PendingUpload,
    PreconditionFailed,
    Repository,
    validate_key,
    validate_prefix,
)
from qbr.repository.file_etag import etag as _etag
from qbr.repository.file_etag import fresh_stat, stamp_after
from qbr.repository.filewrite import CACHE_DROP_EVERY, drop_cache, write_chunks

TEMP_PREFIX = RESERVED_PREFIX + "tmp-"
LOCK_NAME = RESERVED_PREFIX + "lock"
_MAX_NAME = 255  # bytes in one file name on common filesystems


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def _reason(error: OSError) -> str:
    text = error.strerror or type(error).__name__
    return f"{text} ({error.filename})" if error.filename else text


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(basename: str) -> str:
    """A unique temp name that keeps as much of the target's name as fits (for pending_uploads)."""
    head = f"{TEMP_PREFIX}{secrets.token_hex(8)}."
    room = _MAX_NAME - len(head.encode())
    tail = basename.encode()[:room].decode(errors="ignore")
    return head + tail


class LocalRepository(Repository):
    """A folder holding the repository layout; created lazily on the first write.

    `file_mode` is what new files are created with (less the umask): 0o600 keeps a state
    folder's files owner-only from their first byte.
    """

    def __init__(self, path: Path, *, file_mode: int = 0o666, dir_mode: int | None = None, gid: int | None = None) -> None:
        self.root = Path(path).expanduser().absolute()
        self.file_mode = file_mode
        # A backup repository's folders and files get exactly these (whatever the umask), and
        # its group, when given: see qbr.repository.protection.folder_modes.
        self.dir_mode = dir_mode
        self.gid = gid

    def describe(self) -> str:
        return str(self.root)

    # -- paths and errors -------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _where(self, key: str) -> str:
        return f"{key!r} in folder {self.root}"

    def _write_error(self, error: OSError) -> RepositoryError:
        return RepositoryError(f"folder {self.root} is not writable: {_reason(error)}.")

    def _read_error(self, error: OSError) -> RepositoryError:
        if isinstance(error, NotADirectoryError) and not self.root.is_dir():
            return RepositoryError(f"folder {self.root} is not a folder; point the repository's path at a folder.")
        return RepositoryError(f"folder {self.root} is not readable: {_reason(error)}.")

    def _ensure_dir(self, folder: Path) -> None:
        """Create `folder` and missing parents, fsyncing each parent so the new entry is durable."""
        missing: list[Path] = []
        probe = folder
        while not probe.is_dir():
            if os.path.lexists(probe) and not probe.is_dir():  # (another writer may have just made it)
                raise RepositoryError(f"folder {self.root} is not writable: {probe} is a file, not a folder.")
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        try:
            for created in reversed(missing):
                try:
                    created.mkdir(mode=self.dir_mode if self.dir_mode is not None else 0o777)
                except FileExistsError:
                    if not created.is_dir():
                        raise
                    continue
                if self.dir_mode is not None:  # exactly, whatever the umask took away
                    if self.gid is not None:
                        os.chown(created, -1, self.gid)
                    os.chmod(created, self.dir_mode)
                _fsync_dir(created.parent)
        except OSError as error:
            raise self._write_error(error) from error

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the repository's lock file (flock) while a name in it changes."""
        self._ensure_dir(self.root)
        try:
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, self.file_mode)
        except OSError as error:
            raise self._write_error(error) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # -- writing ----------------------------------------------------------------------------

    def _write_temp(self, path: Path, chunks: Iterable[bytes]) -> Path:
        """Write `chunks` to an fsynced temp file beside `path`; the caller commits or removes it.

        The writes run beside the download, and leave the page cache as they go (filewrite.py).

        An exception raised by `chunks` propagates unchanged, after the temp file is removed.
        """
        self._ensure_dir(path.parent)
        temp = path.parent / _temp_name(path.name)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
        except OSError as error:
            raise self._write_error(error) from error
        try:
            if self.dir_mode is not None:
                try:
                    if self.gid is not None:
                        os.fchown(fd, -1, self.gid)
                    os.fchmod(fd, self.file_mode)
                except OSError as error:
                    os.close(fd)
                    raise self._write_error(error) from error
            with open(fd, "wb", closefd=True) as out:
                size = write_chunks(out, chunks, on_chunk=None, error=self._write_error)
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as error:
                    raise self._write_error(error) from error
                if size >= CACHE_DROP_EVERY:
                    drop_cache(out.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp

    def _commit(self, temp: Path, path: Path, key: str, *, if_none_match: bool, if_match: str | None) -> os.stat_result:
        """Move a finished temp file to `path`, under the lock, honouring the precondition; the
        stat of the version now at `path` (a rename keeps its inode and modification time)."""
        try:
            with self._locked():
                previous = self._fresh_stat(path)
                try:  # a modification time past the replaced version's: an etag no version had
                    found = stamp_after(temp, previous)
                except OSError as error:
                    raise self._write_error(error) from error
                if if_none_match:
                    self._create_exclusive(temp, path, key)
                else:
                    if if_match is not None:
                        current = _etag(previous) if previous is not None else None
                        if current is None:
                            raise PreconditionFailed(f"{self._where(key)} is gone; it was deleted since it was read.")
                        if current != if_match:
                            raise PreconditionFailed(
                                f"{self._where(key)} changed since it was read (etag moved); read it again and retry."
                            )
                    try:
                        os.replace(temp, path)
                    except OSError as error:
                        raise self._write_error(error) from error
                try:
                    _fsync_dir(path.parent)
                except OSError as error:
                    raise self._write_error(error) from error
        finally:
            temp.unlink(missing_ok=True)
        return found

    def _create_exclusive(self, temp: Path, path: Path, key: str) -> None:
        exists = PreconditionFailed(f"{self._where(key)} already exists; another writer created it first.")
        try:
            os.link(temp, path)  # atomic create-if-absent, even against writers that skip the lock
            return
        except FileExistsError:
            raise exists from None
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise self._write_error(error) from error
        # No hard links here (some network and FAT filesystems): the lock we hold still serialises
        # every qbr writer, so check-then-rename is atomic among them.
        if os.path.lexists(path):
            raise exists
        try:
            os.replace(temp, path)
        except OSError as error:
            raise self._write_error(error) from error

    def _current_etag(self, path: Path) -> str | None:
        found = self._fresh_stat(path)
        return _etag(found) if found is not None else None

    def _fresh_stat(self, path: Path) -> os.stat_result | None:
        try:
            return fresh_stat(path)
        except OSError as error:
            raise self._read_error(error) from error

    def _finish(self, key: str, path: Path, chunks: Iterable[bytes], if_none_match: bool, if_match: str | None) -> ObjectInfo:
        temp = self._write_temp(path, chunks)
        faultpoints.reached("local.before_rename")
        return self._info(key, self._commit(temp, path, key, if_none_match=if_none_match, if_match=if_match))

    @staticmethod
    def _info(key: str, found: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key=key, size=found.st_size, modified=_utc(found.st_mtime), etag=_etag(found))

    def put_stream(self, key: str, chunks: Iterable[bytes], *, size: int | None = None) -> ObjectInfo:
        """`size` (the object's size, if known) is not needed here: a file grows as it is written."""
        path = self._path(key)
        return self._finish(key, path, chunks, False, None)

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        if if_none_match and if_match is not None:
            raise ValueError("put_bytes takes if_none_match or if_match, not both")
        path = self._path(key)
        return self._finish(key, path, [data], if_none_match, if_match)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        path = self._path(key)
        if if_match is None and not os.path.lexists(path):
            return
        with self._locked():
            try:
                if if_match is not None:
                    self._delete_if_match(path, key, if_match)
                else:
                    path.unlink()
                _fsync_dir(path.parent)
            except FileNotFoundError:
                return
            except IsADirectoryError:
                raise RepositoryError(f"{self._where(key)} is a folder, not an object; not deleting it.") from None
            except OSError as error:
                raise self._write_error(error) from error

    def _delete_if_match(self, path: Path, key: str, if_match: str) -> None:
        """Compare-and-delete, under the flock that every qbr writer holds: the object is first
        renamed to a private temp name (atomic, even against writers that skip the flock), so
        the bytes judged are exactly the bytes removed; if they are not `if_match`'s, they go
        back, never over a newer object."""
        aside = path.parent / _temp_name(path.name)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            raise PreconditionFailed(f"{self._where(key)} is gone; it was deleted since it was read.") from None
        if self._current_etag(aside) == if_match:
            aside.unlink()
            return
        try:
            os.link(aside, path)  # back in place only if nobody created a newer one meanwhile
            aside.unlink()
        except FileExistsError:
            pass  # (only a writer that skips the flock gets here) left as an unfinished write
        except OSError:
            os.rename(aside, path)  # no hard links here: the flock still excludes every qbr writer
        raise PreconditionFailed(f"{self._where(key)} changed since it was read (etag moved); not deleting it.")

    # -- reading ----------------------------------------------------------------------------

    def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            handle = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
            if isinstance(error, NotADirectoryError) and not self.root.is_dir() and self.root.exists():
                raise self._read_error(error) from error
            raise NotFoundError(f"{self._where(key)} does not exist.") from None
        except OSError as error:
            raise self._read_error(error) from error
        return handle

    @contextmanager
    def open_read(self, key: str, chunk_size: int = 1 << 20) -> Iterator[Iterator[bytes]]:
        handle = self._open(key)
        with handle:
            yield self._chunks(handle, chunk_size)

    def _chunks(self, handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
        while True:
            try:
                chunk = handle.read(chunk_size)
            except OSError as error:
                raise self._read_error(error) from error
            if not chunk:
                return
            yield chunk

    def get_bytes(self, key: str) -> bytes:
        return self.get_with_info(key)[0]

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        """The etag is that of the file opened (writes replace files, never rewrite one in place)."""
        with self._open(key) as handle:
            try:
                found = os.fstat(handle.fileno())
                data = handle.read()
            except OSError as error:
                raise self._read_error(error) from error
        return data, self._info(key, found)

    def head(self, key: str) -> ObjectInfo | None:
        """One stat: the object is never opened or read. (On NFS the stat may answer from the
        client's attribute cache for a few seconds; a stale etag can only make a conditional
        write lose, since the check itself revalidates.)"""
        path = self._path(key)
        try:
            found = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as error:
            if isinstance(error, NotADirectoryError) and not self.root.is_dir() and self.root.exists():
                raise self._read_error(error) from error
            return None
        except OSError as error:
            raise self._read_error(error) from error
        return self._info(key, found) if stat_kinds.S_ISREG(found.st_mode) else None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under `prefix`, sorted by key. Etags are None here: they would cost a full read."""
        validate_prefix(prefix)
        if os.path.lexists(self.root) and not self.root.is_dir():
            raise RepositoryError(f"folder {self.root} is not a folder; point the repository's path at a folder.")
        start = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        found = [info for info in self._walk(start, temp=False) if info.key.startswith(prefix)]
        found.sort(key=lambda info: info.key)
        yield from found

    def _walk(self, start: str, *, temp: bool) -> Iterator[ObjectInfo]:
        """Files under the folder of key prefix `start`; temp files of writes instead if `temp`."""
        folder = self.root.joinpath(*start.split("/")) if start else self.root
        pending = [(folder, start)]
        while pending:
            current, rel = pending.pop()
            try:
                entries = list(os.scandir(current))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as error:
                raise self._read_error(error) from error
            for entry in entries:
                key = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not entry.name.startswith(RESERVED_PREFIX):
                            pending.append((Path(entry.path), key))
                        continue
                    if entry.name.startswith(TEMP_PREFIX) != temp or not entry.is_file():
                        continue
                    if not temp and entry.name.startswith(RESERVED_PREFIX):
                        continue
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # renamed or removed while we looked
                except OSError as error:
                    raise self._read_error(error) from error
                yield ObjectInfo(key=key, size=stat.st_size, modified=_utc(stat.st_mtime), etag=None)

    # -- the rest ---------------------------------------------------------------------------

    def presigned_get(self, key: str, expires_s: int = 900) -> str | None:
        validate_key(key)
        return None

    def pending_uploads(self) -> list[PendingUpload]:
        """Temp files left by writes that never finished (or are in flight right now)."""
        uploads = []
        if os.path.lexists(self.root) and not self.root.is_dir():
            raise RepositoryError(f"folder {self.root} is not a folder; point the repository's path at a folder.")
        for info in self._walk("", temp=True):
            folder, _, name = info.key.rpartition("/")
            target = name[len(TEMP_PREFIX) :].partition(".")[2]
            key = f"{folder}/{target}" if folder else target
            uploads.append(PendingUpload(key=key, upload_id=info.key, initiated=info.modified))
        uploads.sort(key=lambda upload: (upload.key, upload.upload_id))
        return uploads

    def abort_upload(self, upload: PendingUpload) -> None:
        folder, _, name = upload.upload_id.rpartition("/")
        if folder:
            validate_key(folder)
        if not name.startswith(TEMP_PREFIX) or "\x00" in name or "\\" in name or "/" in name:
            raise RepositoryError(f"{upload.upload_id!r} is not an unfinished write in folder {self.root}.")
        path = self.root.joinpath(*folder.split("/"), name) if folder else self.root / name
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as error:
            raise self._write_error(error) from error
