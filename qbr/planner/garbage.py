"""Retention and garbage: which sets retention deletes, and which archives and unfinished
uploads nothing references any more."""

from __future__ import annotations

from datetime import datetime, timedelta

from qbr.actions import (
    AbortUpload,
    DeleteArchive,
    DeleteSet,
    as_params,
)
from qbr.durations import format_duration
from qbr.manifest import Manifest
from qbr.plan import Action, Note
from qbr.planner.chunks import plan_chunk_sweep
from qbr.planner.draft import Draft, PlannedSet
from qbr.planner.object_lock import lock_note, locked_until, plan_retains
from qbr.records import SetRecord, parse_utc, set_key
from qbr.render.sizes import human_bytes
from qbr.retention import SetSummary, decide_retention, describe_policy
from qbr.world import ObservedRepository


def plan_retention(
    draft: Draft,
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
            held = locked_until(repo, set_key(backup.name, decision.set_id), now)
            if held is not None:  # S3 would refuse the delete: kept, and said why
                draft.kept.append(Note(group, f"set {decision.set_id}", f"{decision.reasons[0]}, but {lock_note(held, None)}"))
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
        plan_retains(draft, manifest, repo, backup, summaries, new, group, now)
    plan_garbage(draft, repo, planned, deleted, delete_ids, now, grace)


def plan_garbage(
    draft: Draft,
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
            if repo.broken_sets or age < grace or locked_until(repo, key, now) is not None:
                continue  # (an Object Lock still in force: deleted once it ends)
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
    draft.warnings.extend(f"repository {repo.name}: {gap}" for gap in repo.store_gaps)
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
    plan_chunk_sweep(draft, repo, group, now, grace)  # a dedup repository: chunks no remaining archive names
