"""The fault matrix: every kind of network call qbr makes, failing transiently and for good.

Through the CLI, against emulator clusters (Qdrant) and moto's S3 behind a small fault proxy.
A transient fault (5xx, 429 with Retry-After, a timeout, a reset, a cut or corrupted download)
is retried and the apply succeeds. A permanent one (node down, wrong key, 403, 404, access
denied, no such bucket, a failed part) stops that action with one plain sentence; the rest of
the plan finishes where it safely can; the exit code is 1; and nothing is recorded as done that
is not (state journal, set records, node-local snapshots). After the fault is gone, the next
apply converges.
"""

from __future__ import annotations

import collections
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.exceptions
import pytest

from qbr.errors import RepositoryError
from qbr.repository import open_local_repository, open_s3_repository
from tests.e2e.helpers import (
    all_points,
    make_collection,
    qbr,
    read_sets,
    sha256_of,
    write_manifest,
)
from tests.qdrant_testing import TestingClient as QdrantClient
from tests.s3_fixture import s3_client

# ------------------------------------------------------------------------------------------
# An S3 fault proxy: forwards to moto, or misbehaves for the requests a rule matches.

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect", "content-length"}


@dataclass
class S3Fault:
    """One rule: requests whose "METHOD path?query" matches `pattern` misbehave `times` times."""

    pattern: re.Pattern
    status: int | None = None
    code: str = "InternalError"
    times: int | None = 1
    reset: bool = False
    cut_after: int | None = None
    corrupt: bool = False
    latency: float = 0.0
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class S3FaultProxy:
    """A threaded HTTP proxy in front of moto's server; the manifest's endpoint_url points here,
    so boto3 (and Qdrant fetching a presigned URL) meet the faults over real HTTP."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[S3Fault] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="s3-fault-proxy", daemon=True)
        self.thread.start()

    def add(self, pattern: str, **kw: Any) -> S3Fault:
        fault = S3Fault(re.compile(pattern), **kw)
        with self._lock:
            self.rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _take(self, line: str) -> S3Fault | None:
        with self._lock:
            self.requests.append(line)
            for fault in self.rules:
                if not fault.exhausted and fault.pattern.search(line):
                    fault.hits += 1
                    return fault
        return None

    @staticmethod
    def _body(handler: BaseHTTPRequestHandler) -> bytes:
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += handler.rfile.read(size)
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = self._body(handler)
        fault = self._take(f"{handler.command} {handler.path}")
        if fault is not None and fault.latency:
            time.sleep(fault.latency)
        if fault is not None and fault.reset:
            handler.close_connection = True
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            return
        if fault is not None and fault.status is not None:
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{fault.code}</Code><Message>injected {fault.code}</Message>"
                "<RequestId>fault</RequestId></Error>"
            ).encode()
            handler.send_response(fault.status)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(xml)))
            if fault.status in (429, 503):
                handler.send_header("Retry-After", "0")
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(xml)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = HTTPConnection(*self.upstream, timeout=30)
        try:
            upstream.request(handler.command, handler.path, body=body if body or handler.command in ("PUT", "POST") else None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            status, reply_headers = response.status, response.getheaders()
        finally:
            upstream.close()
        handler.send_response(status)
        length = None
        for key, value in reply_headers:
            if key.lower() == "content-length":
                length = value
            elif key.lower() not in HOP_BY_HOP:
                handler.send_header(key, value)
        if handler.command == "HEAD":
            handler.send_header("Content-Length", length or "0")
            handler.end_headers()
            return
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if fault is not None and fault.corrupt and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        if fault is not None and fault.cut_after is not None:
            handler.wfile.write(data[: fault.cut_after])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.wfile.write(data)


@pytest.fixture
def s3_proxy(s3_server):
    proxy = S3FaultProxy(s3_server)
    yield proxy
    proxy.close()


# ------------------------------------------------------------------------------------------
# The worlds a case runs in.

DOCS_POINTS, NOTES_POINTS = 24, 6
BIG_SIZE = 9 << 20  # above the S3 repository's 8 MiB part size: a multipart upload


@dataclass(frozen=True)
class Part:
    """One independent piece of a world's plan: a backup and (maybe) the restore of it."""

    collection: str
    backup: str
    restore: str | None = None


