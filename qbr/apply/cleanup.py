"""Retention and garbage: delete sets and unreferenced archives, abort unfinished uploads, and
delete snapshots qbr left on nodes. Each re-checks, just before it acts, that what made the
planner choose it is still true: a set is never the newest of its backup, an archive is never
still referenced."""

from __future__ import annotations

from typing import Any

from qbr import faultpoints
from qbr.actions import AbortUpload, DeleteArchive, DeleteNodeSnapshot, DeleteSet
from qbr.apply import at_rest
from qbr.apply.context import ActionContext
from qbr.errors import NotFoundError, PreconditionError
from qbr.records import SETS_PREFIX, SetRecord, parse_set_key, parse_utc, set_key
from qbr.repository.base import PendingUpload


def check_delete_set(ctx: ActionContext, p: DeleteSet, pre: dict[str, Any]) -> None:
    if not pre.get("newer_set_exists"):
        return
    repo = ctx.connections.repository(p.repository)
    newer = [
        parsed[1]
        for o in repo.list(f"{SETS_PREFIX}{p.backup}/")
        if (parsed := parse_set_key(o.key)) and parsed[1] > p.set_id
    ]
    if not newer and repo.head(set_key(p.backup, p.set_id)) is not None:
        raise PreconditionError(f"set {p.backup}/{p.set_id} is the newest set of its backup now; it is never deleted")


def delete_set(ctx: ActionContext, p: DeleteSet, action_id: str) -> dict[str, Any]:
    repo = ctx.connections.repository(p.repository)
    key = set_key(p.backup, p.set_id)
    if repo.head(key) is None:
        return {"journal": {"set": key, "already_gone": True}}
    faultpoints.reached("set.before_delete")
    at_rest.delete_object(ctx, p.repository, key)  # every version, on an Object Lock bucket
    ctx.forget_archive_references(p.repository)
    faultpoints.reached("set.deleted")
    return {"journal": {"set": key}}


def check_delete_archive(ctx: ActionContext, p: DeleteArchive, pre: dict[str, Any]) -> None:
    if not pre.get("unreferenced"):
        return
    holder = ctx.archive_references(p.repository).get(p.key)
    if holder is not None:
        raise PreconditionError(f"archive {p.key} is referenced by set {holder}; it was kept")


def read_archive_references(repo: Any) -> dict[str, str]:
    """Every archive key the repository's set records name -> the first set naming it."""
    found: dict[str, str] = {}
    for o in repo.list(SETS_PREFIX):
        if parse_set_key(o.key) is None:
            continue
        try:
            record = SetRecord.from_json(repo.get_bytes(o.key), o.key)
        except NotFoundError:
            continue
        for key in record.archive_keys():
            found.setdefault(key, f"{record.backup}/{record.set_id}")
    return found


def delete_archive(ctx: ActionContext, p: DeleteArchive, action_id: str) -> dict[str, Any]:
    faultpoints.reached("archive.before_delete")
    at_rest.delete_object(ctx, p.repository, p.key)
    faultpoints.reached("archive.deleted")
    return {"journal": {"archive": p.key}}


def abort_upload(ctx: ActionContext, p: AbortUpload, action_id: str) -> dict[str, Any]:
    repo = ctx.connections.repository(p.repository)
    repo.abort_upload(PendingUpload(p.key, p.upload_id, parse_utc(p.initiated)))
    return {}


def delete_node_snapshot(ctx: ActionContext, p: DeleteNodeSnapshot, action_id: str) -> dict[str, Any]:
    if p.name:  # None: only the record is left, the snapshot is gone (or was never made)
        client = ctx.connections.client(p.cluster, p.node)
        with ctx.snapshot_lock(p.node, p.collection, p.shard_id):
            client.delete_snapshot(p.collection, p.name, shard_id=p.shard_id, missing_ok=True)
    faultpoints.reached("node_snapshot.deleted")
    ctx.forget_node_snapshot(p.record)
    return {}
