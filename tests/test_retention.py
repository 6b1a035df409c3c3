"""Retention decisions: each rule alone, ISO week edges, overlap, ties, qbr's safety rules,
properties against a slow reference, and the manifest's seed policy over two years of hourly sets."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbr.durations import format_duration
from qbr.retention import (
    RetentionDecision,
    RetentionPolicy,
    SetSummary,
    decide_retention,
    describe_policy,
)

UTC = timezone.utc


def at(text: str) -> datetime:
    """'2026-11-20 23:00' (or with seconds) in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def sets_at(*texts: str) -> list[SetSummary]:
    """One complete set per timestamp, named after it so ids sort like times."""
    return [SetSummary(set_id=f"set-{text}", created=at(text)) for text in texts]


def kept_times(decisions: list[RetentionDecision]) -> list[str]:
    return [d.created.strftime("%Y-%m-%d %H:%M") for d in decisions if d.keep]


def reasons_by_id(decisions: list[RetentionDecision]) -> dict[str, tuple[str, ...]]:
    return {d.set_id: d.reasons for d in decisions}


# ---------------------------------------------------------------------------------------------
# Each rule alone


def test_keep_last_keeps_the_newest_sets_whatever_their_times():
    sets = sets_at("2026-01-01 10:00", "2026-01-01 10:01", "2026-01-01 10:02", "2025-06-01 00:00")
    decisions = decide_retention(sets, RetentionPolicy(keep_last=2))
    assert kept_times(decisions) == ["2026-01-01 10:02", "2026-01-01 10:01"]
    reasons = reasons_by_id(decisions)
    assert reasons["set-2026-01-01 10:02"] == ("keep_last #1", "newest complete set")
    assert reasons["set-2026-01-01 10:01"] == ("keep_last #2",)
    assert reasons["set-2026-01-01 10:00"] == ("not kept by keep_last 2",)


def test_hourly_keeps_the_newest_set_of_each_hour():
    sets = sets_at("2026-05-01 10:05", "2026-05-01 10:55", "2026-05-01 11:00", "2026-05-01 11:59", "2026-05-01 09:59")
    decisions = decide_retention(sets, RetentionPolicy(hourly=2))
    assert kept_times(decisions) == ["2026-05-01 11:59", "2026-05-01 10:55"]
    assert reasons_by_id(decisions)["set-2026-05-01 10:55"] == ("hourly #2",)
    # The same hour on two days is two buckets.
    days = decide_retention(sets_at("2026-05-02 10:00", "2026-05-01 10:30"), RetentionPolicy(hourly=2))
    assert kept_times(days) == ["2026-05-02 10:00", "2026-05-01 10:30"]


def test_daily_keeps_the_newest_set_of_each_utc_day():
    sets = sets_at("2026-05-03 00:00", "2026-05-02 23:59", "2026-05-02 01:00", "2026-05-01 12:00", "2026-04-30 12:00")
    decisions = decide_retention(sets, RetentionPolicy(daily=3))
    assert kept_times(decisions) == ["2026-05-03 00:00", "2026-05-02 23:59", "2026-05-01 12:00"]
    assert reasons_by_id(decisions)["set-2026-05-01 12:00"] == ("daily #3",)
    assert reasons_by_id(decisions)["set-2026-04-30 12:00"] == ("not kept by daily 3",)


def test_monthly_and_yearly_keep_the_newest_set_of_each_period():
    sets = sets_at(
        "2026-02-10 00:00", "2026-01-31 23:00", "2026-01-02 00:00", "2025-12-31 23:59", "2025-03-01 00:00", "2024-07-01 00:00"
    )
    monthly = decide_retention(sets, RetentionPolicy(monthly=3))
    assert kept_times(monthly) == ["2026-02-10 00:00", "2026-01-31 23:00", "2025-12-31 23:59"]
    yearly = decide_retention(sets, RetentionPolicy(yearly=5))
    # Only three years hold a set: the counter is not used up, nothing older is invented.
    assert kept_times(yearly) == ["2026-02-10 00:00", "2025-12-31 23:59", "2024-07-01 00:00"]
    assert reasons_by_id(yearly)["set-2024-07-01 00:00"] == ("yearly #3",)


