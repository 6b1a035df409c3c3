"""Locks (qbr.locks): leases judged by what the taker watched, releases that only remove what
they hold, repository locks taken in one order. On a local folder and on S3 (moto over HTTP)."""

from __future__ import annotations

import threading
import time

import pytest

from qbr.errors import LockError
from qbr.locks import REPOSITORY_LOCK_KEY, Lock, LockSet, repository_target
from qbr.locks import force_unlock as force_unlock_targets
from qbr.manifest import RepositoryConfig, StateLocation
from qbr.repository.base import PreconditionFailed
from qbr.state_store import StateStore, state_lock_target


@pytest.fixture(params=["local", "s3"])
def kind(request):
    return request.param


@pytest.fixture
def location(kind, request, tmp_path):
    if kind == "local":
        return StateLocation("path", tmp_path / ".qbr" / "state.json", None, None, None, None)
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return StateLocation("s3", None, bucket, "qbr/state.json", endpoint, "us-east-1")


def repository_config(kind, request, tmp_path, name: str, prefix: str = "prod") -> RepositoryConfig:
    if kind == "local":
        return RepositoryConfig(name, "path", tmp_path / prefix, None, "", None, None)
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return RepositoryConfig(name, "s3", None, bucket, prefix, endpoint, "us-east-1")


def test_conditional_delete_removes_only_the_version_named(location):
    repo = StateStore(location).repo
    first = repo.put_bytes("x/lock", b"one")
    second = repo.put_bytes("x/lock", b"two", if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        repo.delete("x/lock", if_match=first.etag)
    assert repo.get_bytes("x/lock") == b"two"
    assert [u.key for u in repo.pending_uploads()] == [], "nothing is left aside"
    repo.delete("x/lock", if_match=second.etag)
    assert repo.head("x/lock") is None
    with pytest.raises(PreconditionFailed):
        repo.delete("x/lock", if_match=second.etag)



# ---------------------------------------------------------------- repository locks (finding 1)


def test_a_repository_lock_lives_in_the_repository_and_names_itself(kind, request, tmp_path):
    config = repository_config(kind, request, tmp_path, "main")
    first = LockSet([repository_target(config)], "apply")
    first.acquire(0)
    try:
        target = repository_target(repository_config(kind, request, tmp_path, "other-name"))
        assert target.repo.head(REPOSITORY_LOCK_KEY) is not None
        with pytest.raises(LockError) as caught:
            LockSet([target], "apply").acquire(0)
        message = str(caught.value)
        assert message.startswith(f"the repository other-name ({target.repo.describe()}) is locked by")
        assert f"`qbr force-unlock {first.id}`" in message and "since" in message and "\n" not in message
    finally:
        first.release()
    assert target.repo.head(REPOSITORY_LOCK_KEY) is None


def _record_writes(monkeypatch, target, name: str, log: list[str]) -> None:
    real_put = target.repo.put_bytes

    def put_bytes(*args, **kwargs):
        log.append(name)
        return real_put(*args, **kwargs)

    monkeypatch.setattr(target.repo, "put_bytes", put_bytes)


def test_lock_sets_take_their_locks_in_one_order_and_release_what_they_took(kind, request, tmp_path):
    a, b = (repository_target(repository_config(kind, request, tmp_path, n, prefix=n)) for n in ("a", "b"))
    taken: list[str] = []
    _record_writes(request.getfixturevalue("monkeypatch"), a, "a", taken)
    _record_writes(request.getfixturevalue("monkeypatch"), b, "b", taken)
    first = LockSet([b, a], "apply")
    first.acquire(0)
    assert taken == ["a", "b"], "sorted by where the repositories are, whatever order they were named in"
    first.release()

    held = LockSet([repository_target(repository_config(kind, request, tmp_path, "b", prefix="b"))], "apply")
    held.acquire(0)
    later = LockSet([b, a, a], "apply")
    assert len(later.locks) == 2, "one repository named twice is locked once"
    with pytest.raises(LockError, match="repository b"):
        later.acquire(0)
    assert a.repo.head(REPOSITORY_LOCK_KEY) is None, "a, taken first, was released when b was refused"
    held.release()


def test_a_lock_set_interrupted_while_taking_releases_what_it_took(kind, request, tmp_path, monkeypatch):
    a, b = (repository_target(repository_config(kind, request, tmp_path, n, prefix=n)) for n in ("a", "b"))
    real_put = b.repo.put_bytes

    def interrupted(key, data, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(b.repo, "put_bytes", interrupted)
    locks = LockSet([a, b], "apply")
    with pytest.raises(KeyboardInterrupt):
        locks.acquire(0)
    monkeypatch.setattr(b.repo, "put_bytes", real_put)
    assert a.repo.head(REPOSITORY_LOCK_KEY) is None and b.repo.head(REPOSITORY_LOCK_KEY) is None


def test_force_unlock_finds_a_repository_lock_by_its_id(kind, request, tmp_path, location):
    state = state_lock_target(StateStore(location))
    repo = repository_target(repository_config(kind, request, tmp_path, "main"))
    dead = Lock(repo, "apply")
    dead.acquire(0)
    dead._stop.set()
    with pytest.raises(LockError, match=dead.info.id):
        force_unlock_targets([state, repo], "wrong")
    removed = force_unlock_targets([state, repo], dead.info.id)
    assert [(t.name, h.id) for t, h in removed] == [("the lock of repository main", dead.info.id)]
    assert repo.repo.head(REPOSITORY_LOCK_KEY) is None
    with pytest.raises(LockError, match="are not locked"):
        force_unlock_targets([state, repo], dead.info.id)


def test_many_lock_sets_racing_for_two_repositories_never_overlap(kind, request, tmp_path):
    configs = [repository_config(kind, request, tmp_path, n, prefix=n) for n in ("a", "b")]
    inside, overlaps, runs = [0], [], []
    guard = threading.Lock()

    def run(order):
        locks = LockSet([repository_target(configs[i]) for i in order], "apply")
        locks.acquire(20)
        try:
            with guard:
                inside[0] += 1
                overlaps.append(inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1
            runs.append(order)
        finally:
            locks.release()

    threads = [threading.Thread(target=run, args=((0, 1) if i % 2 else (1, 0),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(runs) == 4, "every run got both locks: no deadlock"
    assert max(overlaps) == 1, "never two at once"
