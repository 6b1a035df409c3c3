"""Qdrant's REST API as qbr needs it: metadata, collections, aliases, points and snapshots.

One `QdrantClient` talks to one node. Everything that can go wrong comes back as a
`QdrantError` whose message is one sentence naming the node (without credentials), what
failed and what to do. Transient failures (connection errors, read timeouts, 429, 502,
503, 504) are retried with exponential backoff and jitter. Snapshot archives move as
streams in both directions, so memory stays flat whatever their size. Secrets (the API
key, `api_key` body fields, recovery locations that may be presigned URLs) never reach a
message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import secrets
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, ContextManager, Iterable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from qbr import __version__
from qbr.errors import QdrantError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# A 500 on a read is worth another try; on a write it may already have done its work.
RETRY_STATUSES_READ = RETRY_STATUSES | {500}
SNAPSHOT_PRIORITIES = ("no_sync", "snapshot", "replica")

# The longest stretch of a server's error text worth showing in a one-line message.
_DETAIL_LIMIT = 300
# Error bodies are read up to this many bytes (a proxy may answer with a large page).
_ERROR_BODY_LIMIT = 64 * 1024

_COLLECTION_MISSING = re.compile(r"[Cc]ollection `([^`]*)` (?:doesn't|does not) exist")
_URL_QUERY = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"`<>]*)\?[^\s'\"`<>]*")
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"`<>]+@")
_SECRET_PARAM = re.compile(
    r"(?i)\b(x-amz-[a-z-]+|signature|sig|token|api[_-]?key|key|password|secret)=[^&\s'\"`<>]+"
)


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot as a node describes it; checksum is absent in Qdrant's S3 mode."""

    name: str
    size: int
    checksum: str | None
    creation_time: str | None

    @classmethod
    def from_api(cls, data: dict) -> SnapshotInfo:
        """Build from a `SnapshotDescription`; raises KeyError/TypeError/ValueError on a bad shape."""
        name = data["name"]
        size = data["size"]
        if not isinstance(name, str) or not isinstance(size, int) or isinstance(size, bool):
            raise ValueError("bad SnapshotDescription")
        checksum = data.get("checksum")
        creation_time = data.get("creation_time")
        return cls(
            name=name,
            size=size,
            checksum=str(checksum) if checksum is not None else None,
            creation_time=str(creation_time) if creation_time is not None else None,
        )


@dataclass(frozen=True)
class NodeRef:
    """One peer of a cluster and the REST URL qbr reaches it at (peer_id None when single-node)."""

    peer_id: int | None
    url: str


class TransferInterrupted(QdrantError):
    """A download stopped before all its bytes arrived; restarting the transfer may succeed."""

    retryable = True


# --------------------------------------------------------------------------------------
# Pure helpers


def rest_urls_from_cluster(cluster_result: dict, seed_url: str, rest_port: int | None = None) -> list[NodeRef]:
    """Map `GET /cluster`'s result to every peer's REST URL, sorted by peer id.

    Peers report their internal p2p URI (`http://host:6335/`), not their REST endpoint. Every
    node serves REST on the same port at its own address, so the REST URL is the seed's
    scheme, the peer's host, and `rest_port` (or the seed's port).
    """
    return _rest_urls(cluster_result, seed_url, rest_port, f"Qdrant node {_display_url(seed_url)}")


def _rest_urls(cluster_result: Any, seed_url: str, rest_port: int | None, where: str) -> list[NodeRef]:
    seed = seed_url.rstrip("/")
    seed_parts = urlsplit(seed)
    node = _display_url(seed)
    status = cluster_result.get("status") if isinstance(cluster_result, dict) else None
    if status == "disabled":
        return [NodeRef(None, seed)]
    if status != "enabled":
        raise QdrantError(
            f"{where} returned a malformed cluster status (status {status!r}); "
            "check that the url points at Qdrant's REST port (usually 6333).",
            node=node,
        )
    peers = cluster_result.get("peers")
    if not isinstance(peers, dict) or not peers:
        raise QdrantError(
            f"{where} reported cluster mode but no peers; check the node's health and logs.", node=node
        )
    port = rest_port if rest_port is not None else seed_parts.port
    refs = []
    for peer_id, peer in peers.items():
        try:
            host = urlsplit(str(peer["uri"])).hostname
            pid = int(peer_id)
        except (KeyError, TypeError, ValueError):
            host, pid = None, None
        if not host or pid is None:
            raise QdrantError(
                f"{where} reported a peer without a usable address (peer {str(peer_id)[:40]!r}); "
                "list the cluster's nodes explicitly in the manifest.",
                node=node,
            )
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc = f"{netloc}:{port}"
        refs.append(NodeRef(pid, urlunsplit((seed_parts.scheme, netloc, "", "", ""))))
    return sorted(refs, key=lambda ref: ref.peer_id or 0)


