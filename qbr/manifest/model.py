"""The manifest's data model: the frozen dataclasses the rest of qbr codes against.

Kept apart from the loader so that reading a Manifest (the planner, observe, status...) never
imports PyYAML or jsonschema: this module needs only the standard library and qbr's own small
modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Mapping

from qbr.manifest import collection_map
from qbr.retention import RetentionPolicy


@dataclass(frozen=True)
class SnapshotStorage:
    """Where a cluster's nodes write their snapshots themselves: an S3 bucket and key prefix."""

    bucket: str
    prefix: str = "snapshots"
    endpoint_url: str | None = None
    region: str | None = None

    def key_of(self, collection: str, name: str, shard_id: int | None) -> str:
        """Qdrant's key for a snapshot: <prefix>/<collection>/[shards/<id>/]<name>."""
        shard = f"shards/{shard_id}/" if shard_id is not None else ""
        return f"{self.prefix.strip('/')}/{collection}/{shard}{name}".lstrip("/")


@dataclass(frozen=True)
class TlsConfig:
    """How qbr checks the nodes' certificates and proves itself to them."""

    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    verify: bool = True


@dataclass(frozen=True)
class ClusterConfig:
    """A Qdrant cluster; `urls` lists the known nodes' REST URLs (url first, no trailing '/')."""

    name: str
    urls: tuple[str, ...]
    api_key: str | None = field(repr=False)
    rest_port: int | None
    timeout: timedelta | None
    discover: bool  # only `url` was given: the other nodes come from GET /cluster
    snapshot_timeout: timedelta | None = None
    snapshot_storage: SnapshotStorage | None = None
    tls: TlsConfig = TlsConfig()


@dataclass(frozen=True)
class S3Options:
    """How qbr talks to one S3 store (an s3 block's optional keys); None: qbr's default for the
    store (path-style and checksums only when required with an endpoint_url; see
    qbr.repository.s3_setup). `locking: unsafe-single-writer` lets qbr lock a store that ignores
    conditional writes, best effort, for when only one qbr ever runs against it."""

    addressing_style: Literal["path", "virtual", "auto"] | None = None
    checksums: Literal["when_required", "when_supported"] | None = None
    connect_timeout: float | None = None  # seconds
    read_timeout: float | None = None  # seconds
    max_attempts: int | None = None
    locking: Literal["conditional", "unsafe-single-writer"] = "conditional"

    def client_settings(self) -> dict[str, Any]:
        """The keyword arguments of open_s3_repository for these settings."""
        return {
            "addressing_style": self.addressing_style,
            "checksums": self.checksums,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "max_attempts": self.max_attempts,
        }


@dataclass(frozen=True)
class Encryption:
    """Client-side encryption to age recipients (public keys as qbr records them: an ssh key
    without its comment). See qbr.encryption."""

    recipients: tuple[str, ...]
    recipients_file: Path | None = None  # where they were read from, if a file

    @property
    def fingerprint(self) -> str:
        from qbr.encryption import fingerprint

        return fingerprint(self.recipients)


@dataclass(frozen=True)
class ServerSideEncryption:
    """S3 SSE for every object qbr writes: AES256 (SSE-S3) or aws:kms (SSE-KMS, optional key)."""

    mode: Literal["AES256", "aws:kms"]
    kms_key_id: str | None = None

    def put_args(self) -> dict[str, str]:
        """The PutObject / CreateMultipartUpload / CopyObject parameters that ask for it."""
        args = {"ServerSideEncryption": self.mode}
        if self.mode == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


@dataclass(frozen=True)
class RepositoryConfig:
    """Where archives and set records live: a prefix in an S3 bucket, or a folder."""

    name: str
    kind: Literal["s3", "path"]
    path: Path | None  # absolute
    bucket: str | None
    prefix: str  # no leading or trailing '/'
    endpoint_url: str | None
    region: str | None
    s3: S3Options = S3Options()
    encryption: Encryption | None = None
    sse: ServerSideEncryption | None = None
    object_lock: Literal["GOVERNANCE", "COMPLIANCE"] | None = None  # S3 Object Lock retention mode
    group: str | None = None  # a folder: the group that may read it (0750/0640), else owner-only (0700/0600)
    # Archives as content-defined chunks stored once by hash (qbr.repository.chunked), compressed.
    dedup: bool = False
    compression: Literal["zstd", "none"] = "zstd"
    compression_level: int = 3


