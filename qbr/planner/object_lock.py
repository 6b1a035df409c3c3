"""Object Lock in the plan: how long each set is retained, extended as retention's view of it
grows, and never a delete S3 would refuse. Pure.

The rule (qbr.retention.protected_until): a set is retained until the earliest moment the
backup's retention could let it go if new sets arrived as fast as qbr makes them (one per rpo).
The date is rounded up to the hour (to the day for an rpo of a day or more), so a lock is
extended when a new set makes retention's view of it grow, not at every plan.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from qbr.actions import RetainSet, as_params
from qbr.manifest import BackupConfig, Manifest
from qbr.plan import Action
from qbr.planner.draft import Draft, PlannedSet
from qbr.records import parse_utc, set_key, utc_iso
from qbr.retention import SetSummary, protected_until
from qbr.world import ObservedRepository


def locked_until(repo: ObservedRepository, key: str, now: datetime) -> datetime | None:
    """When an object's Object Lock ends, if it is still in force at `now`."""
    text = repo.locked_until.get(key)
    if text is None:
        return None
    until = parse_utc(text)
    return until if until > now else None


def lock_note(until: datetime, mode: str | None) -> str:
    return f"protected by S3 Object Lock until {utc_iso(until)}" + (f" ({mode})" if mode else "")


def _round_up(moment: datetime, rpo: timedelta) -> datetime:
    step = timedelta(days=1) if rpo >= timedelta(days=1) else timedelta(hours=1)
    base = moment.replace(minute=0, second=0, microsecond=0)
    if step == timedelta(days=1):
        base = base.replace(hour=0)
    return base if base == moment else base + step


def plan_retains(
    draft: Draft,
    manifest: Manifest,
    repo: ObservedRepository,
    backup: BackupConfig,
    summaries: list[SetSummary],
    new: PlannedSet | None,
    group: str,
    now: datetime,
) -> None:
    """A retain_set action for each set (the one this plan makes too) whose lock must reach later."""
    mode = manifest.repositories[repo.name].object_lock
    if mode is None:
        return
    wanted = protected_until(summaries, backup.retention, backup.rpo, now)
    for set_id, moment in sorted(wanted.items()):
        until = _round_up(moment, backup.rpo)
        if until <= now:
            continue
        current = repo.locked_until.get(set_key(backup.name, set_id))
        if current is not None and parse_utc(current) >= until:
            continue
        is_new = new is not None and set_id == new.set_id
        draft.actions.append(
            Action(
                id=f"retain.{backup.name}.{set_id}",
                kind="retain_set",
                change="update",
                group=group,
                title=f"set {set_id}: S3 Object Lock ({mode}) until {utc_iso(until)}",
                reason=(
                    "retention is sure to keep it until then (the earliest it could leave the policy if new sets came "
                    f"every {_rpo_words(backup.rpo)})" + ("" if current is None else f"; it was locked until {current}")
                ),
                depends_on=(new.commit_action,) if is_new else (),
                params=as_params(RetainSet(repository=repo.name, backup=backup.name, set_id=set_id, until=utc_iso(until), mode=mode)),
            )
        )


def _rpo_words(rpo: timedelta) -> str:
    from qbr.durations import format_duration

    return f"rpo {format_duration(rpo)}"
