"""One behaviour suite for both repository kinds: a local folder and S3, over HTTP against two S3
implementations: moto's server (behaves like AWS) and s3rver (an S3-compatible store with gaps:
no ListMultipartUploads or AbortMultipartUpload, conditional writes ignored). Where s3rver
legitimately differs, the test asserts qbr's degraded behaviour there."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from qbr.errors import NotFoundError, RepositoryError
from qbr.repository import (
    PreconditionFailed,
    Repository,
    cleanup_gaps,
    conditional_writes_gap,
    open_local_repository,
    open_s3_repository,
)

try:  # once conftest can load (the emulator exists), it provides the S3 fixtures
    import tests.emulator.fixtures  # noqa: F401
except ImportError:  # run with --noconftest meanwhile
    from tests.s3_fixture import s3_bucket, s3_server  # noqa: F401
    from tests.s3rver_fixture import s3rver_bucket, s3rver_credentials, s3rver_server  # noqa: F401

from tests.s3_fixture import s3_client
from tests.s3rver_fixture import BUCKET_PREFIX as S3RVER_BUCKET_PREFIX

MiB = 1 << 20
PART = 5 * MiB  # S3's minimum part size: the smallest that makes real multipart uploads
ROOT = Path(__file__).resolve().parent.parent


class Boom(Exception):
    """Raised by a chunk source mid-stream."""


def pattern(size: int) -> bytes:
    """Bytes that differ by position, so a misplaced or repeated chunk is caught."""
    block = bytes(range(251)) * (MiB // 251 + 1)
    return (block * (size // len(block) + 1))[:size]


def chunked(data: bytes, sizes: tuple[int, ...] = (1, 777, 65536, 1000003)) -> Iterator[bytes]:
    """`data` in uneven chunks (and an empty one), as a network source would give it."""
    offset, turn = 0, 0
    yield b""
    while offset < len(data):
        step = sizes[turn % len(sizes)]
        yield data[offset : offset + step]
        offset += step
        turn += 1


@pytest.fixture(params=["local", "s3", "s3rver"])
def make_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Repository]:
    """Opens a repository of the parametrized kind; S3 ones live under a prefix of a fresh bucket
    (on moto for "s3", on s3rver for "s3rver")."""
    if request.param == "local":

        def make(part_size: int = PART, page_size: int = 1000) -> Repository:
            return open_local_repository(tmp_path / "backups" / "repo")

    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket" if request.param == "s3" else "s3rver_bucket")

        def make(part_size: int = PART, page_size: int = 1000) -> Repository:
            return open_s3_repository(
                bucket, "team/prod", endpoint, "us-east-1", name="main", part_size=part_size, page_size=page_size
            )

    make.kind = request.param  # type: ignore[attr-defined]
    return make


@pytest.fixture
def repo(make_repo: Callable[..., Repository]) -> Repository:
    return make_repo()


def is_s3(repo: Repository) -> bool:
    return repo.describe().startswith("s3://")


def on_s3rver(repo: Repository) -> bool:
    """An S3-compatible store without ListMultipartUploads, AbortMultipartUpload or conditional writes."""
    return is_s3(repo) and repo.bucket.startswith(S3RVER_BUCKET_PREFIX)


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 300_000, 2 * PART + 12345], ids=["empty", "one", "small", "three-parts"])
def test_put_stream_round_trips_whole_objects(repo: Repository, size: int) -> None:
    data = pattern(size)
    key = f"snapshots/docs/docs-{size}-2026-01-01-00-00-00.snapshot"

    stored = repo.put_stream(key, chunked(data))

    assert stored.key == key and stored.size == size
    assert repo.get_bytes(key) == data
    head = repo.head(key)
    assert head is not None and head.size == size
    assert stored.etag is not None and head.etag == stored.etag  # a local folder's is the file's identity
    assert head.modified.utcoffset() == timedelta(0)
    assert abs(head.modified - datetime.now(UTC)) < timedelta(minutes=5)
    if is_s3(repo) and not on_s3rver(repo):  # S3's etag of a multipart object is "<md5 of part md5s>-<parts>"
        parts = int(stored.etag.strip('"').split("-")[1]) if "-" in stored.etag else 1
        assert parts == (2 if size > PART else 1)  # parts are >= PART (a chunk may overshoot)


def test_put_stream_replaces_an_existing_object(repo: Repository) -> None:
    repo.put_stream("sets/nightly/a.json", [b"old"])
    repo.put_stream("sets/nightly/a.json", [b"new", b" bytes"])
    assert repo.get_bytes("sets/nightly/a.json") == b"new bytes"
    assert [o.key for o in repo.list()] == ["sets/nightly/a.json"]


def test_put_bytes_and_get_with_info_agree_on_the_etag(repo: Repository) -> None:
    written = repo.put_bytes("state.json", b'{"serial": 1}')
    data, info = repo.get_with_info("state.json")
    assert data == b'{"serial": 1}'
    assert info.etag == written.etag and info.size == 13
    assert info.modified.utcoffset() == timedelta(0)


def test_open_read_streams_in_bounded_chunks(repo: Repository) -> None:
    data = pattern(2 * MiB + 4321)
    repo.put_bytes("snapshots/docs/big.snapshot", data)

    with repo.open_read("snapshots/docs/big.snapshot", chunk_size=MiB) as chunks:
        parts = list(chunks)

    assert b"".join(parts) == data
    assert len(parts) == 3 and all(len(part) <= MiB for part in parts)


# -- listing ------------------------------------------------------------------------------


def test_list_pages_through_more_objects_than_one_page_sorted(make_repo: Callable[..., Repository]) -> None:
    repo = make_repo(page_size=7)
    keys = [f"sets/nightly/2026010{i % 10}T{i:06d}Z.json" for i in range(25)]
    keys += ["a-b", "a/b", "a.b", "a/b-c", "zz/\u00e9t\u00e9", "zz/z"]  # '-' < '.' < '/' < 'z' < 'é'
    for key in reversed(keys):
        repo.put_bytes(key, key.encode())
    calls: list[str] = []
    if is_s3(repo):
        repo._client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: calls.append("page"))

    listed = list(repo.list())

    if on_s3rver(repo):  # s3rver lists in its folder's order, not S3's UTF-8 order (qbr sorts what it needs)
        listed.sort(key=lambda o: o.key)
    assert [o.key for o in listed] == sorted(keys)
    assert all(o.size == len(o.key.encode()) for o in listed)
    if is_s3(repo):
        assert len(calls) == 5  # 31 objects, 7 a page


def test_list_by_prefix(repo: Repository) -> None:
    for key in ["snapshots/docs/a.snapshot", "snapshots/docs2/b.snapshot", "sets/nightly/1.json", "snapshotsx"]:
        repo.put_bytes(key, b"x")

    assert [o.key for o in repo.list("snapshots/docs/")] == ["snapshots/docs/a.snapshot"]
    assert [o.key for o in repo.list("snapshots/doc")] == ["snapshots/docs/a.snapshot", "snapshots/docs2/b.snapshot"]
    assert [o.key for o in repo.list("snapshots")] == [
        "snapshots/docs/a.snapshot",
        "snapshots/docs2/b.snapshot",
        "snapshotsx",
    ]
    assert [o.key for o in repo.list("sets/")] == ["sets/nightly/1.json"]
    assert list(repo.list("nothing/")) == []


def test_s3_prefix_does_not_see_a_sibling_prefix(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    prod = open_s3_repository(bucket, "/team/prod/", endpoint)
    prod2 = open_s3_repository(bucket, "team/prod2", endpoint)
    prod.put_bytes("sets/a.json", b"1")
    prod2.put_bytes("sets/b.json", b"2")

    assert prod.describe() == f"s3://{bucket}/team/prod"
    assert [o.key for o in prod.list()] == ["sets/a.json"]
    assert [o.key for o in prod2.list("sets/")] == ["sets/b.json"]
    stored = sorted(o["Key"] for o in s3_client(endpoint).list_objects_v2(Bucket=bucket)["Contents"])
    assert stored == ["team/prod/sets/a.json", "team/prod2/sets/b.json"]


# -- head and delete ----------------------------------------------------------------------


def test_head_delete_and_missing_keys(repo: Repository) -> None:
    assert repo.head("snapshots/docs/x.snapshot") is None
    repo.delete("snapshots/docs/x.snapshot")  # missing is fine
    repo.put_bytes("snapshots/docs/x.snapshot", b"abc")
    assert repo.head("snapshots/docs/x.snapshot").size == 3

    repo.delete("snapshots/docs/x.snapshot")

    assert repo.head("snapshots/docs/x.snapshot") is None
    assert list(repo.list()) == []
    with pytest.raises(NotFoundError, match="'snapshots/docs/x.snapshot' .*does not exist"):
        repo.get_bytes("snapshots/docs/x.snapshot")
    with pytest.raises(NotFoundError):
        with repo.open_read("snapshots/docs/x.snapshot"):
            pass
    assert repo.head("snapshots") is None  # a "folder" is not an object


# -- conditional writes -------------------------------------------------------------------


def test_create_if_absent_lets_only_the_first_writer_win(repo: Repository) -> None:
    first = repo.put_bytes("locks/state.lock", b"holder: a", if_none_match=True)

    if on_s3rver(repo):  # the second writer silently wins: why qbr probes, and locks nothing there
        repo.put_bytes("locks/state.lock", b"holder: b", if_none_match=True)
        assert repo.get_bytes("locks/state.lock") == b"holder: b"
        assert conditional_writes_gap(repo, "locks/state.lock") == "ignores conditional writes (If-None-Match)"
        return
    with pytest.raises(PreconditionFailed, match="already exists"):
        repo.put_bytes("locks/state.lock", b"holder: b", if_none_match=True)

    assert repo.get_bytes("locks/state.lock") == b"holder: a"
    assert repo.head("locks/state.lock").etag == first.etag
    assert repo.pending_uploads() == []
    assert conditional_writes_gap(repo, "locks/state.lock") is None
    assert [o.key for o in repo.list()] == ["locks/state.lock"]  # the probe cleaned up after itself


def test_if_match_replaces_only_the_version_that_was_read(repo: Repository) -> None:
    v1 = repo.put_bytes("state.json", b'{"serial": 1}')
    v2 = repo.put_bytes("state.json", b'{"serial": 2}', if_match=v1.etag)

    if on_s3rver(repo):  # a stale etag silently wins (a lost update): no compare-and-swap there
        repo.put_bytes("state.json", b'{"serial": 2, "lost": "update"}', if_match=v1.etag)
        assert repo.get_bytes("state.json") == b'{"serial": 2, "lost": "update"}'
        return
    with pytest.raises(PreconditionFailed, match="etag moved"):
        repo.put_bytes("state.json", b'{"serial": 2, "lost": "update"}', if_match=v1.etag)
    assert repo.get_bytes("state.json") == b'{"serial": 2}'

    v3 = repo.put_bytes("state.json", b'{"serial": 3}', if_match=v2.etag)
    assert repo.get_with_info("state.json") == (b'{"serial": 3}', repo.head("state.json"))
    assert v3.etag == repo.head("state.json").etag

    repo.delete("state.json")
    with pytest.raises(PreconditionFailed, match="is gone"):
        repo.put_bytes("state.json", b'{"serial": 4}', if_match=v3.etag)
    assert repo.head("state.json") is None


def test_local_if_match_is_a_compare_and_swap_across_threads(tmp_path: Path) -> None:
    repo = open_local_repository(tmp_path / "repo")
    repo.put_bytes("counter", b"0")
    errors: list[Exception] = []

    def increment(times: int) -> None:
        done = 0
        while done < times:
            data, info = repo.get_with_info("counter")
            try:
                repo.put_bytes("counter", str(int(data) + 1).encode(), if_match=info.etag)
                done += 1
            except PreconditionFailed:
                continue
            except Exception as error:
                errors.append(error)
                return

    threads = [threading.Thread(target=increment, args=(15,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert repo.get_bytes("counter") == b"60"


def test_local_create_if_absent_has_one_winner_across_threads(tmp_path: Path) -> None:
    repo = open_local_repository(tmp_path / "repo")
    winners: list[int] = []
    errors: list[Exception] = []

    def claim(me: int) -> None:
        try:
            repo.put_bytes("lock", str(me).encode(), if_none_match=True)
            winners.append(me)
        except PreconditionFailed:
            pass
        except Exception as error:  # anything else is a bug, e.g. a race creating the folder
            errors.append(error)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(winners) == 1
    assert repo.get_bytes("lock") == str(winners[0]).encode()
    assert repo.pending_uploads() == []


def test_local_writers_racing_to_create_the_same_folders_all_succeed(tmp_path: Path) -> None:
    errors: list[Exception] = []
    for attempt in range(5):
        repo = open_local_repository(tmp_path / f"repo{attempt}")
        start = threading.Barrier(8)

        def write(me: int) -> None:
            start.wait()
            try:
                repo.put_bytes(f"snapshots/docs/deep/{me}.snapshot", b"x")
            except Exception as error:
                errors.append(error)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(list(repo.list())) == 8
    assert errors == []


# -- local etags: from the file system, not the content ----------------------------------------


def test_local_head_answers_without_opening_the_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """head() of a 10 MiB archive and of a small record: size, time and etag come from the file
    system; the object itself is never opened (before, every file up to 16 MiB was md5-hashed)."""
    import builtins
    import io

    repo = open_local_repository(tmp_path / "repo")
    repo.put_stream("snapshots/docs/docs-1.snapshot", chunked(pattern(10 * MiB)))
    state = repo.put_bytes("state.json", b'{"serial": 1}')
    objects = {str(tmp_path / "repo" / "snapshots" / "docs" / "docs-1.snapshot"), str(tmp_path / "repo" / "state.json")}
    opened: list[str] = []

    def spy(real: Callable[..., object]) -> Callable[..., object]:
        def wrapper(file: object, *args: object, **kwargs: object) -> object:
            if isinstance(file, (str, os.PathLike)):
                opened.append(os.fspath(file))
            return real(file, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    monkeypatch.setattr(io, "open", spy(io.open))
    monkeypatch.setattr(os, "open", spy(os.open))
    archive, record = repo.head("snapshots/docs/docs-1.snapshot"), repo.head("state.json")
    monkeypatch.undo()

    assert [path for path in opened if path in objects] == []
    assert archive is not None and archive.size == 10 * MiB and archive.etag is not None
    assert record is not None and record.size == 13 and record.etag == state.etag
    assert repo.get_with_info("state.json")[1] == record


def test_local_conditional_write_notices_an_object_replaced_behind_its_back_with_the_same_bytes(tmp_path: Path) -> None:
    """Another program swaps the file for a new one holding the very same bytes (a new file, as a
    rename makes): the version read is gone, so a write or delete conditional on it must lose."""
    repo = open_local_repository(tmp_path / "repo")
    read = repo.put_bytes("locks/state.lock", b'{"holder": "a"}')
    path = tmp_path / "repo" / "locks" / "state.lock"
    elsewhere = path.with_name("copy")
    elsewhere.write_bytes(path.read_bytes())
    os.replace(elsewhere, path)

    assert repo.get_bytes("locks/state.lock") == b'{"holder": "a"}'
    assert repo.head("locks/state.lock").etag != read.etag
    with pytest.raises(PreconditionFailed, match="etag moved"):
        repo.put_bytes("locks/state.lock", b'{"holder": "b"}', if_match=read.etag)
    with pytest.raises(PreconditionFailed, match="etag moved"):
        repo.delete("locks/state.lock", if_match=read.etag)
    assert repo.get_bytes("locks/state.lock") == b'{"holder": "a"}'


def test_local_etags_never_repeat_across_rewrites_of_one_object(tmp_path: Path) -> None:
    """Every write makes a new file, and freed inode numbers come back at once (here two inodes
    alternate): a rewrite, even of the same bytes, still gets an etag no earlier version had, so
    a stale etag never matches a later version (no ABA)."""
    repo = open_local_repository(tmp_path / "repo")
    first = repo.put_bytes("state.json", b"0")
    etags = [first.etag]
    for n in range(1, 60):
        written = repo.put_bytes("state.json", str(n % 3).encode(), if_match=etags[-1])
        assert written.etag == repo.head("state.json").etag == repo.get_with_info("state.json")[1].etag
        etags.append(written.etag)
    assert len(set(etags)) == len(etags)
    for stale in etags[:-1]:
        with pytest.raises(PreconditionFailed, match="etag moved"):
            repo.put_bytes("state.json", b"9", if_match=stale)
    assert repo.get_bytes("state.json") == str(59 % 3).encode()


# -- atomicity ----------------------------------------------------------------------------


@pytest.mark.parametrize("fail_after", [3 * MiB, PART + 2 * MiB], ids=["within-first-part", "after-a-part"])
def test_a_failing_source_leaves_no_object_and_no_upload(repo: Repository, fail_after: int) -> None:
    repo.put_bytes("snapshots/docs/keep.snapshot", b"old")

    def source() -> Iterator[bytes]:
        for _ in range(fail_after // MiB):
            yield pattern(MiB)
        raise Boom("qdrant cut the download")

    with pytest.raises(Boom):
        repo.put_stream("snapshots/docs/docs-1.snapshot", source())
    with pytest.raises(Boom):  # a failing replacement keeps the old object whole
        repo.put_stream("snapshots/docs/keep.snapshot", source())

    assert repo.head("snapshots/docs/docs-1.snapshot") is None
    assert [o.key for o in repo.list()] == ["snapshots/docs/keep.snapshot"]
    assert repo.get_bytes("snapshots/docs/keep.snapshot") == b"old"
    assert repo.pending_uploads() == []


def test_a_write_in_flight_is_pending_and_not_listed(repo: Repository) -> None:
    seen: dict[str, object] = {}

    def source() -> Iterator[bytes]:
        for _ in range(PART // MiB + 1):
            yield pattern(MiB)
        seen["listed"] = [o.key for o in repo.list()]
        seen["pending"] = [u.key for u in repo.pending_uploads()]

    repo.put_stream("snapshots/docs/docs-1.snapshot", source())

    if on_s3rver(repo):  # it cannot list unfinished uploads: none are seen, and that is said
        assert seen == {"listed": [], "pending": []}
        assert len(cleanup_gaps(repo, [])[1]) == 1
        return
    assert seen == {"listed": [], "pending": ["snapshots/docs/docs-1.snapshot"]}
    assert [o.key for o in repo.list()] == ["snapshots/docs/docs-1.snapshot"]
    assert repo.pending_uploads() == []


CRASH_SCRIPT = """
import json, os, sys
from pathlib import Path
from qbr.repository import open_local_repository, open_s3_repository
spec = json.loads(sys.argv[1])
if spec["kind"] == "local":
    repo = open_local_repository(Path(spec["path"]))
