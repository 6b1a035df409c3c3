"""observe: every network read of a plan happens here, concurrently, into plain data.

The result is the plain data of `qbr.world`, so the planner can stay pure and a plan can be
recomputed and compared. Nothing here decides anything.
"""

from __future__ import annotations

import csv
import io
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from qbr.connections import Connections
from qbr.errors import NotFoundError, QbrError, QdrantError, RepositoryError
from qbr.manifest import AdoptConfig, Manifest
from qbr.planner.backups import backup_is_due
from qbr.planner.targets import needs, reads_live_source, unreachable_hint, with_repository_hint
from qbr.records import (
    SETS_PREFIX,
    SNAPSHOTS_PREFIX,
    SetRecord,
    config_digest,
    parse_set_key,
    utc_iso,
)
from qbr.repository import cleanup_gaps, open_s3_repository
from qbr.repository.base import ObjectInfo
from qbr.repository.read_cache import ReadCache
from qbr.state import State
from qbr.world import (
    ArchiveObject,
    BrokenSet,
    LegacySnapshot,
    NodeSnapshot,
    Observed,
    ObservedAdoption,
    ObservedCluster,
    ObservedCollection,
    ObservedNode,
    ObservedRepository,
    PendingObject,
    ShardReplica,
)

T = TypeVar("T")


class _Pool:
    """A bounded pool whose map re-raises the first failure (a QbrError sentence)."""

    def __init__(self, parallelism: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="qbr-observe")

    def map(self, func: Callable[..., T], items: Iterable[Any]) -> list[T]:
        futures: list[Future[T]] = [self.executor.submit(func, item) for item in items]
        return [f.result() for f in futures]

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def observe(
    manifest: Manifest, connections: Connections, *, now: datetime | None = None, state: State | None = None,
    targets: tuple[str, ...] = (),
) -> Observed:
    """Read every cluster and repository the manifest names (with `targets`, only those the
    targeted entries need), with at most `connections.parallelism` requests in flight at once.

    Given `now`, only what the plan can need is read in detail: collections of backups past their
    rpo (or feeding a restore that copies from the live source), and collections the state says
    qbr left snapshots on. A quiet tick then costs requests per backup, not per collection."""
    pool = _Pool(connections.parallelism)
    try:
        needed = needs(manifest, targets) if targets else None
        repo_names = sorted(needed.repositories if needed else {b.repository for b in manifest.backups.values()})
        repositories = pool.map(lambda name: _reach_repository(manifest, connections, name, targets), repo_names)
        by_name = {r.name: r for r in repositories}
        detail = _backups_to_detail(manifest, by_name, now, targets)
        records = {(str(e.get("cluster")), str(e.get("collection"))) for e in (state.node_snapshots if state else ())}
        if targets:
            records = set()  # the cleanup of snapshots left on nodes waits for an untargeted plan
        cluster_names = sorted(needed.clusters) if needed else _clusters_in_use(manifest)
        clusters = pool.map(lambda name: _reach_cluster(manifest, connections, name, detail, records, targets), cluster_names)
        adoptions = [] if targets else pool.map(_observe_adoption, list(manifest.adopt.values()))
    finally:
        pool.close()
    return Observed(
        clusters={c.name: c for c in clusters},
        repositories=by_name,
        adoptions={a.name: a for a in adoptions},
    )


def _backups_to_detail(
    manifest: Manifest, repositories: dict[str, ObservedRepository], now: datetime | None, targets: tuple[str, ...]
) -> set[str] | None:
    """Backups whose collections the plan reads in detail: due ones, and those a restore copies
    from the live source (a topology, storage or method that may need it). With targets, only
    targeted backups and the live sources of targeted restores. None: every backup."""
    if targets:
        live_sources = {r.from_backup for r in manifest.restores.values() if r.name in targets and reads_live_source(r)}
        chosen = [b for b in manifest.backups.values() if b.name in targets]
        return live_sources | {
            b.name for b in chosen if now is None or backup_is_due(b, repositories[b.repository], now)
        }
    if now is None:
        return None
    live_sources = {
        r.from_backup for r in manifest.restores.values()
        if r.method != "auto" or r.topology != type(r.topology)() or r.storage != type(r.storage)()
    }
    return {
        b.name for b in manifest.backups.values()
        if b.name in live_sources or backup_is_due(b, repositories[b.repository], now)
    }


def observe_repositories(manifest: Manifest, connections: Connections, *, cached: bool = True) -> dict[str, ObservedRepository]:
    """Only the repositories (for status and verify, which need no Qdrant). `cached=False`: every
    set record read from the store itself (verify judges what is stored, not a local copy)."""
    pool = _Pool(connections.parallelism)
    try:
        names = sorted({b.repository for b in manifest.backups.values()})
        return {r.name: r for r in pool.map(lambda name: _observe_repository(connections, name, cached), names)}
    finally:
        pool.close()


