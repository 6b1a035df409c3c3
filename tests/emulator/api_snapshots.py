"""Snapshot endpoints: collection, shard and full snapshots; downloads, uploads and recovery.

Creation takes a point-in-time view first (writes landing afterwards are not in the archive;
see `EmulatorNode.during_snapshot`); recovery is in recovery.py.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import urlsplit

from tests.emulator import archive as archives
from tests.emulator import recovery
from tests.emulator.accounting import (
    ROUTE_COLLECTION_RECOVER,
    ROUTE_COLLECTION_SNAPSHOT,
    ROUTE_COLLECTION_SNAPSHOTS,
    ROUTE_COLLECTION_UPLOAD,
    ROUTE_FULL_SNAPSHOT,
    ROUTE_FULL_SNAPSHOTS,
    ROUTE_SHARD_RECOVER,
    ROUTE_SHARD_SNAPSHOT,
    ROUTE_SHARD_SNAPSHOTS,
    ROUTE_SHARD_STREAM,
    ROUTE_SHARD_UPLOAD,
)
from tests.emulator.config import PRIORITIES, validate_collection_name
from tests.emulator.errors import ApiError, bad_input, bad_request, forbidden, validation_error
from tests.emulator.httpio import multipart_boundary, save_multipart_file
from tests.emulator.routing import Request, Response, ok, route
from tests.emulator.snapshots import HEX64, check_local_checksum, hashes_equal, valid_snapshot_name
from tests.emulator.state import Collection


def _priority(value: Any, where: str) -> str:
    if value is None or value == "":
        return "snapshot"
    if value not in PRIORITIES:
        raise bad_request(f"{where} deserialize error: unknown variant `{value}`, expected one of "
                          "`no_sync`, `snapshot`, `replica`")
    return value


def _checksum(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not HEX64.match(value):
        raise validation_error(where, f"checksum: value {value} invalid, must be a 64 characters hex string")
    return value


def _check_url_recovery(req: Request, location: str) -> None:
    """`service.enable_snapshot_url_recovery: false` (Qdrant >= 1.18.0; older ones ignore the key)
    refuses http(s) locations with 403, inside the spawned work (snapshot_api.rs): with wait=false
    the call is accepted and the refusal only logged."""
    cluster = req.node.cluster
    if (not cluster.url_recovery and recovery.version_tuple(cluster.version) >= (1, 18, 0)
            and urlsplit(location).scheme.lower() in ("http", "https")):
        raise forbidden("Snapshot recovery from remote URLs is disabled in the configuration")


def _recover_body(req: Request) -> tuple[str, str, str | None, str | None]:
    body = req.json()
    location = body.get("location")
    if not isinstance(location, str) or not location:
        raise bad_request("Json deserialize error: missing field `location`")
    return (location, _priority(body.get("priority"), "Json"), _checksum(body.get("checksum"), "JSON body"),
            body.get("api_key"))


def _local_shard(req: Request, collection: Collection, shard_id: int):
    """The shard must have a replica on this node, in any state: Qdrant checks only that it is
    local (`ShardHolder::create_shard_snapshot`), so a Dead replica's stale data is snapshotted."""
    shard = collection.shards.get(shard_id)
    if shard is None:
        raise ApiError(404, f"Not found: shard {shard_id} not found")
    if req.node.index not in shard.replicas:
        raise bad_input(f"Shard {shard_id} is not a local or queue proxy shard")
    return shard


def _stream_response(chunks: Iterator[bytes], size: int | None) -> Response:
    return Response(200, chunks, size, "application/octet-stream")


