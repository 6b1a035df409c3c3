"""The local copy of set records (qbr.repository.read_cache), against moto over real HTTP: a copy
is used only for the version the listing shows, and any trouble with its folder costs a GET,
never a run."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from qbr.errors import NotFoundError
from qbr.repository.read_cache import CACHE_DIR_ENV, NO_CACHE_ENV, ReadCache
from qbr.repository.s3 import S3Repository
from tests.test_s3_compatible import repo_on

KEY = "sets/nightly/20261121T080000Z.json"


@pytest.fixture
def repo(s3_bucket) -> S3Repository:
    endpoint, bucket = s3_bucket
    return S3Repository(bucket, "prod", endpoint, "us-east-1")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(NO_CACHE_ENV, raising=False)
    return tmp_path / "cache"


def listed(repo: S3Repository, key: str = KEY):
    return next(o for o in repo.list("sets/") if o.key == key)


def read_in_a_new_run(repo: S3Repository, key: str = KEY) -> tuple[bytes, int, ReadCache]:
    """What one run reads (a fresh cache over the same folder) and the GETs it sent."""
    cache = ReadCache.for_repository(repo)
    before = repo.requests["GET"]
    data = cache.read(repo, listed(repo, key))
    return data, repo.requests["GET"] - before, cache


def test_a_record_read_once_is_read_again_from_the_copy_without_a_get(repo, cache_dir):
    repo.put_bytes(KEY, b'{"v": 1}')
    assert read_in_a_new_run(repo)[:2] == (b'{"v": 1}', 1)
    data, gets, cache = read_in_a_new_run(repo)
    assert (data, gets, cache.hits) == (b'{"v": 1}', 0, 1)
    copies = list(cache_dir.rglob("*"))
    assert copies and all(stat.S_IMODE(p.stat().st_mode) in (0o600, 0o700) for p in copies)


def test_a_record_rewritten_by_another_host_is_read_again(repo, cache_dir):
    repo.put_bytes(KEY, b'{"v": 1}')
    read_in_a_new_run(repo)
    repo.put_bytes(KEY, b'{"v": 2}')  # same size, new etag
    assert read_in_a_new_run(repo)[:2] == (b'{"v": 2}', 1)
    assert read_in_a_new_run(repo)[:2] == (b'{"v": 2}', 0)


def test_a_damaged_or_foreign_copy_is_never_used(repo, cache_dir):
    repo.put_bytes(KEY, b'{"v": 1}')
    read_in_a_new_run(repo)
    (copy,) = [p for p in cache_dir.rglob("*") if p.is_file()]
    good = copy.read_bytes()
    for damaged in (good[:-1], good[:-2] + b"2}"):  # cut short; one byte changed on this disk
        copy.write_bytes(damaged)
        assert read_in_a_new_run(repo)[:2] == (b'{"v": 1}', 1)
    for foreign in (b"not a header\nxxxxxxxx", b"[1]\n" + b"x" * 8):
        copy.write_bytes(foreign)
        assert read_in_a_new_run(repo)[:2] == (b'{"v": 1}', 1)


def test_a_folder_that_cannot_be_written_costs_a_get_not_the_run(repo, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "a-file" / "cache"))  # under a file: mkdir fails
    repo.put_bytes(KEY, b'{"v": 1}')
    for _ in range(2):
        data, gets, cache = read_in_a_new_run(repo)
        assert (data, gets) == (b'{"v": 1}', 1)
        assert cache.folder is None  # turned off for the rest of the run after the first refusal


def test_the_cache_can_be_turned_off(repo, cache_dir, monkeypatch):
    monkeypatch.setenv(NO_CACHE_ENV, "1")
    repo.put_bytes(KEY, b'{"v": 1}')
    for _ in range(2):
        assert read_in_a_new_run(repo)[:2] == (b'{"v": 1}', 1)
    assert not cache_dir.exists()


def test_copies_of_records_gone_from_the_listing_are_dropped(repo, cache_dir):
    other = "sets/nightly/20261122T080000Z.json"
    repo.put_bytes(KEY, b'{"v": 1}')
    repo.put_bytes(other, b'{"v": 9}')
    cache = ReadCache.for_repository(repo)
    for key in (KEY, other):
        cache.read(repo, listed(repo, key))
    cache.prune()
    assert len([p for p in cache_dir.rglob("*") if p.is_file()]) == 2
    repo.delete(other)
    _, _, cache = read_in_a_new_run(repo)
    cache.prune()
    assert len([p for p in cache_dir.rglob("*") if p.is_file()]) == 1


def test_a_record_deleted_between_list_and_read_is_not_found(repo, cache_dir):
    repo.put_bytes(KEY, b'{"v": 1}')
    seen = listed(repo)
    repo.delete(KEY)
    with pytest.raises(NotFoundError):
        ReadCache.for_repository(repo).read(repo, seen)


def test_two_stores_with_one_bucket_name_keep_copies_apart(repo, cache_dir, s3_bucket):
    endpoint, bucket = s3_bucket
    elsewhere = S3Repository(bucket, "prod", endpoint.replace("127.0.0.1", "localhost"), "us-east-1")
    assert ReadCache.for_repository(repo).folder != ReadCache.for_repository(elsewhere).folder
    assert ReadCache.for_repository(repo).folder == ReadCache.for_repository(S3Repository(bucket, "prod", endpoint, "us-east-1")).folder


def test_the_copy_is_used_on_s3rver_too(s3rver_bucket, cache_dir):
    """Its listings and GETs must give an object the same etag, or the copy would never be used."""
    store = repo_on(s3rver_bucket)
    store.put_bytes(KEY, b'{"v": 1}')
    assert read_in_a_new_run(store)[:2] == (b'{"v": 1}', 1)
    assert read_in_a_new_run(store)[:2] == (b'{"v": 1}', 0)
