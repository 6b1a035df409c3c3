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
import time
from contextlib import contextmanager
from typing import Any, Iterator

from qbr import faultpoints
from qbr.actions import RestoreCollection
from qbr.apply.archive_reader import choose_reader
from qbr.apply.at_rest import plaintext, read_collection
from qbr.apply.context import ActionContext
from qbr.apply.sample_check import check_recovered_sample
from qbr.apply.target_shape import (
    compatible,
    create_collection,
    ensure_payload_indexes,
    ensure_shard_keys,
    shard_holders,
)
from qbr.errors import ChecksumError, OutcomeUnknown, PreconditionError, QbrError, QdrantError
from qbr.qdrant import QdrantClient
from qbr.records import ArchiveRecord, CollectionRecord, utc_iso
from qbr.transfer import Digest, verified

PRIORITY = "snapshot"  # always sent: Qdrant's default changed across versions
PRESIGN_SECONDS = 900
VERIFY_SAMPLE = ("verify_sample compares restored points with the set's archives read", "remove verify_sample")


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
    source = read_collection(repo, p.backup, p.set_id, p.source_collection, "restore from", "restoring")
    for archive in source.archives:
        head = repo.head(archive.key)
        if head is None:
            raise ChecksumError(f"archive {archive.key} of set {p.set_id} is missing from the repository; it cannot be restored")
        if head.size != archive.object_size:
            raise ChecksumError(
                f"archive {archive.key} of set {p.set_id} is {head.size} bytes, the set recorded {archive.object_size}; "
                "it is damaged and was not restored (run qbr verify)"
            )
        check = getattr(repo, "check_archive", None)  # chunked: the chunk list and its chunks, before the target is touched
        if check is not None:
            check(archive.key, archive.object_size)
    # verify_sample reads the set's archives with the copy engine: without one, stop before the target is touched.
    reader = choose_reader(why=VERIFY_SAMPLE) if p.verify_sample else None
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
    notes: list[str] = []  # said with the outcome: a fallback from URL to upload, and why
    direct = not conn.is_distributed(cluster) and all(a.kind == "collection" for a in source.archives)
    if direct:
        if exists and not compatible(seed.collection_info(target), source):
            seed.delete_collection(target)  # Qdrant refuses to recover over other vectors or shard counts
        for archive in source.archives:
            _recover(ctx, seed, repo, target, archive, None, "upload" if notes else p.via, p.fallback, notes)
            journal.append({"archive": archive.key, "node": nodes[0].url})
        ensure_payload_indexes(seed, target, source)  # a recover into an existing collection keeps its own
    else:
        if exists and not _fits(seed.collection_info(target), source, p):
            seed.delete_collection(target)
            exists = False
        if not exists:
            create_collection(seed, target, source, len(nodes), p.replication_factor, p.write_consistency_factor)
        shard_map = ensure_shard_keys(seed, target, source, len(nodes), p.replication_factor)
        ensure_payload_indexes(seed, target, source)
        holders = shard_holders(conn, cluster, nodes, target)
        for archive in source.archives:
            if archive.kind == "shard":
                shard_id = shard_map.get(archive.shard_ids[0], archive.shard_ids[0])
                if shard_id not in holders:
                    raise QbrError(f"no node of cluster {cluster} holds shard {shard_id} of collection {target}; it cannot be restored")
                node = holders[shard_id][0]
                _recover(ctx, conn.client(cluster, node), repo, target, archive, shard_id, "upload" if notes else p.via, p.fallback, notes)
                journal.append({"archive": archive.key, "shard_id": shard_id, "node": node})
            else:
                wanted = sorted({n for s in archive.shard_ids for n in holders.get(shard_map.get(s, s), [])})
                for node in wanted:
                    _recover(ctx, conn.client(cluster, node), repo, target, archive, None, "upload" if notes else p.via, p.fallback, notes)
                    journal.append({"archive": archive.key, "node": node})
    if p.patch:
        # What a snapshot cannot carry, or Qdrant's recover does not take from it: changed in place.
        seed.update_collection(target, p.patch)
    points = seed.count_points(target, exact=True)
    problem = points_problem(points, source, p.set_id, target, cluster)
    checked = 0
    if problem is None and reader is not None:
        checked, problem = check_recovered_sample(reader, repo, source, p.verify_sample, seed, target, cluster, p.set_id)
    faultpoints.reached("restore.before_record")
    provenance = {
        "backup": p.backup,
        "set_id": p.set_id,
        "copied_in": source.copied_in,
        "source_collection": p.source_collection,
        "cluster": cluster,
        "restored_at": utc_iso(ctx.now()),
        "points_count": points,
    }
    if p.shape:
        provenance.update(method="snapshot", shape=p.shape)
    if checked:
        provenance["sample_checked"] = checked
    if problem is not None:
        # Recorded, not left "incomplete": restoring the same archive again would give the same
        # count, so the next plan does not retry it blindly; it warns until a person looks.
        ctx.restore_finished(p.restore, target, {**provenance, "points_check_failed": problem})
        raise QbrError(problem)
    ctx.restore_finished(p.restore, target, provenance)
    result: dict[str, Any] = {"journal": {"points": points, "recovered": journal}}
    if p.patch:
        result["journal"]["patched"] = p.patch
    if notes:
        result["note"] = notes[0]
        result["journal"]["fell_back_to_upload"] = notes[0]
    return result


