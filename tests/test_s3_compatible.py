"""S3-compatible stores below the CLI: the client settings a store needs, the optional APIs it
may lack (skipped and said once), the one-time conditional-write probe, the lock's refusal and
its weaker opt-in mode, the manifest keys, and status's lifecycle recommendation.

Against moto (behaves like AWS) and s3rver (no ListMultipartUploads, no AbortMultipartUpload,
conditional writes ignored), over real HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qbr.errors import LockError, RepositoryError
from qbr.locks import REPOSITORY_LOCK_KEY, Lock, LockSet, LockTarget
from qbr.repository import PendingUpload, cleanup_gaps, conditional_writes_gap, open_local_repository, store_gaps
from qbr.repository.s3 import S3Repository
from tests.s3_fixture import s3_client
from tests.s3rver_fixture import s3rver_client

try:  # once conftest can load (the emulator exists), it provides the S3 fixtures
    import tests.emulator.fixtures  # noqa: F401
except ImportError:  # run with --noconftest meanwhile
    from tests.s3_fixture import s3_bucket, s3_server  # noqa: F401


@pytest.fixture(autouse=True)
def fresh_store_facts() -> Iterator[None]:
    store_gaps.forget()
    yield
    store_gaps.forget()


def repo_on(where: tuple[str, str], **kw) -> S3Repository:
    endpoint, bucket = where
    return S3Repository(bucket, "team/prod", endpoint, "us-east-1", name="main", **kw)


def keys_in(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


# -- client settings ----------------------------------------------------------------------------


def test_an_endpoint_gets_path_style_and_checksums_only_when_required(s3_bucket) -> None:
    sent: list[tuple[str, dict[str, str]]] = []
    default = repo_on(s3_bucket)
    aws_like = repo_on(s3_bucket, checksums="when_supported", addressing_style="auto",
                       connect_timeout=3, read_timeout=7, max_attempts=2)
    for repo in (default, aws_like):
        repo._client.meta.events.register(
            "before-send.s3.PutObject", lambda request, **_: sent.append((request.url, dict(request.headers)))
        )
        repo.put_bytes("sets/a.json", b"{}")

    config = default._client.meta.config
    assert config.s3 == {"addressing_style": "path"}
    assert config.request_checksum_calculation == config.response_checksum_validation == "when_required"
    assert (config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]) == (10.0, 60.0, 6)
    other = aws_like._client.meta.config
    assert other.s3 == {"addressing_style": "auto"} and other.request_checksum_calculation == "when_supported"
    assert (other.connect_timeout, other.read_timeout, other.retries["total_max_attempts"]) == (3, 7, 2)
    (url, plain), (_, checked) = sent
    assert url.startswith(f"{s3_bucket[0]}/{s3_bucket[1]}/team/prod/")  # the bucket in the path
    assert not any(h.lower().startswith(("x-amz-checksum", "x-amz-trailer", "x-amz-sdk-checksum")) for h in plain)
    assert any(h.lower().startswith(("x-amz-checksum", "x-amz-trailer", "x-amz-sdk-checksum")) for h in checked)


def test_aws_keeps_botocore_defaults_and_virtual_style_puts_the_bucket_in_the_host() -> None:
    aws = S3Repository("qbr-bucket", "prod", None, "eu-west-1")
    assert aws._client.meta.config.s3 in (None, {}) and aws._client.meta.config.request_checksum_calculation == "when_supported"
    virtual = S3Repository("qbr-bucket", "prod", "https://s3.example.com", "eu-west-1", addressing_style="virtual")
    url = virtual.presigned_get("sets/a.json", 60)
    assert url.startswith("https://qbr-bucket.s3.example.com/prod/sets/a.json?")
    with pytest.raises(ValueError, match="addressing_style"):
        S3Repository("qbr-bucket", "prod", None, None, addressing_style="sideways")


# -- optional APIs a store lacks ----------------------------------------------------------------


def test_a_store_that_refuses_aborts_is_probed_once_and_said_once(s3rver_bucket, caplog) -> None:
    repo = repo_on(s3rver_bucket)
    client = s3rver_client(s3rver_bucket[0])
    upload_id = client.create_multipart_upload(Bucket=repo.bucket, Key="team/prod/snapshots/docs/a.snapshot")["UploadId"]
    pending = PendingUpload("snapshots/docs/a.snapshot", upload_id, datetime.now(UTC))

    with caplog.at_level(logging.WARNING, logger="qbr"):
        repo.abort_upload(pending)  # refused: skipped, not an error
        repo.abort_upload(pending)
    abortable, gaps = cleanup_gaps(repo, [pending])

    assert [r.getMessage() for r in caplog.records] == [store_gaps.cannot_abort(repo.describe(), repo.bucket, "MethodNotAllowed")]
    assert abortable == [] and gaps == (
        f"s3://{repo.bucket}/team/prod holds 1 unfinished multipart upload and refuses to abort unfinished multipart "
        "uploads (AbortMultipartUpload answered MethodNotAllowed), so qbr leaves them; add an AbortIncompleteMultipartUpload "
        f"lifecycle rule to bucket {repo.bucket} (e.g. after 1 day) so the store removes them itself",
    )
    assert repo.requests["multipart_abort"] == 2  # learned from the aborts: no probe on top


def test_a_store_that_aborts_keeps_its_uploads_abortable_and_is_probed_only_when_needed(s3_bucket) -> None:
    repo = repo_on(s3_bucket)
    pending = [PendingUpload("snapshots/docs/a.snapshot", "u-1", datetime.now(UTC))]

    assert cleanup_gaps(repo, []) == ([], ())
    assert repo.requests["requests"] == 0  # nothing pending: nothing to ask
    assert cleanup_gaps(repo, pending) == (pending, ())
    assert cleanup_gaps(repo, pending) == (pending, ())
    assert repo.requests["multipart_abort"] == 1  # one probe (an upload that does not exist), then remembered
    assert cleanup_gaps(open_local_repository(Path("/nonexistent/qbr")), pending) == (pending, ())


# -- the conditional-write probe ----------------------------------------------------------------


def test_the_probe_runs_once_per_store_and_leaves_nothing(s3_bucket, s3rver_bucket) -> None:
    honest, lax = repo_on(s3_bucket), repo_on(s3rver_bucket)

    assert conditional_writes_gap(honest, REPOSITORY_LOCK_KEY) is None
    assert conditional_writes_gap(lax, REPOSITORY_LOCK_KEY) == "ignores conditional writes (If-None-Match)"
    assert conditional_writes_gap(repo_on(s3_bucket), REPOSITORY_LOCK_KEY) is None  # another client, same store

    assert (honest.requests["PUT"], honest.requests["DELETE"], honest.requests["requests"]) == (3, 1, 4)
    assert (lax.requests["PUT"], lax.requests["DELETE"], lax.requests["requests"]) == (2, 1, 3)
    assert conditional_writes_gap(honest, REPOSITORY_LOCK_KEY) is None and honest.requests["requests"] == 4
    assert keys_in(s3_client(s3_bucket[0]), s3_bucket[1]) == []
    assert keys_in(s3rver_client(s3rver_bucket[0]), s3rver_bucket[1]) == []
    assert conditional_writes_gap(open_local_repository(Path("/nonexistent/qbr")), "lock") is None


def test_a_probe_that_cannot_write_is_one_sentence(s3_bucket) -> None:
    from botocore.stub import Stubber

    repo = repo_on(s3_bucket)
    with Stubber(repo._client) as stub:
        stub.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(RepositoryError, match=r"^access to s3://.* was denied \(AccessDenied\); check the AWS"):
            conditional_writes_gap(repo, REPOSITORY_LOCK_KEY)
    with Stubber(repo._client) as stub:  # a store that rejects the header outright cannot lock either
        stub.add_client_error("put_object", service_error_code="NotImplemented", http_status_code=501)
        assert conditional_writes_gap(repo, REPOSITORY_LOCK_KEY) == (
            "does not support conditional writes (If-None-Match answered NotImplemented)"
        )


# -- locks on a store that ignores conditional writes --------------------------------------------


def target_on(repo: S3Repository, locking: str = "conditional") -> LockTarget:
    where = f"the repository main ({repo.describe()})"
    return LockTarget(repo, REPOSITORY_LOCK_KEY, "the lock of repository main", where, (1, repo.describe()),
                      locking=locking, setting="repositories.main.s3")


def test_a_lock_on_a_store_that_ignores_conditional_writes_is_refused_before_any_is_taken(s3rver_bucket, tmp_path) -> None:
    from qbr.manifest.model import StateLocation
    from qbr.state_store import StateStore, state_lock_target

    repo = repo_on(s3rver_bucket)
    state = StateStore(StateLocation("path", tmp_path / "state.json", None, None, None, None))
    locks = LockSet([state_lock_target(state), target_on(repo)], "apply")

    with pytest.raises(RepositoryError) as caught:
        locks.acquire(0)

    assert str(caught.value) == (
        f"the repository main (s3://{repo.bucket}/team/prod) ignores conditional writes (If-None-Match), so qbr cannot "
        "lock it; use a store that honours them, or set `locking: unsafe-single-writer` in repositories.main.s3 if "
        "only one qbr ever runs against it"
    )
    assert caught.value.exit_code == 1  # not "busy, try later" (4): waiting would not help
    assert not (tmp_path / "state.json.lock").exists()  # the state's lock was never taken
    assert list(repo.list()) == []


def test_unsafe_single_writer_locks_best_effort_and_a_second_run_still_sees_the_holder(s3rver_bucket) -> None:
    warnings: list[str] = []
    first = Lock(target_on(repo_on(s3rver_bucket), "unsafe-single-writer"), "apply", warn=warnings.append)
    second = Lock(target_on(repo_on(s3rver_bucket), "unsafe-single-writer"), "apply")

    first.acquire(0)
    try:
        with pytest.raises(LockError, match=r"is locked by .*qbr force-unlock"):
            second.acquire(0)  # it reads before it writes, so a live holder is still seen
        assert len(warnings) == 1 and "taken best effort (locking: unsafe-single-writer)" in warnings[0]
    finally:
        first.release()
    assert first.target.read() is None
    second.acquire(0)
    second.release()


# -- manifest keys ----------------------------------------------------------------------------------


def load(text: str, tmp_path: Path):
    from qbr.manifest import load_manifest_text

    return load_manifest_text(text, str(tmp_path / "qbr.yaml"), tmp_path)


MANIFEST = """
version: 1
state: {{s3: {{bucket: qbr-state, key: qbr/state.json, endpoint_url: "http://minio:9000", locking: unsafe-single-writer}}}}
clusters: {{prod: {{url: "http://q:6333"}}}}
repositories:
  minio:
    s3: {{bucket: qbr-backups, prefix: prod, endpoint_url: "{endpoint}", {keys}}}
