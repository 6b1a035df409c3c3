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
