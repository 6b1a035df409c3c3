"""Dedup repositories in the plan: restores of chunked archives go by upload, and the chunk sweep.

Pure, like the rest of the planner: it reads the ChunkCensus observe made (qbr.world) and the
actions planned so far. See qbr.repository.chunk_gc for the rules the sweep keeps at apply time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from qbr.actions import SweepChunks, as_params
from qbr.durations import format_duration
from qbr.manifest import Manifest
from qbr.plan import Action
from qbr.planner.draft import Draft
from qbr.planner.object_lock import locked_until
from qbr.records import parse_utc
from qbr.render.sizes import human_bytes
from qbr.world import ObservedRepository

#: More confirmed index objects than this and a sweep merges them even with nothing to delete.
MERGE_INDEX_OVER = 256


def chunked_source(manifest: Manifest, repo: ObservedRepository, backup: str, set_id: str, planned: bool) -> bool:
    """Whether a restore from this set reads chunked archives (a planned set: as the repository is
    declared; an existing one: as its record says)."""
    if planned:
        return manifest.repositories[repo.name].dedup
    for record in repo.sets_of(backup):
        if record.set_id == set_id:
            return any(a.encoding == "chunks" for c in record.collections.values() for a in c.archives)
    return False


def plan_chunk_sweep(draft: Draft, repo: ObservedRepository, group: str, now: datetime, grace: timedelta) -> None:
    """One sweep_chunks action per dedup repository when chunks are unreferenced (right after the
    archives this plan deletes, or past the grace period), a marker is stale, or the index is in
    too many pieces."""
    census = repo.chunks
    if census is None:
        return
    if repo.broken_sets or census.unreadable:
        what = census.unreadable[0] if census.unreadable else repo.broken_sets[0].key
        draft.warnings.append(f"repository {repo.name}: {what} cannot be read, so no chunk is swept until it is repaired or removed")
        return
    mine = [a for a in draft.actions if a.params.get("repository") == repo.name]
    deleting = {a.params["key"] for a in mine if a.kind == "delete_archive"}
    live = {c for key, ids in census.lists.items() if key not in deleting for c in ids}
    freed = {c for key in deleting for c in census.lists.get(key, ())} - live
    newest: dict[str, tuple[str, int]] = {}  # chunk id -> (newest trace, stored size)
    for obj in census.index:
        for cid, size in obj.chunks.items():
            if cid not in newest or newest[cid][0] < obj.modified:
                newest[cid] = (obj.modified, size)
    for cid, (size, modified) in census.unindexed.items():
        newest.setdefault(cid, (modified, size))
    held = {c for c in newest if c not in live and locked_until(repo, f"chunks/{c[:2]}/{c}", now) is not None}
    doomed = {c: s for c, (when, s) in newest.items()
              if c not in live and c not in held and (c in freed or now - parse_utc(when) >= grace)}
    waiting = sum(1 for c, (when, _) in newest.items() if c not in live and c not in doomed and c not in held)
    stale = [o.key for o in census.index if o.pending and now - parse_utc(o.modified) >= grace]
    pieces = sum(1 for o in census.index if not o.pending)
    if not doomed and not stale and pieces <= MERGE_INDEX_OVER:
        return
    parts = []
    if doomed:
        parts.append(f"{len(doomed)} chunks no remaining archive names ({len(doomed.keys() & freed)} freed by the "
                     f"archives deleted above, the rest left by interrupted runs past the {format_duration(grace)} grace period)")
    if stale:
        parts.append(f"{len(stale)} markers of runs that did not finish (their chunks are listed and indexed or swept)")
    if pieces > MERGE_INDEX_OVER:
        parts.append(f"the chunk index is in {pieces} objects; they are merged into one")
    if waiting:
        parts.append(f"{waiting} unreferenced chunks are younger than the grace period and wait")
    if held:
        parts.append(f"{len(held)} unreferenced chunks are kept while S3 Object Lock holds them")
    copies = tuple(a.id for a in draft.actions if a.kind == "copy_archive" and a.params.get("repository") == repo.name)
    deletes = tuple(a.id for a in mine if a.kind == "delete_archive")
    draft.actions.append(Action(
        id=f"gc.{repo.name}.chunks",
        kind="sweep_chunks",
        change="delete",
        group=group,
        title=f"{len(doomed)} unreferenced chunks ({human_bytes(sum(doomed.values()))} stored)",
        reason="; ".join(parts) + "; every chunk list is read again just before, and a chunk any of them names is kept",
        depends_on=deletes + copies,
        precondition={"unreferenced": True},
        params=as_params(SweepChunks(repository=repo.name, chunks=sorted(doomed), markers=stale, relist=bool(stale))),
    ))