@dataclass
class World:
    tmp: Path
    source: Any
    target: Any | None
    repo_kind: str  # "s3" | "folder"
    parts: dict[str, Part]
    endpoint: str | None = None
    bucket: str | None = None
    proxy: S3FaultProxy | None = None
    keep_sets: int | None = None  # retention: how many sets of each backup remain
    run_args: tuple[str, ...] = ()  # the faulted apply's extra flags
    converge_args: tuple[str, ...] = ()  # the apply after the fault is gone
    api_key: str | None = None
    repair: Callable[[], None] | None = None  # undoes a fault that is not a rule (bucket, key)
    _repo: Any = field(default=None, repr=False)

    @property
    def clusters(self) -> list[Any]:
        return [c for c in (self.source, self.target) if c is not None]

    def repository(self):
        """The repository as qbr sees it, straight to moto (not through the fault proxy)."""
        if self._repo is None:
            if self.repo_kind == "s3":
                self._repo = open_s3_repository(self.bucket, prefix="p", endpoint_url=self.endpoint)
            else:
                self._repo = open_local_repository(self.tmp / "backups")
        return self._repo

    def repository_exists(self) -> bool:
        if self.repo_kind != "s3":
            return True
        try:
            s3_client(self.endpoint).head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:  # 404: the missing-bucket world
            return False
        return True

    @property
    def state_path(self) -> Path:
        return self.tmp / ".qbr" / "state.json"

    def state(self) -> dict:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def apply(self, *extra: str, env: dict[str, str] | None = None):
        return qbr("apply", "--auto-approve", *extra, cwd=self.tmp, env=env)

    def clear_faults(self) -> None:
        for cluster in self.clusters:
            for node in cluster.nodes:
                node.faults.clear()
                node.up()
        if self.proxy is not None:
            self.proxy.clear()
        if self.repair is not None:
            self.repair()
            self._repo = None


def _repo_yaml(world: World) -> str:
    if world.repo_kind == "s3":
        endpoint = world.proxy.url if world.proxy is not None else world.endpoint
        return f's3: {{bucket: {world.bucket}, prefix: p, endpoint_url: "{endpoint}", region: us-east-1}}'
    return "path: ./backups"


def _new_world(tmp: Path, source, target, repo_kind: str, parts: dict[str, Part], s3_bucket, proxy, api_key=None) -> World:
    world = World(tmp, source, target, repo_kind, parts, proxy=proxy if repo_kind == "s3" else None, api_key=api_key)
    if repo_kind == "s3":
        world.endpoint, world.bucket = s3_bucket
    return world


def main_world(emulator, tmp: Path, repo_kind: str, s3_bucket, proxy, *, api_key=None, manifest_key=None) -> World:
    """A 2-node source (docs over 2 shards with an alias, notes on one), a 2-node restore target,
    and two independent parts: back up + restore docs, back up + restore notes."""
    source = emulator(nodes=2, api_key=api_key)
    target = emulator(nodes=2, api_key=api_key)
    make_collection(source.urls[0], "docs", points=DOCS_POINTS, shards=2, api_key=api_key)
    make_collection(source.urls[0], "notes", points=NOTES_POINTS, api_key=api_key)
    with QdrantClient(source.urls[0], api_key=api_key) as client:
        client.update_aliases([{"create_alias": {"collection_name": "docs", "alias_name": "docs_current"}}])
    parts = {"docs": Part("docs", "docs-bk", "docs-dr"), "notes": Part("notes", "notes-bk", "notes-dr")}
    world = _new_world(tmp, source, target, repo_kind, parts, s3_bucket, proxy, api_key)
    write_main_manifest(world, manifest_key if manifest_key is not None else api_key)
    return world


def write_main_manifest(world: World, key: str | None) -> None:
    key_yaml = f", api_key: {key}" if key else ""
    # docs-dr says via: url (a node that cannot fetch the URL stops it); notes-dr keeps auto.
    via = ", via: url" if world.repo_kind == "s3" else ""
    source, target = world.source, world.target
    write_manifest(world.tmp, f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}", timeout: 1s{key_yaml}}}
  dr: {{url: "{target.urls[0]}", timeout: 1s{key_yaml}}}
repositories:
  main: {{{_repo_yaml(world)}}}
backups:
  docs-bk: {{cluster: prod, repository: main, collections: [docs], rpo: 1h}}
  notes-bk: {{cluster: prod, repository: main, collections: [notes], rpo: 1h}}
restores:
  docs-dr: {{from: docs-bk, to: dr, collections: {{"*": "*"}}, if_exists: replace{via}}}
  notes-dr: {{from: notes-bk, to: dr, collections: {{"*": "*"}}, if_exists: replace}}
