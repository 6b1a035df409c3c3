"""Restores: which set `at` selects, which targets are (re)recovered and how, and the aliases
that follow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from qbr.actions import (
    CopyCollection,
    RestoreCollection,
    UpdateAliases,
    as_params,
)
from qbr.manifest import BackupConfig, Manifest, RestoreConfig
from qbr.plan import Action, Note
from qbr.planner.chunks import chunked_source
from qbr.planner.draft import Draft, PlannedSet
from qbr.planner.topology import Route, route, sample_words, shape_of, storage_of
from qbr.records import SetRecord, parse_set_key, set_id_time, utc_iso
from qbr.render.sizes import human_bytes
from qbr.state import State
from qbr.world import BrokenSet, Observed, ObservedCluster, ObservedCollection, ObservedRepository, version_tuple


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
    configs: dict[str, tuple[dict, int]]  # name -> (recorded config, shard number)
    points: dict[str, int | None]  # name -> recorded points count (None: not known before the backup runs)


def _select_source(
    restore: RestoreConfig, backup: BackupConfig, repo: ObservedRepository, planned: PlannedSet | None,
    live: ObservedCluster | None,
) -> _Source | None:
    if planned is not None and (restore.at is None or planned.created <= restore.at):  # newest first
        observed = live.collections if live is not None else {}
        return _Source(
            planned.set_id,
            planned.created,
            dict(planned.copied_in),
            dict(planned.aliases),
            {},
            planned.qdrant_version,
            (planned.commit_action,),
            {n: (observed[n].config, observed[n].shard_number) for n in planned.copied_in if n in observed},
            {n: observed[n].points_count for n in planned.copied_in if n in observed},
        )
    # Only the set chosen is turned into a _Source: with thousands of collections and dozens of
    # sets, building one per set was most of a plan's time.
    record = next((r for r in repo.sets_of(backup.name) if restore.at is None or r.created_at <= restore.at), None)
    if record is None:
        return None
    return _Source(
        record.set_id,
        record.created_at,
        {n: c.copied_in for n, c in record.collections.items()},
        {n: c.aliases for n, c in record.collections.items()},
        {n: sum(a.size for a in c.archives) for n, c in record.collections.items()},
        record.qdrant_version,
        (),
        {n: (c.config, c.shard_number) for n, c in record.collections.items()},
        {n: c.points_count if c.points_count >= 0 else None for n, c in record.collections.items()},
    )


def plan_restore(
    draft: Draft,
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
    source_cluster = observed.clusters.get(backup.cluster)
    source = _select_source(restore, backup, repo, planned.get(backup.name), source_cluster)
    if source is None:
        at = "latest" if restore.at is None else utc_iso(restore.at)
        if restore.at is not None and repo.sets_of(backup.name):
            oldest = min(repo.sets_of(backup.name), key=lambda r: r.created_at)  # its first snapshot's moment, not its id's
            draft.refusals.append(f"restore {restore.name}: backup {backup.name} has no set at or before {at}; "
                                  f"its oldest set, {oldest.set_id}, stands for {oldest.created}")
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
    too_new = version_refusal(source.qdrant_version, target.version)  # for snapshots only: a logical copy needs none
    version_refused = False
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
            recorded, recorded_shards = source.configs.get(source_name, ({}, 1))
            live = source_cluster.collections.get(source_name) if source_cluster is not None else None
            path = route(restore, source_name, recorded, recorded_shards, live, backup.cluster, len(target.nodes))
            if path.refusal:
                draft.refusals.append(f"restore {restore.name}: {path.refusal}")
                continue
            if path.method == "snapshot" and too_new:
                if not version_refused:
                    version_refused = True
                    draft.refusals.append(
                        f"restore {restore.name}: refusing to restore set {source.set_id} into cluster {restore.to}: {too_new}"
                        + ("; or set method: logical to copy the points from the live collections instead" if restore.method == "auto" else "")
                    )
                continue
            shape = shape_of(restore)
            title = (
                f"collection {target_name} on cluster {restore.to} from set {source.set_id} "
                f"collection {source_name} ({human_bytes(source.sizes.get(source_name))})"
            )
            if exists and known and known.get("points_check_failed") and known.get("set_id") == source.set_id:
                draft.warnings.append(
                    f"restore {restore.name}: collection {target_name} on cluster {restore.to}, restored from set "
                    f"{source.set_id}, did not pass its points check ({known['points_check_failed']})"
                )
                continue
            same_data = bool(known) and known.get("copied_in") == copied_in and known.get("source_collection") == source_name
            reshaped = bool(known) and known.get("shape", {}) != shape
            if exists and known and not interrupted and same_data and not reshaped:
                draft.unchanged.append(Note(group, f"collection {target_name}", _unchanged_reason(known, source.set_id)))
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
            if _record_of(repo, backup.name, source.set_id, lambda r: r.sealed):
                draft.refusals.append(
                    f"restore {restore.name}: set {source.set_id} of backup {backup.name} is encrypted; restoring it needs "
                    "the private key of one of its recipients: pass --identity FILE or set QBR_AGE_IDENTITY_FILE"
                )
                continue
            if not exists:
                reason = "it does not exist on the target cluster"
            elif interrupted:
                reason = f"a restore into it from set {known.get('set_id')} did not finish; it may be incomplete"
            elif same_data and reshaped:
                reason = f"the restore's topology or storage changed since it was restored from set {known.get('set_id')}"
            elif known:
                reason = f"it holds set {known.get('set_id')}'s data, and the restore now selects set {source.set_id}"
            else:
                reason = "it exists but was not restored by qbr, and if_exists is replace"
            action_id = f"restore.{restore.name}.{target_name}"
            if path.method == "logical":
                draft.actions.append(_copy_action(
                    action_id, group, restore, backup, source, source_name, target_name, live, exists, path, reason, shape
                ))
                restore_ids.append(action_id)
                targets_restored.add(target_name)
                continue
            via = restore.via
            if via == "auto":
                via = "url" if repo.can_presign else "upload"
            encrypted = _record_of(repo, backup.name, source.set_id, lambda r: r.encryption is not None) or (
                bool(source.depends_on) and manifest.repositories[backup.repository].encryption is not None)
            if encrypted and restore.via == "url":
                draft.refusals.append(
                    f"restore {restore.name}: set {source.set_id} is encrypted, and Qdrant cannot decrypt what it fetches "
                    "by URL; set via: auto or upload (qbr then decrypts the archive as it uploads it)"
                )
                continue
            chunked = chunked_source(manifest, repo, backup.name, source.set_id, bool(source.depends_on))
            if chunked and restore.via == "url":
                draft.refusals.append(
                    f"restore {restore.name}: set {source.set_id} is stored as deduplicated chunks (repository "
                    f"{backup.repository} has dedup: true), which Qdrant cannot fetch by URL; set via: auto or upload"
                )
                continue
            if chunked and not encrypted:
                via = "upload"
                reason += "; its archives are stored as deduplicated chunks, so qbr rebuilds each (every chunk and the archive's sha256 checked) and uploads it"
            if encrypted:
                via = "upload"
                reason += "; its archives are encrypted, so qbr streams each out of the repository, decrypts it and uploads it"
            if path.changes:
                title += ", with " + ", ".join(path.changes)
                reason += (
                    "; a snapshot carries the recorded shard number and vectors, so the archives are recovered as "
                    f"always and the rest is changed in place (PATCH /collections/{target_name})"
                )
            if restore.verify_sample:
                reason += "; " + sample_words(restore.verify_sample, source_name)
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
                        fallback=restore.via == "auto",
                        replication_factor=path.replication_factor,
                        write_consistency_factor=path.write_consistency_factor,
                        patch=path.patch,
                        shape=shape,
                        verify_sample=restore.verify_sample,
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


def _unchanged_reason(known: dict, selected: str) -> str:
    if known.get("copy_from") == "archive":
        return (
            f"copied from set {known.get('set_id')}'s archives on {known.get('restored_at')} (a logical copy); "
            f"set {selected} holds the same data"
        )
    if known.get("method") == "logical":
        return (
            f"copied from cluster {known.get('source_cluster')} collection {known.get('source_collection')} on "
            f"{known.get('restored_at')} (a logical copy, for set {known.get('set_id')}); set {selected} holds the same data"
        )
    return f"restored from set {known.get('set_id')} on {known.get('restored_at')}; set {selected} holds the same data"


def _copy_action(
    action_id: str, group: str, restore: RestoreConfig, backup: BackupConfig, source: _Source, source_name: str,
    target_name: str, live: ObservedCollection | None, exists: bool, path: Route, reason: str, shape: dict,
) -> Action:
    """A logical copy: the target created in its new shape, the points streamed into it from the
    live source collection, or (copy_from: archive) from the set's archives, read offline."""
    resharded = any(change.startswith("shard number") for change in path.changes)
    why = "a snapshot recovers only into a collection with the same shard number, so " if resharded else ""
    precondition: dict = {"target_exists": exists}
    if restore.copy_from == "archive":
        points = source.points.get(source_name)
        origin = f"set {source.set_id}'s archives of collection {source_name}"
        how = (
            "copied from the set's archives, read offline with Qdrant's engine (qdrant-edge-py) on this machine; "
            f"cluster {backup.cluster} is not needed"
        )
    else:
        assert live is not None  # route() refuses a live copy without its live source
        points, origin = live.points_count, f"cluster {backup.cluster} collection {source_name}"
        precondition["source_config_sha256"] = live.config_sha256
        how = (
            f"copied from the live collection (cluster {backup.cluster} must be reachable while apply runs, and the "
            f"copy holds the points it has then, not those of set {source.set_id})"
        )
    return Action(
        id=action_id,
        kind="copy_collection",
        change="replace" if exists else "create",
        group=group,
        title=(
            f"collection {target_name} on cluster {restore.to}: {', '.join(path.changes)}: logical copy of "
            f"~{'?' if points is None else points} points from {origin}"
        ),
        reason=f"{reason}; {why}the target is created in its new shape and the points are {how}",
        depends_on=source.depends_on,
        precondition=precondition,
        params=as_params(CopyCollection(
            restore=restore.name,
            backup=backup.name,
            set_id=source.set_id,
            copied_in=source.collections[source_name],
            source_cluster=backup.cluster,
            source_collection=source_name,
            target_cluster=restore.to,
            target_collection=target_name,
            shard_number=path.shard_number,
            replication_factor=path.replication_factor or 1,
            write_consistency_factor=path.write_consistency_factor or 1,
            storage=storage_of(restore),
            shape=shape,
            batch_size=restore.batch_size,
            verify_sample=restore.verify_sample,
            copy_from=restore.copy_from,
            repository=backup.repository,
        )),
    )


def _record_of(repo: ObservedRepository, backup: str, set_id: str, test: Callable[[SetRecord], bool]) -> bool:
    """Whether the observed set `set_id` of `backup` passes `test` (False when it is not stored yet)."""
    return any(test(r) for r in repo.sets if r.backup == backup and r.set_id == set_id)


def _unreadable_newer_set(repo: ObservedRepository, backup: str, set_id: str, at: datetime | None) -> BrokenSet | None:
    """A set record of `backup` that cannot be read and would have been chosen over `set_id`: a
    restore must not roll its target back to older data because the newest record is damaged."""
    for broken in repo.broken_sets:
        parsed = parse_set_key(broken.key)
        if parsed is None or parsed[0] != backup or parsed[1] <= set_id:
            continue
        if at is None or set_id_time(parsed[1]) <= at:
            return broken
    return None


def _plan_aliases(
    draft: Draft,
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
