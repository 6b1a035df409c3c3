"""plan(manifest, observed, state, now) -> Plan. Pure: no I/O, no clock, no randomness.

Nearly all of qbr's decisions live here: which backups are due, which collections are
copied and which carried by reference, which sets retention deletes and which archives
garbage collection sweeps, which restore targets are (re)recovered and from which set.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from deepdiff import DeepDiff

from qbr.actions import (
    AbortUpload,
    CommitSet,
    CopyArchive,
    DeleteArchive,
    DeleteNodeSnapshot,
    DeleteSet,
    RestoreCollection,
    UpdateAliases,
    as_params,
)
from qbr.durations import format_duration
from qbr.errors import PlanError
from qbr.manifest import BackupConfig, Manifest, RestoreConfig
from qbr.plan import Action, Note, Plan
from qbr.records import CollectionRecord, SetRecord, parse_set_key, parse_utc, set_id_for, utc_iso
from qbr.render.sizes import human_bytes
from qbr.retention import SetSummary, decide_retention, describe_policy
from qbr.state import State
from qbr.world import BrokenSet, Observed, ObservedCluster, ObservedCollection, ObservedRepository, version_tuple

DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class PlannedSet:
    """A set this plan will create: what restores in the same plan can rely on."""

    backup: str
    set_id: str
    created: datetime
    commit_action: str
    copied_in: dict[str, str]  # collection -> set id whose archives it will hold
    aliases: dict[str, tuple[str, ...]]
    qdrant_version: str


@dataclass
class _Draft:
    actions: list[Action] = field(default_factory=list)
    unchanged: list[Note] = field(default_factory=list)
    kept: list[Note] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def make_plan(
    manifest: Manifest,
    observed: Observed,
    state: State,
    now: datetime,
    *,
    grace: timedelta = DEFAULT_GRACE,
) -> Plan:
    """Diff the manifest against the observed world and the state; return what apply must do."""
    draft = _Draft()
    planned: dict[str, PlannedSet] = {}
    for backup in manifest.backups.values():
        planned_set = _plan_backup(draft, backup, observed, now)
        if planned_set is not None:
            planned[backup.name] = planned_set
    selected_by_restores: dict[tuple[str, str], list[str]] = {}
    for restore in manifest.restores.values():
        _plan_restore(draft, manifest, restore, observed, state, planned, now, selected_by_restores)
    for repo_name in sorted({b.repository for b in manifest.backups.values()}):
        _plan_retention(draft, manifest, observed.repositories[repo_name], planned, selected_by_restores, now, grace)
    _plan_node_snapshot_cleanup(draft, observed, state)
    if len(draft.refusals) == 1:
        raise PlanError(draft.refusals[0])  # the CLI says "Error: " before a one-line message
    if draft.refusals:
        raise PlanError("\n".join(f"Error: {r}" for r in draft.refusals))
    return Plan(
        created=utc_iso(now),
        manifest_source=manifest.source,
        manifest_sha256=manifest.sha256,
        state_location=manifest.state.describe(),
        state_lineage=state.lineage,
        state_serial=state.serial,
        actions=tuple(_as_json_data(a) for a in draft.actions),
        unchanged=tuple(draft.unchanged),
        kept=tuple(draft.kept),
        warnings=tuple(draft.warnings),
    )


def _as_json_data(action: Action) -> Action:
    """Actions hold JSON-native data only (lists, not tuples), so a saved plan reads back equal."""
    return replace(
        action,
        precondition=json.loads(json.dumps(action.precondition)),
        params=json.loads(json.dumps(action.params)),
    )


# ---------------------------------------------------------------- backups


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
        a.key in repo.archives and repo.archives[a.key].size == a.size for a in record.archives
    )


def _unique_set_id(now: datetime, existing: set[str]) -> str:
    base = set_id_for(now)
    candidate, n = base, 1
    while candidate in existing:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _plan_backup(draft: _Draft, backup: BackupConfig, observed: Observed, now: datetime) -> PlannedSet | None:
    group = f"backup {backup.name} (cluster {backup.cluster} -> repository {backup.repository})"
    cluster = observed.clusters[backup.cluster]
    repo = observed.repositories[backup.repository]
    sets = repo.sets_of(backup.name)
    newest = sets[0] if sets else None
    selected = [c for c in cluster.collection_names if backup.selects(c) and c in cluster.collections]
    if not selected:
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
    set_id = _unique_set_id(now, {s.set_id for s in sets})
    commit_id = f"backup.{backup.name}.{set_id}.commit"
    copy_ids: dict[str, list[str]] = {}
    carried: dict[str, dict[str, Any]] = {}
    copied_in: dict[str, str] = {}
    node_load: dict[str, int] = {}
    for name in selected:
        current = cluster.collections[name]
        previous = _newest_record_of(sets, name)
        if (
            backup.only_changed
            and previous is not None
            and previous.points_count == current.points_count
            and previous.config_sha256 == current.config_sha256
            and _archives_intact(previous, repo)
        ):
            carried[name] = asdict(previous)
            copied_in[name] = previous.copied_in
            draft.unchanged.append(
                Note(
                    group,
                    f"collection {name} (referenced from set {previous.copied_in})",
                    f"unchanged since it was copied: {current.points_count} points, same config",
                )
            )
            continue
        copied_in[name] = set_id
        copy_ids[name] = []
        change_reason = _copy_reason(previous, current, backup.only_changed)
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
                    title=f"copy collection {name} {where}from node {unit['node']} into set {set_id}",
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
            precondition={"set_absent": True, "newest_set": newest.set_id if newest else None},
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


def _copy_reason(previous: CollectionRecord | None, current: ObservedCollection, only_changed: bool) -> str:
    """Why a collection is copied again rather than carried by reference."""
    if previous is None:
        return "it is new to this backup"
    if not only_changed:
        return "only_changed is off"
    if previous.config_sha256 != current.config_sha256:
        change = describe_config_change(previous.config, current.config)
        return f"it changed since set {previous.copied_in} ({previous.points_count} -> {current.points_count} points, {change})"
    if previous.points_count != current.points_count:
        return f"it changed since set {previous.copied_in} ({previous.points_count} -> {current.points_count} points)"
    return f"archives of set {previous.copied_in} are missing from the repository"


def _snapshot_units(
    draft: _Draft, backup: BackupConfig, cluster: ObservedCluster, collection: ObservedCollection, node_load: dict[str, int]
) -> list[dict[str, Any]]:
    """Which snapshots cover every shard: one collection snapshot on a single node; otherwise one
    shard snapshot per shard, taken on the least-loaded node holding an active replica of it."""
    if len(cluster.nodes) == 1:
        node = cluster.nodes[0].url
        return [{"node": node, "shard_id": None, "kind": "collection", "shard_ids": list(range(collection.shard_number))}]
    units = []
    for shard_id in range(collection.shard_number):
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


# ---------------------------------------------------------------- restores


def version_refusal(snapshot_version: str, target_version: str) -> str | None:
    """Why a snapshot made by one Qdrant version must not be restored into another, or None."""
    made, target = version_tuple(snapshot_version), version_tuple(target_version)
    if target < made:
        return f"it runs Qdrant {target_version}, older than the {snapshot_version} that made the snapshot; upgrade it first"
    if target[0] != made[0] or target[1] - made[1] > 1:
        return (
            f"it runs Qdrant {target_version}, more than one minor version newer than the {snapshot_version} "
            "that made the snapshot (Qdrant restores the same or the next minor only); restore into a matching version first"
        )
    return None


@dataclass(frozen=True)
class _Source:
    set_id: str
    created: datetime
    collections: dict[str, str]  # name -> copied_in
    aliases: dict[str, tuple[str, ...]]
    sizes: dict[str, int | None]
    qdrant_version: str
    depends_on: tuple[str, ...]


def _select_source(
    restore: RestoreConfig, backup: BackupConfig, repo: ObservedRepository, planned: PlannedSet | None
) -> _Source | None:
    candidates: list[_Source] = []
    if planned is not None:
        candidates.append(
            _Source(
                planned.set_id,
                planned.created,
                dict(planned.copied_in),
                dict(planned.aliases),
                {},
                planned.qdrant_version,
                (planned.commit_action,),
            )
        )
    for record in repo.sets_of(backup.name):
        candidates.append(
            _Source(
                record.set_id,
                record.created_at,
                {n: c.copied_in for n, c in record.collections.items()},
                {n: c.aliases for n, c in record.collections.items()},
                {n: sum(a.size for a in c.archives) for n, c in record.collections.items()},
                record.qdrant_version,
                (),
            )
        )
    for source in candidates:  # newest first
        if restore.at is None or source.created <= restore.at:
            return source
    return None


def _plan_restore(
    draft: _Draft,
    manifest: Manifest,
    restore: RestoreConfig,
    observed: Observed,
    state: State,
    planned: dict[str, PlannedSet],
    now: datetime,
    selected_by_restores: dict[tuple[str, str], list[str]],
) -> None:
    group = f"restore {restore.name} (backup {restore.from_backup} -> cluster {restore.to})"
    backup = manifest.backups[restore.from_backup]
    repo = observed.repositories[backup.repository]
    target = observed.clusters[restore.to]
    source = _select_source(restore, backup, repo, planned.get(backup.name))
    if source is None:
        at = "latest" if restore.at is None else utc_iso(restore.at)
        if restore.at is not None and repo.sets_of(backup.name):
            draft.refusals.append(f"restore {restore.name}: backup {backup.name} has no set at or before {at}")
        else:
            draft.unchanged.append(Note(group, "nothing to restore", f"backup {backup.name} has no set yet"))
        return
    if not source.depends_on:
        selected_by_restores.setdefault((backup.repository, backup.name), []).append(source.set_id)
    unreadable = _unreadable_newer_set(repo, backup.name, source.set_id, restore.at)
    if unreadable is not None:
        draft.refusals.append(
            f"restore {restore.name}: refusing to restore from set {source.set_id}, because a newer set record of "
            f"backup {backup.name} cannot be read ({unreadable.problem})"
        )
        return
    refusal = version_refusal(source.qdrant_version, target.version)
    if refusal:
        draft.refusals.append(
            f"restore {restore.name}: refusing to restore set {source.set_id} into cluster {restore.to}: {refusal}"
        )
        return
    provenance = state.restores.get(restore.name, {})
    restore_ids: list[str] = []
    desired_aliases: dict[str, str] = {}
    targets_restored: set[str] = set()
    owned = {restore.target_name(s) for s in source.collections} - {None}
    existing = set(target.collection_names)
    claimed: dict[str, str] = {}
    for source_name in sorted(source.collections):
        target_name = restore.target_name(source_name)
        if target_name is None:
            continue
        if target_name in claimed:
            draft.refusals.append(
                f"restore {restore.name}: collections {claimed[target_name]} and {source_name} would both be restored "
                f"into {target_name}; give each its own target in the restore's collections"
            )
            continue
        claimed[target_name] = source_name
        for other in manifest.backups.values():
            if other.cluster == restore.to and other.selects(target_name):
                draft.refusals.append(
                    f"restore {restore.name}: refusing to restore into collection {target_name} on cluster "
                    f"{restore.to}, because backup {other.name} backs it up; map it to another name in the "
                    "restore's collections"
                )
                break
        else:
            for alias in source.aliases.get(source_name, ()):
                desired_aliases[alias] = target_name
            copied_in = source.collections[source_name]
            exists = target_name in existing
            known = provenance.get(target_name)
            interrupted = bool(known and known.get("incomplete"))  # a restore into it did not finish
            title = (
                f"collection {target_name} on cluster {restore.to} from set {source.set_id} "
                f"collection {source_name} ({human_bytes(source.sizes.get(source_name))})"
            )
            if exists and known and not interrupted and known.get("copied_in") == copied_in and known.get("source_collection") == source_name:
                draft.unchanged.append(
                    Note(group, f"collection {target_name}", f"restored from set {known.get('set_id')} on {known.get('restored_at')}; set {source.set_id} holds the same data")
                )
                continue
            if exists and restore.if_exists == "skip" and not interrupted:
                draft.unchanged.append(
                    Note(group, f"collection {target_name}", "it exists and if_exists is skip")
                )
                continue
            if exists and restore.if_exists == "fail" and not interrupted:
                draft.refusals.append(
                    f"restore {restore.name}: collection {target_name} already exists on cluster {restore.to} "
                    "and if_exists is fail; delete it, or set if_exists to skip or replace"
                )
                continue
            if not exists:
                reason = "it does not exist on the target cluster"
            elif interrupted:
                reason = f"a restore into it from set {known.get('set_id')} did not finish; it may be incomplete"
            elif known:
                reason = f"it holds set {known.get('set_id')}'s data, and the restore now selects set {source.set_id}"
            else:
                reason = "it exists but was not restored by qbr, and if_exists is replace"
            via = restore.via
            if via == "auto":
                via = "url" if repo.can_presign else "upload"
            action_id = f"restore.{restore.name}.{target_name}"
            draft.actions.append(
                Action(
                    id=action_id,
                    kind="restore_collection",
                    change="replace" if exists else "create",
                    group=group,
                    title=title,
                    reason=reason,
                    depends_on=source.depends_on,
                    precondition={"target_exists": exists},
                    params=as_params(RestoreCollection(
                        restore=restore.name,
                        backup=backup.name,
                        repository=backup.repository,
                        set_id=source.set_id,
                        source_collection=source_name,
                        copied_in=copied_in,
                        target_cluster=restore.to,
                        target_collection=target_name,
                        via=via,
                    )),
                )
            )
            restore_ids.append(action_id)
            targets_restored.add(target_name)
    if not claimed:
        draft.warnings.append(
            f"restore {restore.name}: no collection of set {source.set_id} matches its collections "
            f"{dict(restore.collections)}; nothing is restored"
        )
    if restore.aliases:
        _plan_aliases(draft, group, restore, target, existing, desired_aliases, owned, targets_restored, restore_ids)


def _unreadable_newer_set(repo: ObservedRepository, backup: str, set_id: str, at: datetime | None) -> BrokenSet | None:
    """A set record of `backup` that cannot be read and would have been chosen over `set_id`: a
    restore must not roll its target back to older data because the newest record is damaged."""
    for broken in repo.broken_sets:
        parsed = parse_set_key(broken.key)
        if parsed is None or parsed[0] != backup or parsed[1] <= set_id:
            continue
        if at is None or datetime.strptime(parsed[1][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc) <= at:
            return broken
    return None


def _plan_aliases(
    draft: _Draft,
    group: str,
    restore: RestoreConfig,
    target: ObservedCluster,
    existing: set[str],
    desired: dict[str, str],
    owned: set[str | None],
    restored_now: set[str],
    restore_ids: list[str],
) -> None:
    """Point the set's aliases at the restored collections, in one atomic alias update,
    without touching aliases that point at collections this restore does not own."""
    changes: dict[str, str] = {}
    for alias, collection in sorted(desired.items()):
        current = target.aliases.get(alias)
        if current == collection and collection not in restored_now:
            continue
        if current is not None and current != collection and current not in owned:
            draft.unchanged.append(
                Note(group, f"alias {alias}", f"it points at collection {current}, which this restore does not own")
            )
            continue
        if alias in existing:
            draft.unchanged.append(Note(group, f"alias {alias}", "a collection of that name exists on the target"))
            continue
        changes[alias] = collection
    if not changes:
        return
    draft.actions.append(
        Action(
            id=f"restore.{restore.name}.aliases",
            kind="update_aliases",
            change="update",
            group=group,
            title="aliases " + ", ".join(f"{a} -> {c}" for a, c in changes.items()) + f" on cluster {restore.to}",
            reason="collection snapshots do not hold aliases; the set recorded them",
            depends_on=tuple(restore_ids),
            params=as_params(UpdateAliases(
                cluster=restore.to,
                actions=[{"create_alias": {"collection_name": c, "alias_name": a}} for a, c in changes.items()],
            )),
        )
    )


# ---------------------------------------------------------------- retention and garbage


def _plan_retention(
    draft: _Draft,
    manifest: Manifest,
    repo: ObservedRepository,
    planned: dict[str, PlannedSet],
    selected_by_restores: dict[tuple[str, str], list[str]],
    now: datetime,
    grace: timedelta,
) -> None:
    deleted: dict[str, SetRecord] = {}
    delete_ids: list[str] = []
    for backup in manifest.backups.values():
        if backup.repository != repo.name:
            continue
        group = f"backup {backup.name} (cluster {backup.cluster} -> repository {backup.repository})"
        sets = repo.sets_of(backup.name)
        summaries = [SetSummary(s.set_id, s.created_at, True) for s in sets]
        new = planned.get(backup.name)
        if new is not None:
            summaries.append(SetSummary(new.set_id, new.created, True))
        protected = set(selected_by_restores.get((repo.name, backup.name), ()))
        by_id = {s.set_id: s for s in sets}
        for decision in decide_retention(summaries, backup.retention):
            record = by_id.get(decision.set_id)
            if record is None:
                continue  # the planned set: kept (it is the newest)
            if decision.keep:
                draft.kept.append(Note(group, f"set {decision.set_id}", ", ".join(decision.reasons)))
                continue
            if decision.set_id in protected:
                draft.kept.append(Note(group, f"set {decision.set_id}", "selected by a restore in this manifest"))
                continue
            action_id = f"retention.{backup.name}.{decision.set_id}.delete"
            draft.actions.append(
                Action(
                    id=action_id,
                    kind="delete_set",
                    change="delete",
                    group=group,
                    title=f"set {decision.set_id} ({len(record.collections)} collections)",
                    reason="; ".join(decision.reasons) or f"not kept by {describe_policy(backup.retention)}",
                    depends_on=(new.commit_action,) if new is not None else (),
                    precondition={"set_exists": True, "newer_set_exists": True},
                    params=as_params(DeleteSet(repository=repo.name, backup=backup.name, set_id=decision.set_id)),
                )
            )
            delete_ids.append(action_id)
            deleted[decision.set_id + "/" + backup.name] = record
    _plan_garbage(draft, repo, planned, deleted, delete_ids, now, grace)


def _plan_garbage(
    draft: _Draft,
    repo: ObservedRepository,
    planned: dict[str, PlannedSet],
    deleted: dict[str, SetRecord],
    delete_ids: list[str],
    now: datetime,
    grace: timedelta,
) -> None:
    """Mark and sweep: an archive no remaining set references goes, after its sets; one that no
    set ever referenced (an interrupted upload) goes once it is older than the grace period."""
    group = f"repository {repo.name} ({repo.description})"
    gone = {id(r) for r in deleted.values()}
    referenced: set[str] = set()
    for record in repo.sets:
        if id(record) not in gone:
            referenced |= record.archive_keys()
    # Sets this plan creates keep their carried archives.
    for new in planned.values():
        for record in repo.sets_of(new.backup):
            for name, copied_in in new.copied_in.items():
                if copied_in == record.set_id and name in record.collections:
                    referenced |= {a.key for a in record.collections[name].archives}
    once_referenced: set[str] = set()
    for record in deleted.values():
        once_referenced |= record.archive_keys()
    for key, archive in repo.archives.items():
        if key in referenced:
            continue
        if key in once_referenced:
            reason = "no set references it once the sets above are deleted"
            depends = tuple(delete_ids)
        else:
            age = now - parse_utc(archive.modified)
            if repo.broken_sets or age < grace:
                continue
            reason = f"no set references it (left by an interrupted run {format_duration(age)} ago, past the {format_duration(grace)} grace period)"
            depends = ()
        draft.actions.append(
            Action(
                id=f"gc.{repo.name}.{key}",
                kind="delete_archive",
                change="delete",
                group=group,
                title=f"archive {key} ({human_bytes(archive.size)})",
                reason=reason,
                depends_on=depends,
                precondition={"unreferenced": True},
                params=as_params(DeleteArchive(repository=repo.name, key=key)),
            )
        )
    if repo.broken_sets:
        draft.warnings.append(
            f"repository {repo.name}: {len(repo.broken_sets)} set records cannot be read ({repo.broken_sets[0].key}: "
            f"{repo.broken_sets[0].problem}); archives nobody references are kept until they are repaired or removed"
        )
    for pending in repo.pending_uploads:
        age = now - parse_utc(pending.initiated)
        if age < grace:
            continue
        draft.actions.append(
            Action(
                id=f"gc.{repo.name}.upload.{pending.key}.{pending.upload_id}",
                kind="abort_upload",
                change="delete",
                group=group,
                title=f"unfinished upload of {pending.key}",
                reason=f"it was started {format_duration(age)} ago and never completed (grace {format_duration(grace)})",
                params=as_params(AbortUpload(repository=repo.name, key=pending.key, upload_id=pending.upload_id, initiated=pending.initiated)),
            )
        )


def _plan_node_snapshot_cleanup(draft: _Draft, observed: Observed, state: State) -> None:
    """Snapshots qbr made on a node and did not get to delete (a killed run) are deleted, so
    Qdrant's disk does not fill, and records of ones already gone are dropped from the state.

    Only snapshots qbr recorded as its own are touched: by name, or, when the run was killed
    while Qdrant was making one (its name never reached the state; the entry is recorded with
    name None and the snapshots that were there before), the one snapshot named as Qdrant names
    its own that appeared on that node, collection and shard since. If several appeared, qbr
    cannot tell which is its own: it deletes none and says so."""
    entries = list(enumerate(state.node_snapshots))
    named = {(e.get("node"), e.get("collection"), e.get("shard_id"), e.get("name")) for _, e in entries if e.get("name")}
    claimed: set[tuple[Any, ...]] = set()
    cleanups: list[tuple[int, Action]] = []
    # Newest records first: a later run listed an earlier run's leftover among those that were there.
    for index, entry in sorted(entries, key=lambda pair: (pair[1].get("name") is None, pair[0]), reverse=True):
        cluster = observed.clusters.get(str(entry.get("cluster")))
        if cluster is None:
            continue
        collection = cluster.collections.get(str(entry.get("collection")))
        if collection is None:
            continue
        node, shard = entry.get("node"), entry.get("shard_id")
        here = {s.name for s in collection.node_snapshots if s.node == node and s.shard_id == shard}
        name = entry.get("name")
        where = f"collection {collection.name} on node {node}" + (f" (shard {shard})" if shard is not None else "")
        if name is not None:
            found = name if name in here else None
            reason = "qbr made it during a run that stopped before deleting it"
        else:
            before = set(entry.get("before") or ())
            appeared = sorted(
                n for n in here - before
                if (node, collection.name, shard, n) not in named | claimed and _named_by_qdrant(n, collection.name, shard)
            )
            if len(appeared) > 1:
                draft.warnings.append(
                    f"a qbr run was killed while node {node} made a snapshot of {where}; since then {len(appeared)} "
                    f"snapshots appeared there ({', '.join(appeared)}) and qbr cannot tell which is its own: "
                    "delete it by hand"
                )
                continue
            found = appeared[0] if appeared else None
            reason = "qbr was making it when its run was killed, before it could record its name"
        if found is not None:
            claimed.add((node, collection.name, shard, found))
            title = f"snapshot {found} of {where}"
        else:
            title = f"record of snapshot {name} of {where}" if name else f"record of a snapshot qbr was making of {where}"
            reason = "the snapshot is not on the node (a killed run made none, or deleted it before recording that); qbr forgets it"
        cleanups.append((index, Action(
                id=f"cleanup.{cluster.name}.{node}.{collection.name}.{shard}.{found or f'record-{index}'}",
                kind="delete_node_snapshot",
                change="delete",
                group=f"cluster {cluster.name}",
                title=title,
                reason=reason,
                params=as_params(DeleteNodeSnapshot(
                    cluster=cluster.name, node=node, collection=collection.name, shard_id=shard, name=found, record=dict(entry),
                )),
            )))
    draft.actions.extend(action for _, action in sorted(cleanups, key=lambda pair: pair[0]))


def _named_by_qdrant(name: str, collection: str, shard_id: int | None) -> bool:
    """Qdrant names the snapshots it makes {collection}-{peer id}-{time}.snapshot, or for one
    shard {collection}-shard-{id}-{time}.snapshot; an uploaded file keeps its own name."""
    middle = f"shard-{shard_id}" if shard_id is not None else r"[0-9]+"
    stamp = r"[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}\.snapshot"
    return re.fullmatch(re.escape(collection) + "-" + middle + "-" + stamp, name) is not None
