"""Two hosts, one repository: each has its own state file (a cron host, a laptop), both write one
S3 repository (moto over HTTP). The repository's own lock keeps their applies apart; and a set
commit whose answer was lost on the way back is still a commit."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest

from qbr.locks import REPOSITORY_LOCK_KEY, Lock, repository_target
from qbr.manifest import load_manifest
from qbr.repository import open_s3_repository
from tests.e2e.helpers import make_collection, qbr, qbr_process, read_sets, write_manifest
from tests.e2e.test_faults import HOP_BY_HOP, S3FaultProxy

SLOW_SNAPSHOT = 3.0  # seconds the first host's snapshot takes: it holds the locks that long


def manifest_text(cluster, endpoint: str, bucket: str) -> str:
    return f"""
version: 1
clusters: {{prod: {{url: "{cluster.urls[0]}"}}}}
repositories:
  s3main:
    s3: {{bucket: {bucket}, prefix: prod, endpoint_url: "{endpoint}", region: us-east-1}}
backups: {{nightly: {{cluster: prod, repository: s3main, rpo: 1h, only_changed: false}}}}
"""


@pytest.fixture
def hosts(emulator, s3_bucket, tmp_path):
    """(cluster, repository, host_a, host_b): two folders, each with the same manifest and its own state."""
    endpoint, bucket = s3_bucket
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=10)
    folders = []
    for name in ("cron-host", "laptop"):
        folder = tmp_path / name
        folder.mkdir()
        write_manifest(folder, manifest_text(cluster, endpoint, bucket))
        folders.append(folder)
    return cluster, open_s3_repository(bucket, prefix="prod", endpoint_url=endpoint), *folders


def _slow_snapshots(cluster) -> None:
    cluster.nodes[0].faults.add(method="POST", path=r"/collections/docs/snapshots$", latency=SLOW_SNAPSHOT, times=None)


def _wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_host_with_its_own_state_is_refused_while_the_first_writes_the_repository(hosts):
    cluster, repo, host_a, host_b = hosts
    _slow_snapshots(cluster)
    first = qbr_process("apply", "--auto-approve", cwd=host_a)
    _wait_for(lambda: repo.head(REPOSITORY_LOCK_KEY) is not None)
    second = qbr_process("apply", "--auto-approve", "--lock-timeout", "0s", cwd=host_b)
    out2, err2 = second.communicate(timeout=60)
    out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 4, out2 + err2  # a lock error has its own exit code
    assert err2.startswith(f"Error: the repository s3main ({repo.describe()}) is locked by "), err2
    lock_id = re.search(r"lock ID ([0-9a-f-]{36})", err2).group(1)
    assert f"`qbr force-unlock {lock_id}`" in err2 and "pid" in err2 and "since" in err2
    assert err2.count("\n") == 1 and "Traceback" not in err2
    assert "Plan:" not in out2 and "set" not in out2, "the second host planned and ran nothing"
    assert repo.head(REPOSITORY_LOCK_KEY) is None, "the first host released the repository's lock"
    assert not (host_b / ".qbr" / "state.json.lock").exists(), "the refused host released its state lock"
    assert len(read_sets(repo)) == 1


def test_a_waiting_host_runs_only_after_the_first_has_finished(hosts):
    cluster, repo, host_a, host_b = hosts
    _slow_snapshots(cluster)
    first = qbr_process("apply", "--auto-approve", cwd=host_a)
    _wait_for(lambda: repo.head(REPOSITORY_LOCK_KEY) is not None)
    started = time.monotonic()
    second = qbr_process("apply", "--auto-approve", "--lock-timeout", "60s", cwd=host_b)
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    waited = time.monotonic() - started
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    assert "No changes" in out2, "it planned after the first host's set was committed: nothing left to do"
    assert "took over" not in err2 and waited > 1.0
    assert len(read_sets(repo)) == 1, "one set, not one per host"
    assert repo.head(REPOSITORY_LOCK_KEY) is None


def test_force_unlock_finds_a_dead_hosts_repository_lock_by_its_id(hosts):
    cluster, repo, host_a, host_b = hosts
    target = repository_target(load_manifest(host_a / "qbr.yaml").repositories["s3main"])
    dead = Lock(target, "apply")
    dead.acquire(0)
    dead._stop.set()  # the cron host died: nobody renews, nobody releases
    blocked = qbr("apply", "--auto-approve", "--lock-timeout", "0s", cwd=host_b)
    assert blocked.exit_code == 4 and "the repository s3main" in blocked.stderr and dead.info.id in blocked.stderr
    wrong = qbr("force-unlock", "not-the-id", "--yes", cwd=host_b)
    assert wrong.exit_code == 4 and dead.info.id in wrong.stderr and "no lock has ID not-the-id" in wrong.stderr
    unlocked = qbr("force-unlock", dead.info.id, "--yes", cwd=host_b)
    assert unlocked.exit_code == 0, unlocked.output
    assert "Removed the lock held by" in unlocked.stdout and f"on the repository s3main ({repo.describe()})" in unlocked.stdout
    applied = qbr("apply", "--auto-approve", cwd=host_b)
    assert applied.exit_code == 0, applied.output
    assert repo.head(REPOSITORY_LOCK_KEY) is None and len(read_sets(repo)) == 1


def test_an_interrupted_apply_releases_every_lock(hosts):
    cluster, repo, host_a, _ = hosts
    _slow_snapshots(cluster)
    run = qbr_process("apply", "--auto-approve", cwd=host_a)
    _wait_for(lambda: repo.head(REPOSITORY_LOCK_KEY) is not None)
    time.sleep(0.5)  # inside its actions now
    os.kill(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, out + err
    assert repo.head(REPOSITORY_LOCK_KEY) is None
    assert not (host_a / ".qbr" / "state.json.lock").exists()


# ------------------------------------------------------------------------------------------
# A set commit whose answer is lost (finding 2)


class LostAnswerProxy(S3FaultProxy):
    """The fault proxy, plus one fault it lacks: the request reaches S3 and is done, then the
    connection is reset before the answer, so the client retries a write that already landed."""

    def __init__(self, upstream: str, lose: str) -> None:
        super().__init__(upstream)
        self.lose = re.compile(lose)
        self.lost = 0

    def _handle(self, handler) -> None:
        line = f"{handler.command} {handler.path}"
        with self._lock:
            lose = self.lost == 0 and bool(self.lose.search(line))
            self.lost += lose
            if lose:
                self.requests.append(line)
        if not lose:
            return super()._handle(handler)
        body = self._body(handler)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = HTTPConnection(*self.upstream, timeout=30)
        try:
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            upstream.getresponse().read()
        finally:
            upstream.close()
        handler.close_connection = True
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()


def test_a_set_commit_whose_answer_was_lost_is_a_commit(emulator, s3_server, s3_bucket, tmp_path: Path):
    _, bucket = s3_bucket
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=10)
    proxy = LostAnswerProxy(s3_server, lose=rf"^PUT /{bucket}/prod/sets/")
    try:
        write_manifest(tmp_path, manifest_text(cluster, proxy.url, bucket))
        run = qbr("apply", "--auto-approve", cwd=tmp_path)
        set_puts = [line for line in proxy.requests if re.match(rf"PUT /{bucket}/prod/sets/", line)]
    finally:
        proxy.close()
    assert len(set_puts) == 2, f"the set record was sent, its answer lost, and sent again: {set_puts}"
    assert run.exit_code == 0, run.output
    assert "FAILED" not in run.output and "Apply complete" in run.stdout
    sets = read_sets(open_s3_repository(bucket, prefix="prod", endpoint_url=s3_server))
    assert len(sets) == 1 and sorted(sets[0]["collections"]) == ["docs"]
