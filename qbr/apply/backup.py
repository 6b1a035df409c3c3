"""Backup actions: copy a snapshot into the repository, then commit the set that names it.

Set records are written last, so a crash at any instant leaves archives without a record
(garbage that a later plan sweeps after the grace period), never a set naming a missing archive.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from qbr import __version__, faultpoints
from qbr.actions import CommitSet, CopyArchive
from qbr.apply import at_rest, snapshot_store
from qbr.apply.context import ActionContext
from qbr.errors import ChecksumError, OutcomeUnknown, PreconditionError, QbrError, QdrantError
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
from qbr.snapshot_names import named_by_qdrant
from qbr.transfer import Digest, verified

COPY_ATTEMPTS = 3  # a transfer cut short is restarted this many times in all
ADOPT_POLL_SECONDS = 0.3  # how often a node is asked what became of a create whose answer was lost


def check_copy_archive(ctx: ActionContext, p: CopyArchive, pre: dict[str, Any]) -> None:
    ready = getattr(ctx.connections.repository(p.repository), "ready_to_write", None)
    if ready is not None:
        ready()  # an encrypted dedup repository's chunk key, checked before a snapshot is made
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
    """Snapshot, store, and say what the live collection held around the snapshot: the count
    before it was made and right after (a live collection's archive holds something between)."""
    client = ctx.connections.client(p.cluster, p.node)
    shard_points: int | None = None
    shard_keys: dict[str, Any] = {}
    if p.shard_id is not None:
        view = client.collection_cluster(p.collection)
        shard_points = next((s.get("points_count") for s in view.get("local_shards") or [] if s["shard_id"] == p.shard_id), None)
        shard_keys = {str(s["shard_id"]): s["shard_key"] for s in (view.get("local_shards") or []) + (view.get("remote_shards") or [])
                      if s.get("shard_key") is not None}
    # Shard snapshot names carry no peer id: on a shared snapshot store two nodes snapshotting
    # one shard id in the same second would write one key, so that shard goes one at a time.
    lock_node = "*" if p.snapshot_store and p.shard_id is not None else p.node
    etag: str | None = None
    with ctx.snapshot_lock(lock_node, p.collection, p.shard_id):
        info = client.collection_info(p.collection)
        config = dict(info.get("config") or {})
        before = client.count_points(p.collection, exact=True)
        taken_at = utc_iso(ctx.now())
        snapshot = _make_snapshot(ctx, p, client)
        after = client.count_points(p.collection, exact=True)
        landed = snapshot_store.locate(ctx, p, snapshot) if p.snapshot_store else None
        stored: Digest | None = None
        if p.server_side and landed is not None:
            size, etag, key = snapshot_store.copy_in(ctx, p, client, snapshot, landed)
            digest = Digest(size=size, sha256=None)
        else:
            digest, key, stored = _store_snapshot(ctx, p, client, snapshot)
    sealed = at_rest.recipients_of(ctx, p.repository) if stored is not None else None
    archive = ArchiveRecord(
        key=key,
        size=digest.size,
        etag=etag,
        sha256=digest.sha256 or "",
        kind=p.kind,
        shard_ids=tuple(p.shard_ids),
        node=p.node,
        points_count=shard_points if p.shard_id is not None else before,
        encryption=at_rest.label(sealed[1]) if sealed is not None and stored is not None else None,
        stored_size=stored.size if stored is not None else None,
        stored_sha256=stored.sha256 if stored is not None else None,
        stored_blake3=stored.blake3 if stored is not None else None,
        encoding=None if p.server_side and landed is not None else getattr(ctx.connections.repository(p.repository), "archive_encoding", None),
    )
    return {
        "archive": asdict(archive),
        "points_count": before,
        "points_after": after,
        "taken_at": taken_at,
        "config": config,
        "payload_schema": _index_schema(info.get("payload_schema") or {}),
        "shard_keys": shard_keys,
        "journal": {"archive": key, "size": digest.size, "sha256": digest.sha256, "server_side": p.server_side},
    }


def _index_schema(payload_schema: dict[str, Any]) -> dict[str, Any]:
    """The payload indexes as they are re-created (`PUT .../index`): type and params, not counts."""
    return {
        name: {k: v for k, v in info.items() if k in ("data_type", "params") and v is not None}
        for name, info in sorted(payload_schema.items())
        if isinstance(info, dict)
    }


def _local_shards(client: Any, collection: str) -> dict[int, dict[str, Any]]:
    view = client.collection_cluster(collection)
    return {int(s["shard_id"]): s for s in view.get("local_shards") or []}


def _where(p: CopyArchive) -> dict[str, Any]:
    return {"cluster": p.cluster, "node": p.node, "collection": p.collection, "shard_id": p.shard_id}


def _make_snapshot(ctx: ActionContext, p: CopyArchive, client: Any) -> Any:
    """Have the node make the snapshot, sent once: after an answer lost on the way, the snapshot
    that appeared since is adopted (Qdrant went on making it), never a second one requested."""
    with ctx.snapshot_slot(p.node):
        # Recorded before it exists: if this run dies while Qdrant makes it, or before its name
        # reaches the state, the next plan finds it as the one that appeared since this listing.
        before = sorted(s.name for s in client.list_snapshots(p.collection, shard_id=p.shard_id))
        making = {**_where(p), "name": None, "before": before}
        ctx.remember_node_snapshot(making)
        faultpoints.reached("snapshot.before_create")
        snapshot, lost = None, None
        for _ in range(2):  # a second request only once the node showed the first made nothing
            try:
                snapshot = client.create_snapshot(p.collection, shard_id=p.shard_id, wait=True)
                break
            except OutcomeUnknown as error:
                lost = error
                snapshot = _adopt_snapshot(client, p, set(before), error)
                if snapshot is not None:
                    break
    if snapshot is None and lost is not None:
        raise QbrError(f"{str(lost).rstrip('.')} (asked twice; the node made no snapshot either time)")
    if snapshot is None:
        raise QbrError(f"node {p.node} did not describe the snapshot of collection {p.collection} it made; try again")
    faultpoints.reached("snapshot.created")
    ctx.remember_node_snapshot({**_where(p), "name": snapshot.name}, replacing=making)
    faultpoints.reached("snapshot.recorded")
    return snapshot


def _adopt_snapshot(client: Any, p: CopyArchive, before: set[str], error: OutcomeUnknown) -> Any:
    """What a create whose answer was lost did: the one new snapshot named as Qdrant names its
    own, waited for while the node says a snapshot of the collection is being made. When the node
    says nothing is being made and none appeared, the create never took effect: None (ask again)."""
    deadline = time.monotonic() + client.snapshot_timeout
    idle = 0
    while True:
        appeared = [
            s for s in client.list_snapshots(p.collection, shard_id=p.shard_id)
            if s.name not in before and named_by_qdrant(s.name, p.collection, p.shard_id)
        ]
        if len(appeared) == 1:
            return appeared[0]
        if len(appeared) > 1:
            break
        activity = client.snapshot_activity(p.collection)
        idle = idle + 1 if activity is not None and activity["running_snapshots"] == 0 else 0
        if idle >= 2:  # seen idle twice, a poll apart: nothing in flight
            return None
        if time.monotonic() >= deadline:
            break
        time.sleep(ADOPT_POLL_SECONDS)
    found = f"{len(appeared)} new snapshots appeared" if appeared else "no new snapshot appeared and the node does not say it is idle"
    raise QbrError(
        f"{error} ({found} on node {p.node}; qbr did not ask again, so Qdrant makes at most one, and the next plan "
        "deletes it once it is there); run qbr apply again"
    )


def _store_snapshot(ctx: ActionContext, p: CopyArchive, client: Any, snapshot: Any) -> tuple[Digest, str, Digest | None]:
    """Stream the snapshot into the repository with its sha256 checked (encrypted on the way to
    an encrypted repository: then the stored object's digest is returned too), then delete it
    from the node so Qdrant's disk does not fill."""
    key = archive_key(p.collection, p.backup, p.set_id, snapshot.name)
    repo = ctx.connections.repository(p.repository)
    what = f"snapshot {snapshot.name} of collection {p.collection} from node {p.node}"
    recipients = at_rest.recipients_of(ctx, p.repository)
    digest, stored = Digest(), None
    ctx.progress.expect(snapshot.size)
    for attempt in range(1, COPY_ATTEMPTS + 1):
        try:
            with client.download_snapshot(p.collection, snapshot.name, shard_id=p.shard_id) as stream:
                digest = Digest()
                size = snapshot.size if snapshot.size is not None else stream.size  # S3 sizes its parts by it
                plain = verified(stream, digest, what=what, expected_size=snapshot.size,
                                 expected_sha256=snapshot.checksum, progress=ctx.progress,
                                 inline=at_rest.encrypts_inline(repo, recipients))
                if recipients is not None:
                    stored = at_rest.put_encrypted(repo, key, plain, recipients[0], size, what)
                else:
                    repo.put_stream(key, plain, size=size)
            break
        except QbrError as error:
            if attempt == COPY_ATTEMPTS or not _worth_retrying(error):
                raise
    faultpoints.reached("snapshot.stored")
    client.delete_snapshot(p.collection, snapshot.name, shard_id=p.shard_id, missing_ok=True)
    faultpoints.reached("snapshot.deleted")
    ctx.forget_node_snapshot({**_where(p), "name": snapshot.name})
    return digest, key, stored


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
        newest = newest_set_id(repo, p.backup, ignoring=set(pre.get("adopted_in_plan") or ()))
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
        seen = [int(o["points_count"]) for o in outputs] + [int(o.get("points_after", o["points_count"])) for o in outputs]
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
            points_range=(min(seen), max(seen)),
            payload_schema=outputs[0].get("payload_schema") or {},
            shard_keys=_shard_keys(outputs),
        )
    for name, raw in p.carried.items():
        carried = SetRecord.from_dict(
            {"backup": p.backup, "set_id": p.set_id, "created": p.created, "cluster": p.cluster,
             "qdrant_version": p.qdrant_version, "collections": {name: raw}}
        ).collections[name]
        for archive in carried.archives:
            head = repo.head(archive.key)
            if head is None or head.size != archive.object_size:
                raise PreconditionError(
                    f"archive {archive.key} that set {p.set_id} would reference is missing; run qbr plan again"
                )
        collections[name] = CollectionRecord(
            **{**asdict(carried), "aliases": tuple(p.aliases.get(name, carried.aliases)), "archives": carried.archives}
        )
    # The set stands for the moment its data was read: its first snapshot, not when it was planned.
    taken = [ctx.output_of(i)["taken_at"] for ids in p.copied.values() for i in ids if "taken_at" in ctx.output_of(i)]
    record = SetRecord(
        backup=p.backup,
        set_id=p.set_id,
        created=min(taken) if taken else p.created,
        cluster=p.cluster,
        qdrant_version=p.qdrant_version,
        collections=dict(sorted(collections.items())),
        completed=utc_iso(ctx.now()),
        qbr_version=__version__,
    )
    sealing = at_rest.recipients_of(ctx, p.repository)
    if sealing is not None:  # configs, aliases, payload schemas and shard keys: for the recipients only
        wanted = at_rest.config_of(ctx, p.repository).encryption
        record = at_rest.seal_record(record, sealing[0], sealing[1], wanted.recipients)
    faultpoints.reached("set.before_write")
    from qbr.repository import NotFoundError, PreconditionFailed

    data = record.to_json()
    try:
        repo.put_bytes(key, data, if_none_match=True)
    except PreconditionFailed:
        # A PUT whose answer was lost is retried by the client and then "fails" against itself:
        # if the stored record is byte for byte ours, the set is committed.
        try:
            landed = repo.get_bytes(key) == data
        except NotFoundError:
            landed = False
        if not landed:
            raise
    faultpoints.reached("set.written")
    return {"journal": {"set": key, "collections": len(collections)}}


def _shard_keys(outputs: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """{key, shard_ids} per shard key, in the order the keys' shards were made (lowest id first):
    a restore creates them in that order, so Qdrant gives the same shard ids back."""
    by_key: dict[str, tuple[Any, list[int]]] = {}
    for output in outputs:
        for shard_id, key in (output.get("shard_keys") or {}).items():
            entry = by_key.setdefault(json.dumps(key, sort_keys=True), (key, []))
            if int(shard_id) not in entry[1]:
                entry[1].append(int(shard_id))
    keys = [{"key": key, "shard_ids": sorted(ids)} for key, ids in by_key.values()]
    return tuple(sorted(keys, key=lambda k: min(k["shard_ids"])))


def _archive_from(raw: dict[str, Any]) -> ArchiveRecord:
    return ArchiveRecord(**{**raw, "shard_ids": tuple(raw["shard_ids"])})


def newest_set_id(repo: Any, backup: str, ignoring: frozenset[str] | set[str] = frozenset()) -> str | None:
    ids = [parsed[1] for o in repo.list(f"{SETS_PREFIX}{backup}/") if (parsed := parse_set_key(o.key)) and parsed[1] not in ignoring]
    return max(ids) if ids else None
