"""Retention: which backup sets a policy keeps, and why. Pure: no I/O, no clock.

restic's semantics (`ApplyPolicy`), read the way borg's `prune_split` reads: sort the
complete sets newest first, give each rule its own counter, and keep the newest set of
each new period until the counter runs out. Rules overlap and form a union, so one set
can fill a daily and a weekly slot and carries both reasons.

qbr's safety rules on top: sets still being written are never touched, a policy with
no rules deletes nothing, and the newest complete set is always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from qbr.durations import format_duration


@dataclass(frozen=True)
class RetentionPolicy:
    """How many sets to keep per rule; None means the rule is not set."""

    keep_last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    within: timedelta | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in ("keep_last", "hourly", "daily", "weekly", "monthly", "yearly", "within"))


@dataclass(frozen=True)
class SetSummary:
    """What retention needs to know about a set: its id, when it was made, whether it is finished."""

    set_id: str
    created: datetime
    complete: bool = True


@dataclass(frozen=True)
class RetentionDecision:
    """Keep or delete one set, with every reason in words."""

    set_id: str
    created: datetime
    keep: bool
    reasons: tuple[str, ...]


INCOMPLETE = "incomplete: still being written"
NO_RULES = "no retention rules"
NEWEST = "newest complete set"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


# Each bucket rule maps a set to its period key, in UTC; a set is kept when its key differs
# from the key of the last set the rule kept. Tuples rather than strftime strings: the same
# buckets, without zero-padding surprises.
_PERIOD_KEYS: dict[str, Callable[[datetime], Hashable]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),  # %Y-%m-%d %H
    "daily": lambda t: (t.year, t.month, t.day),  # %Y-%m-%d
    "weekly": lambda t: t.isocalendar()[:2],  # %G-%V, the ISO year and week
    "monthly": lambda t: (t.year, t.month),  # %Y-%m
    "yearly": lambda t: t.year,  # %Y
}
_BUCKET_RULES = ("keep_last", *_PERIOD_KEYS)


def _bucket(rule: str, summary: SetSummary) -> Hashable:
    if rule == "keep_last":
        return summary.set_id  # every set is its own bucket
    return _PERIOD_KEYS[rule](_utc(summary.created))


def _rules_in_force(policy: RetentionPolicy) -> list[tuple[str, int]]:
    """The bucket rules with a positive count; as in restic, a count of 0 sets no rule."""
    rules = []
    for name in _BUCKET_RULES:
        count = getattr(policy, name)
        if count is None:
            continue
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"retention {name} must be a whole number of sets, 0 or more, got {count!r}")
        if count > 0:
            rules.append((name, count))
    return rules


def _within_in_force(policy: RetentionPolicy) -> timedelta | None:
    within = policy.within
    if within is None:
        return None
    if not isinstance(within, timedelta) or within < timedelta(0):
        raise ValueError(f"retention within must be a duration of 0 or more, got {within!r}")
    return within if within > timedelta(0) else None


def describe_policy(policy: RetentionPolicy) -> str:
    """The rules in force, in words for messages: 'keep_last 2, hourly 48, daily 30, within 7d'."""
    parts = [f"{name} {count}" for name, count in _rules_in_force(policy)]
    within = _within_in_force(policy)
    if within is not None:
        parts.append(f"within {format_duration(within)}")
    return ", ".join(parts) if parts else NO_RULES


def _newest_first(sets: Iterable[SetSummary]) -> list[SetSummary]:
    """Sort newest first, ties by set_id descending, so input order never matters."""
    listed = list(sets)
    seen: set[str] = set()
    for summary in listed:
        if summary.created.tzinfo is None or summary.created.utcoffset() is None:
            raise ValueError(f"set {summary.set_id!r} has a creation time without a time zone; use UTC")
        if summary.set_id in seen:
            raise ValueError(f"set {summary.set_id!r} is listed twice")
        seen.add(summary.set_id)
    return sorted(listed, key=lambda s: (_utc(s.created), s.set_id), reverse=True)


def decide_retention(sets: Iterable[SetSummary], policy: RetentionPolicy) -> list[RetentionDecision]:
    """Decide, for every set, keep or delete and why; newest first."""
    ordered = _newest_first(sets)
    complete = [s for s in ordered if s.complete]
    reasons: dict[str, list[str]] = {s.set_id: [] for s in complete}

    rules = _rules_in_force(policy)
    within = _within_in_force(policy)

    for name, count in rules:
        last: Hashable = object()  # equal to no key
        kept = 0
        for summary in complete:
            if kept == count:
                break
            key = _bucket(name, summary)
            if key != last:
                kept += 1
                reasons[summary.set_id].append(f"{name} #{kept}")
                last = key

    if within is not None and complete:
        try:
            cutoff: datetime | None = complete[0].created - within
        except OverflowError:  # reaches before year 1: every set is within
            cutoff = None
        for summary in complete:
            if cutoff is None or summary.created >= cutoff:
                reasons[summary.set_id].append(f"within {format_duration(within)}")

    if not rules and within is None:
        for summary in complete:
            reasons[summary.set_id].append(NO_RULES)

    if complete:
        reasons[complete[0].set_id].append(NEWEST)

    not_kept = f"not kept by {describe_policy(policy)}"
    decisions = []
    for summary in ordered:
        if not summary.complete:
            decisions.append(RetentionDecision(summary.set_id, summary.created, True, (INCOMPLETE,)))
        elif reasons[summary.set_id]:
            decisions.append(RetentionDecision(summary.set_id, summary.created, True, tuple(reasons[summary.set_id])))
        else:
            decisions.append(RetentionDecision(summary.set_id, summary.created, False, (not_kept,)))
    return decisions


# -- Object Lock: how long retention is sure to keep a set ------------------------------------


def _period_end(rule: str, t: datetime) -> datetime:
    """The first moment after the period (of `rule`) that holds `t`, in UTC."""
    t = _utc(t)
    if rule == "hourly":
        return t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if rule == "daily":
        return day + timedelta(days=1)
    if rule == "weekly":
        return day + timedelta(days=7 - t.weekday())
    if rule == "monthly":
        return day.replace(year=t.year + (t.month == 12), month=t.month % 12 + 1, day=1)
    return day.replace(year=t.year + 1, month=1, day=1)


def protected_until(sets: Iterable[SetSummary], policy: RetentionPolicy, rpo: timedelta, now: datetime) -> dict[str, datetime]:
    """For each set the policy keeps: the earliest moment it could stop keeping it, if new sets
    arrived as fast as qbr makes them (one per `rpo`, the first one rpo after the newest set, or
    at the latest whole rpo before `now` when backups are late). Until then no deletion of it is
    ever right, so an Object Lock to that moment never stands in retention's way for long.

    Rule by rule: keep_last n lets a set go at the arrival that makes n sets newer; within d at
    the first arrival more than d after it; a period rule (hourly ... yearly n) at the first
    arrival in its own period (it is then no longer the newest of it) or the arrival that makes
    n newer periods hold sets; "newest" at the first arrival. A set is kept while any rule keeps
    it, so it is protected until the latest of those moments. A policy with no rules keeps every
    set for ever: nothing is returned (no lock is set). Sets not kept get no entry. Pure."""
    if rpo <= timedelta(0):
        raise ValueError("rpo must be positive")
    decisions = [d for d in decide_retention(sets, policy) if d.keep and d.reasons != (INCOMPLETE,)]
    complete = [s for s in _newest_first(sets) if s.complete]
    if not complete or not decisions or (not _rules_in_force(policy) and _within_in_force(policy) is None):
        return {}
    newest = _utc(complete[0].created)
    first = newest + rpo * max(1, (_utc(now) - newest) // rpo)

    def arrival_after(moment: datetime) -> datetime:
        """The first assumed arrival strictly after `moment` (or `first`)."""
        if moment < first:
            return first
        return first + rpo * ((moment - first) // rpo + 1)

    until: dict[str, datetime] = {}
    for index, summary in enumerate(complete):
        created = _utc(summary.created)
        if not any(d.set_id == summary.set_id for d in decisions):
            continue
        moments: list[datetime] = []
        newer = complete[:index]
        for name, count in _rules_in_force(policy):
            if name == "keep_last":
                if index < count:
                    moments.append(first + rpo * (count - index - 1))
                continue
            mine = _bucket(name, summary)
            buckets = list(dict.fromkeys(_bucket(name, s) for s in newer))
            if mine in buckets or len(buckets) >= count:
                continue  # not kept by this rule now
            moments.append(_period_moment(name, count - len(buckets), mine, buckets[0] if buckets else mine, first, rpo))
        within = _within_in_force(policy)
        if within is not None and newest - within <= created:
            moments.append(arrival_after(created + within))
        if index == 0:
            moments.append(first)
        if moments:
            until[summary.set_id] = max(moments)
    return until


def _period_moment(rule: str, room: int, mine: Hashable, newest_bucket: Hashable, first: datetime, rpo: timedelta) -> datetime:
    """When arrivals (first, first+rpo, ...) either land in the set's own period `mine` or fill
    `room` more periods newer than `newest_bucket`."""
    t, last = first, newest_bucket
    while True:
        key = _PERIOD_KEYS[rule](t)
        if key == mine:
            return t
        if key != last:
            room -= 1
            last = key
            if room == 0:
                return t
        end = _period_end(rule, t)
        t = first + rpo * max(-(-(end - first) // rpo), (t - first) // rpo + 1)