def test_within_is_measured_from_the_newest_set_and_includes_its_edge():
    # The newest set is years old: 'within' must not depend on the clock.
    sets = sets_at("2020-03-10 12:00", "2020-03-03 12:00", "2020-03-03 11:59:59")
    decisions = decide_retention(sets, RetentionPolicy(within=timedelta(days=7)))
    assert kept_times(decisions) == ["2020-03-10 12:00", "2020-03-03 12:00"]
    reasons = reasons_by_id(decisions)
    assert reasons["set-2020-03-03 12:00"] == ("within 7d",)
    assert reasons["set-2020-03-10 12:00"] == ("within 7d", "newest complete set")
    assert reasons["set-2020-03-03 11:59:59"] == ("not kept by within 7d",)


# ---------------------------------------------------------------------------------------------
# ISO weeks


def test_weekly_uses_iso_weeks_across_a_week_53_new_year():
    # 2026 has 53 ISO weeks (1 January 2026 is a Thursday). Thu 2026-12-31, Fri 2027-01-01 and
    # Sun 2027-01-03 all lie in 2026-W53; Mon 2027-01-04 starts 2027-W01; Sun 2026-12-27 ends 2026-W52.
    sets = sets_at("2026-12-27 12:00", "2026-12-31 12:00", "2027-01-01 12:00", "2027-01-03 12:00", "2027-01-04 12:00")
    decisions = decide_retention(sets, RetentionPolicy(weekly=3))
    assert kept_times(decisions) == ["2027-01-04 12:00", "2027-01-03 12:00", "2026-12-27 12:00"]
    reasons = reasons_by_id(decisions)
    assert reasons["set-2027-01-03 12:00"] == ("weekly #2",)
    assert reasons["set-2026-12-27 12:00"] == ("weekly #3",)
    assert reasons["set-2027-01-01 12:00"] == ("not kept by weekly 3",)
    # The calendar year splits that week, the ISO week does not: yearly sees the split.
    yearly = decide_retention(sets, RetentionPolicy(yearly=2))
    assert kept_times(yearly) == ["2027-01-04 12:00", "2026-12-31 12:00"]


def test_weekly_iso_year_starts_in_the_previous_calendar_year():
    # 2025-W01 runs Mon 2024-12-30 to Sun 2025-01-05, so 2024-12-30 shares a week with 2025-01-05.
    sets = sets_at("2024-12-29 12:00", "2024-12-30 12:00", "2025-01-05 12:00")
    decisions = decide_retention(sets, RetentionPolicy(weekly=2))
    assert kept_times(decisions) == ["2025-01-05 12:00", "2024-12-29 12:00"]


# ---------------------------------------------------------------------------------------------
# Overlap, union, ties, time zones


def test_one_set_fills_a_daily_and_a_weekly_slot_and_carries_both_reasons():
    # Sun 2026-11-15 closes its ISO week; Mon 2026-11-16 opens the next.
    sets = sets_at("2026-11-16 08:00", "2026-11-15 20:00", "2026-11-15 08:00", "2026-11-14 08:00")
    decisions = decide_retention(sets, RetentionPolicy(daily=2, weekly=2))
    reasons = reasons_by_id(decisions)
    assert reasons["set-2026-11-16 08:00"] == ("daily #1", "weekly #1", "newest complete set")
    assert reasons["set-2026-11-15 20:00"] == ("daily #2", "weekly #2")
    assert reasons["set-2026-11-15 08:00"] == ("not kept by daily 2, weekly 2",)
    assert reasons["set-2026-11-14 08:00"] == ("not kept by daily 2, weekly 2",)


def test_rules_form_a_union():
    sets = sets_at("2026-06-10 12:00", "2026-06-10 11:00", "2026-05-20 12:00", "2026-04-01 12:00")
    decisions = decide_retention(sets, RetentionPolicy(keep_last=2, monthly=3))
    assert kept_times(decisions) == ["2026-06-10 12:00", "2026-06-10 11:00", "2026-05-20 12:00", "2026-04-01 12:00"]
    assert reasons_by_id(decisions)["set-2026-06-10 11:00"] == ("keep_last #2",)
    assert reasons_by_id(decisions)["set-2026-05-20 12:00"] == ("monthly #2",)


