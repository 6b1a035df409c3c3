"""Etags of a folder repository's objects: which file holds a version, not a hash of its bytes.

An object's etag is its file's inode, size and modification time (ns), so head() answers from one
stat and never reads the object. Every write makes a new file, and freed inode numbers come back
at once, so each new version is stamped, under the repository's flock, with a modification time
later than the one it replaces: no two versions of an object share an etag, even with identical
bytes (a rewrite always shows, as the lock's liveness check needs). The one gap: on a file system
that keeps whole seconds only (FAT, HFS+), an object deleted and created again within the same
second, with the same size, on the same inode, looks unchanged.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

#: How far past the replaced version's time a new version is stamped when the file system kept
#: less than the nanoseconds given (coarse timestamps): the first step it keeps wins.
_STAMP_STEPS = (1, 1_000, 1_000_000, 1_000_000_000, 2_000_000_000)


def etag(found: os.stat_result) -> str:
    """The etag of the version whose file `found` describes."""
    return f'"{found.st_ino:x}-{found.st_size:x}-{found.st_mtime_ns:x}"'


def fresh_stat(path: Path) -> os.stat_result | None:
    """The stat of the object file at `path` now (None: no such object), for conditional checks.
    The file is opened, never read: opening makes a network file system revalidate what it cached
    about the file (NFS's close-to-open), which a bare stat may not. Other errors raise OSError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        found = os.fstat(fd)
    finally:
        os.close(fd)
    return found if stat.S_ISREG(found.st_mode) else None


def stamp_after(temp: Path, previous: os.stat_result | None) -> os.stat_result:
    """Give the new version (still `temp`) a modification time later than `previous`'s (the
    version it replaces, if any); return its stat. Raises OSError."""
    before = previous.st_mtime_ns if previous is not None else None
    for step in _STAMP_STEPS:
        moment = time.time_ns() if before is None else max(time.time_ns(), before + step)
        os.utime(temp, ns=(moment, moment))
        found = os.stat(temp)
        if before is None or found.st_mtime_ns > before:
            break
    return found
