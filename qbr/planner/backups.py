"""Backups: which are due, which collections are copied and which carried by reference, and
which snapshots cover every shard."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from deepdiff import DeepDiff

from qbr.actions import (
    CommitSet,
    CopyArchive,
    as_params,
)
from qbr.durations import format_duration
from qbr.manifest import BackupConfig, Manifest
from qbr.plan import Action, Note
from qbr.planner.draft import Draft, PlannedSet
from qbr.records import CollectionRecord, SetRecord, set_id_for, set_id_time, utc_iso
from qbr.world import Observed, ObservedCluster, ObservedCollection, ObservedRepository


def _newest_record_of(sets: list[SetRecord], collection: str) -> CollectionRecord | None:
    for record in sets:  # newest first
        if collection in record.collections:
            return record.collections[collection]
    return None


def describe_config_change(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    """Which config fields changed, e.g. 'params.on_disk_payload, hnsw_config.m' (for reasons)."""
    paths = sorted(
        path.replace("root", "", 1).replace("']['", ".").replace("['", "").replace("']", "").replace("[", ".").replace("]", "")
        for path in DeepDiff(old, new, ignore_order=True).affected_paths
    )
    if not paths:
        return "config changed"
    shown = ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
    return f"config changed: {shown}"


def _archives_intact(record: CollectionRecord, repo: ObservedRepository) -> bool:
    return all(
        a.key in repo.archives and repo.archives[a.key].size == a.object_size for a in record.archives
    )


def _unique_set_id(now: datetime, existing: set[str]) -> str:
    base = set_id_for(now)
    candidate, n = base, 1
    while candidate in existing:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def plan_backup(draft: Draft, manifest: Manifest, backup: BackupConfig, observed: Observed, now: datetime) -> PlannedSet | None:
    group = f"backup {backup.name} (cluster {backup.cluster} -> repository {backup.repository})"
    cluster = observed.clusters[backup.cluster]
    repo = observed.repositories[backup.repository]
    sets = repo.sets_of(backup.name)
    newest = sets[0] if sets else None
    names = [c for c in cluster.collection_names if backup.selects(c)]
    if not names:
        draft.warnings.append(
            f"backup {backup.name}: no collection on cluster {backup.cluster} matches {list(backup.collections)}"
        )
        return None
    if newest is not None:
        age = now - newest.created_at
        if age < backup.rpo:
            draft.unchanged.append(
                Note(group, f"set {newest.set_id}", f"the newest set is {format_duration(age)} old, within the rpo of {format_duration(backup.rpo)}")
            )
            return None
        why = f"the newest set {newest.set_id} is {format_duration(age)} old, past the rpo of {format_duration(backup.rpo)}"
    else:
        why = "this backup has no set yet"
    selected = [c for c in names if c in cluster.collections]  # observed in detail: those of due backups
    set_id = _unique_set_id(now, {s.set_id for s in sets})
    commit_id = f"backup.{backup.name}.{set_id}.commit"
    copy_ids: dict[str, list[str]] = {}
    carried: dict[str, dict[str, Any]] = {}
    copied_in: dict[str, str] = {}
    node_load: dict[str, int] = {}
    for name in selected:
        current = cluster.collections[name]
        previous = _newest_record_of(sets, name)
        if backup.only_changed and previous is not None and _carry(previous, current, repo, backup, now) \
                and _same_encryption(previous, manifest, backup):
            # An encrypted record's config, aliases... travel sealed; never in clear in a plan.
            carried[name] = _as_data(replace(previous, config={}, payload_schema={}, shard_keys=(), aliases=())
                                     if previous.sealed is not None else previous)
            copied_in[name] = previous.copied_in
            draft.unchanged.append(
                Note(
                    group,
                    f"collection {name} (referenced from set {previous.copied_in})",
                    f"points count and config unchanged since it was copied ({current.points_count} points); "
                    "in-place updates are not detected (only_changed), and it is copied again once that copy "
                    f"is older than max_reference_age {format_duration(backup.max_reference_age)}",
                )
            )
            continue
        copied_in[name] = set_id
        copy_ids[name] = []
        change_reason = _copy_reason(previous, current, backup, now, manifest)
        store, server_side, path_note = _data_path(manifest, backup)
        for unit in _snapshot_units(draft, backup, cluster, current, node_load):
            action_id = f"backup.{backup.name}.{set_id}.copy.{name}" + (
                f".shard-{unit['shard_id']}" if unit["shard_id"] is not None else ""
            )
            where = f"shard {unit['shard_id']} " if unit["shard_id"] is not None else ""
            draft.actions.append(
                Action(
                    id=action_id,
                    kind="copy_archive",
                    change="create",
                    group=group,
                    title=f"copy collection {name} {where}from node {unit['node']} into set {set_id}{path_note}",
                    reason=change_reason,
                    precondition={"collection_exists": True, "shard_local": unit["shard_id"] is not None},
                    params=as_params(CopyArchive(
                        repository=backup.repository,
                        backup=backup.name,
                        set_id=set_id,
                        cluster=backup.cluster,
                        node=unit["node"],
                        collection=name,
                        shard_id=unit["shard_id"],
                        kind=unit["kind"],
                        shard_ids=tuple(unit["shard_ids"]),
                        snapshot_store=store is not None,
                        server_side=server_side,
                    )),
                )
            )
            copy_ids[name].append(action_id)
    aliases = {name: cluster.collections[name].aliases for name in selected} if backup.aliases else {}
    draft.actions.append(
        Action(
            id=commit_id,
            kind="commit_set",
            change="create",
            group=group,
            title=f"set {set_id}: {len(copy_ids)} collections copied, {len(carried)} referenced",
            reason=why,
            depends_on=tuple(i for ids in copy_ids.values() for i in ids),
            precondition={"set_absent": True, "newest_set": newest.set_id if newest else None,
                          **({"adopted_in_plan": draft.adopted[backup.name]} if backup.name in draft.adopted else {})},
            params=as_params(CommitSet(
                repository=backup.repository,
                backup=backup.name,
                set_id=set_id,
                created=utc_iso(now),
                cluster=backup.cluster,
                qdrant_version=cluster.version,
                copied=copy_ids,
                carried=carried,
                aliases={k: list(v) for k, v in aliases.items()},
            )),
        )
    )
    return PlannedSet(backup.name, set_id, now, commit_id, copied_in, aliases, cluster.version)


def backup_is_due(backup: BackupConfig, repo: ObservedRepository, now: datetime) -> bool:
    """Past its rpo, or without a set yet (the rule plan_backup applies; observe uses it to read
    in detail only the collections a due backup copies)."""
    sets = repo.sets_of(backup.name)
    return not sets or now - sets[0].created_at >= backup.rpo


def _as_data(record: CollectionRecord) -> dict[str, Any]:
    """A record as plain data for a plan: its fields are flat but for the archives (asdict's deep
    copy of every config, for thousands of carried collections, cost more than the rest of a plan)."""
    return {**vars(record), "archives": [dict(vars(a)) for a in record.archives]}


def _data_path(manifest: Manifest, backup: BackupConfig) -> tuple[Any, bool, str]:
    """How archive bytes move: when the nodes write snapshots to S3 and the repository is an S3
    bucket on the same endpoint, by a copy inside S3 (nothing through qbr); otherwise streamed."""
    store = manifest.clusters[backup.cluster].snapshot_storage
    repo = manifest.repositories[backup.repository]
    if repo.encryption is not None:  # bytes must pass through qbr to be encrypted: never copied inside S3
        streamed = " (streamed through qbr and encrypted for the repository's age recipients"
        return store, False, streamed + (": encryption rules out the server-side copy)" if store is not None else ")")
    if store is None:
        return None, False, ""
    if repo.kind == "s3" and (repo.endpoint_url or None) == store.endpoint_url:
        return store, True, " (server-side: 0 bytes through qbr)"
    return store, False, " (streamed through qbr: the repository is not on the nodes' snapshot store)"


def _carry(previous: CollectionRecord, current: ObservedCollection, repo: ObservedRepository, backup: BackupConfig, now: datetime) -> bool:
    """only_changed's comparison: same points count and config, archives intact, and a copy young
    enough (in-place updates change neither count nor config, so an old reference is refreshed)."""
    return (
        previous.points_count == current.points_count
        and previous.config_sha256 == current.config_sha256
        and _archives_intact(previous, repo)
        and now - set_id_time(previous.copied_in) < backup.max_reference_age
    )


def _same_encryption(previous: CollectionRecord, manifest: Manifest, backup: BackupConfig) -> bool:
    """Archives are carried only when they are encrypted as new ones would be (or both plain):
    a change of recipients applies to every new set."""
    wanted = manifest.repositories[backup.repository].encryption
    label = None if wanted is None else f"age {wanted.fingerprint}"
    return all(a.encryption == label for a in previous.archives)


def _copy_reason(previous: CollectionRecord | None, current: ObservedCollection, backup: BackupConfig, now: datetime,
                 manifest: Manifest | None = None) -> str:
    """Why a collection is copied again rather than carried by reference."""
    if previous is None:
        return "it is new to this backup"
    if not backup.only_changed:
        return "only_changed is off"
    if manifest is not None and not _same_encryption(previous, manifest, backup):
        return f"its archives in set {previous.copied_in} are not encrypted for the repository's current recipients"
    if previous.config_sha256 != current.config_sha256:
        change = describe_config_change(previous.config, current.config) if previous.config else "config changed"
        return f"it changed since set {previous.copied_in} ({previous.points_count} -> {current.points_count} points, {change})"
    if previous.points_count != current.points_count:
        return f"it changed since set {previous.copied_in} ({previous.points_count} -> {current.points_count} points)"
    age = now - set_id_time(previous.copied_in)
    if age >= backup.max_reference_age:
        return (
            f"its copy in set {previous.copied_in} is {format_duration(age)} old, past max_reference_age "
            f"{format_duration(backup.max_reference_age)} (only_changed cannot see in-place updates)"
        )
    return f"archives of set {previous.copied_in} are missing from the repository"


def _snapshot_units(
    draft: Draft, backup: BackupConfig, cluster: ObservedCluster, collection: ObservedCollection, node_load: dict[str, int]
) -> list[dict[str, Any]]:
    """Which snapshots cover every shard: one collection snapshot on a single node; otherwise one
    shard snapshot per shard, taken on the least-loaded node holding an active replica of it."""
    if not cluster.distributed:
        node = cluster.nodes[0].url
        return [{"node": node, "shard_id": None, "kind": "collection", "shard_ids": collection.shard_ids()}]
    units = []
    unlisted = [s for s in collection.shard_ids() if not any(r.shard_id == s for r in collection.replicas)]
    if unlisted:
        which = f"shard {unlisted[0]}" if len(unlisted) == 1 else "shards " + ", ".join(map(str, unlisted))
        draft.refusals.append(
            f"backup {backup.name}: {which} of collection {collection.name} "
            f"{'is' if len(unlisted) == 1 else 'are'} held only by nodes the manifest does not list for cluster "
            f"{backup.cluster}, so a backup would miss {'it' if len(unlisted) == 1 else 'them'}; list every node "
            "under nodes:, or give only url: so qbr finds them"
        )
        return []
    for shard_id in collection.shard_ids():
        holders = sorted(r.node for r in collection.replicas if r.shard_id == shard_id and r.state == "Active")
        if not holders:
            draft.refusals.append(
                f"backup {backup.name}: shard {shard_id} of collection {collection.name} has no active replica on "
                f"cluster {backup.cluster}, so it cannot be backed up; repair the cluster, then plan again"
            )
            continue
        node = min(holders, key=lambda url: (node_load.get(url, 0), url))
        node_load[node] = node_load.get(node, 0) + 1
        units.append({"node": node, "shard_id": shard_id, "kind": "shard", "shard_ids": [shard_id]})
    return units
