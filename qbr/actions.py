"""What each kind of action needs: typed parameters and the precondition apply checks.

The planner builds an action's `params` from one of these classes and apply reads them back
through the same class, so the two cannot drift apart on a field name. A saved plan keeps them
as plain JSON; `params_of` turns that back into the typed form and names the action when a
field is missing. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from qbr.errors import QbrError


@dataclass(frozen=True)
class CopyArchive:
    """Snapshot one collection (or one shard of it) on one node into the repository."""

    repository: str
    backup: str
    set_id: str
    cluster: str
    node: str
    collection: str
    shard_id: int | None
    kind: str  # collection | shard
    shard_ids: tuple[int, ...]
    # The nodes write snapshots to S3 themselves (one bucket for every node), and with
    # server_side the repository is on that store: the archive is copied inside S3.
    snapshot_store: bool = False
    server_side: bool = False


@dataclass(frozen=True)
class CommitSet:
    """Write the set record: the commit of one backup run."""

    repository: str
    backup: str
    set_id: str
    created: str
    cluster: str
    qdrant_version: str
    copied: dict[str, list[str]]  # collection -> ids of the copy actions that hold its archives
    carried: dict[str, dict[str, Any]]  # collection -> the record of an earlier set, referenced
    aliases: dict[str, list[str]]


@dataclass(frozen=True)
class DeleteSet:
    repository: str
    backup: str
    set_id: str


@dataclass(frozen=True)
class DeleteArchive:
    repository: str
    key: str


@dataclass(frozen=True)
class AbortUpload:
    repository: str
    key: str
    upload_id: str
    initiated: str


@dataclass(frozen=True)
class SweepChunks:
    """Delete a dedup repository's unreferenced chunks (those still unreferenced at apply time)."""

    repository: str
    chunks: list[str]  # chunk ids
    markers: list[str] = field(default_factory=list)  # stale pending markers in the index, removed after
    relist: bool = False  # list chunks/ and index what a killed run stored


@dataclass(frozen=True)
class DeleteNodeSnapshot:
    cluster: str
    node: str
    collection: str
    shard_id: int | None
    name: str | None  # None: only the state's record is left to forget
    record: dict[str, Any]


@dataclass(frozen=True)
class RestoreCollection:
    restore: str
    backup: str
    repository: str
    set_id: str
    source_collection: str
    copied_in: str
    target_cluster: str
    target_collection: str
    via: str  # url | upload
    fallback: bool = True  # via was auto: a node that cannot fetch by URL gets an upload instead
    # The manifest's topology and storage (plans written before them mean none): the target is
    # created with this replication (a multi-node target), then PATCHed with `patch` once its
    # archives are recovered; `shape` is recorded with its provenance.
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    patch: dict[str, Any] = field(default_factory=dict)
    shape: dict[str, Any] = field(default_factory=dict)
    verify_sample: int = 0  # then compare this many points with the set's archives, read with the copy engine


@dataclass(frozen=True)
class CopyCollection:
    """A logical copy: create the target in its new shape, then stream the points of the live
    source collection into it (scroll, upsert), resumably (the positions are journaled)."""

    restore: str
    backup: str
    set_id: str
    copied_in: str
    source_cluster: str
    source_collection: str
    target_cluster: str
    target_collection: str
    shard_number: int
    replication_factor: int
    write_consistency_factor: int
    storage: dict[str, Any]  # on_disk, quantization, hnsw, optimizers ({} none): see qbr.planner.topology
    shape: dict[str, Any]  # the manifest's topology and storage, recorded with the provenance
    batch_size: int = 256
    verify_sample: int = 0
    copy_from: str = "live"  # live | archive (the set's archives in `repository`, read offline)
    repository: str = ""


@dataclass(frozen=True)
class UpdateAliases:
    cluster: str
    actions: list[dict[str, Any]]


@dataclass(frozen=True)
class AdoptSet:
    """Turn snapshot objects already in S3 into a set: copy each inside S3, then commit."""

    repository: str
    backup: str
    set_id: str
    created: str
    cluster: str
    qdrant_version: str
    bucket: str  # where the objects lie (endpoint and credentials: the adoption's, from the manifest)
    collections: dict[str, dict[str, Any]]  # name -> {archives: [...], config: {...} | None, aliases: [...]}
    adoption: str = ""  # the manifest's adopt entry (its endpoint and region reach the bucket)


@dataclass(frozen=True)
class RetainSet:
    """Extend the S3 Object Lock of a set's record and of every archive it names to `until`
    (never shortened): as long as retention is sure to keep the set (qbr.retention.protected_until)."""

    repository: str
    backup: str
    set_id: str
    until: str  # UTC ISO
    mode: str  # GOVERNANCE | COMPLIANCE


@dataclass(frozen=True)
class RekeySet:
    """Encrypt a set again for the repository's current recipients: each archive streamed
    through decryption and encryption into a new object (no plaintext on disk), then the record
    rewritten to name them, sealed for the new recipients. The old archives become garbage."""

    repository: str
    backup: str
    set_id: str
    fingerprint: str  # of the recipients it is encrypted for (the new archive keys carry it)


PARAMS: dict[str, type] = {
    "retain_set": RetainSet,
    "rekey_set": RekeySet,
    "adopt_set": AdoptSet,
    "copy_archive": CopyArchive,
    "commit_set": CommitSet,
    "delete_set": DeleteSet,
    "delete_archive": DeleteArchive,
    "abort_upload": AbortUpload,
    "sweep_chunks": SweepChunks,
    "delete_node_snapshot": DeleteNodeSnapshot,
    "restore_collection": RestoreCollection,
    "copy_collection": CopyCollection,
    "update_aliases": UpdateAliases,
}


def as_params(typed: Any) -> dict[str, Any]:
    """The JSON form of typed parameters (tuples become lists, as a saved plan reads back)."""
    # Shallow on purpose: values are JSON-native already (the planner turns the whole action into
    # JSON data once more); a deep asdict() of a commit's carried records was most of a plan's time.
    return {f.name: list(v) if isinstance(v := getattr(typed, f.name), tuple) else v for f in fields(typed)}


def params_of(kind: str, params: dict[str, Any], action_id: str) -> Any:
    """Typed parameters of an action; a missing field is a plan defect named in one sentence."""
    cls = PARAMS.get(kind)
    if cls is None:
        raise QbrError(f"action {action_id} has an unknown kind {kind!r}; run qbr plan again")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in params:
            if f.name == "record" and kind == "delete_node_snapshot":  # plans from before the record field
                values["record"] = {k: params.get(k) for k in ("cluster", "node", "collection", "shard_id", "name")}
                continue
            if f.default is not MISSING or f.default_factory is not MISSING:  # added later: older plans mean its default
                continue
            raise QbrError(f"action {action_id} lacks the parameter {f.name}; run qbr plan again")
        value = params[f.name]
        values[f.name] = tuple(value) if f.name == "shard_ids" else value
    return cls(**values)
