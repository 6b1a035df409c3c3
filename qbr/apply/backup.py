"""Backup actions: copy a snapshot into the repository, then commit the set that names it.

Set records are written last, so a crash at any instant leaves archives without a record
(garbage that a later plan sweeps after the grace period), never a set naming a missing archive.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from qbr import __version__, faultpoints
from qbr.actions import CommitSet, CopyArchive
from qbr.apply.context import ActionContext
from qbr.errors import ChecksumError, PreconditionError, QbrError, QdrantError
from qbr.records import (
    SETS_PREFIX,
    ArchiveRecord,
    CollectionRecord,
    SetRecord,
    archive_key,
    config_digest,
    parse_set_key,
    set_key,
    utc_iso,
)
from qbr.transfer import Digest, verified

COPY_ATTEMPTS = 3  # a transfer cut short is restarted this many times in all


def check_copy_archive(ctx: ActionContext, p: CopyArchive, pre: dict[str, Any]) -> None:
    client = ctx.connections.client(p.cluster, p.node)
    if pre.get("collection_exists") and not client.collection_exists(p.collection):
        raise PreconditionError(f"collection {p.collection} no longer exists on cluster {p.cluster}; run qbr plan again")
    if pre.get("shard_local") and p.shard_id is not None:
        local = _local_shards(client, p.collection)
        if p.shard_id not in local or local[p.shard_id].get("state") != "Active":
            raise PreconditionError(
                f"shard {p.shard_id} of collection {p.collection} is no longer active on node {p.node}; run qbr plan again"
            )


def copy_archive(ctx: ActionContext, p: CopyArchive, action_id: str) -> dict[str, Any]:
    client = ctx.connections.client(p.cluster, p.node)
    shard_points: int | None = None
    if p.shard_id is not None:
        shard_points = _local_shards(client, p.collection).get(p.shard_id, {}).get("points_count")
    with ctx.snapshot_lock(p.node, p.collection, p.shard_id):
        info = client.collection_info(p.collection)
        config = dict(info.get("config") or {})
        points = client.count_points(p.collection, exact=True)
        digest, key = _snapshot_and_store(ctx, p, client)
    archive = ArchiveRecord(
        key=key,
        size=digest.size,
        sha256=digest.sha256 or "",
        kind=p.kind,
        shard_ids=tuple(p.shard_ids),
        node=p.node,
        points_count=shard_points if p.shard_id is not None else points,
    )
    return {
        "archive": asdict(archive),
        "points_count": points,
        "config": config,
        "journal": {"archive": key, "size": digest.size, "sha256": digest.sha256},
    }


def _local_shards(client: Any, collection: str) -> dict[int, dict[str, Any]]:
    view = client.collection_cluster(collection)
    return {int(s["shard_id"]): s for s in view.get("local_shards") or []}


def _snapshot_and_store(ctx: ActionContext, p: CopyArchive, client: Any) -> tuple[Digest, str]:
    """Create the snapshot on the node, stream it into the repository with its sha256 checked,
    then delete it from the node so Qdrant's disk does not fill."""
    where = {"cluster": p.cluster, "node": p.node, "collection": p.collection, "shard_id": p.shard_id}
    with ctx.snapshot_slot(p.node):
        # Recorded before it exists: if this run dies while Qdrant makes it, or before its name
        # reaches the state, the next plan finds it as the one that appeared since this listing.
        making = {**where, "name": None,
                  "before": sorted(s.name for s in client.list_snapshots(p.collection, shard_id=p.shard_id))}
        ctx.remember_node_snapshot(making)
        faultpoints.reached("snapshot.before_create")
        snapshot = client.create_snapshot(p.collection, shard_id=p.shard_id, wait=True)
    if snapshot is None:
        raise QbrError(f"node {p.node} did not describe the snapshot of collection {p.collection} it made; try again")
    entry = {**where, "name": snapshot.name}
    faultpoints.reached("snapshot.created")
    ctx.remember_node_snapshot(entry, replacing=making)
    faultpoints.reached("snapshot.recorded")
    key = archive_key(p.collection, p.backup, p.set_id, snapshot.name)
    repo = ctx.connections.repository(p.repository)
    what = f"snapshot {snapshot.name} of collection {p.collection} from node {p.node}"
    digest = Digest()
    ctx.progress.expect(snapshot.size)
    for attempt in range(1, COPY_ATTEMPTS + 1):
        try:
            with client.download_snapshot(p.collection, snapshot.name, shard_id=p.shard_id) as stream:
                digest = Digest()
                repo.put_stream(
                    key,
                    verified(stream, digest, what=what, expected_size=snapshot.size,
                             expected_sha256=snapshot.checksum, progress=ctx.progress),
                )
            break
        except QbrError as error:
            if attempt == COPY_ATTEMPTS or not _worth_retrying(error):
                raise
    faultpoints.reached("snapshot.stored")
    client.delete_snapshot(p.collection, snapshot.name, shard_id=p.shard_id, missing_ok=True)
    faultpoints.reached("snapshot.deleted")
    ctx.forget_node_snapshot(entry)
    return digest, key


