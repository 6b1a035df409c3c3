"""The REST endpoints of one emulator node: routing, auth, envelopes and the handlers themselves."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from tests.emulator import archive as archives
from tests.emulator.errors import ApiError, bad_request, forbidden, validation_error
from tests.emulator.httpio import BodyReader, multipart_boundary, read_all, save_multipart_file
from tests.emulator.snapshots import HEX64, check_local_checksum, hashes_equal, valid_snapshot_name
from tests.emulator.state import PRIORITIES, Collection, validate_collection_name

if TYPE_CHECKING:
    from tests.emulator.cluster import EmulatorNode

AUTH_WHITELIST = re.compile(r"^/(healthz|readyz.*|livez.*)?$")
COMMIT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3d4"


# ---------------------------------------------------------------------------------------------
# Requests and responses


@dataclass
class Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    length: int | None = 0  # None: chunked transfer
    content_type: str | None = "application/json"
    headers: dict = field(default_factory=dict)

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.body, (bytes, bytearray)):
            if self.body:
                yield bytes(self.body)
        else:
            yield from self.body


def json_response(status: int, payload: Any, headers: dict | None = None) -> Response:
    data = json.dumps(payload).encode()
    return Response(status, data, len(data), "application/json", dict(headers or {}))


def text_response(status: int, text: str, headers: dict | None = None) -> Response:
    data = text.encode()
    return Response(status, data, len(data), "text/plain; charset=utf-8", dict(headers or {}))


def elapsed(started: float) -> float:
    return round(time.monotonic() - started, 6)


def ok(result: Any, started: float) -> Response:
    return json_response(200, {"result": result, "status": "ok", "time": elapsed(started)})


def accepted(started: float) -> Response:
    return json_response(202, {"status": "accepted", "time": elapsed(started)})


def error_response(err: ApiError, started: float) -> Response:
    if err.plain:
        return text_response(err.status, err.message, err.headers)
    return json_response(err.status, {"status": {"error": err.message}, "time": elapsed(started)}, err.headers)


@dataclass
class Request:
    node: EmulatorNode
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: BodyReader
    started: float
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict:
        raw = read_all(self.body)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise bad_request(f"Json deserialize error: {err}") from None
        if not isinstance(value, dict):
            raise bad_request("Json deserialize error: expected a JSON object")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise bad_request(f"Query deserialize error: invalid value {value!r} for `{name}`, expected a boolean")

    def shard_id(self) -> int:
        raw = self.params["shard_id"]
        if not raw.isdigit():
            raise ApiError(404, f"can not parse \"{raw}\" to a u32")
        return int(raw)

    def run(self, work: Callable[[], Any]) -> Response:
        """Qdrant's `time_or_accept`: answer the result (wait=true) or 202 while it runs in the background."""
        if self.flag("wait", True):
            return ok(work(), self.started)
        self.node.run_background(work)
        return accepted(self.started)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern
    handler: Callable[..., Response]
    write: bool  # needs read-write (manage) access
    plain_errors: bool = False  # binary endpoints answer plain-text errors


ROUTES: list[Route] = []


def route(method: str, template: str, *, write: bool = False, plain_errors: bool = False):
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "/?$"

    def register(fn: Callable[..., Response]) -> Callable[..., Response]:
        ROUTES.append(Route(method, re.compile(regex), fn, write, plain_errors))
        return fn

    return register


def dispatch(node: EmulatorNode, method: str, path: str, query: dict, headers, body: BodyReader,
             started: float) -> Response:
    matched: Route | None = None
    params: dict[str, str] = {}
    for candidate in ROUTES:
        if candidate.method != method:
            continue
        m = candidate.pattern.match(path)
        if m:
            matched, params = candidate, {k: unquote(v) for k, v in m.groupdict().items()}
            break
    authorize(node, path, headers, matched)
    if matched is None:
        return text_response(404, "")
    request = Request(node, method, path, query, headers, body, started, params)
    try:
        return matched.handler(request)
    except ApiError as err:
        if matched.plain_errors:
            err.plain = True
        raise


def authorize(node: EmulatorNode, path: str, headers, matched: Route | None) -> None:
    """Qdrant's auth middleware: api-key header or bearer token; read-only keys cannot manage."""
    api_key = node.cluster.api_key
    read_only_key = node.cluster.read_only_api_key
    if not api_key and not read_only_key:
        return
    if AUTH_WHITELIST.match(path):
        return
    provided = headers.get("api-key")
    if provided is None:
        authorization = headers.get("Authorization") or ""
        if authorization.lower().startswith("bearer "):
            provided = authorization[7:].strip()
    if not provided:
        raise ApiError(401, "Must provide an API key or an Authorization bearer token", plain=True)
    if api_key and provided == api_key:
        return
    if read_only_key and provided == read_only_key:
        if matched is not None and matched.write:
            raise forbidden("Global manage access is required")
        return
    raise ApiError(401, "Invalid API key or JWT", plain=True)