@dataclass(frozen=True)
class StateLocation:
    """Where the state file lives."""

    kind: Literal["path", "s3"]
    path: Path | None
    bucket: str | None
    key: str | None
    endpoint_url: str | None
    region: str | None
    s3: S3Options = S3Options()
    # Its own (state.s3.sse), else that of a repository with sse in the same bucket and endpoint.
    sse: ServerSideEncryption | None = None

    def describe(self) -> str:
        """A short human form: the absolute path, or s3://bucket/key."""
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return str(self.path)


@dataclass(frozen=True)
class BackupConfig:
    """Which collections of a cluster are copied into a repository, how often, how long kept."""

    name: str
    cluster: str
    repository: str
    collections: tuple[str, ...]
    rpo: timedelta
    only_changed: bool
    aliases: bool
    retention: RetentionPolicy
    max_reference_age: timedelta = timedelta(days=7)

    def selects(self, collection: str) -> bool:
        """Whether this backup covers `collection`: the last glob that matches decides; '!' excludes."""
        return collection_map.selects(self.collections, collection)


@dataclass(frozen=True)
class Topology:
    """A restore's target shape, overriding what the set recorded (None: keep the recorded value)."""

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None


@dataclass(frozen=True)
class Storage:
    """A restore's storage layout, overriding what the set recorded (None: keep it). `quantization`
    is Qdrant's quantization_config, or "disabled"; `hnsw` and `optimizers` are merged into the
    recorded hnsw_config and optimizer_config; `on_disk` applies to every dense vector."""

    on_disk: bool | None = None
    quantization: Any = None
    hnsw: Mapping[str, Any] | None = None
    optimizers: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RestoreConfig:
    """A cluster that must hold restored copies of a backup's collections."""

    name: str
    from_backup: str
    to: str
    at: datetime | None  # None: the latest set; else aware UTC
    collections: tuple[tuple[str, str], ...]
    if_exists: Literal["skip", "replace", "fail"]
    aliases: bool
    via: Literal["auto", "url", "upload"]
    topology: Topology = Topology()
    storage: Storage = Storage()
    # auto: recover snapshots where they can carry the target's shape (then PATCH), else copy the
    # points from the live source; snapshot / logical: always that way.
    method: Literal["auto", "snapshot", "logical"] = "auto"
    batch_size: int = 256  # points per scroll page and upsert of a logical copy
    verify_sample: int = 0  # after the restore, compare this many points with their source (live, or the archives)
    # Where a logical copy reads the points: the live source collection, or the set's archives
    # (offline, with Qdrant's engine: no source cluster needed).
    copy_from: Literal["live", "archive"] = "live"

    def target_name(self, source_collection: str) -> str | None:
        """The collection `source_collection` is restored into; None when no entry matches."""
        return collection_map.target_name(self.collections, source_collection)


@dataclass(frozen=True)
class AdoptConfig:
    """Snapshots already in an S3 bucket, in Qdrant's key layout, to become sets of backup `into`."""

    name: str
    bucket: str
    prefix: str
    endpoint_url: str | None
    region: str | None
    into: str
    cluster: str
    window: timedelta
    aliases_csv: Path | None = None
    filter: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A loaded, checked manifest. `sha256` is of the raw bytes, so plans can spot a changed file."""

    source: str
    base_dir: Path
    sha256: str
    version: int
    state: StateLocation
    clusters: Mapping[str, ClusterConfig]
    repositories: Mapping[str, RepositoryConfig]
    backups: Mapping[str, BackupConfig]
    restores: Mapping[str, RestoreConfig]
    adopt: Mapping[str, AdoptConfig] = field(default_factory=dict)