def _reach_cluster(
    manifest: Manifest, connections: Connections, name: str, detail: set[str] | None,
    records: set[tuple[str, str]], targets: tuple[str, ...],
) -> ObservedCluster:
    """A cluster observed; one that cannot be reached is named with the entries that need it, and
    (without --target) the others are offered --target, so a disaster's restore still plans."""
    try:
        return _observe_cluster(manifest, connections, name, detail, records)
    except QdrantError as error:
        hint = unreachable_hint(manifest, name, targets) if error.status is None else ""
        if not hint:
            raise
        raise QdrantError(str(error).rstrip(". ") + hint + ".", node=error.node) from None


def _reach_repository(manifest: Manifest, connections: Connections, name: str, targets: tuple[str, ...]) -> ObservedRepository:
    """A repository observed; one that fails is named with the entries that need it (as a cluster)."""
    try:
        return _observe_repository(connections, name)
    except RepositoryError as error:
        raise with_repository_hint(manifest, error, name, targets) from None


def _clusters_in_use(manifest: Manifest) -> list[str]:
    names = {b.cluster for b in manifest.backups.values()} | {r.to for r in manifest.restores.values()}
    names |= {a.cluster for a in manifest.adopt.values()}
    return sorted(names)


def _observe_cluster(
    manifest: Manifest, connections: Connections, name: str, detail: set[str] | None = None,
    records: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
) -> ObservedCluster:
    # Nested use of one bounded pool could deadlock, so each level has its own pool; the real
    # bound on concurrent requests is the semaphore every connection passes through.
    inner = _Pool(connections.parallelism)
    try:
        nodes = connections.cluster_nodes(name)
        distributed = len(nodes) > 1 or connections.is_distributed(name)
        versions = inner.map(lambda node: connections.client(name, node.url).version(), nodes)
        node_states = tuple(ObservedNode(n.url, n.peer_id, v) for n, v in zip(nodes, versions))
        seed = connections.client(name, nodes[0].url)
        collection_names = tuple(sorted(seed.list_collections()))
        aliases = dict(sorted(seed.list_aliases()))
        wanted = [
            c
            for c in collection_names
            if (name, c) in records or any(
                b.cluster == name and b.selects(c) and (detail is None or b.name in detail) for b in manifest.backups.values()
            )
        ]
        aliases_of: dict[str, list[str]] = {}
        for alias, collection in aliases.items():
            aliases_of.setdefault(collection, []).append(alias)
        detailed = inner.map(
            lambda c: _observe_collection(connections, name, node_states, distributed, c, tuple(sorted(aliases_of.get(c, ())))),
            wanted,
        )
    finally:
        inner.close()
    return ObservedCluster(
        name=name,
        nodes=node_states,
        distributed=distributed,
        collection_names=collection_names,
        collections={c.name: c for c in detailed},
        aliases=aliases,
    )


def _observe_collection(
    connections: Connections,
    cluster: str,
    nodes: tuple[ObservedNode, ...],
    distributed: bool,
    name: str,
    aliases: tuple[str, ...],
) -> ObservedCollection:
    seed = connections.client(cluster, nodes[0].url)
    info = seed.collection_info(name)
    config = dict(info.get("config") or {})
    params = config.get("params") or {}
    points = seed.count_points(name, exact=True)
    replicas: list[ShardReplica] = []
    node_snapshots: list[NodeSnapshot] = []
    shards: dict[int, Any] = {}
    for node in nodes:
        client = connections.client(cluster, node.url)
        local_ids: list[int] = []
        if distributed:
            view = client.collection_cluster(name)
            for shard in (view.get("local_shards") or []) + (view.get("remote_shards") or []):
                shards[int(shard["shard_id"])] = shard.get("shard_key")
            for shard in view.get("local_shards") or []:
                replicas.append(
                    ShardReplica(int(shard["shard_id"]), node.url, str(shard.get("state")), shard.get("points_count"))
                )
                local_ids.append(int(shard["shard_id"]))
        node_snapshots.extend(NodeSnapshot(node.url, s.name) for s in client.list_snapshots(name))
        for shard_id in local_ids:
            node_snapshots.extend(
                NodeSnapshot(node.url, s.name, shard_id) for s in client.list_snapshots(name, shard_id=shard_id)
            )
    return ObservedCollection(
        name=name,
        points_count=int(points),
        config=config,
        config_sha256=config_digest(config),
        shard_number=int(params.get("shard_number") or 1),
        replication_factor=int(params.get("replication_factor") or 1),
        aliases=aliases,
        replicas=tuple(sorted(replicas, key=lambda r: (r.shard_id, r.node))),
        node_snapshots=tuple(sorted(node_snapshots, key=lambda s: (s.node, s.shard_id or -1, s.name))),
        shards=tuple(sorted(shards.items())),
    )


