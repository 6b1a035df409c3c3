"""Carry out one copy_collection action: a logical copy of a collection into a target of another
shape (another shard number, or a storage layout the target is created with).

The points come from the live source collection, or (copy_from: archive) from the set's
archives read offline (qbr.apply.copy_sources). The target is created from the source's config
with the plan's shard number, replication and storage, its shard keys (custom sharding) and
payload indexes; the aliases follow in their own action. Then the points are streamed
(qbr.apply.copy_streams), and every batch's position is journaled into the restore's mark in
the state: a killed run's next apply continues where the journal says, without copying a
journaled batch twice. At the end the target must hold exactly the points the live source held
when the copy began (a source written to during the copy is said so, and judged against the
range it moved through), or those the set recorded; on request a sample of points is compared
by id, vector and payload.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from qbr import faultpoints
from qbr.actions import CopyCollection
from qbr.apply.context import ActionContext
from qbr.apply.copy_sources import ArchiveSource, LiveSource
from qbr.apply.copy_streams import Copier, Stream
from qbr.apply.restore import points_problem
from qbr.apply.sample_check import compare_sample
from qbr.apply.target_shape import create_payload_indexes, create_shaped, ensure_keys
from qbr.errors import PreconditionError, QbrError
from qbr.planner.topology import shaped_config
from qbr.records import config_digest, utc_iso


def check_copy_collection(ctx: ActionContext, p: CopyCollection, pre: dict[str, Any]) -> None:
    conn = ctx.connections
    if "target_exists" in pre:
        exists = conn.seed(p.target_cluster).collection_exists(p.target_collection)
        if exists != bool(pre["target_exists"]):
            raise PreconditionError(
                f"collection {p.target_collection} on cluster {p.target_cluster} "
                f"{'appeared' if exists else 'disappeared'} since the plan; run qbr plan again"
            )
    wanted = pre.get("source_config_sha256")
    if wanted:
        source = conn.seed(p.source_cluster)
        if not source.collection_exists(p.source_collection):
            raise PreconditionError(
                f"collection {p.source_collection} on cluster {p.source_cluster}, the source of the copy, "
                "disappeared since the plan; run qbr plan again"
            )
        if config_digest(dict(source.collection_info(p.source_collection).get("config") or {})) != wanted:
            raise PreconditionError(
                f"collection {p.source_collection} on cluster {p.source_cluster} changed its configuration since the plan; "
                "run qbr plan again"
            )


def copy_collection(ctx: ActionContext, p: CopyCollection, action_id: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="qbr-copy-") as scratch:
        conn = ctx.connections
        source = ArchiveSource(conn, p, Path(scratch)) if p.copy_from == "archive" else LiveSource(conn, p)
        try:
            return _copy(ctx, p, source)
        finally:
            source.close()


def _copy(ctx: ActionContext, p: CopyCollection, source: LiveSource | ArchiveSource) -> dict[str, Any]:
    conn = ctx.connections
    targets = [conn.client(p.target_cluster, n.url) for n in conn.cluster_nodes(p.target_cluster)]
    seed = targets[0]
    key = _copy_key(p)
    mark = copy.deepcopy(ctx.restore_mark(p.restore, p.target_collection) or {})  # the state's own stays untouched
    journal = mark.get("copy") if mark.get("incomplete") and (mark.get("copy") or {}).get("key") == key else None
    exists = seed.collection_exists(p.target_collection)
    resumed = journal is not None and exists
    if not resumed:
        # The state says the copy is under way before the target is touched (as for a recover):
        # from here on the target is qbr's half-made work, which the next plan finishes.
        journal = {"key": key, "source_points": source.count(), "streams": {}, "sample": []}
        mark = _mark(ctx, p, journal)
        ctx.restore_started(p.restore, p.target_collection, copy.deepcopy(mark))
        if exists:
            seed.delete_collection(p.target_collection)
        config = shaped_config(source.config, p.storage, p.write_consistency_factor)
        create_shaped(seed, p.target_collection, config, p.shard_number, p.replication_factor)
    assert journal is not None
    if source.keys:
        ensure_keys(seed, p.target_collection, source.keys, p.shard_number, p.replication_factor)
    create_payload_indexes(seed, p.target_collection, source.payload_schema)
    streams = [Stream(name, shard_key, journal["streams"].get(name) or {}) for name, shard_key in source.streams]

    def write(points: list[dict], shard_key: Any, writer: int) -> None:
        targets[writer % len(targets)].upsert_batch(p.target_collection, points, shard_key=shard_key)

    copied_before = int(journal.get("copied") or 0)

    def save() -> None:  # with the copier's lock held, after each batch
        journal.update(
            streams={s.name: s.position() for s in streams},
            sample=[copier.sample[r]["id"] for r in sorted(copier.sample)],
            copied=copied_before + copier.copied,
        )
        ctx.restore_started(p.restore, p.target_collection, copy.deepcopy({**mark, "copy": journal}))
        faultpoints.reached("restore.copy_batch")

    copier = Copier(
        streams, source.read, write, save, batch_size=p.batch_size, writers=conn.parallelism,
        sample_size=p.verify_sample, sample=list(journal.get("sample") or []),
    )
    copier.run()
    points = seed.count_points(p.target_collection, exact=True)
    if isinstance(source, ArchiveSource):
        problem, note, extra = points_problem(points, source.record, p.set_id, p.target_collection, p.target_cluster), None, {}
        checked = 0
        if problem is None and p.verify_sample:
            sampled = copier.sample_points()  # read whole by this run: compared with what the target holds
            checked, problem = _compare_sample(p, {pt["id"]: pt for pt in sampled}, seed, [pt["id"] for pt in sampled], False)
    else:
        problem, note, extra = _live_count_check(p, source, points, int(journal["source_points"]))
        checked = 0
        if problem is None and p.verify_sample:
            ids = copier.sample_ids()
            theirs = {pt["id"]: pt for pt in source.client.retrieve_points(p.source_collection, ids)}
            checked, problem = _compare_sample(p, theirs, seed, ids, "source_points_at_end" in extra)
    provenance: dict[str, Any] = {
        "backup": p.backup,
        "set_id": p.set_id,
        "copied_in": p.copied_in,
        "source_collection": p.source_collection,
        "cluster": p.target_cluster,
        "restored_at": utc_iso(ctx.now()),
        "points_count": points,
        "method": "logical",
        "source_cluster": p.source_cluster,
        "source_points": int(journal["source_points"]),
        **extra,
    }
    if source.kind == "archive":
        provenance["copy_from"] = "archive"
    if p.shape:
        provenance["shape"] = p.shape
    if checked:
        provenance["sample_checked"] = checked
    faultpoints.reached("restore.before_record")
    if problem is not None:
        ctx.restore_finished(p.restore, p.target_collection, {**provenance, "points_check_failed": problem})
        raise QbrError(problem)
    ctx.restore_finished(p.restore, p.target_collection, provenance)
    result: dict[str, Any] = {"journal": {"points": points, "copied_now": copier.copied, "resumed": resumed, "sample_checked": checked}}
    if note:
        result["note"] = note
    return result


def _live_count_check(p: CopyCollection, source: LiveSource, points: int, at_start: int) -> tuple[str | None, str | None, dict]:
    """The target holds exactly the points the source held when the copy began; a source
    written to during the copy is said so, and the target judged by the range it moved through."""
    at_end = source.count()
    where = f"the source collection {p.source_collection} on cluster {p.source_cluster}"
    note = problem = None
    extra = {"source_points_at_end": at_end} if at_end != at_start else {}
    if at_end != at_start:
        note = (
            f"{where} was written to during the copy ({at_start} points when it began, {at_end} at its end); "
            f"collection {p.target_collection} holds {points}"
        )
    if points != at_start:
        if at_end != at_start and min(at_start, at_end) <= points <= max(at_start, at_end):
            note = f"{note}, within that range"
        else:
            problem = (
                f"copied collection {p.target_collection} on cluster {p.target_cluster} has {points} points, but {where} "
                f"had {at_start} when the copy began" + (f" and {at_end} at its end" if at_end != at_start else "")
                + "; the copy is not trusted and qbr will not repeat it by itself (delete the collection to copy it again)"
            )
    return problem, note, extra


def _compare_sample(p: CopyCollection, theirs: dict[Any, dict], seed: Any, ids: list[Any], moving: bool) -> tuple[int, str | None]:
    """Compare the sampled points of the source (`theirs`) with the target's; (how many were
    compared, a problem or None). A point gone from the source since is not compared."""
    why = " (the source was written to during the copy, which may explain it)" if moving else ""
    checked, problem = compare_sample(
        theirs, seed, p.target_collection, p.target_cluster, ids, f"the source collection {p.source_collection}", why,
    )
    if problem is None:
        return checked, None
    return checked, f"{problem}; the copy is not trusted and qbr will not repeat it by itself (delete the collection to copy it again)"


def _mark(ctx: ActionContext, p: CopyCollection, journal: dict[str, Any]) -> dict[str, Any]:
    return {
        "backup": p.backup,
        "set_id": p.set_id,
        "source_collection": p.source_collection,
        "cluster": p.target_cluster,
        "started_at": utc_iso(ctx.now()),
        "incomplete": True,
        "method": "logical",
        "source_cluster": p.source_cluster,
        "copy": journal,
    }


def _copy_key(p: CopyCollection) -> str:
    """What a journal must have been made for to be continued: the same source, target and shape."""
    return config_digest({
        "source": [p.source_cluster, p.source_collection],
        "target": [p.target_cluster, p.target_collection],
        "shape": [p.shard_number, p.replication_factor, p.write_consistency_factor, p.storage],
        # from archives, the positions are those of one set's data
        "from": [p.copy_from] + ([p.backup, p.set_id] if p.copy_from == "archive" else []),
    })[:16]