def test_ties_are_broken_by_set_id_whatever_the_input_order():
    moment = at("2026-07-01 12:00")
    sets = [SetSummary("b", moment), SetSummary("c", moment), SetSummary("a", moment)]
    for order in (sets, sets[::-1], [sets[2], sets[0], sets[1]]):
        decisions = decide_retention(order, RetentionPolicy(keep_last=1, daily=1))
        assert [d.set_id for d in decisions] == ["c", "b", "a"]
        assert [d.keep for d in decisions] == [True, False, False]
        assert decisions[0].reasons == ("keep_last #1", "daily #1", "newest complete set")


def test_periods_are_computed_in_utc():
    # 01:00 on 1 March at +02:00 is 23:00 on 28 February in UTC: the same month as the other set.
    plus_two = timezone(timedelta(hours=2))
    sets = [
        SetSummary("late-feb", at("2026-02-28 22:00")),
        SetSummary("early-march-local", datetime(2026, 3, 1, 1, 0, tzinfo=plus_two)),
    ]
    decisions = decide_retention(sets, RetentionPolicy(monthly=2))
    assert [(d.set_id, d.keep) for d in decisions] == [("early-march-local", True), ("late-feb", False)]
    assert decisions[0].created == datetime(2026, 3, 1, 1, 0, tzinfo=plus_two)


# ---------------------------------------------------------------------------------------------
# qbr's safety rules


def test_incomplete_sets_are_kept_and_never_count():
    sets = [
        SetSummary("running", at("2026-08-02 12:00"), complete=False),
        SetSummary("done-2", at("2026-08-02 11:00")),
        SetSummary("done-1", at("2026-08-01 11:00")),
        SetSummary("old-running", at("2026-07-01 11:00"), complete=False),
    ]
    decisions = decide_retention(sets, RetentionPolicy(keep_last=1, daily=1))
    assert [(d.set_id, d.keep, d.reasons) for d in decisions] == [
        ("running", True, ("incomplete: still being written",)),
        ("done-2", True, ("keep_last #1", "daily #1", "newest complete set")),
        ("done-1", False, ("not kept by keep_last 1, daily 1",)),
        ("old-running", True, ("incomplete: still being written",)),
    ]


def test_a_policy_without_rules_deletes_nothing():
    sets = sets_at("2026-01-02 00:00", "2026-01-01 00:00") + [SetSummary("wip", at("2026-01-03 00:00"), complete=False)]
    for policy in (RetentionPolicy(), RetentionPolicy(daily=0, keep_last=0, within=timedelta(0))):
        decisions = decide_retention(sets, policy)
        assert all(d.keep for d in decisions)
        assert reasons_by_id(decisions) == {
            "wip": ("incomplete: still being written",),
            "set-2026-01-02 00:00": ("no retention rules", "newest complete set"),
            "set-2026-01-01 00:00": ("no retention rules",),
        }


def test_the_newest_complete_set_is_kept_even_when_no_rule_keeps_it():
    # A count of zero beside a real rule sets no rule (as in restic); the newest is kept anyway.
    sets = sets_at("2026-01-02 00:00", "2026-01-01 00:00")
    decisions = decide_retention(sets, RetentionPolicy(within=timedelta(seconds=1), daily=0))
    assert kept_times(decisions) == ["2026-01-02 00:00"]
    assert decisions[0].reasons == ("within 1s", "newest complete set")
    assert decisions[1].reasons == ("not kept by within 1s",)


def test_nothing_and_only_incomplete_sets():
    assert decide_retention([], RetentionPolicy(daily=3)) == []
    running = [SetSummary("wip", at("2026-01-01 00:00"), complete=False)]
    assert decide_retention(running, RetentionPolicy(daily=3)) == [
        RetentionDecision("wip", at("2026-01-01 00:00"), True, ("incomplete: still being written",))
    ]


def test_describe_policy_names_the_rules_in_force_in_a_fixed_order():
    policy = RetentionPolicy(within=timedelta(days=7), daily=30, keep_last=2, hourly=48)
    assert describe_policy(policy) == "keep_last 2, hourly 48, daily 30, within 7d"
    assert describe_policy(RetentionPolicy(yearly=7, weekly=12, monthly=12, within=timedelta(hours=36))) == (
        "weekly 12, monthly 12, yearly 7, within 1d12h"
    )
    assert describe_policy(RetentionPolicy()) == "no retention rules"
    assert describe_policy(RetentionPolicy(hourly=0)) == "no retention rules"