def _fits(info: dict[str, Any], source: CollectionRecord, p: RestoreCollection) -> bool:
    """An existing target can take the archives (same vectors and shard number) and has the
    replication the restore asks for (PATCH changes only the number Qdrant shows, not the replicas)."""
    if not compatible(info, source):
        return False
    params = (info.get("config") or {}).get("params") or {}
    return p.replication_factor is None or int(params.get("replication_factor") or 1) == p.replication_factor


def points_problem(points: int, source: CollectionRecord, set_id: str, target: str, cluster: str) -> str | None:
    """Whether the restored count is one the set explains: its recorded count, or (a collection
    written to while it was backed up) a count within the range seen around its snapshots."""
    if points == source.points_count or source.points_count < 0:  # < 0: adopted, never counted
        return None
    low, high = source.points_range or (source.points_count, source.points_count)
    if not low <= source.points_count <= high:  # a record that contradicts itself explains nothing
        low = high = source.points_count
    if low <= points <= high:
        return None
    seen = f"{source.points_count}" if low == high else f"{source.points_count} (between {low} and {high} while it was backed up)"
    return (
        f"restored collection {target} on cluster {cluster} has {points} points, but set {set_id} recorded {seen}; "
        "the restore is not trusted and qbr will not repeat it by itself (run qbr verify; delete the collection to restore it again)"
    )


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


def _recover(
    ctx: ActionContext, client: QdrantClient, repo: Any, collection: str, archive: ArchiveRecord, shard_id: int | None,
    via: str, fallback: bool, notes: list[str],
) -> None:
    """Recover one archive on one node. Never while a recover of the collection may still run
    there (an earlier one whose client gave up goes on, and the last to finish wins); a recover
    whose answer was lost is waited out, then sent once more (the same data again is harmless)."""
    faultpoints.reached("restore.before_recover")
    for attempt in (1, 2):
        _wait_for_recoveries(client, collection)
        try:
            via = _send_recover(ctx, client, repo, collection, archive, shard_id, via, fallback, notes)
            return
        except OutcomeUnknown:
            if attempt == 2:
                raise


def _url_refused(error: QdrantError) -> bool:
    """The node cannot or will not fetch the archive itself: URL recovery disabled (403, Qdrant
    1.18+), or its download failed (no egress, as on Qdrant Cloud; a slow link's 60 s timeout)."""
    text = str(error).lower()
    return (error.status == 403 and ("remote url" in text or "is disabled" in text)) or (
        error.status in (400, 500) and "download" in text and "checksum" not in text
    )


