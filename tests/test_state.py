"""State file and lock, on a local folder and on S3 (moto over HTTP): same behaviour on both."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from qbr.errors import LockError, StateError
from qbr.manifest import StateLocation
from qbr.repository.base import PreconditionFailed
from qbr.state import State
from qbr.state_store import StateLock, StateStore, force_unlock, read_lock, read_lock_object


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    if request.param == "local":
        return StateLocation("path", tmp_path / ".qbr" / "state.json", None, None, None, None)
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return StateLocation("s3", None, bucket, "qbr/state.json", endpoint, "us-east-1")


def test_a_missing_state_reads_empty_and_writes_start_a_lineage(location):
    store = StateStore(location)
    state = store.read()
    assert state.lineage is None and state.serial == 0
    state.restores["r"] = {"docs": {"set_id": "x"}}
    store.write(state)
    again = StateStore(location).read()
    assert again.lineage == state.lineage and again.serial == 1
    assert again.restores == {"r": {"docs": {"set_id": "x"}}}


def test_a_writer_that_read_an_older_version_loses(location):
    first, second = StateStore(location), StateStore(location)
    state = first.read()
    first.write(state)
    stale = second.read()
    fresh = first.read()
    first.write(fresh)
    stale.restores["mine"] = {"docs": {"set_id": "s"}}
    with pytest.raises(StateError, match="was changed by someone else during this run"):
        second.write(stale)
    assert StateStore(location).read().serial == 2


def test_corrupt_empty_and_newer_state_files_are_sentences(location):
    store = StateStore(location)
    for raw, message in (
        (b"{not json", "is not valid JSON"),
        (b"  ", "is empty"),
        (b"[1, 2]", "is not a JSON object"),
        (b'{"format_version": 99}', "was written by a newer qbr"),
        (b'{"lineage": "x"}', "has no valid format_version"),
    ):
        store.repo.put_bytes(store.key, raw)
        with pytest.raises(StateError, match=message):
            store.read()


def test_the_lock_is_exclusive_waits_then_names_its_holder(location):
    store = StateStore(location)
    holder = StateLock(store, "apply")
    holder.acquire(0)
    started = time.monotonic()
    with pytest.raises(LockError) as caught:
        StateLock(store, "apply").acquire(0.5)
    assert time.monotonic() - started >= 0.5
    assert holder.info.id in str(caught.value) and "force-unlock" in str(caught.value)
    holder.release()
    assert read_lock(store) is None
    after = StateLock(store, "apply")
    after.acquire(0)
    after.release()


def test_a_waiting_apply_gets_the_lock_when_the_holder_releases(location):
    store = StateStore(location)
    holder = StateLock(store, "apply")
    holder.acquire(0)
    threading.Timer(0.4, holder.release).start()
    waiter = StateLock(store, "apply")
    waiter.acquire(5)
    assert read_lock(store).id == waiter.info.id
    waiter.release()


def test_leases_are_renewed_while_held_and_taken_over_once_expired(location, monkeypatch):
    monkeypatch.setenv("QBR_LOCK_LEASE", "1")
    store = StateStore(location)
    live = StateLock(store, "apply")
    live.acquire(0)
    first_expiry = read_lock(store).expires
    time.sleep(1.5)
    assert read_lock(store).expires > first_expiry, "the running holder renews its lease"
    with pytest.raises(LockError):
        StateLock(store, "apply").acquire(0.2)
    live._stop.set()  # the holder dies: nobody renews
    live._renewer.join()
    time.sleep(1.2)
    warnings = []
    taker = StateLock(store, "apply", warn=warnings.append)
    taker.acquire(0)
    assert warnings and live.info.id in warnings[0] and "lease expired" in warnings[0]
    taker.release()


def test_force_unlock_needs_the_right_id(location):
    store = StateStore(location)
    lock = StateLock(store, "apply")
    lock.acquire(0)
    lock._stop.set()
    with pytest.raises(LockError, match=lock.info.id):
        force_unlock(store, "wrong")
    assert force_unlock(store, lock.info.id).id == lock.info.id
    assert read_lock(store) is None
    with pytest.raises(LockError, match="is not locked"):
        force_unlock(store, lock.info.id)


def test_two_lockers_racing_never_both_win(location):
    store = StateStore(location)
    winners, errors = [], []

    def attempt():
        lock = StateLock(store, "apply")
        try:
            lock.acquire(0)
            winners.append(lock)
        except LockError as error:
            errors.append(error)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(errors) == 5
    winners[0].release()


def test_state_round_trips_every_field():
    state = State(lineage="l", serial=3, restores={"r": {"c": {"set_id": "s"}}}, node_snapshots=[{"name": "n"}], journal=[{"action": "a"}], provenance={"p": 1})
    assert State.from_json(state.to_json(), "x") == state


def skewed(offset: timedelta):
    return lambda: datetime.now(timezone.utc) + offset


# ---------------------------------------------------------------- clock skew (finding 3)


@pytest.mark.parametrize("offset", [timedelta(minutes=-10), timedelta(minutes=10)])
def test_a_live_holder_keeps_its_lock_whatever_its_clock_says(location, monkeypatch, offset):
    monkeypatch.setenv("QBR_LOCK_LEASE", "1")
    store = StateStore(location)
    holder = StateLock(store, "apply", clock=skewed(offset))
    holder.acquire(0)
    try:
        started = time.monotonic()
        with pytest.raises(LockError, match="is locked by"):
            StateLock(store, "apply").acquire(1.5)  # longer than its lease, watched
        assert time.monotonic() - started >= 1.5
        assert read_lock(store).id == holder.info.id and not holder.lost.is_set()
    finally:
        holder.release()
    assert read_lock(store) is None


@pytest.mark.parametrize("offset", [timedelta(minutes=-10), timedelta(minutes=10)])
def test_a_dead_holders_lock_is_taken_over_once_watched_unchanged_for_its_lease(location, monkeypatch, offset):
    monkeypatch.setenv("QBR_LOCK_LEASE", "1")
    store = StateStore(location)
    dead = StateLock(store, "apply", clock=skewed(offset))
    dead.acquire(0)
    dead._stop.set()  # it dies: nobody renews, nobody releases
    dead._renewer.join()
    warnings: list[str] = []
    taker = StateLock(store, "apply", warn=warnings.append)
    started = time.monotonic()
    taker.acquire(5)
    waited = time.monotonic() - started
    assert 1.0 < waited < 2.5, f"taken over one lease after it was first seen, not {waited:.2f}s"
    assert read_lock(store).id == taker.info.id
    assert any("took over the state lock held by" in w and dead.info.id in w and "lease expired" in w for w in warnings)
    taker.release()


def test_a_dead_lock_whose_holder_says_it_expired_is_watched_past_a_short_timeout(location, monkeypatch):
    monkeypatch.setenv("QBR_LOCK_LEASE", "1")
    store = StateStore(location)
    dead = StateLock(store, "apply", clock=skewed(timedelta(minutes=-10)))
    dead.acquire(0)
    dead._stop.set()
    warnings: list[str] = []
    taker = StateLock(store, "apply", warn=warnings.append)
    taker.acquire(0)  # the holder's own expiry passed: watch it for one lease rather than give up
    assert read_lock(store).id == taker.info.id
    assert "watching it for up to 1s" in warnings[0]
    taker.release()


def test_the_lease_judged_is_the_holders_own_not_the_takers(location, monkeypatch):
    monkeypatch.setenv("QBR_LOCK_LEASE", "1")
    store = StateStore(location)
    dead = StateLock(store, "apply")
    dead.acquire(0)
    dead._stop.set()
    monkeypatch.setenv("QBR_LOCK_LEASE", "30")
    started = time.monotonic()
    StateLock(store, "apply").acquire(5)
    assert time.monotonic() - started < 2.5, "a 1 s lease is watched for 1 s, whatever the taker's own lease"


# ---------------------------------------------------------------- release and force-unlock (finding 4)


def _take_over_during_delete(monkeypatch, repo, key):
    """Make the next delete of `key` race a takeover: another run replaces the lock (on the etag
    it read, as a taker does) just before the delete reaches the store."""
    real_delete, taken = repo.delete, {}

    def racing_delete(target, *args, **kwargs):
        if target == key and not taken:
            raw, info = repo.get_with_info(key)
            taken["bytes"] = raw.replace(b'"apply"', b'"taken-over"')
            repo.put_bytes(key, taken["bytes"], if_match=info.etag)
        return real_delete(target, *args, **kwargs)

    monkeypatch.setattr(repo, "delete", racing_delete)
    return taken


def test_a_release_never_removes_a_lock_someone_else_took_over(location, monkeypatch):
    store = StateStore(location)
    holder = StateLock(store, "apply")
    holder.acquire(0)
    taken = _take_over_during_delete(monkeypatch, store.repo, store.lock_key)
    holder.release()
    assert store.repo.head(store.lock_key) is not None, "the new holder's lock stays"
    assert store.repo.get_bytes(store.lock_key) == taken["bytes"]


def test_force_unlock_never_removes_a_lock_taken_over_after_it_was_read(location, monkeypatch):
    store = StateStore(location)
    dead = StateLock(store, "apply")
    dead.acquire(0)
    dead._stop.set()
    taken = _take_over_during_delete(monkeypatch, store.repo, store.lock_key)
    with pytest.raises(LockError, match="changed while it was being removed"):
        force_unlock(store, dead.info.id)
    assert store.repo.head(store.lock_key) is not None and store.repo.get_bytes(store.lock_key) == taken["bytes"]


def test_a_renewal_whose_answer_was_lost_keeps_the_lock(location, monkeypatch):
    store = StateStore(location)
    holder = StateLock(store, "apply")
    holder.acquire(0)
    holder._stop.set()
    holder._renewer.join()
    real_put = store.repo.put_bytes

    def lost_answer(key, data, **kwargs):  # the PUT lands; the client's retry then gets 412
        real_put(key, data, **kwargs)
        raise PreconditionFailed("changed since it was read")

    monkeypatch.setattr(store.repo, "put_bytes", lost_answer)
    holder.renew()
    monkeypatch.undo()
    assert read_lock_object(store)[1] == holder._etag and read_lock(store).renewal == 1
    holder.release()
    assert read_lock(store) is None