def _worth_retrying(error: QbrError) -> bool:
    """A transfer cut short or corrupted on the way is restarted; a refusal is not."""
    if isinstance(error, ChecksumError):
        return True
    if isinstance(error, QdrantError):
        return error.status is None or error.status >= 500
    return False


def check_commit_set(ctx: ActionContext, p: CommitSet, pre: dict[str, Any]) -> None:
    repo = ctx.connections.repository(p.repository)
    if pre.get("set_absent") and repo.head(set_key(p.backup, p.set_id)) is not None:
        raise PreconditionError(f"set {p.backup}/{p.set_id} already exists; run qbr plan again")
    if "newest_set" in pre:
        newest = newest_set_id(repo, p.backup)
        if newest != pre["newest_set"]:
            raise PreconditionError(
                f"another run made set {newest} of backup {p.backup} since this plan; run qbr plan again"
            )


def commit_set(ctx: ActionContext, p: CommitSet, action_id: str) -> dict[str, Any]:
    repo = ctx.connections.repository(p.repository)
    key = set_key(p.backup, p.set_id)
    collections: dict[str, CollectionRecord] = {}
    for name, copy_ids in p.copied.items():
        outputs = [ctx.output_of(i) for i in copy_ids]
        archives = tuple(sorted((_archive_from(o["archive"]) for o in outputs), key=lambda a: a.shard_ids))
        config = outputs[0]["config"]
        params = config.get("params") or {}
        collections[name] = CollectionRecord(
            name=name,
            points_count=int(outputs[0]["points_count"]),
            config=config,
            config_sha256=config_digest(config),
            aliases=tuple(p.aliases.get(name, ())),
            shard_number=int(params.get("shard_number") or 1),
            qdrant_version=p.qdrant_version,
            copied_in=p.set_id,
            archives=archives,
        )
    for name, raw in p.carried.items():
        carried = SetRecord.from_dict(
            {"backup": p.backup, "set_id": p.set_id, "created": p.created, "cluster": p.cluster,
             "qdrant_version": p.qdrant_version, "collections": {name: raw}}
        ).collections[name]
        for archive in carried.archives:
            head = repo.head(archive.key)
            if head is None or head.size != archive.size:
                raise PreconditionError(
                    f"archive {archive.key} that set {p.set_id} would reference is missing; run qbr plan again"
                )
        collections[name] = CollectionRecord(
            **{**asdict(carried), "aliases": tuple(p.aliases.get(name, carried.aliases)), "archives": carried.archives}
        )
    record = SetRecord(
        backup=p.backup,
        set_id=p.set_id,
        created=p.created,
        cluster=p.cluster,
        qdrant_version=p.qdrant_version,
        collections=dict(sorted(collections.items())),
        completed=utc_iso(ctx.now()),
        qbr_version=__version__,
    )
    faultpoints.reached("set.before_write")
    repo.put_bytes(key, record.to_json(), if_none_match=True)
    faultpoints.reached("set.written")
    return {"journal": {"set": key, "collections": len(collections)}}


def _archive_from(raw: dict[str, Any]) -> ArchiveRecord:
    return ArchiveRecord(**{**raw, "shard_ids": tuple(raw["shard_ids"])})


def newest_set_id(repo: Any, backup: str) -> str | None:
    ids = [parsed[1] for o in repo.list(f"{SETS_PREFIX}{backup}/") if (parsed := parse_set_key(o.key))]
    return max(ids) if ids else None