def _send_recover(
    ctx: ActionContext, client: QdrantClient, repo: Any, collection: str, archive: ArchiveRecord, shard_id: int | None,
    via: str, fallback: bool, notes: list[str],
) -> str:
    """Send one recover (URL, or upload through qbr); return the way that is used from now on.
    An encrypted archive is always uploaded: streamed out of the repository, decrypted, and
    checked against the record's sha256 before its last byte reaches the node."""
    if via == "url" and archive.encryption is None:
        url = repo.presigned_get(archive.key, PRESIGN_SECONDS)
        if url is not None:
            try:
                client.recover_snapshot(collection, url, shard_id=shard_id, priority=PRIORITY, checksum=archive.sha256 or None)
                faultpoints.reached("restore.recovered")
                return via
            except QdrantError as error:
                if isinstance(error, OutcomeUnknown) or not _url_refused(error):
                    raise
                if not fallback:
                    raise QbrError(
                        f"node {client.node} cannot recover from a URL ({error}); with via: url the restore stops: "
                        "set via: auto or upload (or enable the node's service.enable_snapshot_url_recovery and egress)"
                    ) from None
                notes.append(f"node {client.node} could not fetch the archive by URL, so it was uploaded through qbr ({error})")
    filename = posixpath.basename(archive.key)
    ctx.progress.expect(archive.size)
    client.upload_snapshot(
        collection,
        lambda: _read_archive(repo, archive.key, archive),
        filename=filename,
        size=archive.size,
        shard_id=shard_id,
        priority=PRIORITY,
        checksum=archive.sha256 or None,
    )
    faultpoints.reached("restore.recovered")
    # Qdrant keeps the uploaded file in the collection's snapshot folder; do not let it fill the disk.
    client.delete_snapshot(collection, filename, shard_id=shard_id, missing_ok=True)
    return "upload"


RECOVERING = frozenset({"ManualRecovery", "Partial", "Recovery", "PartialSnapshot", "Initializing"})
RECOVERY_POLL_SECONDS = 0.2


def _wait_for_recoveries(client: QdrantClient, collection: str) -> None:
    """Wait while the node says a recover of `collection` runs (telemetry, or its replicas in a
    recovering state); a sentence when it outlasts the snapshot timeout."""
    deadline = time.monotonic() + client.snapshot_timeout
    while True:
        activity = client.snapshot_activity(collection)
        running = activity is not None and activity["running_snapshot_recovery"] > 0
        if not running and client.collection_exists(collection):
            states = {s.get("state") for s in client.collection_cluster(collection).get("local_shards") or []}
            running = bool(states & RECOVERING)
        if not running:
            return
        if time.monotonic() >= deadline:
            raise QbrError(
                f"a recover of collection {collection} is still running on node {client.node} after "
                f"{client.snapshot_timeout:g} s; qbr does not start a second one (the last to finish would win): "
                "wait for it, then run qbr apply again"
            )
        time.sleep(RECOVERY_POLL_SECONDS)


@contextmanager
def _read_archive(repo: Any, key: str, archive: ArchiveRecord | None = None) -> Iterator[Iterator[bytes]]:
    """Stream an archive out of the repository for an upload (each chunk is a fault point);
    an encrypted one decrypted on the way, its plaintext sha256 checked before the last chunk."""
    if archive is not None and archive.encryption is not None:
        with plaintext(repo, archive, f"archive {key}") as chunks:
            yield _each_chunk(chunks)
        return
    with repo.open_read(key) as chunks:
        if archive is not None and archive.encoding is not None:  # rebuilt from chunks: checked before the last byte leaves
            chunks = verified(chunks, Digest(), what=f"archive {key} rebuilt from its chunks", expected_size=archive.size,
                              expected_sha256=archive.sha256 or None)
        yield _each_chunk(chunks)


def _each_chunk(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        faultpoints.reached("restore.upload_chunk")
        yield chunk
