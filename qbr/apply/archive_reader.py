"""A set's archives read point by point, offline: the source of a logical copy with
`copy_from: archive` (no source cluster needed, the set's data rather than the live one's).

qbr knows Qdrant's archive layout (which tar members belong to which shard) but never reads
Qdrant's segment files: only Qdrant's own engine can. That engine is `qdrant-edge-py` (module
`qdrant_edge`, the optional extra `pip install 'qbr[deep]'`), the one `qbr verify --deep` counts
points with (qbr.verify.engine), and it is chosen the same way, from QBR_COPY_ENGINE:

- unset or empty: Qdrant's engine when `qdrant_edge` is installed; otherwise a copy from
  archives stops with one sentence saying what to install;
- `module:attribute`: a class (or other callable taking no arguments) that returns a
  ShardReader, e.g. `qbr.apply.archive_reader:QdrantEdgeReader`. The tests name their
  emulator's reader this way.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tarfile
import threading
from pathlib import Path
from typing import Any, Protocol

from qbr.errors import ChecksumError, QbrError
from qbr.plugins import load_plugin
from qbr.records import CollectionRecord

ENGINE_ENV = "QBR_COPY_ENGINE"
ENGINE_MODULE = "qdrant_edge"


class ShardPages(Protocol):
    """One opened shard: its points page by page in Qdrant's id order."""

    def scroll(self, offset: Any, limit: int) -> tuple[list[dict], Any]:
        """(points as {"id", "vector", "payload"}, the next page's offset or None after the last)."""

    def close(self) -> None: ...


class ShardReader(Protocol):
    """Opens a shard snapshot (an uncompressed tar in Qdrant's shard snapshot layout: `segments/`,
    `replica_state.json`, ... at its root) using `scratch`, a path not yet created that it may
    fill. May be called from several threads at once."""

    name: str  # who reads, as a sentence's subject: "Qdrant's engine"

    def open(self, shard_snapshot: Path, scratch: Path) -> ShardPages: ...


class QdrantEdgeReader:
    """Qdrant's engine: unpack the shard snapshot, load the shard, scroll it."""

    name = "Qdrant's engine"

    def __init__(self, edge: Any | None = None) -> None:
        self.edge = edge if edge is not None else importlib.import_module(ENGINE_MODULE)

    def open(self, shard_snapshot: Path, scratch: Path) -> ShardPages:
        self.edge.EdgeShard.unpack_snapshot(str(shard_snapshot), str(scratch))
        return _EdgePages(self.edge, self.edge.EdgeShard.load(str(scratch)))


class _EdgePages:
    def __init__(self, edge: Any, shard: Any) -> None:
        self.edge, self.shard = edge, shard

    def scroll(self, offset: Any, limit: int) -> tuple[list[dict], Any]:
        request = self.edge.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=True)
        records, after = self.shard.scroll(request)
        points = [{"id": _plain_id(r.id), "vector": _plain(r.vector), "payload": _plain(r.payload) or {}} for r in records]
        return points, None if after is None else _plain_id(after)

    def close(self) -> None:
        self.shard.close()


def _plain_id(point_id: Any) -> Any:
    return point_id if isinstance(point_id, int) and not isinstance(point_id, bool) else str(point_id)


def _plain(value: Any) -> Any:
    """The engine's values as JSON data: lists, dicts, and sparse vectors as {indices, values}."""
    if hasattr(value, "indices") and hasattr(value, "values") and not isinstance(value, dict):
        return {"indices": list(value.indices), "values": [float(v) for v in value.values]}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [_plain(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    return value


COPY_FROM_ARCHIVE = ("a logical copy with copy_from: archive reads the archives", "set copy_from: live")


def choose_reader(setting: str | None = None, why: tuple[str, str] = COPY_FROM_ARCHIVE) -> ShardReader:
    """The ShardReader QBR_COPY_ENGINE names (`setting` overrides it), else Qdrant's engine.
    `why`: what needs it, and what else the user can do, for the sentence when it is missing."""
    setting = (os.environ.get(ENGINE_ENV, "") if setting is None else setting).strip()
    if not setting:
        try:
            return QdrantEdgeReader()
        except Exception:  # absent, or built for another platform
            raise QbrError(
                f"{why[0]} with Qdrant's engine, which is not installed here: install qdrant-edge-py "
                f"(pip install 'qbr[deep]'), or {why[1]}"
            ) from None
    return load_plugin(ENGINE_ENV, setting, "open", "shard_snapshot, scratch")

class ArchiveShards:
    """The shards of one collection of a set, as shard snapshots on local disk: each archive is
    downloaded once (its sha256 checked against the set), each shard's folder of a collection
    archive re-packed as a shard snapshot on first use. Thread-safe; `scratch` must exist."""

    def __init__(self, repo: Any, record: CollectionRecord, scratch: Path) -> None:
        self.repo, self.record, self.scratch = repo, record, scratch
        self._lock = threading.Lock()
        self._locks: dict[int, threading.Lock] = {}
        self._ready: dict[int, Path] = {}
        self._downloaded: dict[str, Path] = {}

    def shard_ids(self) -> list[int]:
        """Every shard some archive holds data of, once (a shard on several nodes: the first archive)."""
        return sorted({s for archive in self.record.archives for s in archive.shard_ids})

    def snapshot(self, shard_id: int) -> Path:
        with self._lock:
            lock = self._locks.setdefault(shard_id, threading.Lock())
        with lock:
            if shard_id not in self._ready:
                self._ready[shard_id] = self._extract(shard_id)
            return self._ready[shard_id]

    def _extract(self, shard_id: int) -> Path:
        for index, archive in enumerate(self.record.archives):
            if shard_id not in archive.shard_ids:
                continue
            path = self._download(index)
            if archive.kind == "shard":
                return path
            out = self.scratch / f"shard-{shard_id}.tar"
            prefix = f"{shard_id}/"
            found = False
            with tarfile.open(path, "r:") as tar, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as packed:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if not name.startswith(prefix) or name == prefix:
                        continue
                    member.name = name[len(prefix):]
                    found = found or member.name.startswith("segments")
                    packed.addfile(member, tar.extractfile(member) if member.isfile() else None)
            if found:
                return out
        raise QbrError(
            f"no archive of collection {self.record.name} holds the data of shard {shard_id}; it cannot be copied from the set"
        )

    def _download(self, index: int) -> Path:
        archive = self.record.archives[index]
        with self._lock:
            known = self._downloaded.get(archive.key)
        if known is not None:
            return known
        path = self.scratch / f"archive-{index}.tar"
        digest = hashlib.sha256()
        from qbr.apply.at_rest import plaintext  # an encrypted archive: decrypted with the run's identity

        with plaintext(self.repo, archive, f"archive {archive.key}") as chunks, path.open("wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        if archive.sha256 and digest.hexdigest() != archive.sha256:
            raise ChecksumError(f"archive {archive.key} does not match the sha256 its set recorded; it is damaged (run qbr verify)")
        with self._lock:
            self._downloaded[archive.key] = path
        return path