@pytest.mark.parametrize(
    "sets, policy, words",
    [
        ([SetSummary("a", datetime(2026, 1, 1))], RetentionPolicy(daily=1), "time zone"),
        (
            [SetSummary("a", at("2026-01-01 00:00")), SetSummary("a", at("2026-01-02 00:00"))],
            RetentionPolicy(daily=1),
            "listed twice",
        ),
        ([SetSummary("a", at("2026-01-01 00:00"))], RetentionPolicy(daily=-1), "daily"),
        ([SetSummary("a", at("2026-01-01 00:00"))], RetentionPolicy(within=timedelta(days=-1)), "within"),
    ],
)
def test_malformed_input_is_refused_rather_than_guessed(sets, policy, words):
    with pytest.raises(ValueError, match=words):
        decide_retention(sets, policy)


# ---------------------------------------------------------------------------------------------
# Properties against a slow, obviously correct reference

RULES = ("keep_last", "hourly", "daily", "weekly", "monthly", "yearly")
FORMATS = {"hourly": "%Y-%m-%d %H", "daily": "%Y-%m-%d", "weekly": "%G-%V", "monthly": "%Y-%m", "yearly": "%Y"}
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def reference(sets: list[SetSummary], policy: RetentionPolicy) -> list[RetentionDecision]:
    """Per rule: group complete sets by period, take the newest set of each group, keep the newest N groups."""

    def order(s: SetSummary):
        return (s.created, s.set_id)

    complete = sorted((s for s in sets if s.complete), key=order, reverse=True)
    reasons: dict[str, list[str]] = {s.set_id: [] for s in complete}
    words = []
    for rule in RULES:
        count = getattr(policy, rule)
        if not count:
            continue
        words.append(f"{rule} {count}")
        if rule == "keep_last":
            chosen = complete[:count]
        else:
            groups: dict[str, list[SetSummary]] = {}
            for s in complete:
                groups.setdefault(s.created.strftime(FORMATS[rule]), []).append(s)
            chosen = sorted((max(group, key=order) for group in groups.values()), key=order, reverse=True)[:count]
        for number, s in enumerate(chosen, start=1):
            reasons[s.set_id].append(f"{rule} #{number}")
    if policy.within:
        words.append(f"within {format_duration(policy.within)}")
        for s in complete:
            if s.created >= complete[0].created - policy.within:
                reasons[s.set_id].append(f"within {format_duration(policy.within)}")
    if not words:
        for s in complete:
            reasons[s.set_id].append("no retention rules")
    if complete:
        reasons[complete[0].set_id].append("newest complete set")
    result = []
    for s in sorted(sets, key=order, reverse=True):
        if not s.complete:
            result.append(RetentionDecision(s.set_id, s.created, True, ("incomplete: still being written",)))
        elif reasons[s.set_id]:
            result.append(RetentionDecision(s.set_id, s.created, True, tuple(reasons[s.set_id])))
        else:
            result.append(RetentionDecision(s.set_id, s.created, False, ("not kept by " + ", ".join(words),)))
    return result


@st.composite
def histories(draw) -> list[SetSummary]:
    """Sets clustered around a few days within three years, so hours, days, weeks, months and
    years all collide, with exact ties and a share of sets still being written."""
    size = draw(st.integers(0, 40))
    anchors = draw(st.lists(st.integers(0, 3 * 365), min_size=1, max_size=5))
    ids = draw(st.lists(st.integers(0, 999), min_size=size, max_size=size, unique=True))
    sets = []
    for number in ids:
        created = EPOCH + timedelta(
            days=draw(st.sampled_from(anchors)) + draw(st.integers(0, 20)),
            hours=draw(st.integers(0, 23)),
            minutes=draw(st.sampled_from([0, 30])),
        )
        complete = draw(st.sampled_from([True, True, True, False]))
        sets.append(SetSummary(f"s{number}", created, complete))
    return sets


