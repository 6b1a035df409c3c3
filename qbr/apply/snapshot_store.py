"""Backups of a cluster whose nodes write their snapshots to S3 themselves.

The snapshot is looked for where the manifest says the nodes write (a node whose S3 settings
are wrong silently writes to its local disk instead, and that is said in one sentence), then,
when the repository is on the same S3 store, copied inside S3 into the repository's layout:
no archive byte passes through qbr. Qdrant computes no checksum in S3 mode, so the archive is
recorded with its size and the store's etag, never with a sha256 nobody computed."""

from __future__ import annotations

from typing import Any

from qbr import faultpoints
from qbr.actions import CopyArchive
from qbr.apply.context import ActionContext
from qbr.errors import QbrError
from qbr.records import archive_key


def locate(ctx: ActionContext, p: CopyArchive, snapshot: Any) -> tuple[str, int, str]:
    """(key, size, etag) of the snapshot in the nodes' snapshot bucket."""
    store = ctx.connections.manifest.clusters[p.cluster].snapshot_storage
    assert store is not None
    key = store.key_of(p.collection, snapshot.name, p.shard_id)
    found = ctx.connections.copier(p.cluster).head(store.bucket, key)
    if found is None:
        raise QbrError(
            f"cluster {p.cluster} declares that its nodes write snapshots to s3://{store.bucket}/{store.prefix}, but node "
            f"{p.node} wrote {snapshot.name} elsewhere (Qdrant falls back to its local disk when its S3 settings are "
            "wrong): fix the node's storage.snapshots_config, or remove snapshot_storage from the manifest"
        )
    return key, found[0], found[1]


def copy_in(ctx: ActionContext, p: CopyArchive, client: Any, snapshot: Any, source: tuple[str, int, str]) -> tuple[int, str, str]:
    """Copy the snapshot inside S3 into the repository; then delete Qdrant's own copy through its
    API (so the node's listing stays clean). Returns (size, etag, repository key)."""
    store = ctx.connections.manifest.clusters[p.cluster].snapshot_storage
    repo = ctx.connections.repository(p.repository)
    assert store is not None
    source_key, size, _ = source
    key = archive_key(p.collection, p.backup, p.set_id, snapshot.name)
    full_key = repo.full_key(key)
    etag = ctx.connections.copier(p.cluster).copy(store.bucket, source_key, repo.bucket, full_key, size,
                                                    getattr(repo, "sse", None))  # the repository's SSE, if any
    faultpoints.reached("snapshot.stored")
    client.delete_snapshot(p.collection, snapshot.name, shard_id=p.shard_id, missing_ok=True)
    faultpoints.reached("snapshot.deleted")
    ctx.forget_node_snapshot({"cluster": p.cluster, "node": p.node, "collection": p.collection,
                              "shard_id": p.shard_id, "name": snapshot.name})
    return size, etag, key