def _observe_repository(connections: Connections, name: str, cached: bool = True) -> ObservedRepository:
    repo = connections.repository(name)
    listed = [o for o in repo.list(SETS_PREFIX) if parse_set_key(o.key)]
    cache = ReadCache.for_repository(repo) if cached else ReadCache(None)  # a quiet tick rereads no record
    inner = _Pool(connections.parallelism)
    try:
        loaded = inner.map(lambda info: _read_set(cache, repo, info), listed)
    finally:
        inner.close()
    sets = tuple(s for s in loaded if isinstance(s, SetRecord))
    broken = tuple(s for s in loaded if isinstance(s, BrokenSet))
    stored = {o.key: o for o in repo.list(SNAPSHOTS_PREFIX)}
    archives = {key: ArchiveObject(key, o.size, utc_iso(o.modified)) for key, o in stored.items()}
    chunks = None
    if hasattr(repo, "read_list"):  # dedup: the chunk index and what every chunk list names
        from qbr.repository.chunk_gc import census

        chunks = census(repo, list(archives), connections.parallelism, cache, stored)
        for key, size in chunks.sizes.items():  # an archive's size as read back (what its set records), not its list's
            archives[key] = replace(archives[key], size=size)
    cache.prune()  # after every read of this observe: what it did not read is gone from the store
    # A store that cannot list or abort unfinished uploads: that cleanup is skipped, and said.
    abortable, gaps = cleanup_gaps(repo, repo.pending_uploads())
    pending = tuple(PendingObject(p.key, p.upload_id, utc_iso(p.initiated)) for p in abortable)
    locked = _observe_locks(connections, name, repo, sets, archives)
    if chunks is not None and connections.manifest.repositories[name].object_lock is not None:
        from qbr.repository.chunk_gc import chunk_locks  # unreferenced chunks a lock still holds

        locked.update(chunk_locks(repo, chunks, connections.parallelism))
    return ObservedRepository(
        name=name,
        description=repo.describe(),
        can_presign=connections.can_presign(name),
        sets=tuple(sorted(sets, key=lambda s: (s.backup, s.set_id))),
        archives=dict(sorted(archives.items())),
        pending_uploads=pending,
        broken_sets=broken,
        store_gaps=gaps,
        chunks=chunks,
        locked_until=locked,
    )


def _observe_locks(connections: Connections, name: str, repo: Any, sets: tuple[SetRecord, ...], archives: dict[str, Any]) -> dict[str, str]:
    """Object Lock retain-until dates of the set records, and of archives no set references (those
    garbage collection may delete): what the planner must not try to delete before its time."""
    if connections.manifest.repositories[name].object_lock is None:
        return {}
    from qbr.records import set_key
    from qbr.repository.protection import retention

    referenced = {k for s in sets for k in s.archive_keys()}
    keys = [set_key(s.backup, s.set_id) for s in sets] + [k for k in archives if k not in referenced]
    inner = _Pool(connections.parallelism)
    try:
        found = inner.map(lambda key: (key, retention(repo, key)), keys)
    finally:
        inner.close()
    return {key: utc_iso(held[1]) for key, held in found if held is not None}


def _read_set(cache: ReadCache, repo: Any, listed: ObjectInfo) -> SetRecord | BrokenSet | None:
    """A set record that cannot be parsed is reported, never silently treated as absent."""
    try:
        raw = cache.read(repo, listed)
    except NotFoundError:
        return None  # deleted between list and get
    try:
        record = SetRecord.from_json(raw, listed.key)
    except QbrError as error:
        return BrokenSet(listed.key, str(error))
    from qbr.sealed_records import try_open

    return try_open(record)  # an encrypted record's config and aliases, when the run has its identity


def _observe_adoption(adopt: AdoptConfig) -> ObservedAdoption:
    """The objects under an adoption's prefix (recursively: shard snapshots sit in shards/<id>/),
    and the aliases its CSV file lists."""
    bucket = open_s3_repository(adopt.bucket, prefix="", endpoint_url=adopt.endpoint_url, region=adopt.region)
    prefix = f"{adopt.prefix}/" if adopt.prefix else ""
    objects = tuple(LegacySnapshot(o.key, o.size, o.etag) for o in bucket.list(prefix))
    return ObservedAdoption(adopt.name, objects, _aliases_from_csv(adopt.aliases_csv) if adopt.aliases_csv else {})


def _aliases_from_csv(path: Path) -> dict[str, tuple[str, ...]]:
    """collection,alias rows (a header row is skipped) -> {collection: aliases}."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise QbrError(f"cannot read the aliases CSV {path}: {error.strerror or error}") from None
    found: dict[str, list[str]] = {}
    for row in csv.reader(io.StringIO(text)):
        cells = [c.strip() for c in row]
        if len(cells) < 2 or not cells[0] or not cells[1] or cells[:2] == ["collection", "alias"]:
            continue
        found.setdefault(cells[0], [])
        if cells[1] not in found[cells[0]]:
            found[cells[0]].append(cells[1])
    return {c: tuple(sorted(a)) for c, a in sorted(found.items())}