else:
    repo = open_s3_repository(spec["bucket"], "team/prod", spec["endpoint"], name="main", part_size=5 << 20)
def source():
    for _ in range(6):
        yield bytes(1 << 20)
    os._exit(3)  # the process dies mid-write: no cleanup runs
repo.put_stream("snapshots/docs/docs-1.snapshot", source())
"""


def crash_mid_write(repo: Repository) -> None:
    """Run a put_stream in a child process that dies mid-write, as a killed `qbr apply` would."""
    if is_s3(repo):
        spec = {"kind": "s3", "bucket": repo.bucket, "endpoint": repo.endpoint}
    else:
        spec = {"kind": "local", "path": str(repo.root)}
    done = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, json.dumps(spec)], cwd=ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 3, done.stderr.decode()


def test_pending_uploads_show_a_crashed_write_until_aborted(repo: Repository) -> None:
    before = datetime.now(UTC)
    crash_mid_write(repo)

    pending = repo.pending_uploads()
    if on_s3rver(repo):  # unseen: qbr says what to set up instead, and cleans nothing up
        assert pending == [] and list(repo.list()) == []
        assert cleanup_gaps(repo, pending) == ([], (
            f"s3://{repo.bucket}/team/prod does not list unfinished multipart uploads (ListMultipartUploads "
            "answered NotImplemented), so qbr cannot clean up what an interrupted upload leaves; add an "
            f"AbortIncompleteMultipartUpload lifecycle rule to bucket {repo.bucket} (e.g. after 1 day) so the store "
            "removes them itself",
        ))
        return

    assert [u.key for u in pending] == ["snapshots/docs/docs-1.snapshot"]
    assert pending[0].initiated.utcoffset() == timedelta(0)
    if not is_s3(repo):  # moto reports a fixed date for every upload; a folder has a real mtime
        assert pending[0].initiated >= before - timedelta(seconds=5)
    assert list(repo.list()) == []
    assert repo.head("snapshots/docs/docs-1.snapshot") is None

    repo.abort_upload(pending[0])
    repo.abort_upload(pending[0])  # already gone is fine

    assert repo.pending_uploads() == []
    assert list(repo.list()) == []


def test_local_abort_refuses_an_upload_id_outside_the_repository(tmp_path: Path) -> None:
    from qbr.repository import PendingUpload

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    repo = open_local_repository(tmp_path / "repo")
    for upload_id in ["../victim", "x/../../victim", "snapshots/not-a-temp-file"]:
        with pytest.raises(RepositoryError):
            repo.abort_upload(PendingUpload(key="x", upload_id=upload_id, initiated=datetime.now(UTC)))
    assert victim.read_text() == "keep me"


# -- presigned URLs -----------------------------------------------------------------------


def test_presigned_get_serves_the_bytes_on_s3_and_is_none_locally(repo: Repository) -> None:
    data = pattern(100_000)
    repo.put_bytes("snapshots/docs/docs-1.snapshot", data)

    url = repo.presigned_get("snapshots/docs/docs-1.snapshot", expires_s=60)

    if is_s3(repo):
        assert url is not None and "X-Amz-Signature" in url
        response = httpx.get(url)
        assert response.status_code == 200 and response.content == data
    else:
        assert url is None


# -- keys ---------------------------------------------------------------------------------

BAD_KEYS = ["", "/etc/passwd", "../escape", "snapshots/../../escape", "a\\..\\escape", "a\x00b", "a//b", "./a", "a/"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused_everywhere(repo: Repository, key: str, tmp_path: Path) -> None:
    operations = [
        lambda: repo.put_bytes(key, b"x"),
        lambda: repo.put_bytes(key, b"x", if_none_match=True),
        lambda: repo.put_stream(key, [b"x"]),
        lambda: repo.get_bytes(key),
        lambda: repo.head(key),
        lambda: repo.delete(key),
        lambda: repo.presigned_get(key),
        lambda: repo.open_read(key).__enter__(),
    ]
    for operation in operations:
        with pytest.raises(RepositoryError) as caught:
            operation()
        assert type(caught.value) is RepositoryError and caught.value.message.endswith(".")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "backups" / "escape").exists()
    assert list(repo.list()) == []


def test_listing_prefix_may_not_climb(repo: Repository) -> None:
    with pytest.raises(RepositoryError):
        list(repo.list("../"))


def test_reserved_names_are_not_keys(repo: Repository) -> None:
    with pytest.raises(RepositoryError, match="reserved"):
        repo.put_bytes("snapshots/.qbr-tmp-0123.x", b"x")


# -- errors -------------------------------------------------------------------------------


def test_a_missing_bucket_is_named_in_one_sentence(s3_server: str) -> None:
    repo = open_s3_repository("no-such-bucket-here", "prod", s3_server, name="main")
    expected = (
        f"S3 bucket 'no-such-bucket-here' does not exist (endpoint {s3_server}); "
        "create it or fix repositories.main.s3.bucket."
    )
    for operation in [
        lambda: repo.put_bytes("sets/a.json", b"x"),
        lambda: repo.put_stream("sets/a.json", [b"x"]),
        lambda: list(repo.list()),
        lambda: repo.get_bytes("sets/a.json"),
        lambda: repo.pending_uploads(),
    ]:
        with pytest.raises(RepositoryError) as caught:
            operation()
        assert str(caught.value) == expected
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)


def test_access_denied_is_one_sentence_without_credentials(s3_bucket: tuple[str, str]) -> None:
    from botocore.stub import Stubber

    endpoint, bucket = s3_bucket
    repo = open_s3_repository(bucket, "prod", endpoint)
    with Stubber(repo._client) as stub:
        stub.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(RepositoryError) as caught:
            repo.put_bytes("sets/a.json", b"x")
    assert str(caught.value) == (
        f"access to s3://{bucket}/prod was denied (AccessDenied); check the AWS credentials qbr runs with."
    )


def test_an_unreachable_endpoint_is_one_sentence() -> None:
    from qbr.repository.s3 import S3Repository

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the with ends: nothing listens there
    repo = S3Repository("bucket", "prod", f"http://127.0.0.1:{port}", "us-east-1", max_attempts=1)

    with pytest.raises(RepositoryError) as caught:
        repo.put_bytes("sets/a.json", b"x")

    assert str(caught.value) == f"cannot reach S3 endpoint http://127.0.0.1:{port}: Connection refused."


def test_a_folder_that_is_a_file_is_named_in_one_sentence(tmp_path: Path) -> None:
    blocker = tmp_path / "backups"
    blocker.write_text("not a folder")
    repo = open_local_repository(blocker)
    nested = open_local_repository(blocker / "repo")
    at = re.escape(str(blocker))

    with pytest.raises(RepositoryError, match=rf"^folder {at} is not a folder; "):
        list(repo.list())
    with pytest.raises(RepositoryError, match=rf"^folder {at} is not a folder; "):
        repo.get_bytes("sets/a.json")
    with pytest.raises(RepositoryError, match=rf"^folder {at}/repo is not writable: {at} is a file, not a folder\.$"):
        nested.put_bytes("sets/a.json", b"x")
    with pytest.raises(RepositoryError, match=rf"^folder {at} is not writable: {at} is a file, not a folder\.$"):
        repo.put_stream("sets/a.json", [b"x"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes every folder whatever its mode")
def test_an_unwritable_folder_is_named_in_one_sentence(tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        unwritable = rf"^folder {re.escape(str(folder))} is not writable: Permission denied"
        with pytest.raises(RepositoryError, match=unwritable):
            open_local_repository(folder).put_bytes("sets/a.json", b"x")
    finally:
        folder.chmod(0o700)


def test_a_local_repository_is_created_lazily(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "repo"
    repo = open_local_repository(folder)

    assert repo.describe() == str(folder)
    assert list(repo.list()) == [] and repo.head("sets/a.json") is None and repo.pending_uploads() == []
    assert not folder.exists()

    repo.put_bytes("sets/nightly/a.json", b"{}")

    assert (folder / "sets" / "nightly" / "a.json").read_bytes() == b"{}"
    assert [o.key for o in repo.list()] == ["sets/nightly/a.json"]


# -- memory -------------------------------------------------------------------------------

MEMORY_SCRIPT = """
import json, sys, tracemalloc
from pathlib import Path
from qbr.repository import open_local_repository, open_s3_repository
spec = json.loads(sys.argv[1])
if spec["kind"] == "local":
    repo = open_local_repository(Path(spec["path"]))