# Keys of CollectionInfo.config.params that CreateCollection accepts under the same name.
_CREATE_FROM_PARAMS = (
    "vectors",
    "shard_number",
    "sharding_method",
    "replication_factor",
    "write_consistency_factor",
    "on_disk_payload",
    "payload",
    "sparse_vectors",
)
# CollectionInfo.config key -> CreateCollection key (the optimizer key differs).
_CREATE_FROM_CONFIG = {
    "hnsw_config": "hnsw_config",
    "optimizer_config": "optimizers_config",
    "wal_config": "wal_config",
    "quantization_config": "quantization_config",
    "strict_mode_config": "strict_mode_config",
    "metadata": "metadata",
}


def create_body_from_config(
    config: dict, *, shard_number: int | None = None, replication_factor: int | None = None
) -> dict:
    """Turn a `CollectionInfo.config` into a `CreateCollection` body that recreates it.

    Nulls are dropped (they mean "server default" either way), except inside `metadata`,
    which is the user's own JSON. Overriding `replication_factor` caps
    `write_consistency_factor` so the body stays valid on a smaller cluster.
    """
    params = config.get("params") or {}
    body: dict[str, Any] = {}
    for key in _CREATE_FROM_PARAMS:
        if params.get(key) is not None:
            body[key] = _drop_nulls(params[key])
    for source, target in _CREATE_FROM_CONFIG.items():
        value = config.get(source)
        if value is None and source == "optimizer_config":
            value = config.get("optimizers_config")
        if value is not None:
            body[target] = value if target == "metadata" else _drop_nulls(value)
    if shard_number is not None:
        body["shard_number"] = shard_number
    if replication_factor is not None:
        body["replication_factor"] = replication_factor
        wcf = body.get("write_consistency_factor")
        if isinstance(wcf, int) and wcf > replication_factor:
            body["write_consistency_factor"] = replication_factor
    return body


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _display_url(url: str) -> str:
    """The URL as shown to people: no credentials, query or trailing slash."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


def _seg(value: str | int) -> str:
    """One URL path segment, quoted so names with '/', '?', spaces... stay one segment."""
    return quote(str(value), safe="")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _clean_detail(text: str, fallback: str) -> str:
    text = " ".join(text.split())
    if text[:1] == "<" and re.search(r"(?i)<(html|!doctype|body)", text[:200]):
        return f"an HTML page instead of Qdrant's error ({fallback})"
    text = text.rstrip(" .!")
    if len(text) > _DETAIL_LIMIT:
        text = text[: _DETAIL_LIMIT - 3].rstrip() + "..."
    return text or fallback


def _transport_reason(exc: httpx.TransportError) -> str:
    text = str(exc).lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return "the connection timed out"
    if isinstance(exc, httpx.ConnectError):
        if "refused" in text:
            return "connection refused"
        if "certificate" in text or "ssl" in text or "tls" in text:
            return "the TLS handshake failed"
        if "name or service" in text or "nodename" in text or "getaddrinfo" in text or "name resolution" in text:
            return "the host name could not be resolved"
        return "the connection failed"
    if isinstance(exc, httpx.ReadTimeout):
        return "no answer in time"
    if isinstance(exc, httpx.TimeoutException):
        return "the request timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed unexpectedly"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError)):
        return "the connection was reset"
    return f"a transport error ({type(exc).__name__})"


def _retryable_transport(exc: httpx.TransportError) -> bool:
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))


# --------------------------------------------------------------------------------------
# Streams


class SnapshotStream:
    """A snapshot download in progress: `size` (Content-Length or None) and its byte chunks.

    Iterate once. A body cut short (fewer bytes than announced, or a connection dropped
    mid-way) raises `TransferInterrupted`; the caller restarts the transfer.
    """

    def __init__(
        self, response: httpx.Response, chunk_size: int, interrupted: Callable[[int], TransferInterrupted]
    ) -> None:
        self._response = response
        self._chunk_size = chunk_size
        self._interrupted = interrupted
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        length = response.headers.get("content-length")
        self._raw_length = int(length) if length and length.isdigit() else None
        # With a content encoding the announced length is that of the encoded bytes.
        self.size: int | None = self._raw_length if encoding in ("", "identity") else None

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._response.iter_bytes(self._chunk_size):
                if chunk:
                    yield chunk
        except httpx.TransportError:
            raise self._interrupted(self._response.num_bytes_downloaded) from None
        got = self._response.num_bytes_downloaded
        if self._raw_length is not None and got != self._raw_length:
            raise self._interrupted(got)


def _multipart_body(
    boundary: str, filename: str, chunks: Iterable[bytes], size: int | None, on_mismatch: Callable[[int], Exception]
) -> Iterator[bytes]:
    """multipart/form-data with one file field `snapshot`, produced as it is sent."""
    yield _multipart_preamble(boundary, filename)
    sent = 0
    for chunk in chunks:
        if not chunk:
            continue
        sent += len(chunk)
        if size is not None and sent > size:
            raise on_mismatch(sent)
        yield bytes(chunk)
    if size is not None and sent != size:
        raise on_mismatch(sent)
    yield _multipart_epilogue(boundary)


def _multipart_preamble(boundary: str, filename: str) -> bytes:
    safe = filename.replace("\\", "/").rsplit("/", 1)[-1]
    safe = "".join(ch for ch in safe if ch not in '\r\n"') or "snapshot"
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="snapshot"; filename="{safe}"\r\n'
        "Content-Type: application/octet-stream\r\n"
        "\r\n"
    ).encode("utf-8")


def _multipart_epilogue(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("ascii")


# --------------------------------------------------------------------------------------
# The client


class QdrantClient:
    """A REST client for one Qdrant node."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        cluster: str | None = None,
        timeout: float = 30.0,
        snapshot_timeout: float = 3600.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.node = _display_url(self.url)
        self.cluster = cluster
        self.timeout = timeout
        self.snapshot_timeout = snapshot_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._api_key = api_key or None
        self._transport = transport
        self._sleep = sleep
        self._where = f"Qdrant node {self.node}" + (f" (cluster '{cluster}')" if cluster else "")
        if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).hostname:
            raise QdrantError(
                f"The url {self.node!r}{self._cluster_suffix()} is not a Qdrant REST URL; "
                "write it as http://host:6333 or https://host:6333.",
                node=self.node,
            )
        headers = {"User-Agent": f"qbr/{__version__}"}
        if api_key:
            headers["api-key"] = api_key
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"QdrantClient({self.node!r}, cluster={self.cluster!r})"

    def for_node(self, url: str) -> QdrantClient:
        """A client for another node of the same cluster, with the same key and settings."""
        return QdrantClient(
            url,
            self._api_key,
            cluster=self.cluster,
            timeout=self.timeout,
            snapshot_timeout=self.snapshot_timeout,
            retries=self.retries,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            transport=self._transport,
            sleep=self._sleep,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> QdrantClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- metadata

    def root(self) -> dict:
        """`GET /`: title, version, commit (bare JSON, not enveloped)."""
        data = self._call("GET", "/", what="read the server version", envelope=False)
        if not isinstance(data, dict):
            raise self._malformed("GET", "/", "not a JSON object")
        return data

    def version(self) -> str:
        version = self.root().get("version")
        if not isinstance(version, str) or not version:
            raise self._malformed("GET", "/", "no version")
        return version

    def cluster_status(self) -> dict:
        return self._call_dict("GET", "/cluster", what="read the cluster status")

    def nodes(self, rest_port: int | None = None) -> list[NodeRef]:
        """Every node of this node's cluster, as REST URLs (just this one when single-node)."""
        return _rest_urls(self.cluster_status(), self.url, rest_port, self._where)

    def collection_cluster(self, collection: str) -> dict:
        return self._call_dict(
            "GET", f"/collections/{_seg(collection)}/cluster",
            what=f"read the shard layout of collection `{collection}`",
        )

    # ---------------------------------------------------------------- collections

    def list_collections(self) -> list[str]:
        path = "/collections"
        result = self._call("GET", path, what="list collections")
        with self._parsing("GET", path):
            return sorted(str(item["name"]) for item in result["collections"])

    def collection_info(self, collection: str) -> dict:
        return self._call_dict("GET", f"/collections/{_seg(collection)}", what=f"read collection `{collection}`")

    def collection_exists(self, collection: str) -> bool:
        path = f"/collections/{_seg(collection)}/exists"
        result = self._call("GET", path, what=f"check whether collection `{collection}` exists")
        with self._parsing("GET", path):
            exists = result["exists"]
            if not isinstance(exists, bool):
                raise ValueError("exists is not a bool")
            return exists

    def create_collection(
        self, collection: str, config: dict, *, shard_number: int | None = None, replication_factor: int | None = None
    ) -> None:
        """Create a collection shaped like `config` (a `CollectionInfo.config`)."""
        body = create_body_from_config(config, shard_number=shard_number, replication_factor=replication_factor)
        self._call("PUT", f"/collections/{_seg(collection)}", what=f"create collection `{collection}`", json_body=body)

    def delete_collection(self, collection: str) -> None:
        self._call("DELETE", f"/collections/{_seg(collection)}", what=f"delete collection `{collection}`")

    # ---------------------------------------------------------------- aliases

    def list_aliases(self) -> list[tuple[str, str]]:
        """Every alias of the node as (alias, collection), sorted."""
        return self._aliases("/aliases", "list aliases")

    def collection_aliases(self, collection: str) -> list[str]:
        path = f"/collections/{_seg(collection)}/aliases"
        pairs = self._aliases(path, f"list the aliases of collection `{collection}`")
        return [alias for alias, _ in pairs]

    def update_aliases(self, actions: list[dict]) -> None:
        """Apply alias actions in order (create_alias re-points an existing alias)."""
        self._call("POST", "/collections/aliases", what="update aliases", json_body={"actions": list(actions)})

    def _aliases(self, path: str, what: str) -> list[tuple[str, str]]:
        result = self._call("GET", path, what=what)
        with self._parsing("GET", path):
            return sorted((str(a["alias_name"]), str(a["collection_name"])) for a in result["aliases"])

    # ---------------------------------------------------------------- points

    def upsert_points(self, collection: str, points: list[dict], wait: bool = True) -> None:
        self._call(
            "PUT", f"/collections/{_seg(collection)}/points", what=f"upsert points into collection `{collection}`",
            params={"wait": _flag(wait)}, json_body={"points": list(points)},
        )

    def count_points(self, collection: str, exact: bool = True) -> int:
        path = f"/collections/{_seg(collection)}/points/count"
        result = self._call("POST", path, what=f"count the points of collection `{collection}`",
                            json_body={"exact": exact})
        with self._parsing("POST", path):
            count = result["count"]
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError("count is not an integer")
            return count

    def scroll_points(self, collection: str, *, batch: int = 256, with_vectors: bool = True) -> Iterator[dict]:
        """Every point of the collection, page by page, with payload (and vectors)."""
        path = f"/collections/{_seg(collection)}/points/scroll"
        offset: Any = None
        while True:
            body: dict[str, Any] = {"limit": batch, "with_payload": True, "with_vector": with_vectors}
            if offset is not None:
                body["offset"] = offset
            result = self._call("POST", path, what=f"scroll the points of collection `{collection}`", json_body=body)
            with self._parsing("POST", path):
                points = result["points"]
                if not isinstance(points, list):
                    raise ValueError("points is not a list")
                offset = result.get("next_page_offset")
            yield from points
            if offset is None:
                return

    # ---------------------------------------------------------------- collection and shard snapshots

    def create_snapshot(
        self, collection: str, *, shard_id: int | None = None, wait: bool = True
    ) -> SnapshotInfo | None:
        """Make a snapshot on this node (of its local shards); None when accepted with wait=False."""
        path = self._snapshots_path(collection, shard_id)
        result = self._call(
            "POST", path, what=f"create a snapshot of {self._subject(collection, shard_id)}",
            params={"wait": _flag(wait)}, snapshot=True,
        )
        if result is None:
            return None
        with self._parsing("POST", path):
            return SnapshotInfo.from_api(result)

    def list_snapshots(self, collection: str, *, shard_id: int | None = None) -> list[SnapshotInfo]:
        path = self._snapshots_path(collection, shard_id)
        result = self._call("GET", path, what=f"list the snapshots of {self._subject(collection, shard_id)}")
        return self._snapshot_list("GET", path, result)

    def download_snapshot(
        self, collection: str, name: str, *, shard_id: int | None = None, chunk_size: int = 1 << 20
    ) -> ContextManager[SnapshotStream]:
        path = f"{self._snapshots_path(collection, shard_id)}/{_seg(name)}"
        return self._download(path, f"download snapshot `{name}` of {self._subject(collection, shard_id)}", chunk_size)

    def delete_snapshot(self, collection: str, name: str, *, shard_id: int | None = None, wait: bool = True) -> None:
        path = f"{self._snapshots_path(collection, shard_id)}/{_seg(name)}"
        self._call(
            "DELETE", path, what=f"delete snapshot `{name}` of {self._subject(collection, shard_id)}",
            params={"wait": _flag(wait)},
        )

    def upload_snapshot(
        self,
        collection: str,
        open_archive: Callable[[], ContextManager[Iterable[bytes]]],
        *,
        filename: str,
        size: int | None = None,
        shard_id: int | None = None,
        priority: str = "snapshot",
        checksum: str | None = None,
        wait: bool = True,
    ) -> None:
        """Upload an archive and recover from it, streaming a multipart body built on the fly.

        `open_archive` is called once per attempt, so a retry re-reads the source from the start.
        Qdrant keeps the uploaded file in the collection's snapshot folder afterwards.
        """
        self._check_priority(priority)
        path = f"{self._snapshots_path(collection, shard_id)}/upload"
        what = f"upload snapshot `{filename}` to {self._subject(collection, shard_id)}"
        params = {"wait": _flag(wait), "priority": priority}
        if checksum is not None:
            params["checksum"] = checksum
        boundary = "qbr-" + secrets.token_hex(16)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if size is not None:
            length = len(_multipart_preamble(boundary, filename)) + size + len(_multipart_epilogue(boundary))
            headers["Content-Length"] = str(length)

        def mismatch(sent: int) -> Exception:
            return QdrantError(
                f"Could not {what} on {self._where}: the archive gave {sent} bytes or more but its recorded size "
                f"is {size}; verify the archive in the repository.",
                node=self.node,
            )

        def body(stack: ExitStack) -> Iterator[bytes]:
            chunks = stack.enter_context(open_archive())
            return _multipart_body(boundary, filename, chunks, size, mismatch)

        response = self._send("POST", path, what=what, params=params, headers=headers, body=body, snapshot=True)
        self._result(response, "POST", path, envelope=True)

    def recover_snapshot(
        self,
        collection: str,
        location: str,
        *,
        shard_id: int | None = None,
        priority: str = "snapshot",
        checksum: str | None = None,
        api_key: str | None = None,
        wait: bool = True,
    ) -> None:
        """Have the node recover from `location` (an http(s) URL, possibly presigned, or file://)."""
        self._check_priority(priority)
        path = f"{self._snapshots_path(collection, shard_id)}/recover"
        body: dict[str, Any] = {"location": location, "priority": priority}
        if checksum is not None:
            body["checksum"] = checksum
        if api_key is not None:
            body["api_key"] = api_key
        # A URL may be presigned: it is "the archive URL" in every message. A bare name (shard
        # recovery from the node's own snapshot folder) is no secret and helps the reader.
        hidden: list[tuple[str, str]] = []
        if "://" in location:
            source = "the archive URL"
            hidden += [(location, source), (location.split("?", 1)[0], source)]
        else:
            source = f"snapshot `{location}`"
        if api_key:
            hidden.append((api_key, "***"))
        self._call(
            "PUT", path, what=f"recover {self._subject(collection, shard_id)} from {source}",
            params={"wait": _flag(wait)}, json_body=body, snapshot=True, hidden=hidden,
        )

    # ---------------------------------------------------------------- full-storage snapshots

    def create_full_snapshot(self, *, wait: bool = True) -> SnapshotInfo | None:
        result = self._call("POST", "/snapshots", what="create a full snapshot", params={"wait": _flag(wait)},
                            snapshot=True)
        if result is None:
            return None
        with self._parsing("POST", "/snapshots"):
            return SnapshotInfo.from_api(result)

    def list_full_snapshots(self) -> list[SnapshotInfo]:
        result = self._call("GET", "/snapshots", what="list full snapshots")
        return self._snapshot_list("GET", "/snapshots", result)

    def download_full_snapshot(self, name: str, *, chunk_size: int = 1 << 20) -> ContextManager[SnapshotStream]:
        return self._download(f"/snapshots/{_seg(name)}", f"download full snapshot `{name}`", chunk_size)

    def delete_full_snapshot(self, name: str, *, wait: bool = True) -> None:
        self._call("DELETE", f"/snapshots/{_seg(name)}", what=f"delete full snapshot `{name}`",
                   params={"wait": _flag(wait)})

    # ---------------------------------------------------------------- internals: paths and shapes

    @staticmethod
    def _snapshots_path(collection: str, shard_id: int | None) -> str:
        if shard_id is None:
            return f"/collections/{_seg(collection)}/snapshots"
        return f"/collections/{_seg(collection)}/shards/{int(shard_id)}/snapshots"

    @staticmethod
    def _subject(collection: str, shard_id: int | None) -> str:
        if shard_id is None:
            return f"collection `{collection}`"
        return f"shard {shard_id} of collection `{collection}`"

    def _check_priority(self, priority: str) -> None:
        if priority not in SNAPSHOT_PRIORITIES:
            raise QdrantError(
                f"Snapshot priority {priority!r} for {self._where} is not one Qdrant knows; "
                f"use one of {', '.join(SNAPSHOT_PRIORITIES)}.",
                node=self.node,
            )

    def _snapshot_list(self, method: str, path: str, result: Any) -> list[SnapshotInfo]:
        with self._parsing(method, path):
            if not isinstance(result, list):
                raise ValueError("not a list")
            return [SnapshotInfo.from_api(item) for item in result]

    @contextmanager
    def _parsing(self, method: str, path: str) -> Iterator[None]:
        """Turn a result of the wrong shape into a 'malformed response' error."""
        try:
            yield
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(method, path, f"unexpected result shape: {type(exc).__name__}") from None

    # ---------------------------------------------------------------- internals: requests

    def _call_dict(self, method: str, path: str, *, what: str) -> dict:
        result = self._call(method, path, what=what)
        if not isinstance(result, dict):
            raise self._malformed(method, path, "the result is not a JSON object")
        return result

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict | None = None,
        json_body: Any = None,
        snapshot: bool = False,
        envelope: bool = True,
        hidden: list[tuple[str, str]] | None = None,
    ) -> Any:
        """One JSON request with retries; returns the envelope's `result` (None when accepted)."""
        content = None
        headers = None
        if json_body is not None:
            content = json.dumps(json_body).encode("utf-8")
            headers = {"Content-Type": "application/json"}
        response = self._send(
            method, path, what=what, params=params, headers=headers,
            body=(lambda stack: content) if content is not None else None,
            snapshot=snapshot, hidden=hidden,
        )
        return self._result(response, method, path, envelope=envelope)

    def _result(self, response: httpx.Response, method: str, path: str, *, envelope: bool) -> Any:
        if response.status_code == 202:
            return None
        try:
            data = json.loads(response.content)
        except ValueError:
            raise self._malformed(method, path, "not JSON") from None
        if not envelope:
            return data
        if not isinstance(data, dict):
            raise self._malformed(method, path, "not a JSON object")
        if data.get("status") == "accepted":
            return None
        if data.get("status") != "ok" or "result" not in data:
            raise self._malformed(method, path, "no result in the envelope")
        return data["result"]

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict | None = None,
        headers: dict | None = None,
        body: Callable[[ExitStack], Any] | None = None,
        snapshot: bool = False,
        stream: bool = False,
        hidden: list[tuple[str, str]] | None = None,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response (open if `stream`) or raise QdrantError."""
        attempts = self.retries + 1
        timeout = httpx.Timeout(self.snapshot_timeout if snapshot else self.timeout, connect=CONNECT_TIMEOUT)
        for attempt in range(1, attempts + 1):
            try:
                with ExitStack() as stack:
                    request = self._client.build_request(
                        method, self.url + path, params=params, headers=headers,
                        content=body(stack) if body is not None else None, timeout=timeout,
                    )
                    response = self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt < attempts and _retryable_transport(exc):
                    self._pause(attempt, None, f"{method} {path}", _transport_reason(exc))
                    continue
                raise self._transport_error(exc, method, path, what, attempt, snapshot, hidden) from None
            except httpx.HTTPError as exc:
                raise self._error(
                    f"{self._where} could not {what}: {type(exc).__name__}; check the manifest's url.", None, hidden
                ) from None
            status = response.status_code
            if 200 <= status < 300:
                return response
            retryable = RETRY_STATUSES_READ if method == "GET" else RETRY_STATUSES
            if status in retryable and attempt < attempts:
                retry_after = response.headers.get("retry-after")
                response.close()
                self._pause(attempt, retry_after, f"{method} {path}", str(status))
                continue
            try:
                detail = self._error_detail(response, hidden)
            finally:
                response.close()
            raise self._status_error(status, detail, method, path, what, attempt, hidden)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, attempt: int, retry_after: str | None, request: str, reason: str) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)
        wanted = _parse_retry_after(retry_after)
        if wanted is not None:
            delay = max(delay, min(wanted, self.max_backoff))
        log.info("%s: %s got %s; retrying in %.1f s (attempt %d of %d)",
                 self.node, request, reason, delay, attempt + 1, self.retries + 1)
        if delay > 0:
            self._sleep(delay)

    @contextmanager
    def _download(self, path: str, what: str, chunk_size: int) -> Iterator[SnapshotStream]:
        response = self._send(
            "GET", path, what=what, headers={"Accept-Encoding": "identity"}, snapshot=True, stream=True
        )
        try:
            def interrupted(got: int) -> TransferInterrupted:
                total = response.headers.get("content-length")
                of = f" of {total}" if total else ""
                return TransferInterrupted(
                    self._scrub(f"Could not {what} from {self._where}: the transfer was cut short after "
                                f"{got}{of} bytes; retry the transfer."),
                    node=self.node,
                )

            stream = SnapshotStream(response, chunk_size, interrupted)
            yield stream
        finally:
            response.close()

    # ---------------------------------------------------------------- internals: errors

    def _error_detail(self, response: httpx.Response, hidden: list[tuple[str, str]] | None = None) -> str:
        """Qdrant's error text from a JSON (`status.error`) or plain-text body, scrubbed of secrets
        before it is shortened (a secret cut in half would no longer be recognised)."""
        raw = b""
        try:
            if response.is_stream_consumed:
                raw = response.content
            else:
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) >= _ERROR_BODY_LIMIT:
                        break
        except (httpx.HTTPError, httpx.StreamError):
            pass
        text = raw[:_ERROR_BODY_LIMIT].decode("utf-8", errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            status = data.get("status")
            if isinstance(status, dict) and isinstance(status.get("error"), str):
                text = status["error"]
            elif isinstance(status, str):
                text = status
        return _clean_detail(self._scrub(text, hidden), response.reason_phrase or f"HTTP {response.status_code}")

    def _status_error(
        self, status: int, detail: str, method: str, path: str, what: str, attempt: int,
        hidden: list[tuple[str, str]] | None,
    ) -> QdrantError:
        detail = self._scrub(detail, hidden)
        where = self._where
        for_cluster = f" for cluster '{self.cluster}'" if self.cluster else " for this cluster in the manifest"
        lower = detail.lower()
        if status == 401:
            if self._api_key:
                message = f"{where} rejected the API key (401 {detail}); set api_key{for_cluster}."
            else:
                message = f"{where} requires an API key (401 {detail}); set api_key{for_cluster}."
        elif status == 403:
            message = (f"{where} refused to {what} (403 {detail}); "
                       f"use an API key with manage access{for_cluster}.")
        elif status == 404:
            missing = _COLLECTION_MISSING.search(detail)
            if missing:
                message = (f"{where} could not {what}: collection `{missing.group(1)}` does not exist; "
                           "check the collection name.")
            else:
                message = f"{where} could not {what}: not found (404 {detail}); check that it exists."
        elif status == 409:
            message = (f"{where} could not {what}: it already exists (409 {detail}); "
                       "delete it first or choose another name.")
        elif status == 422:
            message = (f"{where} rejected the request to {what} as invalid (422 {detail}); "
                       "check the names and values sent, and that this Qdrant version supports them.")
        elif status == 400 and "checksum" in lower and "mismatch" in lower:
            message = (f"{where} could not {what}: the archive's checksum does not match (400 {detail}); "
                       "the archive is damaged or not the one recorded, verify the repository.")
        elif status == 400 and "not compatible with existing collection" in lower:
            message = (f"{where} could not {what}: the snapshot does not fit the existing collection (400 {detail}); "
                       "delete the collection first or restore under another name.")
        elif status == 400:
            message = f"{where} refused to {what} (400 {detail}); check the request's names and settings."
        elif 300 <= status < 400:
            message = (f"{where} answered {status} to {method} {path} (a redirect); "
                       "check that the manifest's url points at the node itself.")
        else:
            after = f" after {attempt} attempts" if attempt > 1 else ""
            advice = ("wait and retry, or lower qbr's parallelism" if status == 429
                      else "check the node's health and logs, then retry")
            message = f"{where} answered {status} to {method} {path}{after}: {detail}; {advice}."
        return self._error(message, status, hidden)

    def _transport_error(
        self, exc: httpx.TransportError, method: str, path: str, what: str, attempt: int, snapshot: bool,
        hidden: list[tuple[str, str]] | None,
    ) -> QdrantError:
        reason = _transport_reason(exc)
        after = f" after {attempt} attempts" if attempt > 1 else ""
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            message = (f"Cannot reach {self._where}{after}: {reason}; "
                       "check that it is running and that the manifest's url is right.")
        elif isinstance(exc, httpx.ReadTimeout):
            limit = self.snapshot_timeout if snapshot else self.timeout
            message = (f"{self._where} did not answer {method} {path} within {limit:g} s{after}; "
                       "it may still be working on it, so check its logs before retrying, or raise the timeout.")
        else:
            message = (f"{self._where} failed to {what}{after}: {reason}; "
                       "check the node's health and the network, then retry.")
        return self._error(message, None, hidden)

    def _malformed(self, method: str, path: str, why: str) -> QdrantError:
        return self._error(
            f"{self._where} returned a malformed response to {method} {path} ({why}); "
            "check that the url points at Qdrant's REST port (usually 6333).",
            None,
            None,
        )

    def _error(self, message: str, status: int | None, hidden: list[tuple[str, str]] | None) -> QdrantError:
        return QdrantError(self._scrub(message, hidden, min_length=6), status=status, node=self.node)

    def _scrub(self, text: str, hidden: list[tuple[str, str]] | None = None, *, min_length: int = 1) -> str:
        """Remove every secret we know of, then anything that looks like a credential in a URL.

        Server text is scrubbed of secrets of any length; whole messages only of secrets long
        enough not to match qbr's own words (a one-letter test key would eat every "k").
        """
        pairs = list(hidden or [])
        if self._api_key:
            pairs.append((self._api_key, "***"))
        for secret, placeholder in sorted(pairs, key=lambda pair: -len(pair[0])):
            if secret and len(secret) >= min_length:
                text = text.replace(secret, placeholder)
        text = _URL_USERINFO.sub(r"\1", text)
        text = _URL_QUERY.sub(r"\1", text)
        return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", text)

    def _cluster_suffix(self) -> str:
        return f" of cluster '{self.cluster}'" if self.cluster else ""