counts = st.none() | st.integers(0, 8)
withins = st.none() | st.builds(lambda hours: timedelta(hours=hours), st.integers(0, 24 * 60))
policies = st.builds(
    RetentionPolicy,
    keep_last=counts,
    hourly=counts,
    daily=counts,
    weekly=counts,
    monthly=counts,
    yearly=counts,
    within=withins,
)


def has_rule(policy: RetentionPolicy) -> bool:
    return any(getattr(policy, rule) for rule in RULES) or bool(policy.within)


def kept_ids(decisions: list[RetentionDecision]) -> set[str]:
    return {d.set_id for d in decisions if d.keep}


@settings(max_examples=300, deadline=None)
@given(histories(), policies)
def test_decisions_match_the_reference(sets, policy):
    assert decide_retention(sets, policy) == reference(sets, policy)


@settings(max_examples=150, deadline=None)
@given(histories(), policies)
def test_newest_complete_set_is_kept_and_incomplete_sets_are_never_deleted(sets, policy):
    decisions = decide_retention(sets, policy)
    complete = [s for s in sets if s.complete]
    if complete:
        newest = max(complete, key=lambda s: (s.created, s.set_id))
        (decision,) = [d for d in decisions if d.set_id == newest.set_id]
        assert decision.keep and decision.reasons[-1] == "newest complete set"
    for d in decisions:
        if not next(s for s in sets if s.set_id == d.set_id).complete:
            assert d.keep and d.reasons == ("incomplete: still being written",)
        elif not d.keep:
            assert d.reasons == (f"not kept by {describe_policy(policy)}",)
    assert sorted(d.set_id for d in decisions) == sorted(s.set_id for s in sets)


@settings(max_examples=150, deadline=None)
@given(st.data(), histories(), policies)
def test_the_result_does_not_depend_on_input_order(data, sets, policy):
    shuffled = data.draw(st.permutations(sets))
    assert decide_retention(shuffled, policy) == decide_retention(sets, policy)


@settings(max_examples=150, deadline=None)
@given(histories(), policies)
def test_no_rule_keeps_more_sets_than_its_count(sets, policy):
    decisions = decide_retention(sets, policy)
    for rule in RULES:
        numbers = [int(r.split("#")[1]) for d in decisions for r in d.reasons if r.startswith(f"{rule} #")]
        assert numbers == list(range(1, len(numbers) + 1))  # numbered from 1, newest first
        assert len(numbers) <= (getattr(policy, rule) or 0)


@st.composite
def widened(draw, policy: RetentionPolicy) -> RetentionPolicy:
    """The same policy with one more rule, or one count (or within) raised."""
    field = draw(st.sampled_from(RULES + ("within",)))
    if field == "within":
        extra = timedelta(hours=draw(st.integers(1, 24 * 60)))
        return replace(policy, within=(policy.within or timedelta(0)) + extra)
    return replace(policy, **{field: (getattr(policy, field) or 0) + draw(st.integers(1, 5))})


@settings(max_examples=200, deadline=None)
@given(st.data(), histories(), policies.filter(has_rule))
def test_a_wider_policy_never_deletes_more(data, sets, policy):
    # Only from a policy with a rule: the empty policy keeps everything, by qbr's safety rule.
    wider = data.draw(widened(policy))
    assert kept_ids(decide_retention(sets, policy)) <= kept_ids(decide_retention(sets, wider))


# ---------------------------------------------------------------------------------------------
# The manifest's seed policy over two years of hourly sets, computed by hand

SEED = RetentionPolicy(hourly=48, daily=30, weekly=12, monthly=12, yearly=7)


def hourly_history() -> list[SetSummary]:
    """One set every hour on the hour, 2024-11-21T00:00Z to 2026-11-20T23:00Z: 730 days, 17,520 sets."""
    first = at("2024-11-21 00:00")
    return [SetSummary(f"set-{i:05d}", first + timedelta(hours=i)) for i in range(730 * 24)]