else:
    repo = open_s3_repository(spec["bucket"], "prod", spec["endpoint"])
def source():
    for _ in range(64):
        yield bytes(1 << 20)
repo.put_bytes("warm-up", b"x")  # imports and connection pools are not what we measure
tracemalloc.start()
info = repo.put_stream("snapshots/docs/big.snapshot", source())
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "size": info.size}))
"""


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_put_stream_memory_stays_flat(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # In a child process: moto's server runs in ours and holds the uploaded bytes.
    if kind == "s3":
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        spec = {"kind": "s3", "bucket": bucket, "endpoint": endpoint}
    else:
        spec = {"kind": "local", "path": str(tmp_path / "repo")}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, json.dumps(spec)], cwd=ROOT, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    measured = json.loads(done.stdout)

    assert measured["size"] == 64 * MiB
    part = 8 * MiB  # the default part size
    assert measured["peak"] < 3 * part, measured
    if kind == "local":
        assert measured["peak"] < 4 * MiB, measured  # no buffering at all beyond a chunk


# -- S3 multipart: part size, parts in flight, failures -----------------------------------------


def test_part_size_fits_a_1tib_archive_in_10000_parts() -> None:
    from qbr.repository.multipart import DEFAULT_PART_SIZE, MAX_PARTS, part_size_for

    tib = 1 << 40
    size = part_size_for(tib)
    assert size % MiB == 0 and size > DEFAULT_PART_SIZE
    assert -(-tib // size) <= MAX_PARTS  # parts are at least this size, so at most this many
    assert -(-tib // (size - MiB)) > MAX_PARTS  # and it is the smallest whole MiB that fits
    assert part_size_for(5 << 40) <= 5 << 30 and -(-(5 << 40) // part_size_for(5 << 40)) <= MAX_PARTS
    assert part_size_for(64 * MiB) == part_size_for(4 << 30) == DEFAULT_PART_SIZE  # flat up to ~78 GiB
    assert part_size_for(None) == DEFAULT_PART_SIZE and part_size_for(1, 6 * MiB) == 6 * MiB
    with pytest.raises(ValueError, match="5 TiB"):
        part_size_for((5 << 40) + 1)


def s3_repo(s3_bucket: tuple[str, str], **kw) -> Repository:
    from qbr.repository.s3 import S3Repository

    endpoint, bucket = s3_bucket
    return S3Repository(bucket, "team/prod", endpoint, "us-east-1", name="main", **kw)


@pytest.mark.parametrize("store", ["s3_bucket", "s3rver_bucket"])
def test_a_known_size_picks_a_part_size_that_fits_in_max_parts(
    store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qbr.repository import multipart

    monkeypatch.setattr(multipart, "MAX_PARTS", 2)  # so a 12 MiB object needs 6 MiB parts
    repo = s3_repo(request.getfixturevalue(store), part_size=PART)
    data = pattern(12 * MiB)

    repo.put_stream("snapshots/docs/a.snapshot", chunked(data, (MiB,)), size=len(data))

    assert repo.get_bytes("snapshots/docs/a.snapshot") == data
    counts = repo.requests
    assert counts["multipart_upload_part"] == 2  # 5 MiB parts would have taken three
    assert counts["multipart_create"] == counts["multipart_complete"] == 1


def test_parts_in_flight_bound_what_is_read_ahead(s3_bucket: tuple[str, str]) -> None:
    """Part 1's upload is held until part 3's starts: three parts upload at once, and the reader
    waits for a slot instead of reading a fourth. Memory is parts in flight x part size."""
    repo = s3_repo(s3_bucket, part_size=PART, in_flight=3)
    real = repo._client.upload_part
    lock = threading.Lock()
    third_started = threading.Event()
    seen: dict[str, object] = {"active": 0, "max_active": 0, "read_while_held": None}
    pulled = [0]

    def upload_part(**params):
        with lock:
            seen["active"] = seen["active"] + 1
            seen["max_active"] = max(seen["max_active"], seen["active"])
        if params["PartNumber"] == 3:
            third_started.set()
        if params["PartNumber"] == 1:
            assert third_started.wait(30), "part 3 never started while part 1 was uploading"
            seen["read_while_held"] = pulled[0]
        try:
            return real(**params)
        finally:
            with lock:
                seen["active"] = seen["active"] - 1

    repo._client.upload_part = upload_part  # type: ignore[method-assign]

    def source() -> Iterator[bytes]:
        for n in range(8 * PART // MiB):
            pulled[0] += MiB
            yield pattern(MiB)

    info = repo.put_stream("snapshots/docs/big.snapshot", source(), size=8 * PART)

    assert info.size == 8 * PART and repo.head("snapshots/docs/big.snapshot").size == 8 * PART
    assert seen["max_active"] == 3  # never more parts in flight than allowed
    # While part 1 was held, the reader had filled parts 2 and 3 and at most started a fourth
    # (it takes a slot before reading): never more than 3 parts read ahead of the uploads.
    assert 3 * PART <= seen["read_while_held"] <= 3 * PART + MiB
    assert repo.requests["multipart_upload_part"] == 8


def test_a_failed_part_aborts_the_upload_and_raises_one_sentence(s3_bucket: tuple[str, str]) -> None:
    import botocore.exceptions

    repo = s3_repo(s3_bucket, part_size=PART, in_flight=2)
    real = repo._client.upload_part
    pulled = [0]

    def upload_part(**params):
        if params["PartNumber"] == 2:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "InternalError", "Message": "We encountered an internal error."},
                 "ResponseMetadata": {"HTTPStatusCode": 500}}, "UploadPart")
        return real(**params)

    repo._client.upload_part = upload_part  # type: ignore[method-assign]

    def source() -> Iterator[bytes]:
        for _ in range(20 * PART // MiB):
            pulled[0] += MiB
            yield pattern(MiB)

    with pytest.raises(RepositoryError) as caught:
        repo.put_stream("snapshots/docs/docs-1.snapshot", source(), size=20 * PART)

    message = str(caught.value)
    assert message.startswith("S3 upload of s3://") and message.endswith(".") and message.count(". ") == 0
    assert "InternalError" in message
    assert pulled[0] <= 4 * PART + MiB  # the reader stopped at the next part, not at the end
    assert repo.pending_uploads() == []  # aborted: no orphan upload
    assert repo.head("snapshots/docs/docs-1.snapshot") is None
    counts = repo.requests
    assert counts["multipart_create"] == counts["multipart_abort"] == 1 and counts["multipart_complete"] == 0


# -- S3 request accounting -------------------------------------------------------------------------


def test_s3_requests_are_counted_exactly_by_kind_with_bytes_moved(s3_bucket: tuple[str, str]) -> None:
    from qbr.repository.accounting import describe_requests, since

    repo = s3_repo(s3_bucket, part_size=PART)
    assert repo.requests == dict.fromkeys(repo.requests, 0)

    repo.put_bytes("sets/a.json", b"x" * 100)                                  # PUT, 100 up
    assert repo.get_bytes("sets/a.json") == b"x" * 100                         # GET, 100 down
    assert repo.head("sets/a.json").size == 100 and repo.head("nope") is None  # 2 HEAD
    assert [o.key for o in repo.list("sets/")] == ["sets/a.json"]              # LIST
    repo.delete("sets/a.json")                                                 # DELETE
    middle = repo.requests
    data = pattern(2 * PART + 3 * MiB)
    repo.put_stream("snapshots/docs/a.snapshot", chunked(data, (MiB,)), size=len(data))  # create + 3 parts + complete
    with repo.open_read("snapshots/docs/a.snapshot") as chunks:                 # GET, all of it down
        assert sum(len(c) for c in chunks) == len(data)
    with pytest.raises(Boom):                                                  # create + 1 part + abort
        repo.put_stream("snapshots/docs/b.snapshot", (pattern(MiB) if n < 6 else _boom() for n in range(9)))

    counts = repo.requests
    assert {k: v for k, v in counts.items() if k != "bytes_up"} == {
        "GET": 2, "PUT": 1, "LIST": 1, "DELETE": 1, "HEAD": 2,
        "multipart_create": 2, "multipart_upload_part": 4, "multipart_complete": 1, "multipart_abort": 1,
        "other": 0, "requests": 15, "bytes_down": 100 + len(data),
    }
    object_bytes = 100 + len(data) + PART  # the aborted upload sent its first part only
    assert object_bytes <= counts["bytes_up"] < object_bytes + 4096  # plus the small XML bodies
    assert since(counts, middle)["PUT"] == 0 and since(counts, middle)["GET"] == 1
    assert describe_requests(counts).startswith(
        "S3: 15 requests: 2 GET, 1 PUT, 1 LIST, 1 DELETE, 2 HEAD, 2 multipart uploads (4 parts, 1 completed, 1 aborted); "
    )


def _boom() -> bytes:
    raise Boom("qdrant cut the download")


def test_describe_requests_is_one_line_for_the_lead() -> None:
    from qbr.repository.accounting import FIELDS, RequestCounter, describe_requests

    counts = dict.fromkeys(FIELDS, 0) | {"GET": 12, "PUT": 3, "LIST": 2, "multipart_create": 1,
                                          "multipart_upload_part": 5, "multipart_complete": 1, "requests": 24,
                                          "bytes_up": 48 * MiB, "bytes_down": 1258291}
    assert describe_requests(counts) == (
        "S3: 24 requests: 12 GET, 3 PUT, 2 LIST, 0 DELETE, 0 HEAD, 1 multipart upload (5 parts); "
        "48.0 MiB up, 1.2 MiB down"
    )
    assert describe_requests({}) == "S3: 0 requests: 0 GET, 0 PUT, 0 LIST, 0 DELETE, 0 HEAD, 0 multipart uploads; 0 B up, 0 B down"

    counter = RequestCounter()  # thread-safe: parts upload from threads of their own
    threads = [threading.Thread(target=lambda: [counter.count("multipart_upload_part", up=10) for _ in range(1000)])
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.counts()["multipart_upload_part"] == counter.counts()["requests"] == 8000
    assert counter.reset()["bytes_up"] == 80000 and counter.counts()["requests"] == 0


def test_a_local_put_stream_takes_the_size_too(tmp_path: Path) -> None:
    repo = open_local_repository(tmp_path / "repo")
    assert repo.put_stream("snapshots/docs/a.snapshot", [b"abc", b"de"], size=5).size == 5
    assert repo.get_bytes("snapshots/docs/a.snapshot") == b"abcde"


# -- local writes beside the download ----------------------------------------------------------


def test_a_local_write_that_fails_in_its_thread_stops_the_source_and_raises_one_sentence() -> None:
    import errno
    import io

    from qbr.repository.filewrite import write_chunks

    class FillsUp(io.BytesIO):
        def write(self, data: bytes) -> int:
            if self.tell() >= 3 * MiB:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    pulled = [0]

    def source() -> Iterator[bytes]:
        for _ in range(64):
            pulled[0] += 1
            yield pattern(MiB)

    with pytest.raises(RepositoryError, match=r"^disk full: No space left on device\.$"):
        write_chunks(FillsUp(), source(), on_chunk=None, error=lambda e: RepositoryError(f"disk full: {e.strerror}."))
    assert pulled[0] <= 6  # stopped within a chunk or two of the failure, not at the end
    assert not [t for t in threading.enumerate() if t.name == "qbr-write"]


def test_a_large_local_write_leaves_the_page_cache_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qbr.repository import filewrite

    advice: list[tuple[int, int]] = []
    monkeypatch.setattr(filewrite.os, "posix_fadvise", lambda fd, start, length, how: advice.append((start, length)))
    repo = open_local_repository(tmp_path / "repo")
    data = pattern(80 * MiB)

    repo.put_stream("snapshots/docs/a.snapshot", chunked(data, (MiB,)))

    assert repo.get_bytes("snapshots/docs/a.snapshot") == data
    step = filewrite.CACHE_DROP_EVERY
    during, after = advice[:-1], advice[-1]
    assert len(during) == len(data) // step  # once per step written
    # Each advice covers what lies at least one step behind the write, never the step in progress.
    assert all(start >= 0 and length >= 0 for start, length in during)
    assert [start + length for start, length in during] == [n * step - step for n in range(1, len(during) + 1)]
    assert after == (0, 0)  # once fsynced, all of it

    advice.clear()
    repo.put_bytes("state.json", b"{}")  # small records stay cached: they are read again soon
    repo.put_stream("sets/a.json", [b"x" * 1000])
    assert advice == []


def test_parts_in_flight_fit_the_upload_buffer_when_the_size_is_known() -> None:
    from qbr.repository.multipart import UPLOAD_BUFFER, part_size_for, parts_in_flight

    assert parts_in_flight(8 * MiB, size_known=True) == 4  # boto3's part size: 4 in flight, 32 MiB
    assert parts_in_flight(16 * MiB, size_known=True) == 2
    assert parts_in_flight(part_size_for(1 << 40), size_known=True) == 2  # 1 TiB: 2 x 105 MiB
    assert parts_in_flight(8 * MiB, size_known=False) == 2  # its parts grow with it: hold fewer
    assert parts_in_flight(8 * MiB, size_known=True, requested=7) == 7
    for size in (64 * MiB, 4 << 30, 80 << 30):  # memory flat up to ~78 GiB, then 2 parts
        part = part_size_for(size)
        assert parts_in_flight(part, size_known=True) * part <= max(UPLOAD_BUFFER, 2 * part)


KNOWN_SIZE_MEMORY_SCRIPT = """
import json, sys, tracemalloc
from qbr.repository import open_s3_repository
spec = json.loads(sys.argv[1])
repo = open_s3_repository(spec["bucket"], "prod", spec["endpoint"])
def source():
    for _ in range(96):
        yield bytes(1 << 20)
repo.put_bytes("warm-up", b"x")
tracemalloc.start()
info = repo.put_stream("snapshots/docs/big.snapshot", source(), size=96 << 20)
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "size": info.size, "parts": repo.requests["multipart_upload_part"]}))
"""


def test_a_known_size_upload_holds_no_more_than_its_parts_in_flight(s3_bucket: tuple[str, str]) -> None:
    from qbr.repository.multipart import part_size_for, parts_in_flight

    endpoint, bucket = s3_bucket
    done = subprocess.run(
        [sys.executable, "-c", KNOWN_SIZE_MEMORY_SCRIPT, json.dumps({"bucket": bucket, "endpoint": endpoint})],
        cwd=ROOT, capture_output=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    measured = json.loads(done.stdout)
    part = part_size_for(96 * MiB)
    bound = parts_in_flight(part, size_known=True) * part
    assert measured["size"] == 96 * MiB and measured["parts"] == 96 * MiB // part
    assert measured["peak"] < bound + 3 * MiB, measured  # the parts, plus the chunk on its way
