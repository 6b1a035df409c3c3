"""Carry out one restore_collection action: put a set's collection onto a target cluster.

Topology, n source nodes to x target nodes: a single-node target gets the archive recovered
directly (Qdrant creates the collection from the snapshot's config). Otherwise the collection
is created from the recorded config with its shard count and a replication factor that fits
the target, and each archive is recovered on the node(s) holding its shards: a shard archive
on one node holding that shard, a whole-collection archive on every node holding any shard
(each node keeps what is local to it). Bytes reach Qdrant from a short-lived presigned URL
(never printed or stored) or, when the node cannot fetch from the repository, through the
upload endpoint, streamed; the uploaded copy Qdrant leaves behind is deleted afterwards.
"""

from __future__ import annotations

import posixpath
from contextlib import contextmanager
from typing import Any, Iterator

from qbr import faultpoints
from qbr.actions import RestoreCollection
from qbr.apply.context import ActionContext
from qbr.errors import ChecksumError, PreconditionError, QbrError, QdrantError
from qbr.qdrant import QdrantClient
from qbr.records import ArchiveRecord, CollectionRecord, SetRecord, set_key, utc_iso

PRIORITY = "snapshot"  # always sent: Qdrant's default changed across versions
PRESIGN_SECONDS = 900


def check_restore_collection(ctx: ActionContext, p: RestoreCollection, pre: dict[str, Any]) -> None:
    if "target_exists" not in pre:
        return
    exists = ctx.connections.seed(p.target_cluster).collection_exists(p.target_collection)
    if exists != bool(pre["target_exists"]):
        raise PreconditionError(
            f"collection {p.target_collection} on cluster {p.target_cluster} "
            f"{'appeared' if exists else 'disappeared'} since the plan; run qbr plan again"
        )


def restore_collection(ctx: ActionContext, p: RestoreCollection, action_id: str) -> dict[str, Any]:
    try:
        return _restore(ctx, p)
    except QbrError:
        _forget_mark_if_untouched(ctx, p)
        raise


def _restore(ctx: ActionContext, p: RestoreCollection) -> dict[str, Any]:
    conn = ctx.connections
    repo = conn.repository(p.repository)
    key = set_key(p.backup, p.set_id)
    try:
        record = SetRecord.from_json(repo.get_bytes(key), key)
    except QbrError as error:
        raise QbrError(f"cannot read set {p.backup}/{p.set_id} to restore from: {error}") from None
    source = record.collections.get(p.source_collection)
    if source is None:
        raise QbrError(f"set {p.set_id} holds no collection {p.source_collection}; run qbr plan again")
    for archive in source.archives:
        head = repo.head(archive.key)
        if head is None:
            raise ChecksumError(f"archive {archive.key} of set {p.set_id} is missing from the repository; it cannot be restored")
        if head.size != archive.size:
            raise ChecksumError(
                f"archive {archive.key} of set {p.set_id} is {head.size} bytes, the set recorded {archive.size}; "
                "it is damaged and was not restored (run qbr verify)"
            )
    cluster, target = p.target_cluster, p.target_collection
    nodes = conn.cluster_nodes(cluster)
    seed = conn.client(cluster, nodes[0].url)
    exists = seed.collection_exists(target)
    # Before the target is touched, the state says a restore into it is under way. If this run
    # dies from here on, the next plan restores it again whatever if_exists says: the half-made
    # collection is qbr's work, not the user's. The provenance written at the end replaces this.
    ctx.restore_started(p.restore, target, {
        "backup": p.backup,
        "set_id": p.set_id,
        "source_collection": p.source_collection,
        "cluster": cluster,
        "started_at": utc_iso(ctx.now()),
        "incomplete": True,
    })
    journal: list[dict[str, Any]] = []
    direct = len(nodes) == 1 and all(a.kind == "collection" for a in source.archives)
    if direct:
        if exists and not _compatible(seed.collection_info(target), source):
            seed.delete_collection(target)  # Qdrant refuses to recover over other vectors or shard counts
        for archive in source.archives:
            _recover(ctx, seed, repo, target, archive, None, p.via)
            journal.append({"archive": archive.key, "node": nodes[0].url})
    else:
        if exists and not _compatible(seed.collection_info(target), source):
            seed.delete_collection(target)
            exists = False
        if not exists:
            replication = max(1, min(_replication_factor(source), len(nodes)))
            try:
                seed.create_collection(
                    target, source.config, shard_number=source.shard_number, replication_factor=replication
                )
            except QdrantError as error:
                # A create whose answer was lost (a timeout) is sent again by the client and meets the
                # collection it made: 409. One of another shape is still refused.
                if error.status != 409 or not seed.collection_exists(target):
                    raise
                if not _compatible(seed.collection_info(target), source):
                    raise
            faultpoints.reached("restore.collection_created")
        holders = _shard_holders(conn, cluster, nodes, target)
        for archive in source.archives:
            if archive.kind == "shard":
                shard_id = archive.shard_ids[0]
                if shard_id not in holders:
                    raise QbrError(f"no node of cluster {cluster} holds shard {shard_id} of collection {target}; it cannot be restored")
                node = holders[shard_id][0]
                _recover(ctx, conn.client(cluster, node), repo, target, archive, shard_id, p.via)
                journal.append({"archive": archive.key, "shard_id": shard_id, "node": node})
            else:
                wanted = sorted({n for s in archive.shard_ids for n in holders.get(s, [])})
                for node in wanted:
                    _recover(ctx, conn.client(cluster, node), repo, target, archive, None, p.via)
                    journal.append({"archive": archive.key, "node": node})
    points = seed.count_points(target, exact=True)
    if points != source.points_count:
        raise QbrError(
            f"restored collection {target} on cluster {cluster} has {points} points, but set {p.set_id} recorded "
            f"{source.points_count}; the restore is not trusted (run qbr verify, then apply again)"
        )
    faultpoints.reached("restore.before_record")
    ctx.restore_finished(p.restore, target, {
        "backup": p.backup,
        "set_id": p.set_id,
        "copied_in": source.copied_in,
        "source_collection": p.source_collection,
        "cluster": cluster,
        "restored_at": utc_iso(ctx.now()),
        "points_count": points,
    })
    return {"journal": {"points": points, "recovered": journal}}


