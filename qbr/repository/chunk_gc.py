"""Mark and sweep for a dedup repository's chunks: what observe reads (the census) and what the
sweep action does.

Mark: every chunk list under `snapshots/` (a committed set's archive, or one a running or
killed backup wrote before its set) keeps its chunks. Sweep: a chunk no chunk list names is
deleted: at once when the archives that named it are deleted by the same plan, else once its
newest trace (an index object naming it, or its own upload time) is older than the grace
period, so a chunk a running or killed backup stored is never swept before then.

The sweep keeps the index's promise (a confirmed entry names a chunk that exists): it writes
the index without the doomed chunks first (a marker beside it, so a sweep killed halfway makes
the next observe list the chunks and finish the job), then deletes them, then the marker.

Object Lock: a set's lock reaches every chunk its archives name (retain_chunks: retain-until is
only ever extended, so a chunk is held as long as the longest-held set naming it). On a lock
bucket the sweep deletes every version of a chunk; a chunk S3 refuses to delete is kept, indexed
again, and counted (a set removed by force can leave such chunks).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qbr import faultpoints
from qbr.errors import NotFoundError, QbrError
from qbr.records import SNAPSHOTS_PREFIX, utc_iso
from qbr.repository.base import ObjectInfo
from qbr.repository.chunk_index import index_bytes, list_chunks, new_index_key, read_index_files
from qbr.repository.chunks import ChunkList, chunk_key
from qbr.repository.read_cache import ReadCache
from qbr.world import ChunkCensus, ChunkIndexObject


def read_lists(repo: Any, keys: list[str], parallelism: int = 8, sizes: dict[str, int] | None = None,
               cache: ReadCache | None = None, listed: dict[str, ObjectInfo] | None = None,
               ) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """The distinct chunk ids each chunk list names (archives stored whole are left out), and the
    keys of those that cannot be read; `sizes` gets each plain chunk list's rebuilt size (what a
    set records and head() says; an encrypted one's is its own, as listed). With a `cache` and the
    `listed` versions, a list read before at that version is not read again."""
    def one(key: str) -> tuple[str, Any, bool]:
        version = (listed or {}).get(key)
        try:
            copy = cache.copy_of(version) if cache is not None and version is not None else None
            if copy is not None:
                return key, ChunkList.parse(copy, key) if copy else None, False
            listing, raw = repo.read_list_raw(key)
        except NotFoundError:
            return key, None, False
        except QbrError:
            return key, None, True
        if cache is not None and version is not None:
            # Archive keys are written once (each names its snapshot), so what was just read is
            # the version listed; b"" stands for an archive stored whole.
            cache.keep(version, raw)
        return key, listing, False

    lists, unreadable = {}, []
    with ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="qbr-chunk-lists") as pool:
        for key, listing, broken in pool.map(one, keys):
            if broken:
                unreadable.append(key)
            elif listing is not None:
                lists[key] = tuple(sorted(listing.ids()))
                if sizes is not None and not listing.keyed:
                    sizes[key] = listing.size
    return lists, unreadable


def census(repo: Any, archive_keys: list[str], parallelism: int = 8, cache: ReadCache | None = None,
           listed: dict[str, ObjectInfo] | None = None) -> ChunkCensus:
    """What the planner needs to sweep chunks, read without listing `chunks/` unless a marker
    says the index may be short of the truth. `cache`, `listed`: see read_lists."""
    files, broken = read_index_files(repo.inner, cache)
    sizes: dict[str, int] = {}
    lists, unreadable = read_lists(repo, archive_keys, parallelism, sizes, cache, listed)
    index = tuple(ChunkIndexObject(f.key, utc_iso(f.modified), f.pending, f.chunks) for f in files)
    indexed = {c for f in files for c in f.chunks}
    unindexed: dict[str, tuple[int, str]] = {}
    listed = bool(broken) or any(f.pending for f in files)
    if listed:
        for o in repo.inner.list("chunks/"):
            cid = o.key.rsplit("/", 1)[-1]
            if cid not in indexed and len(cid) == 64:
                unindexed[cid] = (o.size, utc_iso(o.modified))
    return ChunkCensus(index, lists, unindexed, tuple(sorted(unreadable)) + tuple(broken), listed, sizes)


def live_chunks(repo: Any, parallelism: int = 8) -> set[str]:
    """Mark, as things are now: every chunk some chunk list names."""
    keys = [o.key for o in repo.inner.list(SNAPSHOTS_PREFIX)]
    lists, unreadable = read_lists(repo, keys, parallelism)
    if unreadable:
        raise QbrError(f"chunk list {unreadable[0]} cannot be read, so no chunk is swept; run qbr verify")
    return {c for ids in lists.values() for c in ids}


def chunk_locks(repo: Any, census_: ChunkCensus, parallelism: int = 8) -> dict[str, str]:
    """Object Lock retain-until of the chunks no chunk list names (those a sweep may delete), by
    chunk key: the planner never plans deleting one S3 would refuse."""
    from qbr.repository.protection import retention

    named = {c for ids in census_.lists.values() for c in ids}
    orphans = sorted(({c for o in census_.index for c in o.chunks} | set(census_.unindexed)) - named)
    with ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="qbr-chunk-locks") as pool:
        found = list(pool.map(lambda c: (chunk_key(c), retention(repo.inner, chunk_key(c))), orphans))
    return {key: utc_iso(held[1]) for key, held in found if held is not None}


def retain_chunks(repo: Any, archive_keys: list[str], mode: str, until: Any, parallelism: int = 8) -> int:
    """Lock every chunk the chunk lists at `archive_keys` name until at least `until`; how many."""
    from qbr.repository.protection import retain

    ids: set[str] = set()
    for key in archive_keys:
        listing = repo.read_list(key)
        if listing is not None:
            ids |= listing.ids()
    with ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="qbr-chunk-lock") as pool:
        list(pool.map(lambda c: retain(repo.inner, chunk_key(c), mode, until), sorted(ids)))
    return len(ids)


def sweep(repo: Any, doomed: set[str], markers: list[str], *, relist: bool, parallelism: int = 8,
          locked: bool = False) -> dict[str, Any]:
    """Delete the chunks of `doomed` that no chunk list names now; merge the index into one
    object; remove the stale `markers`. With `relist`, chunks the index does not list yet (left
    by a killed run) are listed and the survivors indexed."""
    live = live_chunks(repo, parallelism)
    doomed = doomed - live
    files, broken = read_index_files(repo.inner)
    if broken:
        raise QbrError(f"the chunk index object {broken[0]} cannot be read; run qbr repair-index")
    merged = {c: n for f in files if not f.pending for c, n in f.chunks.items()}
    if relist:
        merged.update({c: n for c, n in list_chunks(repo.inner).items() if c not in merged})
    kept = {c: n for c, n in merged.items() if c not in doomed}
    digests = {c: d for f in files if not f.pending for c, d in f.digests.items()}
    marker = new_index_key("-sweep.pending")
    repo.inner.put_bytes(marker, index_bytes({}, pending=True))
    repo.inner.put_bytes(new_index_key("-swept"), index_bytes(kept, pending=False, digests=digests))
    for f in files:
        if not f.pending:
            repo.inner.delete(f.key)
    faultpoints.reached("sweep.index_written")
    repo.index.forget(doomed)
    freed = sum(merged.get(c, 0) for c in doomed)

    def remove(chunk_id: str) -> str | None:
        """None, or the chunk's id when an Object Lock keeps it."""
        if locked:
            from qbr.errors import RepositoryError
            from qbr.repository.protection import delete_versions

            try:
                delete_versions(repo.inner, chunk_key(chunk_id))
            except RepositoryError as error:
                if "Object Lock" not in str(error):
                    raise
                return chunk_id
        else:
            repo.inner.delete(chunk_key(chunk_id))
        faultpoints.reached("sweep.chunk_deleted")
        return None

    with ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="qbr-chunk-sweep") as pool:
        held = {c for c in pool.map(remove, sorted(doomed)) if c is not None}
    if held:  # still stored: indexed again, so the index names every chunk it may dedup against
        sizes = {c: merged[c] for c in held if c in merged}
        repo.inner.put_bytes(new_index_key("-locked"), index_bytes(sizes, pending=False, digests=digests))
    for key in markers + [marker]:
        repo.inner.delete(key)
    done = {"chunks_deleted": len(doomed) - len(held), "bytes_freed": freed - sum(merged.get(c, 0) for c in held),
            "index_objects_merged": sum(1 for f in files if not f.pending), "chunks_indexed": len(kept) + len(held)}
    if held:
        done["chunks_locked"] = len(held)
    return done


def repair_index(repo: Any) -> str:
    """`qbr repair-index`: the index made again from a listing of the chunks (the truth)."""
    from qbr.repository.chunk_index import rebuild

    chunks, removed = rebuild(repo.inner)
    repo.index.reset()
    return f"chunk index of {repo.describe()} rebuilt: {chunks} chunks listed, {removed} old index objects replaced"


def read_archive_chunks(repo: Any, key: str) -> ChunkList | None:
    return repo.read_list(key)
