"""S3-compatible stores, through the CLI: s3rver (no ListMultipartUploads, no
AbortMultipartUpload, conditional writes ignored) and moto behind a proxy that strips conditional
writes, as a new user would meet them.

A missing cleanup API never stops a plan: it is skipped and said once, with what to set up
instead. A store that ignores conditional writes cannot hold qbr's lock: apply refuses in one
sentence, unless the manifest opts into `locking: unsafe-single-writer`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from qbr.repository import open_s3_repository
from tests.e2e.helpers import make_collection, qbr, read_sets, write_manifest
from tests.s3_fixture import s3_client
from tests.s3rver_fixture import s3rver_client

T0 = "2026-11-21T08:00:00Z"
NO_LIST = "does not list unfinished multipart uploads (ListMultipartUploads answered NotImplemented)"


def manifest(cluster, endpoint: str, bucket: str, *, extra: str = "", state: str = "") -> str:
    return f"""
version: 1
{state}
clusters: {{prod: {{url: "{cluster.urls[0]}"}}}}
repositories:
  store:
    s3: {{bucket: {bucket}, prefix: prod, endpoint_url: "{endpoint}", region: us-east-1{extra}}}
backups:
  nightly: {{cluster: prod, repository: store, rpo: 1h}}
"""


@pytest.fixture
def prod(emulator):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=30)
    return cluster


@pytest.fixture(autouse=True)
def fresh_store_facts() -> Iterator[None]:
    """What qbr learned about a store lasts for its process; each test is a new process here."""
    from qbr.repository import store_gaps

    store_gaps.forget()
    yield
    store_gaps.forget()


def test_plan_against_s3rver_warns_once_and_never_stops(prod, s3rver_bucket, tmp_path: Path) -> None:
    endpoint, bucket = s3rver_bucket
    write_manifest(tmp_path, manifest(prod, endpoint, bucket))

    run = qbr("plan", "--now", T0, cwd=tmp_path)

    assert run.exit_code == 0, run.output
    assert "failed with NotImplemented" not in run.output
    lines = [line for line in run.output.splitlines() if NO_LIST in line]
    assert len(lines) == 1, run.output  # once, though the repository is listed twice
    assert f"add an AbortIncompleteMultipartUpload lifecycle rule to bucket {bucket}" in lines[0]
    assert "copy" in run.stdout  # the backup is planned as usual

    saved = qbr("plan", "--now", T0, "--json", cwd=tmp_path)
    assert saved.exit_code == 0 and any(NO_LIST in w for w in json.loads(saved.stdout)["warnings"])


def test_apply_refuses_a_store_that_ignores_conditional_writes_in_one_sentence(prod, s3rver_bucket, tmp_path: Path) -> None:
    endpoint, bucket = s3rver_bucket
    write_manifest(tmp_path, manifest(prod, endpoint, bucket))

    run = qbr("apply", "--auto-approve", cwd=tmp_path)

    assert run.exit_code == 1, run.output
    assert run.stderr.strip() == (
        f"Error: the repository store (s3://{bucket}/prod) ignores conditional writes (If-None-Match), so qbr cannot "
        "lock it; use a store that honours them, or set `locking: unsafe-single-writer` in repositories.store.s3 if "
        "only one qbr ever runs against it"
    )
    client = s3rver_client(endpoint)
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # the probe left nothing; no backup ran
    assert not (tmp_path / ".qbr" / "state.json").exists()


def test_unsafe_single_writer_backs_up_into_s3rver_and_converges(prod, s3rver_bucket, tmp_path: Path) -> None:
    endpoint, bucket = s3rver_bucket
    write_manifest(tmp_path, manifest(prod, endpoint, bucket, extra=", locking: unsafe-single-writer"))

    run = qbr("apply", "--auto-approve", cwd=tmp_path)

    assert run.exit_code == 0, run.output
    assert "is taken best effort (locking: unsafe-single-writer)" in run.stderr
    repo = open_s3_repository(bucket, "prod", endpoint)
    sets = read_sets(repo)
    assert len(sets) == 1 and sets[0]["collections"]["docs"]["points_count"] == 30
    assert [o.key for o in repo.list("locks/")] == []  # released, and no probe object left behind

    again = qbr("plan", "--detailed-exitcode", cwd=tmp_path)
    assert again.exit_code == 0, again.output  # converged: the warning is not a change

    status = qbr("status", cwd=tmp_path)
    assert status.exit_code == 0, status.output
    assert f"Recommended: repository store: s3://{bucket}/prod {NO_LIST}" in status.stdout


# ------------------------------------------------------------------------------------------
# moto behind a proxy that drops If-None-Match and If-Match: a store that ignores them.


class StrippingProxy:
    """Forwards every request to `upstream` without its conditional-write headers."""

    DROP = {"if-none-match", "if-match", "connection", "keep-alive", "transfer-encoding", "content-length", "expect"}

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        target = (parts.hostname or "127.0.0.1", parts.port or 80)
        drop = self.DROP

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
                upstream = HTTPConnection(*target, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in drop:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)) if self.command != "HEAD" else response.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="stripping-proxy", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stripping_proxy(s3_server) -> Iterator[StrippingProxy]:
    proxy = StrippingProxy(s3_server)
    yield proxy
    proxy.close()


def test_a_proxy_that_strips_conditional_writes_is_refused_for_the_state_and_the_repository(
    prod, s3_bucket, stripping_proxy, tmp_path: Path
) -> None:
    endpoint, bucket = s3_bucket
    state = f'state: {{s3: {{bucket: {bucket}, key: qbr/state.json, endpoint_url: "{stripping_proxy.url}"}}}}'
    write_manifest(tmp_path, manifest(prod, endpoint, bucket, state=state))

    run = qbr("apply", "--auto-approve", cwd=tmp_path)

    assert run.exit_code == 1, run.output
    assert run.stderr.strip() == (
        f"Error: the state s3://{bucket}/qbr/state.json ignores conditional writes (If-None-Match), so qbr cannot lock "
        "it; use a store that honours them, or set `locking: unsafe-single-writer` in state.s3 if only one qbr ever "
        "runs against it"
    )
    assert s3_client(endpoint).list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0

    # The same bucket straight to moto honours them: the lock is taken there as usual.
    write_manifest(tmp_path, manifest(prod, endpoint, bucket, state=state.replace(stripping_proxy.url, endpoint)))
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0


def test_status_recommends_a_lifecycle_rule_when_unfinished_uploads_pile_up(prod, s3_bucket, tmp_path: Path) -> None:
    endpoint, bucket = s3_bucket
    write_manifest(tmp_path, manifest(prod, endpoint, bucket))
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    client = s3_client(endpoint)
    for n in range(4):  # interrupted uploads nobody aborted (moto dates every upload 2010)
        client.create_multipart_upload(Bucket=bucket, Key=f"prod/snapshots/docs/left-{n}.snapshot")

    status = qbr("status", cwd=tmp_path)
    as_json = json.loads(qbr("status", "--json", cwd=tmp_path).stdout)

    assert status.exit_code == 0, status.output  # advice, not lateness
    expected = (
        "repository store: 4 unfinished multipart uploads are older than a day (qbr apply aborts them, but they pile up "
        f"while it does not run); add an AbortIncompleteMultipartUpload lifecycle rule to bucket {bucket} (e.g. after "
        "1 day) so the store removes them itself"
    )
    assert f"Recommended: {expected}" in status.stdout.splitlines()
    assert as_json["recommendations"] == [expected]