def test_seed_policy_over_two_years_of_hourly_sets():
    newest = at("2026-11-20 23:00")  # a Friday: 1 Jan 2026 is a Thursday, 20 Nov is day 324
    # hourly 48: the last 48 hours, 2026-11-19 00:00 .. 2026-11-20 23:00.
    hourly = {newest - timedelta(hours=i) for i in range(48)}
    # daily 30: 23:00 of each of the last 30 days, 2026-11-20 back to 2026-10-22.
    # 11-20 and 11-19 overlap hourly: 28 new.
    daily = {newest - timedelta(days=i) for i in range(30)}
    # weekly 12: the newest set of each of the last 12 ISO weeks. The current week (Mon 11-16 ..)
    # is unfinished, so its newest set is Friday 11-20 23:00; then the Sunday 23:00 sets.
    # 11-20, 11-15, 11-08, 11-01 and 10-25 lie within daily: 7 new (10-18 .. 09-06).
    weekly = {at(f"{day} 23:00") for day in (
        "2026-11-20", "2026-11-15", "2026-11-08", "2026-11-01", "2026-10-25", "2026-10-18",
        "2026-10-11", "2026-10-04", "2026-09-27", "2026-09-20", "2026-09-13", "2026-09-06",
    )}
    # monthly 12: the last day's 23:00 of each of the last 12 months, November 2026 being unfinished.
    # 11-20 (hourly) and 10-31 (daily) overlap; 09-30 is a Wednesday, not in weekly: 10 new.
    monthly = {at(f"{day} 23:00") for day in (
        "2026-11-20", "2026-10-31", "2026-09-30", "2026-08-31", "2026-07-31", "2026-06-30",
        "2026-05-31", "2026-04-30", "2026-03-31", "2026-02-28", "2026-01-31", "2025-12-31",
    )}
    # yearly 7: only 2026, 2025 and 2024 hold sets, so 3 slots are filled; 2025-12-31 overlaps
    # monthly: 1 new (2024-12-31 23:00). The oldest set, 2024-11-21 00:00, is not kept.
    yearly = {newest, at("2025-12-31 23:00"), at("2024-12-31 23:00")}

    expected = hourly | daily | weekly | monthly | yearly
    assert len(expected) == 48 + 28 + 7 + 10 + 1 == 94

    sets = hourly_history()
    decisions = decide_retention(sets, SEED)
    assert len(decisions) == 17_520
    assert decisions[0].created == newest and decisions[-1].created == at("2024-11-21 00:00")
    assert {d.created for d in decisions if d.keep} == expected

    reasons = {d.created: d.reasons for d in decisions}
    assert reasons[newest] == ("hourly #1", "daily #1", "weekly #1", "monthly #1", "yearly #1", "newest complete set")
    assert reasons[at("2026-11-20 22:00")] == ("hourly #2",)
    assert reasons[at("2026-11-19 23:00")] == ("hourly #25", "daily #2")
    assert reasons[at("2026-11-19 00:00")] == ("hourly #48",)
    assert reasons[at("2026-11-18 23:00")] == ("daily #3",)
    assert reasons[at("2026-11-15 23:00")] == ("daily #6", "weekly #2")
    assert reasons[at("2026-11-01 23:00")] == ("daily #20", "weekly #4")
    assert reasons[at("2026-10-31 23:00")] == ("daily #21", "monthly #2")
    assert reasons[at("2026-10-22 23:00")] == ("daily #30",)
    assert reasons[at("2026-09-06 23:00")] == ("weekly #12",)
    assert reasons[at("2026-09-30 23:00")] == ("monthly #3",)
    assert reasons[at("2025-12-31 23:00")] == ("monthly #12", "yearly #2")
    assert reasons[at("2024-12-31 23:00")] == ("yearly #3",)
    gone = "not kept by hourly 48, daily 30, weekly 12, monthly 12, yearly 7"
    for moment in ("2026-11-18 22:00", "2026-10-21 23:00", "2026-08-30 23:00", "2025-11-30 23:00", "2024-11-21 00:00"):
        assert reasons[at(moment)] == (gone,)


def test_seed_policy_with_keep_last_2_keeps_the_same_sets():
    # The design's example adds keep_last 2: the two newest hours are already kept by hourly.
    policy = RetentionPolicy(keep_last=2, hourly=48, daily=30, weekly=12, monthly=12, yearly=7)
    decisions = decide_retention(hourly_history(), policy)
    assert sum(d.keep for d in decisions) == 94
    assert decisions[1].reasons == ("keep_last #2", "hourly #2")
    assert decisions[2].reasons == ("hourly #3",)
