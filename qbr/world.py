"""The observed world as plain frozen data: clusters, nodes, collections, repositories, sets.

`observe` fills these in; the planner reads them. Nothing here does I/O or imports a client,
so `import qbr.planner` stays pure in its imports too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from qbr.records import SetRecord


@dataclass(frozen=True)
class ObservedNode:
    url: str
    peer_id: int | None
    version: str


@dataclass(frozen=True)
class ShardReplica:
    """A shard replica local to one node, as that node reports it."""

    shard_id: int
    node: str
    state: str
    points_count: int | None = None


@dataclass(frozen=True)
class NodeSnapshot:
    """A snapshot file sitting on a node's disk (collection-level, or of one shard)."""

    node: str
    name: str
    shard_id: int | None = None


@dataclass(frozen=True)
class ObservedCollection:
    name: str
    points_count: int
    config: dict[str, Any]
    config_sha256: str
    shard_number: int
    replication_factor: int
    aliases: tuple[str, ...]
    replicas: tuple[ShardReplica, ...] = ()
    node_snapshots: tuple[NodeSnapshot, ...] = ()
    # Every shard of a distributed collection as the known nodes report it (their own and the
    # remote ones), with its shard key under custom sharding; empty on a single node.
    shards: tuple[tuple[int, Any], ...] = ()

    def shard_ids(self) -> list[int]:
        return sorted({s for s, _ in self.shards}) or list(range(self.shard_number))


@dataclass(frozen=True)
class ObservedCluster:
    name: str
    nodes: tuple[ObservedNode, ...]
    distributed: bool
    collection_names: tuple[str, ...]
    collections: dict[str, ObservedCollection]  # observed in detail: those some backup selects
    aliases: dict[str, str]  # alias -> collection

    @property
    def version(self) -> str:
        """The oldest version among the nodes: what a restore must be compatible with."""
        return min((n.version for n in self.nodes), key=version_tuple)


@dataclass(frozen=True)
class ArchiveObject:
    key: str
    size: int
    modified: str  # UTC ISO


@dataclass(frozen=True)
class PendingObject:
    """An upload that began and never finished (S3 multipart, or a local temp file)."""

    key: str
    upload_id: str
    initiated: str  # UTC ISO


@dataclass(frozen=True)
class BrokenSet:
    key: str
    problem: str


@dataclass(frozen=True)
class ChunkIndexObject:
    """One object of a dedup repository's chunk index (qbr.repository.chunk_index)."""

    key: str
    modified: str  # UTC ISO
    pending: bool  # a marker: a backup (or sweep) started and may have stored chunks no index object lists
    chunks: dict[str, int]  # chunk id -> stored size


@dataclass(frozen=True)
class ChunkCensus:
    """A dedup repository's chunks: what its index lists, which chunks each chunk list names,
    and (only while a marker says the index may be short of the truth) chunks found by a listing."""

    index: tuple[ChunkIndexObject, ...] = ()
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # archive key -> distinct chunk ids
    unindexed: dict[str, tuple[int, str]] = field(default_factory=dict)  # chunk id -> (stored size, modified)
    unreadable: tuple[str, ...] = ()  # chunk lists that cannot be read: nothing is swept while there are any
    listed: bool = False  # chunks/ was listed (a marker was found)
    sizes: dict[str, int] = field(default_factory=dict)  # archive key -> its size as read back (a chunk list's rebuilt size)


@dataclass(frozen=True)
class ObservedRepository:
    name: str
    description: str
    can_presign: bool
    sets: tuple[SetRecord, ...]
    archives: dict[str, ArchiveObject]
    pending_uploads: tuple[PendingObject, ...] = ()  # those qbr can abort
    broken_sets: tuple[BrokenSet, ...] = ()
    # Cleanup the store cannot do (an S3-compatible store without ListMultipartUploads or
    # AbortMultipartUpload), one sentence each, saying what to set up instead: plan warnings.
    store_gaps: tuple[str, ...] = ()
    chunks: ChunkCensus | None = None  # a dedup repository's chunks (None: archives stored whole only)
    # Object Lock (repositories that declare it): set record and unreferenced archive key -> the
    # UTC ISO moment its current version is retained until, as S3 reports it.
    locked_until: dict[str, str] = field(default_factory=dict)

    def sets_of(self, backup: str) -> list[SetRecord]:
        """Complete sets of one backup, newest first."""
        return sorted((s for s in self.sets if s.backup == backup), key=lambda s: s.set_id, reverse=True)


@dataclass(frozen=True)
class LegacySnapshot:
    """A snapshot object found in a bucket to adopt (Qdrant's key layout)."""

    key: str  # the full key in its bucket
    size: int
    etag: str | None


@dataclass(frozen=True)
class ObservedAdoption:
    name: str
    objects: tuple[LegacySnapshot, ...] = ()
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # collection -> aliases (from the CSV)


@dataclass(frozen=True)
class Observed:
    clusters: dict[str, ObservedCluster] = field(default_factory=dict)
    repositories: dict[str, ObservedRepository] = field(default_factory=dict)
    adoptions: dict[str, ObservedAdoption] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_tuple(version: str) -> tuple[int, ...]:
    """'1.19.0' -> (1, 19, 0); tolerant of suffixes such as '1.19.0-dev'."""
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