""")


def missing_bucket_world(emulator, tmp: Path, repo_kind: str, s3_bucket, proxy) -> World:
    """The manifest names a bucket that does not exist (moto's own NoSuchBucket); then it is made."""
    import uuid

    world = main_world(emulator, tmp, "s3", (s3_bucket[0], f"qbr-missing-{uuid.uuid4().hex[:12]}"), None)
    world.proxy = None
    world.repair = lambda: s3_client(world.endpoint).create_bucket(Bucket=world.bucket)
    return world


def wrong_key_world(emulator, tmp: Path, repo_kind: str, s3_bucket, proxy) -> World:
    """Qdrant wants one API key, the manifest gives another; then the manifest is fixed."""
    world = main_world(emulator, tmp, repo_kind, s3_bucket, proxy, api_key="right-key-1234", manifest_key="wrong-key-5678")
    world.repair = lambda: write_main_manifest(world, world.api_key)
    return world


def big_world(emulator, tmp: Path, repo_kind: str, s3_bucket, proxy) -> World:
    """One collection whose snapshot is larger than a part: S3 multipart upload."""
    source = emulator(nodes=1)
    source.add_synthetic_collection("big", BIG_SIZE)
    world = _new_world(tmp, source, None, repo_kind, {"big": Part("big", "big-bk")}, s3_bucket, proxy)
    write_manifest(tmp, f"""
version: 1
clusters: {{prod: {{url: "{source.urls[0]}", timeout: 1s}}}}
repositories: {{main: {{{_repo_yaml(world)}}}}}
backups: {{big-bk: {{cluster: prod, repository: main, rpo: 1h}}}}
""")
    return world


def retention_world(emulator, tmp: Path, repo_kind: str, s3_bucket, proxy) -> World:
    """keep_last: 1 over an existing set: the next backup deletes the old set and its archive."""
    source = emulator(nodes=1)
    make_collection(source.urls[0], "notes", points=NOTES_POINTS)
    world = _new_world(tmp, source, None, repo_kind, {"notes": Part("notes", "notes-bk")}, s3_bucket, proxy)
    world.keep_sets = 1
    write_manifest(tmp, f"""
version: 1
clusters: {{prod: {{url: "{source.urls[0]}", timeout: 1s}}}}
repositories: {{main: {{{_repo_yaml(world)}}}}}
backups:
  notes-bk: {{cluster: prod, repository: main, rpo: 1h, only_changed: false, retention: {{keep_last: 1}}}}
""")
    first = world.apply("--now", _later(0))
    assert first.exit_code == 0, first.output
    world.run_args, world.converge_args = ("--now", _later(2)), ("--now", _later(4))
    return world


def _later(hours: int) -> str:
    from datetime import datetime, timedelta

    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


WORLDS = {
    "main": main_world,
    "big": big_world,
    "retention": retention_world,
    "missing-bucket": missing_bucket_world,
    "wrong-key": wrong_key_world,
}


# ------------------------------------------------------------------------------------------
# What must hold after any run, and after a successful one.


def _node_snapshots(node) -> set[str]:
    """Snapshot files on an emulator node's disk (and generated ones it describes)."""
    names = {p.name for p in node.snapshots_dir.rglob("*.snapshot")}
    with node.snapshots.lock:
        names |= {name for (_, name) in node.snapshots.virtual}
    return names


def _sets(world: World) -> dict[tuple[str, str], dict]:
    if not world.repository_exists():
        return {}
    return {(s["backup"], s["set_id"]): s for s in read_sets(world.repository())}


def assert_consistent(world: World) -> None:
    """Nothing is recorded as done that is not; nothing half-made is left unrecorded."""
    repo = world.repository()
    sets = _sets(world)
    for record in sets.values():
        for collection in record["collections"].values():
            for archive in collection["archives"]:
                data = repo.get_bytes(archive["key"])
                assert len(data) == archive["size"] and sha256_of(data) == archive["sha256"], archive["key"]
    state = world.state()
    for entry in state.get("journal", []):
        kind, status, action = entry["kind"], entry["status"], entry["action"]
        if kind == "commit_set":
            _, backup, set_id, _ = action.split(".", 3)
            assert ((backup, set_id) in sets) == (status == "done"), f"{action} is {status} in the journal"
        elif kind == "copy_archive" and status == "done":
            assert repo.head(entry["detail"]["archive"]) is not None, f"{action} is done but its archive is missing"
        elif kind == "restore_collection":
            restore, target = action.split(".", 2)[1:]
            provenance = state.get("restores", {}).get(restore, {}).get(target)
            if status == "done":
                assert provenance is not None and not provenance.get("incomplete"), f"{action} is done: provenance"
                with QdrantClient(world.target.urls[0], api_key=world.api_key) as client:
                    assert client.count_points(target) == provenance["points_count"]
            else:
                assert provenance is None or provenance.get("incomplete") is True, (
                    f"{action} is {status} but a finished restore was recorded"
                )
        elif kind == "delete_set" and status == "done":
            assert entry["detail"]["set"] not in {o.key for o in repo.list("sets/")}
    recorded = {(e["node"], e["name"]) for e in state.get("node_snapshots", [])}
    for node in world.source.nodes:
        for name in _node_snapshots(node):
            assert (node.url, name) in recorded, f"snapshot {name} left on {node.url} and not recorded for cleanup"
    assert not (world.tmp / ".qbr" / "state.json.lock").exists(), "the state lock was released"
    if world.repo_kind == "s3":
        uploads = world.repository().pending_uploads() if world.repository_exists() else []
        assert uploads == [], "a failed multipart upload was aborted"
    else:
        assert not list((world.tmp / "backups").rglob(".qbr-tmp-*")), "no temp file of a failed write is left"


def assert_complete(world: World) -> None:
    """The manifest is true: every set stored and verified, every restore point-for-point equal."""
    assert_consistent(world)
    sets = _sets(world)
    state = world.state()
    assert state["node_snapshots"] == []
    assert all(e["status"] == "done" for e in state["journal"]), state["journal"]
    for part in world.parts.values():
        mine = [s for (backup, _), s in sets.items() if backup == part.backup]
        assert mine, f"backup {part.backup} has a set"
        if world.keep_sets is not None:
            assert len(mine) == world.keep_sets, f"retention keeps {world.keep_sets} set(s) of {part.backup}"
        newest = max(mine, key=lambda s: s["set_id"])
        assert part.collection in newest["collections"]
        if part.restore is not None:
            expected = all_points(world.source.urls[0], part.collection, world.api_key)
            assert all_points(world.target.urls[0], part.collection, world.api_key) == expected and expected
    for cluster in world.clusters:
        for node in cluster.nodes:
            assert _node_snapshots(node) == set(), f"no snapshot is left on {node.url}"
    if "docs" in world.parts and world.target is not None:
        with QdrantClient(world.target.urls[0], api_key=world.api_key) as client:
            assert dict(client.list_aliases()) == {"docs_current": "docs"}


def assert_part_complete(world: World, name: str) -> None:
    part = world.parts[name]
    assert any(backup == part.backup for backup, _ in _sets(world)), f"backup {part.backup} finished despite the fault"
    if part.restore is not None:
        expected = all_points(world.source.urls[0], part.collection, world.api_key)
        assert all_points(world.target.urls[0], part.collection, world.api_key) == expected


# ------------------------------------------------------------------------------------------
# The table.


@dataclass
class _Mark:
    """A fault that is not a rule (a node taken down): counted once."""

    hits: int = 1


def q(where: str, method: str | None, path: str, *, nodes: tuple[int, ...] | None = None, **kw: Any) -> Callable[[World], list]:
    """Emulator faults on every node (or `nodes`) of the source or target cluster."""

    def inject(world: World) -> list:
        cluster = world.source if where == "source" else world.target
        chosen = cluster.nodes if nodes is None else [cluster.nodes[i] for i in nodes]
        return [node.faults.add(method=method, path=path, **kw) for node in chosen]

    return inject


def s3(pattern: str, **kw: Any) -> Callable[[World], list]:
    """A fault on the S3 requests whose "METHOD /bucket/key?query" matches."""
    return lambda world: [world.proxy.add(pattern, **kw)]


def down(where: str, index: int) -> Callable[[World], list]:
    def inject(world: World) -> list:
        (world.source if where == "source" else world.target).nodes[index].down()
        return [_Mark()]

    return inject


SNAP = r"^/collections/docs/shards/\d+/snapshots"
ARCHIVE = SNAP + r"/[^/]+$"
SETS = r"/p/sets/docs-bk/"
PRESIGNED = r"^GET /[^?]+/p/snapshots/docs/[^?]+\?.*X-Amz-Signature="
TIMEOUT = 1.4  # latency above the manifest's `timeout: 1s`


@dataclass(frozen=True)
class Case:
    id: str
    call: str  # which network call kind
    fault: str  # which kind of fault
    inject: Callable[[World], list]
    world: str = "main"
    repo: str = "folder"
    message: str | None = None  # permanent faults: what stderr must say
    failed: str | None = None  # the action kind that fails; None: the plan itself cannot be made
    spared: tuple[str, ...] = ()  # parts that must still complete
    env: dict = field(default_factory=dict)
    min_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.call.startswith("s3"):
            object.__setattr__(self, "repo", "s3")


TRANSIENT = [
    # Qdrant, every call kind: 5xx, 429, timeouts, resets, cut and corrupted downloads.
    Case("root-503", "qdrant GET /", "503", q("source", "GET", r"^/$", times=2)),
    Case("cluster-502", "qdrant GET /cluster", "502", q("source", "GET", r"^/cluster$", status=502)),
    Case("cluster-reset", "qdrant GET /cluster", "reset", q("source", "GET", r"^/cluster$", reset=True)),
    Case("collections-429", "qdrant list collections", "429", q("source", "GET", r"^/collections$", status=429, retry_after=1),
         min_seconds=1.0),
    Case("collections-timeout", "qdrant list collections", "timeout", q("source", "GET", r"^/collections$", latency=TIMEOUT)),
    Case("info-503", "qdrant collection info", "503", q("source", "GET", r"^/collections/docs$", status=503)),
    Case("exists-503", "qdrant collection exists", "503", q("source", "GET", r"^/collections/docs/exists$", status=503)),
    Case("count-504", "qdrant count", "504", q("source", "POST", r"^/collections/docs/points/count$", status=504)),
    Case("count-reset", "qdrant count", "reset", q("target", "POST", r"^/collections/docs/points/count$", reset=True)),
    Case("collection-cluster-reset", "qdrant collection cluster", "reset",
         q("source", "GET", r"^/collections/docs/cluster$", reset=True)),
    Case("collection-cluster-503", "qdrant collection cluster", "503",
         q("target", "GET", r"^/collections/docs/cluster$", status=503)),
    Case("list-snapshots-503", "qdrant list snapshots", "503", q("source", "GET", SNAP + "$", status=503)),
    Case("create-snapshot-503", "qdrant create snapshot", "503", q("source", "POST", SNAP + "$", status=503)),
    Case("create-snapshot-429", "qdrant create snapshot", "429", q("source", "POST", SNAP + "$", status=429, retry_after=0)),
    Case("create-snapshot-reset", "qdrant create snapshot", "reset", q("source", "POST", SNAP + "$", reset=True)),
    Case("download-502", "qdrant download snapshot", "502", q("source", "GET", ARCHIVE, status=502)),
    Case("download-cut", "qdrant download snapshot", "cut", q("source", "GET", ARCHIVE, cut_after=100)),
    Case("download-corrupt", "qdrant download snapshot", "corrupt", q("source", "GET", ARCHIVE, corrupt=True)),
    Case("download-reset", "qdrant download snapshot", "reset", q("source", "GET", ARCHIVE, reset=True)),
    Case("delete-snapshot-503", "qdrant delete snapshot", "503", q("source", "DELETE", ARCHIVE, status=503)),
    Case("delete-snapshot-timeout", "qdrant delete snapshot", "timeout", q("source", "DELETE", ARCHIVE, latency=TIMEOUT)),
    Case("upload-503", "qdrant upload snapshot", "503", q("target", "POST", SNAP + "/upload$", status=503)),
    Case("upload-reset", "qdrant upload snapshot", "reset", q("target", "POST", SNAP + "/upload$", reset=True)),
    Case("recover-503", "qdrant recover snapshot", "503", q("target", "PUT", SNAP + "/recover$", status=503), repo="s3"),
    Case("recover-429", "qdrant recover snapshot", "429", q("target", "PUT", SNAP + "/recover$", status=429, retry_after=0), repo="s3"),
    Case("aliases-list-503", "qdrant list aliases", "503", q("source", "GET", r"^/aliases$", status=503)),
    Case("aliases-update-503", "qdrant update aliases", "503", q("target", "POST", r"^/collections/aliases$", status=503)),
    Case("aliases-update-reset", "qdrant update aliases", "reset", q("target", "POST", r"^/collections/aliases$", reset=True)),
    Case("create-collection-503", "qdrant create collection", "503", q("target", "PUT", r"^/collections/docs$", status=503)),
    # The create lands on the server after the client gave up; the retry, sent later, meets 409.
    Case("create-collection-timeout", "qdrant create collection", "timeout",
         q("target", "PUT", r"^/collections/docs$", latency=1.2), env={"QBR_HTTP_BACKOFF": "1.0"}),
    # Answers lost after the work was done (the node made the snapshot, recovered, created...):
    # qbr looks at what the node did and adopts it, never asks twice blindly.
    Case("create-snapshot-lost", "qdrant create snapshot", "lost after work", q("source", "POST", SNAP + "$", after_work="reset")),
    Case("delete-snapshot-lost", "qdrant delete snapshot", "lost after work", q("source", "DELETE", ARCHIVE, after_work="reset")),
    Case("upload-lost", "qdrant upload snapshot", "lost after work", q("target", "POST", SNAP + "/upload$", after_work="reset")),
    Case("recover-lost", "qdrant recover snapshot", "lost after work", q("target", "PUT", SNAP + "/recover$", after_work="reset"),
         repo="s3"),
    Case("create-collection-lost", "qdrant create collection", "lost after work",
         q("target", "PUT", r"^/collections/docs$", after_work="reset")),
    Case("aliases-update-lost", "qdrant update aliases", "lost after work",
         q("target", "POST", r"^/collections/aliases$", after_work="reset")),
    # S3 through the proxy (botocore's standard retries): 5xx, SlowDown, resets, a cut body.
    Case("s3-list-500", "s3 list", "s3 500", s3(r"^GET /[^/?]+\?list-type=2", status=500, code="InternalError")),
    Case("s3-list-uploads-503", "s3 list uploads", "s3 slowdown", s3(r"^GET /[^/?]+\?uploads", status=503, code="SlowDown")),
    Case("s3-get-slowdown", "s3 get", "s3 slowdown", s3(r"^GET /[^?]+" + SETS, status=503, code="SlowDown")),
    Case("s3-get-reset", "s3 get", "reset", s3(r"^GET /[^?]+" + SETS, reset=True)),
    Case("s3-get-cut", "s3 get", "cut", s3(r"^GET /[^?]+" + SETS, cut_after=20)),
    Case("s3-put-500", "s3 put", "s3 500", s3(r"^PUT /[^?]+" + SETS, status=500, code="InternalError")),
    Case("s3-put-archive-reset", "s3 put", "reset", s3(r"^PUT /[^?]+/p/snapshots/docs/", reset=True)),
    Case("s3-head-503", "s3 head", "s3 slowdown", s3(r"^HEAD /[^?]+" + SETS, status=503, code="SlowDown")),
    Case("s3-create-multipart-503", "s3 multipart create", "s3 slowdown", s3(r"^POST /[^?]+\?uploads", status=503, code="SlowDown"),
         world="big"),
    Case("s3-part-500", "s3 multipart part", "s3 500", s3(r"^PUT /[^?]+\?.*partNumber=", status=500, code="InternalError"),
         world="big"),
    Case("s3-part-reset", "s3 multipart part", "reset", s3(r"^PUT /[^?]+\?.*partNumber=", reset=True), world="big"),
    Case("s3-complete-503", "s3 multipart complete", "s3 slowdown", s3(r"^POST /[^?]+\?uploadId=", status=503, code="SlowDown"),
         world="big"),
    Case("s3-delete-503", "s3 delete", "s3 slowdown", s3(r"^DELETE /[^?]+/p/sets/", status=503, code="SlowDown"),
         world="retention"),
]


INJECTED: collections.Counter = collections.Counter()  # fault kind -> faults injected
CALLS: collections.Counter = collections.Counter()  # call kind -> cases


@pytest.fixture(scope="module", autouse=True)
def fault_tally():
    yield
    if INJECTED:
        print(f"\nfault matrix: {sum(INJECTED.values())} faults injected over {sum(CALLS.values())} cases")
        for kind, count in sorted(INJECTED.items()):
            print(f"  {kind:>14}: {count}")


def _s3(case_repo: str, request) -> tuple[Any, Any]:
    """moto's bucket and the fault proxy, only for the cases that use S3 (they cost a bucket)."""
    if case_repo != "s3":
        return None, None
    return request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_proxy")


def _tally(case: Case, hits: int) -> None:
    INJECTED[case.fault] += hits
    CALLS[case.call] += 1
    assert hits >= 1, f"{case.id}: the fault was never injected ({case.call} was not called)"


def _groups(cases: list[Case], size: int = 8) -> list[tuple[Case, ...]]:
    """Transient faults are injected several at a time into one apply (at most two on one call
    kind, fewer than its retries), so the matrix stays fast; each fault is still checked to have
    been hit."""
    groups: list[list[Case]] = []
    for case in cases:
        home = next(
            (g for g in groups if len(g) < size and (g[0].world, g[0].repo, g[0].env) == (case.world, case.repo, case.env)
             and sum(other.call == case.call for other in g) < 2),
            None,
        )
        if home is None:
            groups.append([case])
        else:
            home.append(case)
    return [tuple(g) for g in groups]


@pytest.mark.parametrize("cases", _groups(TRANSIENT), ids=lambda g: "+".join(c.id for c in g))
def test_transient_faults_are_retried_and_the_apply_succeeds(cases, emulator, tmp_path, request):
    first = cases[0]
    world = WORLDS[first.world](emulator, tmp_path, first.repo, *_s3(first.repo, request))
    injected = [(case, case.inject(world)) for case in cases]
    started = time.monotonic()
    run = world.apply(*world.run_args, env=first.env)
    elapsed = time.monotonic() - started
    for case, faults in injected:
        _tally(case, sum(f.hits for f in faults))
    assert "Traceback" not in run.output and "unexpected error" not in run.output, run.output
    assert run.exit_code == 0, run.output
    assert "Apply complete" in run.stdout
    assert elapsed >= max(c.min_seconds for c in cases), "the server's Retry-After was honoured"
    assert_complete(world)


PERMANENT = [
    # The plan itself cannot be made: one sentence, exit 1, nothing written anywhere.
    Case("source-node-down", "qdrant GET /", "node down", down("source", 1),
         message=r"^Error: Cannot reach Qdrant node http://127\.0\.0\.2:\d+ \(cluster 'prod'\) after 4 attempts: connection refused"),
    Case("target-node-down", "qdrant GET /", "node down", down("target", 0),
         message=r"^Error: Cannot reach Qdrant node http://127\.0\.0\.1:\d+ \(cluster 'dr'\)"),
    Case("collections-500", "qdrant list collections", "500", q("source", "GET", r"^/collections$", status=500, times=None),
         message=r"^Error: Qdrant node .* answered 500 to GET /collections after \d+ attempts: Service internal error"),
    Case("collections-429-forever", "qdrant list collections", "429",
         q("source", "GET", r"^/collections$", status=429, retry_after=0, times=None),
         message=r"^Error: .* answered 429 to GET /collections after 4 attempts.*lower qbr's parallelism"),
    Case("info-timeout-forever", "qdrant collection info", "timeout", q("source", "GET", r"^/collections/docs$", latency=TIMEOUT, times=None),
         message=r"^Error: .* did not answer GET /collections/docs within 1 s; it may still be working on it", env={"QBR_HTTP_RETRIES": "0"}),
    Case("count-503-forever", "qdrant count", "503", q("source", "POST", r"^/collections/docs/points/count$", status=503, times=None),
         message=r"^Error: .* answered 503 to POST /collections/docs/points/count after 4 attempts: Service unavailable"),
    Case("collection-cluster-403", "qdrant collection cluster", "403",
         q("source", "GET", r"^/collections/docs/cluster$", status=403, times=None),
         message=r"^Error: .* refused to read the shard layout of collection `docs` \(403 Forbidden"),
    Case("list-snapshots-500", "qdrant list snapshots", "500", q("source", "GET", SNAP + "$", status=500, times=None),
         message=r"^Error: .* answered 500 to GET /collections/docs/shards/\d/snapshots after \d+ attempts: Service internal error"),
    Case("aliases-list-401", "qdrant list aliases", "401", q("source", "GET", r"^/aliases$", status=401, times=None),
         message=r"^Error: .* requires an API key \(401 Invalid API key or JWT\); set api_key for cluster 'prod'"),
    Case("exists-404", "qdrant collection exists", "404", q("source", "GET", r"^/collections/docs/exists$", status=404, times=None),
         message=r"could not check whether collection `docs` exists: not found", failed="copy_archive", spared=("notes",)),
    Case("s3-no-such-bucket", "s3 list", "s3 no such bucket", lambda world: [_Mark()], world="missing-bucket", repo="s3",
         message=r"^Error: S3 bucket 'qbr-missing-[0-9a-f]+' does not exist"),
    Case("s3-list-denied", "s3 list", "s3 access denied", s3(r"^GET /[^/?]+\?list-type=2", status=403, code="AccessDenied", times=None),
         message=r"^Error: access to s3://qbr-test-[0-9a-f]+/p was denied \(AccessDenied\)"),
    # One action fails; the other part of the plan finishes.
    Case("create-snapshot-403", "qdrant create snapshot", "403", q("source", "POST", SNAP + "$", status=403, times=None),
         message=r"refused to create a snapshot of shard \d of collection `docs` \(403 Forbidden", failed="copy_archive",
         spared=("notes",)),
    Case("create-snapshot-500", "qdrant create snapshot", "500", q("source", "POST", SNAP + "$", status=500, times=None),
         message=r"answered 500 to POST /collections/docs/shards/\d/snapshots", failed="copy_archive", spared=("notes",)),
    Case("node-dies-mid-apply", "qdrant create snapshot", "reset", q("source", "POST", SNAP + "$", nodes=(1,), reset=True, times=None),
         # Sent once (issue 10, finding 3): asked again only after the node showed it made nothing.
         message=r"failed to create a snapshot of shard 1 of collection `docs`: the connection .*asked twice", failed="copy_archive",
         spared=("notes",)),
    Case("download-404", "qdrant download snapshot", "404", q("source", "GET", ARCHIVE, status=404, times=None, body="Not found: Snapshot gone"),
         message=r"could not download snapshot `docs-shard-\d-[^`]+` of shard \d of collection `docs`: not found", failed="copy_archive",
         spared=("notes",)),
    Case("download-cut-forever", "qdrant download snapshot", "cut", q("source", "GET", ARCHIVE, cut_after=100, times=None),
         message=r"the transfer was cut short after 100 of \d+ bytes", failed="copy_archive", spared=("notes",)),
    Case("download-corrupt-forever", "qdrant download snapshot", "corrupt", q("source", "GET", ARCHIVE, corrupt=True, times=None),
         message=r"sha256 [0-9a-f]+… does not match the expected", failed="copy_archive", spared=("notes",)),
    Case("delete-snapshot-403", "qdrant delete snapshot", "403", q("source", "DELETE", ARCHIVE, status=403, times=None),
         message=r"refused to delete snapshot `docs-shard", failed="copy_archive", spared=("notes",)),
    Case("recover-403", "qdrant recover snapshot", "403", q("target", "PUT", SNAP + "/recover$", status=403, times=None),
         message=r"refused to recover shard \d of collection `docs` from the archive URL \(403", failed="restore_collection",
         repo="s3", spared=("notes",)),
    Case("recover-checksum", "qdrant recover snapshot", "400", q("target", "PUT", SNAP + "/recover$", status=400, times=None,
         body={"status": {"error": "Snapshot checksum mismatch: expected 1, got 2"}, "time": 0}),
         message=r"the archive's checksum does not match", failed="restore_collection", repo="s3", spared=("notes",)),
    Case("upload-403", "qdrant upload snapshot", "403", q("target", "POST", SNAP + "/upload$", status=403, times=None),
         message=r"refused to upload snapshot `docs-bk\.[^`]+` to shard \d of collection `docs` \(403", failed="restore_collection",
         spared=("notes",)),
    Case("create-collection-409", "qdrant create collection", "409", q("target", "PUT", r"^/collections/docs$", status=409, times=None),
         message=r"could not create collection `docs`: it already exists", failed="restore_collection", spared=("notes",)),
    Case("aliases-update-400", "qdrant update aliases", "400", q("target", "POST", r"^/collections/aliases$", status=400, times=None),
         message=r"refused to update aliases \(400", failed="update_aliases", spared=("notes",)),
    Case("wrong-api-key", "qdrant GET /cluster", "401", lambda world: [_Mark()], world="wrong-key",
         message=r"^Error: Qdrant node .* rejected the API key \(401 Invalid API key or JWT\); set api_key for cluster '(prod|dr)'"),
    Case("s3-put-set-denied", "s3 put", "s3 access denied", s3(r"^PUT /[^?]+" + SETS, status=403, code="AccessDenied", times=None),
         message=r"access to s3://qbr-test-[0-9a-f]+/p was denied \(AccessDenied\)", failed="commit_set", spared=("notes",)),
    Case("s3-get-set-denied", "s3 get", "s3 access denied", s3(r"^GET /[^?]+" + SETS, status=403, code="AccessDenied", times=None),
         message=r"cannot read set docs-bk/\d{8}T\d{6}Z to restore from: access to s3://", failed="restore_collection", spared=("notes",)),
    Case("s3-presigned-get-denied", "s3 presigned get (by Qdrant)", "s3 access denied",
         s3(PRESIGNED, status=403, code="AccessDenied", times=None),
         message=r"cannot recover from a URL \(.*Failed to download snapshot from the archive URL: HTTP 403\).*with via: url the restore stops",
         failed="restore_collection", spared=("notes",)),
    Case("s3-presigned-get-reset", "s3 presigned get (by Qdrant)", "reset", s3(PRESIGNED, reset=True),
         message=r"cannot recover from a URL \(.*Failed to download snapshot from the archive URL: \[Errno 104\] Connection reset.*with via: url",
         failed="restore_collection", spared=("notes",)),
    Case("s3-part-fails", "s3 multipart part", "s3 invalid part", s3(r"^PUT /[^?]+\?.*partNumber=", status=400, code="InvalidArgument", times=None),
         message=r"S3 upload of s3://qbr-test-[0-9a-f]+/p/snapshots/big/[^ ]+ failed with InvalidArgument", failed="copy_archive", world="big"),
    Case("s3-delete-denied", "s3 delete", "s3 access denied", s3(r"^DELETE /[^?]+/p/sets/", status=403, code="AccessDenied", times=None),
         message=r"access to s3://qbr-test-[0-9a-f]+/p was denied", failed="delete_set", world="retention"),
]


def _snapshot_of_world(world: World) -> tuple:
    """Everything an apply could change: repository listing, state bytes, target collections."""
    try:
        listing: Any = tuple(sorted((o.key, o.size) for o in world.repository().list("")))
    except RepositoryError as error:
        listing = str(error)
    state = world.state_path.read_bytes() if world.state_path.exists() else None
    collections = tuple(world.target.collection_names()) if world.target is not None else None
    return listing, state, collections


@pytest.mark.parametrize("case", PERMANENT, ids=lambda c: c.id)
def test_permanent_fault_stops_its_action_with_one_sentence(case, emulator, tmp_path, request):
    world = WORLDS[case.world](emulator, tmp_path, case.repo, *_s3(case.repo, request))
    before = _snapshot_of_world(world) if case.failed is None else None
    faults = case.inject(world)
    run = world.apply(*world.run_args, env=case.env)
    _tally(case, sum(f.hits for f in faults))
    assert run.exit_code == 1, run.output
    assert "Traceback" not in run.output and "unexpected error" not in run.output, run.output
    assert re.search(case.message, run.stderr, re.MULTILINE), run.stderr
    journal = world.state().get("journal", [])
    if case.failed is None:
        # The plan could not be made: nothing ran, so nothing is left to converge.
        assert run.stderr.count("\n") == 1, "one sentence, on one line"
        assert _snapshot_of_world(world) == before, "nothing changed in the repository, the state or the target"
        return
    assert any(e["kind"] == case.failed and e["status"] == "failed" for e in journal), journal
    assert "Apply incomplete" in run.stdout
    assert_consistent(world)
    for part in case.spared:
        assert_part_complete(world, part)
    world.clear_faults()
    again = world.apply(*world.converge_args)
    assert again.exit_code == 0, again.output
    assert_complete(world)


QDRANT_CALLS = {
    "qdrant GET /", "qdrant GET /cluster", "qdrant list collections", "qdrant collection info", "qdrant collection exists",
    "qdrant count", "qdrant collection cluster", "qdrant list snapshots", "qdrant create snapshot",
    "qdrant download snapshot", "qdrant delete snapshot", "qdrant upload snapshot", "qdrant recover snapshot",
    "qdrant list aliases", "qdrant update aliases", "qdrant create collection",
}
S3_CALLS = {
    "s3 list", "s3 list uploads", "s3 get", "s3 put", "s3 head", "s3 delete", "s3 presigned get (by Qdrant)",
    "s3 multipart create", "s3 multipart part", "s3 multipart complete",
}
# Permanent faults on these are not in the table: the same code path as a neighbour that is
# (a failed S3 request of any kind inside one put_stream or commit), and each S3 case costs time.
NO_PERMANENT_CASE = {"s3 list uploads", "s3 head", "s3 multipart create", "s3 multipart complete"}
# Qdrant fetches a presigned URL itself, once: with via: url a failed fetch stops the restore
# (the permanent cases); with via: auto qbr uploads the archive instead (tests/e2e/test_live_cluster.py).
NOT_RETRIED = {"s3 presigned get (by Qdrant)"}


def test_the_matrix_covers_every_call_kind():
    every = QDRANT_CALLS | S3_CALLS
    assert {c.call for c in TRANSIENT} == every - NOT_RETRIED, "a transient fault for every call kind qbr retries"
    assert {c.call for c in PERMANENT} == every - NO_PERMANENT_CASE, "a permanent fault for every other call kind"
    assert {c.fault for c in TRANSIENT} >= {"429", "502", "503", "504", "timeout", "reset", "cut", "corrupt", "s3 500", "s3 slowdown"}
    assert {c.fault for c in PERMANENT} >= {"node down", "401", "403", "404", "500", "s3 access denied", "s3 no such bucket",
                                            "s3 invalid part"}