# ---------------------------------------------------------------------------------------------
# Service


@route("GET", "/")
def root(req: Request) -> Response:
    return json_response(200, {"title": "qdrant - vector search engine", "version": req.node.cluster.version,
                               "commit": COMMIT})


@route("GET", "/healthz")
@route("GET", "/livez")
def healthz(req: Request) -> Response:
    return text_response(200, "healthz check passed")


@route("GET", "/readyz")
def readyz(req: Request) -> Response:
    return text_response(200, "all shards are ready")


@route("GET", "/cluster")
def cluster_status(req: Request) -> Response:
    node = req.node
    state = node.state
    if not state.distributed:
        return ok({"status": "disabled"}, req.started)
    leader = state.peer_ids[state.node_indexes[0]]
    return ok({
        "status": "enabled",
        "peer_id": node.peer_id,
        "peers": {str(state.peer_ids[i]): {"uri": node.cluster.p2p_uri(i)} for i in state.node_indexes},
        "raft_info": {
            "term": 1,
            "commit": state.commit,
            "pending_operations": 0,
            "leader": leader,
            "role": "Leader" if node.peer_id == leader else "Follower",
            "is_voter": True,
        },
        "consensus_thread_status": {"consensus_thread_status": "working",
                                    "last_update": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())},
        "message_send_failures": {},
    }, req.started)


# ---------------------------------------------------------------------------------------------
# Collections and aliases


@route("GET", "/collections")
def list_collections(req: Request) -> Response:
    with req.node.state.lock:
        names = list(req.node.state.collections)
    return ok({"collections": [{"name": n} for n in names]}, req.started)


@route("GET", "/aliases")
def list_aliases(req: Request) -> Response:
    return ok({"aliases": req.node.state.alias_list()}, req.started)


@route("POST", "/collections/aliases", write=True)
def update_aliases(req: Request) -> Response:
    body = req.json()
    return ok(req.node.state.update_aliases(body.get("actions", [])), req.started)


@route("GET", "/collections/{collection}")
def get_collection(req: Request) -> Response:
    state = req.node.state
    return ok(state.collection_info(state.resolve(req.params["collection"])), req.started)


@route("PUT", "/collections/{collection}", write=True)
def create_collection(req: Request) -> Response:
    body = req.json()
    req.node.state.create_collection(req.params["collection"], body)
    return ok(True, req.started)


@route("PATCH", "/collections/{collection}", write=True)
def update_collection(req: Request) -> Response:
    return ok(req.node.state.update_collection(req.params["collection"], req.json()), req.started)


@route("DELETE", "/collections/{collection}", write=True)
def delete_collection(req: Request) -> Response:
    return ok(req.node.state.delete_collection(req.params["collection"]), req.started)


@route("GET", "/collections/{collection}/exists")
def collection_exists(req: Request) -> Response:
    try:
        req.node.state.resolve(req.params["collection"])
        exists = True
    except ApiError:
        exists = False
    return ok({"exists": exists}, req.started)


@route("GET", "/collections/{collection}/aliases")
def collection_aliases(req: Request) -> Response:
    return ok({"aliases": req.node.state.alias_list(req.params["collection"])}, req.started)


@route("GET", "/collections/{collection}/cluster")
def collection_cluster(req: Request) -> Response:
    node = req.node
    state = node.state
    collection = state.resolve(req.params["collection"])
    local, remote = [], []
    with state.lock:
        for sid, shard in sorted(collection.shards.items()):
            if node.index in shard.replicas:
                local.append({"shard_id": sid, "points_count": len(shard.points), "state": "Active"})
            for replica in shard.replicas:
                if replica != node.index:
                    remote.append({"shard_id": sid, "peer_id": state.peer_ids[replica], "state": "Active"})
    return ok({"peer_id": node.peer_id, "shard_count": len(collection.shards), "local_shards": local,
               "remote_shards": remote, "shard_transfers": []}, req.started)


# ---------------------------------------------------------------------------------------------
# Points


@route("PUT", "/collections/{collection}/points", write=True)
def upsert_points(req: Request) -> Response:
    result = req.node.state.upsert(req.params["collection"], req.json())
    if not req.flag("wait", False):
        result["status"] = "acknowledged"
    return ok(result, req.started)


