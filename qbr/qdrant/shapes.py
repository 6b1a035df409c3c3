"""What Qdrant's answers and requests look like: snapshot descriptions, node addresses,
the body that re-creates a collection, and the path pieces of its REST API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from qbr.errors import QdrantError


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
    return rest_urls(cluster_result, seed_url, rest_port, f"Qdrant node {display_url(seed_url)}")


def rest_urls(cluster_result: Any, seed_url: str, rest_port: int | None, where: str) -> list[NodeRef]:
    seed = seed_url.rstrip("/")
    seed_parts = urlsplit(seed)
    node = display_url(seed)
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



def display_url(url: str) -> str:
    """The URL as shown to people: no credentials, query or trailing slash."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


def path_segment(value: str | int) -> str:
    """One URL path segment, quoted so names with '/', '?', spaces... stay one segment."""
    return quote(str(value), safe="")


def query_flag(value: bool) -> str:
    return "true" if value else "false"