backups: {{nightly: {{cluster: prod, repository: minio}}}}
"""


def test_the_s3_keys_reach_the_client_settings(tmp_path: Path) -> None:
    keys = "addressing_style: virtual, checksums: when_supported, connect_timeout: 5s, read_timeout: 2m, max_attempts: 8"
    m = load(MANIFEST.format(endpoint="https://s3.example.com", keys=keys), tmp_path)

    options = m.repositories["minio"].s3
    assert options.client_settings() == {
        "addressing_style": "virtual", "checksums": "when_supported", "connect_timeout": 5.0, "read_timeout": 120.0,
        "max_attempts": 8,
    }
    assert options.locking == "conditional" and m.state.s3.locking == "unsafe-single-writer"
    assert m.state.s3.client_settings() == dict.fromkeys(options.client_settings())


@pytest.mark.parametrize(("keys", "endpoint", "problem"), [
    ("addressing_style: sideways", "http://minio:9000", "addressing_style"),
    ("checksums: always", "http://minio:9000", "checksums"),
    ("read_timeout: soon", "http://minio:9000", "repositories.minio.s3.read_timeout: 'soon' is not a duration"),
    ("max_attempts: 0", "http://minio:9000", "max_attempts"),
    ("locking: none", "http://minio:9000", "locking"),
    ("addressing_style: virtual", "http://10.0.0.5:9000", "virtual puts the bucket in the host name ('bucket.10.0.0.5'), which"),
])
def test_bad_s3_keys_are_named(tmp_path: Path, keys: str, endpoint: str, problem: str) -> None:
    from qbr.errors import ManifestError

    with pytest.raises(ManifestError) as caught:
        load(MANIFEST.format(endpoint=endpoint, keys=keys), tmp_path)
    assert problem in str(caught.value), str(caught.value)


# -- status's lifecycle recommendation --------------------------------------------------------------


def test_status_recommends_a_lifecycle_rule_when_uploads_pile_up_or_cannot_be_cleaned() -> None:
    from qbr.status import lifecycle_recommendations
    from qbr.world import ObservedRepository, PendingObject

    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    old, new = "2026-11-28T00:00:00Z", (now - timedelta(hours=2)).isoformat().replace("+00:00", "Z")

    def repo(name: str, where: str, stamps: list[str], gaps: tuple[str, ...] = ()) -> ObservedRepository:
        pending = tuple(PendingObject(f"snapshots/x/{i}", f"u{i}", t) for i, t in enumerate(stamps))
        return ObservedRepository(name, where, True, (), {}, pending, (), gaps)

    found = lifecycle_recommendations({
        "quiet": repo("quiet", "s3://b1/prod", [old] * 3 + [new] * 5),  # 3 old: not yet a pile
        "piling": repo("piling", "s3://b2/prod", [old] * 4),
        "folder": repo("folder", "/srv/backups", [old] * 9),
        "lax": repo("lax", "s3://b3", [], ("s3://b3 does not list unfinished multipart uploads (...)",)),
    }, now)

    assert found == (
        "repository lax: s3://b3 does not list unfinished multipart uploads (...)",
        "repository piling: 4 unfinished multipart uploads are older than a day (qbr apply aborts them, but they pile up "
        "while it does not run); add an AbortIncompleteMultipartUpload lifecycle rule to bucket b2 (e.g. after 1 day) so "
        "the store removes them itself",
    )