@route("POST", "/collections/{collection}/points/delete", write=True)
def delete_points(req: Request) -> Response:
    result = req.node.state.delete_points(req.params["collection"], req.json())
    if not req.flag("wait", False):
        result["status"] = "acknowledged"
    return ok(result, req.started)


@route("POST", "/collections/{collection}/points/scroll")
def scroll_points(req: Request) -> Response:
    return ok(req.node.state.scroll(req.params["collection"], req.json()), req.started)


@route("POST", "/collections/{collection}/points/count")
def count_points(req: Request) -> Response:
    return ok(req.node.state.count(req.params["collection"], req.json()), req.started)


@route("POST", "/collections/{collection}/points")
def retrieve_points(req: Request) -> Response:
    body = req.json()
    if not isinstance(body.get("ids"), list):
        raise bad_request("Json deserialize error: missing field `ids`")
    return ok(req.node.state.retrieve(req.params["collection"], body["ids"], body.get("with_payload", True),
                                      body.get("with_vector", False)), req.started)


@route("GET", "/collections/{collection}/points/{point_id}")
def get_point(req: Request) -> Response:
    raw = req.params["point_id"]
    point_id: Any = int(raw) if raw.isdigit() else raw
    found = req.node.state.retrieve(req.params["collection"], [point_id], True, True)
    if not found:
        raise ApiError(404, f"Not found: No point with id {raw} found")
    return ok(found[0], req.started)


# ---------------------------------------------------------------------------------------------
# Snapshot helpers


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


def _recover_body(req: Request) -> tuple[str, str, str | None, str | None]:
    body = req.json()
    location = body.get("location")
    if not isinstance(location, str) or not location:
        raise bad_request("Json deserialize error: missing field `location`")
    return (location, _priority(body.get("priority"), "Json"), _checksum(body.get("checksum"), "JSON body"),
            body.get("api_key"))


def _local_shard(req: Request, collection: Collection, shard_id: int):
    shard = collection.shards.get(shard_id)
    if shard is None:
        raise ApiError(404, f"Not found: shard {shard_id} not found")
    if req.node.index not in shard.replicas:
        raise bad_request(f"Shard {shard_id} is not a local or queue proxy shard")
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


@route("POST", "/collections/{collection}/snapshots", write=True)
def create_snapshot(req: Request) -> Response:
    node = req.node
    name = req.params["collection"]
    return req.run(lambda: node.snapshots.create_collection_snapshot(node.state.resolve(name)))


@route("GET", "/collections/{collection}/snapshots")
def list_snapshots(req: Request) -> Response:
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    return ok(node.snapshots.list(node.snapshots.collection_dir(collection.name)), req.started)


@route("GET", "/collections/{collection}/snapshots/{snapshot}", plain_errors=True)
def download_snapshot(req: Request) -> Response:
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    chunks, size = node.snapshots.stream(node.snapshots.collection_dir(collection.name), req.params["snapshot"])
    return _stream_response(chunks, size)


@route("DELETE", "/collections/{collection}/snapshots/{snapshot}", write=True)
def delete_snapshot(req: Request) -> Response:
    node = req.node
    name, snapshot = req.params["collection"], req.params["snapshot"]
    return req.run(lambda: node.snapshots.delete(
        node.snapshots.collection_dir(node.state.resolve(name).name), snapshot))


@route("PUT", "/collections/{collection}/snapshots/recover", write=True)
def recover_snapshot(req: Request) -> Response:
    node = req.node
    name = req.params["collection"]
    validate_collection_name(name)
    location, priority, checksum, api_key = _recover_body(req)

    def work() -> bool:
        scheme = urlsplit(location).scheme.lower()
        if scheme in ("http", "https"):
            path = node.snapshots.fetch_url(location, api_key, checksum)
            try:
                return node.state.recover_collection(name, node.index, archives.read_archive(path), priority)
            finally:
                path.unlink(missing_ok=True)
        if scheme == "file":
            path = node.snapshots.local_file(location)
            check_local_checksum(path, checksum)
            return node.state.recover_collection(name, node.index, archives.read_archive(path), priority)
        raise bad_request(f"URL {location} with schema {scheme or '(none)'} is not supported")

    return req.run(work)


@route("POST", "/collections/{collection}/snapshots/upload", write=True)
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
        return node.state.recover_collection(name, node.index, archives.read_archive(final), priority)

    return req.run(work)


