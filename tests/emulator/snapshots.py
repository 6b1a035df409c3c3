"""One node's snapshot storage, laid out like Qdrant's `snapshots_path`.

    <snapshots>/<collection>/<name>.snapshot (+ .checksum)       collection snapshots, uploads
    <snapshots>/<collection>/shards/<id>/<name>.snapshot           shard snapshots
    <snapshots>/full-snapshot-<ts>.snapshot                        full snapshots

Synthetic snapshots are "virtual": they have no file, their bytes are generated on download.

With server-side S3 storage (`self.s3`, s3storage.py) the same paths are object keys in the
cluster's bucket: creation uploads there, list/download/delete go there; uploads for recovery
and `file://` recovery still use the local directory, as in Qdrant.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tests.emulator import archive as archives
from tests.emulator import edge_archive
from tests.emulator.errors import ApiError, bad_request, forbidden
from tests.emulator.s3storage import S3Store
from tests.emulator.state import Collection

if TYPE_CHECKING:
    from tests.emulator.cluster import EmulatorNode

READ_BLOCK = 1 << 20
HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d-%H-%M-%S")


def naive_iso(timestamp: float) -> str:
    return datetime.fromtimestamp(int(timestamp), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def hashes_equal(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def valid_snapshot_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and ".." not in name and "\0" not in name


def safe_url(url: str) -> str:
    """A URL without query or credentials, fit for an error message (presigned URLs carry secrets)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class _IterReader:
    """A file-like `read` over a byte generator (to add a generated member to a tar)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.pending = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.pending) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.pending += chunk
        if n < 0:
            out, self.pending = self.pending, b""
        else:
            out, self.pending = self.pending[:n], self.pending[n:]
        return out


class SnapshotStore:
    def __init__(self, node: EmulatorNode, root: Path, tmp: Path):
        self.node = node
        self.root = root
        self.tmp = tmp
        self.virtual: dict[tuple[str, str], tuple[archives.SyntheticArchive, str, str]] = {}
        self.lock = threading.Lock()
        self.s3: S3Store | None = None  # server-side S3 storage, set by the cluster

    def key(self, directory: Path, name: str = "") -> str:
        """The S3 object key of a place (or a file) below the snapshots directory."""
        return self.s3.settings.key(directory.relative_to(self.root).as_posix(), name)

    # -- places -----------------------------------------------------------------------------
    def collection_dir(self, collection: str) -> Path:
        return self.root / collection

    def shard_dir(self, collection: str, shard_id: int) -> Path:
        return self.root / collection / "shards" / str(shard_id)

    def temp_path(self, label: str) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return self.tmp / f"{label}-{uuid.uuid4().hex}.tmp"

    # -- descriptions -----------------------------------------------------------------------
    def describe(self, directory: Path, name: str) -> dict | None:
        with self.lock:
            virtual = self.virtual.get((str(directory), name))
        if virtual is not None:
            synthetic, created, checksum = virtual
            return {"name": name, "creation_time": created, "size": synthetic.size, "checksum": checksum}
        path = directory / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        description = {"name": name, "creation_time": naive_iso(st.st_mtime), "size": st.st_size}
        sidecar = directory / f"{name}.checksum"
        if sidecar.is_file():
            description["checksum"] = sidecar.read_text().strip()
        return description

    def list(self, directory: Path) -> list[dict]:
        if self.s3 is not None:
            return self.s3.list(self.key(directory))
        names: list[str] = []
        if directory.is_dir():
            names = [e.name for e in os.scandir(directory) if e.is_file() and e.name.endswith(".snapshot")]
        with self.lock:
            names += [n for (d, n) in self.virtual if d == str(directory) and n not in names]
        return [d for d in (self.describe(directory, n) for n in names) if d is not None]

    def delete(self, directory: Path, name: str) -> bool:
        if not valid_snapshot_name(name):
            raise ApiError(404, f"Not found: Snapshot {name} not found")
        if self.s3 is not None:
            return self.s3.delete(self.key(directory, name))
        with self.lock:
            virtual = self.virtual.pop((str(directory), name), None)
        path = directory / name
        if virtual is None and not path.is_file():
            raise ApiError(404, f"Not found: Snapshot {name} not found")
        path.unlink(missing_ok=True)
        (directory / f"{name}.checksum").unlink(missing_ok=True)
        return True

    def stream(self, directory: Path, name: str) -> tuple[Iterator[bytes], int | None]:
        """The bytes of a stored snapshot and their length (plain-text 404 when missing); from S3
        the length is None: Qdrant streams the object through, chunked."""
        if not valid_snapshot_name(name):
            raise ApiError(404, f"Not found: Snapshot {name} not found", plain=True)
        if self.s3 is not None:
            return self.s3.open(self.key(directory, name))[0], None
        with self.lock:
            virtual = self.virtual.get((str(directory), name))
        if virtual is not None:
            return virtual[0].iter_bytes(), virtual[0].size
        path = directory / name
        try:
            fh = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ApiError(404, f"Not found: Snapshot {name} not found", plain=True) from None
        size = os.fstat(fh.fileno()).st_size

        def chunks() -> Iterator[bytes]:
            with fh:
                while block := fh.read(READ_BLOCK):
                    yield block

        return chunks(), size

    # -- creation ---------------------------------------------------------------------------
    def _commit(self, directory: Path, name: str, write) -> dict:
        """Write to a temp file, then the .checksum sidecar, then rename (what Qdrant does)."""
        if self.s3 is not None:
            return self._commit_s3(directory, name, write)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            write(tmp)
            checksum = sha256_file(tmp)
            (directory / f"{name}.checksum").write_text(checksum)
            os.replace(tmp, directory / name)
        finally:
            tmp.unlink(missing_ok=True)
        with self.lock:
            self.virtual.pop((str(directory), name), None)
        return self.describe(directory, name)

    def _commit_s3(self, directory: Path, name: str, write) -> dict:
        """Build in the temp dir, multipart-upload, remove the local file (`SnapshotStorageCloud::store_file`)."""
        tmp = self.temp_path("s3-upload")
        try:
            write(tmp)
            with open(tmp, "rb") as fh:
                return self._store_s3(directory, name, iter(lambda: fh.read(READ_BLOCK), b""), tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def _store_s3(self, directory: Path, name: str, chunks, tmp: Path) -> dict:
        try:
            return self.s3.store(chunks, self.key(directory, name))
        except ApiError as err:
            if directory.parent != self.root:
                raise
            raise ApiError(500, f"Service internal error: failed to store snapshot archive to {tmp}: "
                                f"{err.message}") from None  # Collection::create_snapshot

    def _commit_virtual(self, directory: Path, name: str, synthetic: archives.SyntheticArchive) -> dict:
        if self.s3 is not None:
            return self._store_s3(directory, name, synthetic.iter_bytes(), self.tmp / f"{name}-arc-{uuid.uuid4().hex[:6]}")
        checksum = synthetic.sha256()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).unlink(missing_ok=True)
        (directory / f"{name}.checksum").unlink(missing_ok=True)
        with self.lock:
            self.virtual[(str(directory), name)] = (synthetic, naive_iso(datetime.now(timezone.utc).timestamp()),
                                                    checksum)
        return self.describe(directory, name)

    def synthetic_collection_archive(self, collection: Collection) -> archives.SyntheticArchive | None:
        shard = collection.shards.get(0)
        if collection.synthetic_size is None or shard is None or self.node.index not in shard.replicas:
            return None
        state = self.node.state
        return archives.synthetic_collection_archive(collection.config, shard.replicas, state.peer_ids,
                                                     self.node.index, collection.synthetic_size, collection.name)

    def create_collection_snapshot(self, collection: Collection, requested: str | None = None) -> dict:
        """Take the point-in-time view, then write it: what lands in between is not in the archive."""
        node = self.node
        name = f"{collection.name}-{node.peer_id}-{utc_stamp()}.snapshot"
        directory = self.collection_dir(collection.name)
        with node.activity.creating(requested or collection.name):
            synthetic = self.synthetic_collection_archive(collection)
            if synthetic is not None:
                node.activity.after_snapshot_view(node, collection.name, None)
                return self._commit_virtual(directory, name, synthetic)
            if node.state.engine is not None:
                return self._commit(directory, name, lambda tmp: self._edge_write(collection, None, tmp))
            config, payload_schema, shards, mapping = node.state.snapshot_view(collection, node.index)
            node.activity.after_snapshot_view(node, collection.name, None)
            members = archives.collection_members(config, payload_schema, shards, node.state.peer_ids, node.index,
                                                  shard_key_mapping=mapping)
            return self._commit(directory, name, lambda tmp: archives.write_archive(tmp, members))

    def shard_archive_members(self, collection: Collection, shard_id: int) -> list:
        """A shard snapshot's members from this node's replica, whatever its state."""
        node = self.node
        _, _, shards, _ = node.state.snapshot_view(collection, node.index)
        node.activity.after_snapshot_view(node, collection.name, shard_id)
        view = shards[shard_id]
        return archives.shard_members("", shard_id, view.replicas, node.state.peer_ids, node.index,
                                      view.points or [], states=view.states, indexes=view.indexes)

    def synthetic_shard_archive(self, collection: Collection, shard_id: int) -> archives.SyntheticArchive | None:
        if collection.synthetic_size is None or shard_id != 0:
            return None
        shard = collection.shards[0]
        return archives.synthetic_shard_archive(shard.replicas, self.node.state.peer_ids, self.node.index,
                                                collection.synthetic_size, f"{collection.name}/shard")

    def create_shard_snapshot(self, collection: Collection, shard_id: int) -> dict:
        name = f"{collection.name}-shard-{shard_id}-{utc_stamp()}.snapshot"
        directory = self.shard_dir(collection.name, shard_id)
        synthetic = self.synthetic_shard_archive(collection, shard_id)
        if synthetic is not None:
            return self._commit_virtual(directory, name, synthetic)
        if self.node.state.engine is not None:
            return self._commit(directory, name, lambda tmp: self._edge_write(collection, shard_id, tmp))
        members = self.shard_archive_members(collection, shard_id)
        return self._commit(directory, name, lambda tmp: archives.write_archive(tmp, members))

    def _edge_write(self, collection: Collection, shard_id: int | None, tmp: Path) -> None:
        """Edge mode: the archive is written at a point in time (under the state's lock), then the
        moving-world hooks run, before it is committed."""
        if shard_id is None:
            edge_archive.write_collection_snapshot(self.node, collection, tmp)
        else:
            edge_archive.write_shard_snapshot(self.node, collection, shard_id, tmp)
        self.node.activity.after_snapshot_view(self.node, collection.name, shard_id)

    def create_full_snapshot(self) -> dict:
        state = self.node.state
        with state.lock:
            collections = list(state.collections.values())
            aliases = dict(state.aliases)
        parts = []
        for collection in collections:
            description = self.create_collection_snapshot(collection)
            parts.append((collection.name, description["name"]))
        config = {"collections_mapping": dict(parts), "collections_aliases": aliases}

        def write(tmp: Path) -> None:
            archives.write_archive(tmp, [("config.json", archives._json_bytes(config))])
            with tarfile.open(tmp, "a", format=tarfile.GNU_FORMAT) as tar:
                for collection_name, snapshot_name in parts:
                    chunks, size = self.stream(self.collection_dir(collection_name), snapshot_name)
                    if size is None:
                        size = self.s3.size(self.key(self.collection_dir(collection_name), snapshot_name))
                    info = tarfile.TarInfo(snapshot_name)
                    info.size = size
                    tar.addfile(info, _IterReader(chunks))

        return self._commit(self.root, f"full-snapshot-{utc_stamp()}.snapshot", write)

    def fetch_by_name(self, directory: Path, name: str, checksum: str | None) -> Path:
        """A stored snapshot in a temp file, for a shard recover by bare name (`get_snapshot_file`).

        With a checksum, Qdrant 1.19 hashes the snapshot at its *local* path
        (src/common/snapshots.rs, `recover_shard_snapshot`): in S3 mode there is no such file, so
        the recover fails with 500 after the download.
        """
        if self.s3 is None:
            path = self.spool_virtual(directory, name)
            try:
                check_local_checksum(path, checksum)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return path
        tmp = self.temp_path("s3-download")
        try:
            self.s3.download_to(self.key(directory, name), tmp)
            if checksum:
                local = directory / name
                try:
                    computed = sha256_file(local)
                except OSError as err:
                    raise ApiError(500, f"Service internal error: failed to open file `{local}`: "
                                        f"{err.strerror} (os error {err.errno})") from None
                if not hashes_equal(computed, checksum):
                    raise ApiError(400, f"Wrong input: Snapshot checksum mismatch: expected {checksum}, "
                                        f"got {computed}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def spool_virtual(self, directory: Path, name: str) -> Path:
        """Write a stored (possibly virtual) snapshot to a temp file, for recovery by name."""
        chunks, _ = self.stream(directory, name)
        tmp = self.temp_path("spool")
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        return tmp

    # -- recovery sources -------------------------------------------------------------------
    def fetch_url(self, url: str, api_key: str | None, checksum: str | None) -> Path:
        """Download `url` to a temp file (the server-side fetch of URL recovery), checking `checksum`."""
        headers = {"api-key": api_key} if api_key else {}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        tmp = self.temp_path("download")
        digest = hashlib.sha256()
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=120) as response, \
                    open(tmp, "wb") as fh:
                expected = response.headers.get("Content-Length")
                received = 0
                while block := response.read(READ_BLOCK):
                    fh.write(block)
                    digest.update(block)
                    received += len(block)
                if expected is not None and received != int(expected):
                    raise http.client.IncompleteRead(b"", int(expected) - received)
        except urllib.error.HTTPError as err:
            tmp.unlink(missing_ok=True)
            raise bad_request(f"Failed to download snapshot from {safe_url(url)}: HTTP {err.code}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            tmp.unlink(missing_ok=True)
            raise bad_request(f"Failed to download snapshot from {safe_url(url)}: {err}") from None
        if checksum and not hashes_equal(digest.hexdigest(), checksum):
            tmp.unlink(missing_ok=True)
            raise ApiError(400, f"Snapshot checksum mismatch: expected {checksum}, got {digest.hexdigest()}")
        return tmp

    def local_file(self, location: str) -> Path:
        """A `file://` location, confined to this node's snapshots directory (Qdrant >= 1.17.1)."""
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(location).path))
        resolved = Path(os.path.realpath(path))
        root = Path(os.path.realpath(self.root))
        if root != resolved and root not in resolved.parents:
            raise forbidden("Snapshot file path must be inside the snapshots directory")
        if not resolved.is_file():
            raise bad_request(f"Snapshot file {str(path)!r} does not exist")
        return resolved


def check_local_checksum(path: Path, checksum: str | None) -> None:
    if checksum:
        computed = sha256_file(path)
        if not hashes_equal(computed, checksum):
            raise ApiError(400, f"Snapshot checksum mismatch: expected {checksum}, got {computed}")