def _forget_mark_if_untouched(ctx: ActionContext, p: RestoreCollection) -> None:
    """After a restore failed (an error, not a kill): if its target does not exist, the mark
    that it is incomplete says nothing the next plan needs; drop it."""
    marked = ctx.restore_mark(p.restore, p.target_collection)
    if not marked or not marked.get("incomplete"):
        return
    try:
        if ctx.connections.seed(p.target_cluster).collection_exists(p.target_collection):
            return
    except QbrError:
        return
    ctx.restore_finished(p.restore, p.target_collection, None)


def _replication_factor(source: CollectionRecord) -> int:
    return int((source.config.get("params") or {}).get("replication_factor") or 1)


def _compatible(info: dict[str, Any], source: CollectionRecord) -> bool:
    """Qdrant recovers over an existing collection only with the same vectors and shard count."""
    params = (info.get("config") or {}).get("params") or {}
    wanted = source.config.get("params") or {}
    return params.get("vectors") == wanted.get("vectors") and int(params.get("shard_number") or 1) == source.shard_number


def _shard_holders(conn: Any, cluster: str, nodes: list[Any], collection: str) -> dict[int, list[str]]:
    holders: dict[int, list[str]] = {}
    for node in nodes:
        view = conn.client(cluster, node.url).collection_cluster(collection)
        for shard in view.get("local_shards") or []:
            holders.setdefault(int(shard["shard_id"]), []).append(node.url)
    return {s: sorted(n) for s, n in holders.items()}


def _recover(
    ctx: ActionContext, client: QdrantClient, repo: Any, collection: str, archive: ArchiveRecord, shard_id: int | None, via: str
) -> None:
    faultpoints.reached("restore.before_recover")
    if via == "url":
        url = repo.presigned_get(archive.key, PRESIGN_SECONDS)
        if url is None:
            via = "upload"
        else:
            client.recover_snapshot(collection, url, shard_id=shard_id, priority=PRIORITY, checksum=archive.sha256)
            faultpoints.reached("restore.recovered")
            return
    filename = posixpath.basename(archive.key)
    ctx.progress.expect(archive.size)
    client.upload_snapshot(
        collection,
        lambda: _read_archive(repo, archive.key),
        filename=filename,
        size=archive.size,
        shard_id=shard_id,
        priority=PRIORITY,
        checksum=archive.sha256,
    )
    faultpoints.reached("restore.recovered")
    # Qdrant keeps the uploaded file in the collection's snapshot folder; do not let it fill the disk.
    client.delete_snapshot(collection, filename, shard_id=shard_id, missing_ok=True)


@contextmanager
def _read_archive(repo: Any, key: str) -> Iterator[Iterator[bytes]]:
    """Stream an archive out of the repository for an upload (each chunk is a fault point)."""
    with repo.open_read(key) as chunks:
        yield _each_chunk(chunks)


def _each_chunk(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        faultpoints.reached("restore.upload_chunk")
        yield chunk