# ---------------------------------------------------------------------------------------------
# Shard snapshots


@route("POST", "/collections/{collection}/shards/{shard_id}/snapshots", write=True)
def create_shard_snapshot(req: Request) -> Response:
    node = req.node
    name, shard_id = req.params["collection"], req.shard_id()

    def work() -> dict:
        collection = node.state.resolve(name)
        _local_shard(req, collection, shard_id)
        return node.snapshots.create_shard_snapshot(collection, shard_id)

    return req.run(work)


@route("GET", "/collections/{collection}/shards/{shard_id}/snapshots")
def list_shard_snapshots(req: Request) -> Response:
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    shard_id = req.shard_id()
    if shard_id not in collection.shards:
        raise ApiError(404, f"Not found: shard {shard_id} not found")
    return ok(node.snapshots.list(node.snapshots.shard_dir(collection.name, shard_id)), req.started)


@route("GET", "/collections/{collection}/shards/{shard_id}/snapshots/{snapshot}", plain_errors=True)
def download_shard_snapshot(req: Request) -> Response:
    node = req.node
    collection = node.state.resolve(req.params["collection"])
    shard_id = req.shard_id()
    _local_shard(req, collection, shard_id)
    chunks, size = node.snapshots.stream(node.snapshots.shard_dir(collection.name, shard_id), req.params["snapshot"])
    return _stream_response(chunks, size)


@route("DELETE", "/collections/{collection}/shards/{shard_id}/snapshots/{snapshot}", write=True)
def delete_shard_snapshot(req: Request) -> Response:
    node = req.node
    name, shard_id, snapshot = req.params["collection"], req.shard_id(), req.params["snapshot"]

    def work() -> bool:
        collection = node.state.resolve(name)
        if shard_id not in collection.shards:
            raise ApiError(404, f"Not found: shard {shard_id} not found")
        return node.snapshots.delete(node.snapshots.shard_dir(collection.name, shard_id), snapshot)

    return req.run(work)


@route("GET", "/collections/{collection}/shards/{shard_id}/snapshot", plain_errors=True)
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
        return archives.ArchiveData("shard", None, {}, {shard_id: data.shard_points.get(-1) or []})
    return data


@route("PUT", "/collections/{collection}/shards/{shard_id}/snapshots/recover", write=True)
def recover_shard_snapshot(req: Request) -> Response:
    node = req.node
    name, shard_id = req.params["collection"], req.shard_id()
    location, priority, checksum, api_key = _recover_body(req)

    def work() -> bool:
        collection = _shard_for_recovery(req, name, shard_id)
        scheme = urlsplit(location).scheme.lower()
        if scheme in ("http", "https"):
            path = node.snapshots.fetch_url(location, api_key, checksum)
        elif scheme:
            raise bad_request(f"Invalid snapshot location {location}: use an http(s) URL or a snapshot name")
        else:
            if not valid_snapshot_name(location):
                raise ApiError(404, f"Not found: Snapshot {location} not found")
            path = node.snapshots.spool_virtual(node.snapshots.shard_dir(collection.name, shard_id), location)
            try:
                check_local_checksum(path, checksum)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        try:
            return node.state.recover_shard(collection.name, shard_id, node.index, _shard_archive(path, shard_id),
                                            priority)
        finally:
            path.unlink(missing_ok=True)

    return req.run(work)


@route("POST", "/collections/{collection}/shards/{shard_id}/snapshots/upload", write=True)
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
            return node.state.recover_shard(collection.name, shard_id, node.index, _shard_archive(tmp, shard_id),
                                            priority)
        finally:
            tmp.unlink(missing_ok=True)

    return req.run(work)


# ---------------------------------------------------------------------------------------------
# Full snapshots


@route("POST", "/snapshots", write=True)
def create_full_snapshot(req: Request) -> Response:
    return req.run(req.node.snapshots.create_full_snapshot)


@route("GET", "/snapshots")
def list_full_snapshots(req: Request) -> Response:
    return ok(req.node.snapshots.list(req.node.snapshots.root), req.started)


@route("GET", "/snapshots/{snapshot}", plain_errors=True)
def download_full_snapshot(req: Request) -> Response:
    chunks, size = req.node.snapshots.stream(req.node.snapshots.root, req.params["snapshot"])
    return _stream_response(chunks, size)


@route("DELETE", "/snapshots/{snapshot}", write=True)
def delete_full_snapshot(req: Request) -> Response:
    node = req.node
    snapshot = req.params["snapshot"]
    return req.run(lambda: node.snapshots.delete(node.snapshots.root, snapshot))