def _receive_upload(req: Request, label: str) -> tuple[Path, Any]:
    """Spool the multipart `snapshot` field to a temp file while hashing it."""
    boundary = multipart_boundary(req.headers.get("Content-Type"))
    tmp = req.node.snapshots.temp_path(label)
    try:
        saved = save_multipart_file(req.body, boundary, "snapshot", tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if saved is None:
        tmp.unlink(missing_ok=True)
        raise bad_request("Multipart form field `snapshot` is missing")
    return tmp, saved


# ---------------------------------------------------------------------------------------------
# Collection snapshots


@route("POST", ROUTE_COLLECTION_SNAPSHOTS, write=True)
def create_snapshot(req: Request) -> Response:
    node = req.node
    name = req.params["collection"]
    return req.run(lambda: node.snapshots.create_collection_snapshot(node.state.resolve(name), requested=name))


@route("GET", ROUTE_COLLECTION_SNAPSHOTS)
def list_snapshots(req: Request) -> Response:
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    return ok(node.snapshots.list(node.snapshots.collection_dir(collection.name)), req.started)


@route("GET", ROUTE_COLLECTION_SNAPSHOT, plain_errors=True, kind="download")
def download_snapshot(req: Request) -> Response:
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    chunks, size = node.snapshots.stream(node.snapshots.collection_dir(collection.name), req.params["snapshot"])
    return _stream_response(chunks, size)


@route("DELETE", ROUTE_COLLECTION_SNAPSHOT, write=True)
def delete_snapshot(req: Request) -> Response:
    node = req.node
    name, snapshot = req.params["collection"], req.params["snapshot"]
    return req.run(lambda: node.snapshots.delete(
        node.snapshots.collection_dir(node.state.resolve(name).name), snapshot))


@route("PUT", ROUTE_COLLECTION_RECOVER, write=True)
def recover_snapshot(req: Request) -> Response:
    node = req.node
    name = req.params["collection"]
    validate_collection_name(name)
    location, priority, checksum, api_key = _recover_body(req)

    def work() -> bool:
        _check_url_recovery(req, location)
        with node.activity.recovering(name):  # the whole recover, download included (recover.rs)
            scheme = urlsplit(location).scheme.lower()
            if scheme in ("http", "https"):
                path = node.snapshots.fetch_url(location, api_key, checksum)
                try:
                    return recovery.recover_collection(node, name, archives.read_archive(path), priority)
                finally:
                    path.unlink(missing_ok=True)
            if scheme == "file":
                path = node.snapshots.local_file(location)
                check_local_checksum(path, checksum)
                return recovery.recover_collection(node, name, archives.read_archive(path), priority)
            raise bad_request(f"URL {location} with scheme {scheme or '(none)'} is not supported")

    return req.run(work)


@route("POST", ROUTE_COLLECTION_UPLOAD, write=True, kind="upload")
def upload_snapshot(req: Request) -> Response:
    node = req.node
    name = req.params["collection"]
    validate_collection_name(name)
    priority = _priority(req.query.get("priority"), "Query")
    checksum = _checksum(req.query.get("checksum"), "query params")
    req.flag("wait", True)
    tmp, saved = _receive_upload(req, "upload")

    def work() -> bool:
        try:
            if checksum and not hashes_equal(saved.sha256, checksum):
                raise ApiError(400, f"Checksum mismatch: expected {saved.sha256}, actual {checksum}")
            base = PurePosixPath((saved.filename or "").replace("\\", "/")).name
            if not base or base in (".", ".."):
                base = str(uuid.uuid4())
            directory = node.snapshots.collection_dir(name)
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / base
            os.replace(tmp, final)
            (directory / f"{base}.checksum").unlink(missing_ok=True)
            with node.snapshots.lock:
                node.snapshots.virtual.pop((str(directory), base), None)
        finally:
            tmp.unlink(missing_ok=True)
        with node.activity.recovering(name):
            return recovery.recover_collection(node, name, archives.read_archive(final), priority)

    return req.run(work)


# ---------------------------------------------------------------------------------------------
# Shard snapshots


@route("POST", ROUTE_SHARD_SNAPSHOTS, write=True)
def create_shard_snapshot(req: Request) -> Response:
    node = req.node
    name, shard_id = req.params["collection"], req.shard_id()

    def work() -> dict:
        collection = node.state.resolve(name)
        _local_shard(req, collection, shard_id)
        return node.snapshots.create_shard_snapshot(collection, shard_id)

    return req.run(work)


@route("GET", ROUTE_SHARD_SNAPSHOTS)
def list_shard_snapshots(req: Request) -> Response:
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    shard_id = req.shard_id()
    if shard_id not in collection.shards:
        raise ApiError(404, f"Not found: shard {shard_id} not found")
    if node.index not in collection.shards[shard_id].replicas:  # `assert_shard_is_local` (shard_holder/mod.rs)
        raise bad_input(f"Shard {shard_id} is not a local shard")
    return ok(node.snapshots.list(node.snapshots.shard_dir(collection.name, shard_id)), req.started)


@route("GET", ROUTE_SHARD_SNAPSHOT, plain_errors=True, kind="download")
def download_shard_snapshot(req: Request) -> Response:
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    shard_id = req.shard_id()
    _local_shard(req, collection, shard_id)
    chunks, size = node.snapshots.stream(node.snapshots.shard_dir(collection.name, shard_id), req.params["snapshot"])
    return _stream_response(chunks, size)


@route("DELETE", ROUTE_SHARD_SNAPSHOT, write=True)
def delete_shard_snapshot(req: Request) -> Response:
    node = req.node
    name, shard_id, snapshot = req.params["collection"], req.shard_id(), req.params["snapshot"]

    def work() -> bool:
        collection = node.state.resolve(name)
        _local_shard(req, collection, shard_id)  # `get_shard_snapshot_path`: even a shared bucket's object
        return node.snapshots.delete(node.snapshots.shard_dir(collection.name, shard_id), snapshot)

    return req.run(work)


@route("GET", ROUTE_SHARD_STREAM, plain_errors=True, kind="download")
def stream_shard_snapshot(req: Request) -> Response:
    """Build a shard snapshot on the fly and stream it chunked (nothing stored, no checksum)."""
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    shard_id = req.shard_id()
    _local_shard(req, collection, shard_id)
    synthetic = node.snapshots.synthetic_shard_archive(collection, shard_id)
    if synthetic is not None:
        return _stream_response(synthetic.iter_bytes(), None)
    tmp = node.snapshots.temp_path("stream")
    archives.write_archive(tmp, node.snapshots.shard_archive_members(collection, shard_id))

    def chunks() -> Iterator[bytes]:
        try:
            with open(tmp, "rb") as fh:
                while block := fh.read(1 << 20):
                    yield block
        finally:
            tmp.unlink(missing_ok=True)

    return _stream_response(chunks(), None)


def _shard_for_recovery(req: Request, name: str, shard_id: int) -> Collection:
    collection = req.node.state.resolve(name)
    if shard_id not in collection.shards:
        raise ApiError(404, f"Not found: shard {shard_id} not found")
    return collection


def _shard_archive(path: Path, shard_id: int) -> archives.ArchiveData:
    data = archives.read_archive(path)
    if data.kind == "shard":
        return archives.ArchiveData("shard", None, {}, {shard_id: data.shard_points.get(-1) or []}, None,
                                    {shard_id: data.shard_indexes.get(-1, {})}, source=data.source)
    return data


@route("PUT", ROUTE_SHARD_RECOVER, write=True)
def recover_shard_snapshot(req: Request) -> Response:
    node = req.node
    name, shard_id = req.params["collection"], req.shard_id()
    location, priority, checksum, api_key = _recover_body(req)

    def work() -> bool:
        _check_url_recovery(req, location)
        collection = _shard_for_recovery(req, name, shard_id)
        with recovery.shard_recovery_slot(node, collection.name, shard_id):
            scheme = urlsplit(location).scheme.lower()
            if scheme in ("http", "https"):
                path = node.snapshots.fetch_url(location, api_key, checksum)
            elif scheme:
                raise bad_input(f"Invalid snapshot URL {location}: URLs with {scheme} scheme are not supported")
            else:  # a bare name, read through the storage (S3 too)
                if not valid_snapshot_name(location):
                    raise ApiError(404, f"Not found: Snapshot {location} not found")
                _local_shard(req, collection, shard_id)  # `get_shard_snapshot_path`
                path = node.snapshots.fetch_by_name(node.snapshots.shard_dir(collection.name, shard_id), location,
                                                    checksum)
            try:
                return recovery.recover_shard(node, collection.name, shard_id, _shard_archive(path, shard_id),
                                              priority)
            finally:
                path.unlink(missing_ok=True)

    return req.run(work)


@route("POST", ROUTE_SHARD_UPLOAD, write=True, kind="upload")
def upload_shard_snapshot(req: Request) -> Response:
    node = req.node
    name, shard_id = req.params["collection"], req.shard_id()
    priority = _priority(req.query.get("priority"), "Query")
    checksum = _checksum(req.query.get("checksum"), "query params")
    req.flag("wait", True)
    collection = _shard_for_recovery(req, name, shard_id)
    tmp, saved = _receive_upload(req, "shard-upload")

    def work() -> bool:
        try:
            if checksum and not hashes_equal(saved.sha256, checksum):
                raise ApiError(400, f"Checksum mismatch: expected {saved.sha256}, actual {checksum}")
            # an upload does not queue behind other recoveries of the shard (snapshot_api.rs, 1.19.0)
            return recovery.recover_shard(node, collection.name, shard_id, _shard_archive(tmp, shard_id), priority)
        finally:
            tmp.unlink(missing_ok=True)

    return req.run(work)


# ---------------------------------------------------------------------------------------------
# Full snapshots


@route("POST", ROUTE_FULL_SNAPSHOTS, write=True)
def create_full_snapshot(req: Request) -> Response:
    return req.run(req.node.snapshots.create_full_snapshot)


@route("GET", ROUTE_FULL_SNAPSHOTS)
def list_full_snapshots(req: Request) -> Response:
    return ok(req.node.snapshots.list(req.node.snapshots.root), req.started)


@route("GET", ROUTE_FULL_SNAPSHOT, plain_errors=True, kind="download")
def download_full_snapshot(req: Request) -> Response:
    chunks, size = req.node.snapshots.stream(req.node.snapshots.root, req.params["snapshot"])
    return _stream_response(chunks, size)


@route("DELETE", ROUTE_FULL_SNAPSHOT, write=True)
def delete_full_snapshot(req: Request) -> Response:
    node = req.node
    snapshot = req.params["snapshot"]
    return req.run(lambda: node.snapshots.delete(node.snapshots.root, snapshot))
