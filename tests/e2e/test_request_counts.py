"""What a quiet tick costs in requests, through the CLI against an emulator node and moto's S3.

A quiet tick (every backup's newest set within its rpo) is what cron runs most of the time: it
must cost requests per backup, not per collection, to Qdrant and to the S3 repository alike.
Qdrant's requests are counted by the emulator as it serves them; S3's as botocore sends them from
the repository's client (retries included: the `before-send` event qbr's own accounting uses).
"""

from __future__ import annotations

import json
from collections import Counter
from hashlib import sha256
from urllib.parse import urlsplit

import pytest

from qbr.repository.accounting import RequestCounter
from qbr.repository.read_cache import ReadCache
from qbr.repository.s3 import S3Repository
from tests.e2e.helpers import make_collection, qbr, write_manifest
from tests.s3_fixture import s3_client

T0 = "2026-11-21T08:00:00Z"
QUIET = "2026-11-21T08:30:00Z"  # within the 1h rpo


class Sent(Counter):
    """Requests by botocore operation name, and in `got` the keys read (GetObject), without the
    repository's prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.got: Counter = Counter()

    def clear(self) -> None:
        super().clear()
        self.got.clear()


@pytest.fixture
def s3_sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """S3 requests sent by every repository client qbr opens."""
    sent = Sent()
    attach = RequestCounter.attach

    def count(event_name: str = "", request: object = None, **_: object) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        sent[operation] += 1
        if operation == "GetObject":
            sent.got[urlsplit(request.url).path.split("/", 3)[-1]] += 1  # type: ignore[attr-defined]

    def attach_and_count(self: RequestCounter, client: object) -> None:
        attach(self, client)
        client.meta.events.register("before-send.s3", count)  # type: ignore[attr-defined]

    monkeypatch.setattr(RequestCounter, "attach", attach_and_count)
    return sent


def quiet_tick(emulator, folder, endpoint: str, bucket: str, sent: Counter, collections: int, dedup: bool = False) -> dict:
    """Back up `collections` collections once, then run a quiet `qbr plan` and a quiet `qbr apply`:
    the requests each sent to Qdrant (by route) and to S3 (by operation)."""
    source = emulator(nodes=1)
    for i in range(collections):
        make_collection(source.urls[0], f"c{i:03d}", points=1)
    folder.mkdir()
    write_manifest(folder, f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}"}}
repositories:
  main: {{s3: {{bucket: {bucket}, prefix: n{collections}, endpoint_url: "{endpoint}", region: us-east-1}}, dedup: {str(dedup).lower()}}}
backups:
  nightly:
    cluster: prod
    repository: main
    collections: ["*"]
    rpo: 1h
    retention: {{keep_last: 3}}
""")
    first = qbr("apply", "--auto-approve", "--now", T0, cwd=folder)
    copied = [line for line in first.stdout.splitlines() if line.startswith("+ copy collection") and ": done" in line]
    assert first.exit_code == 0 and len(copied) == collections, first.output
    found = {}
    for command in ("plan", "apply"):
        source.nodes[0].reset_traffic()
        sent.clear()
        args = ("apply", "--auto-approve") if command == "apply" else ("plan",)
        run = qbr(*args, "--now", QUIET, cwd=folder)
        assert run.exit_code == 0 and "No changes" in run.stdout, run.output
        found[command] = {"qdrant": dict(source.route_counts()), "s3": dict(sent), "got": dict(sent.got)}
    return found


def test_a_quiet_tick_costs_the_same_requests_at_10_and_100_collections(emulator, tmp_path, s3_bucket, s3_sent):
    endpoint, bucket = s3_bucket
    small = quiet_tick(emulator, tmp_path / "small", endpoint, bucket, s3_sent, 10)
    large = quiet_tick(emulator, tmp_path / "large", endpoint, bucket, s3_sent, 100)

    assert large == small  # route by route and operation by operation, for plan and for apply
    plan = small["plan"]
    assert sum(plan["qdrant"].values()) <= 6, plan["qdrant"]  # version, cluster, collections, aliases
    # the set records (one set here: 1 GET), the two listings and the unfinished uploads
    assert plan["s3"].get("GetObject") == 1 and sum(plan["s3"].values()) <= 6, plan["s3"]


def test_a_tick_reads_no_set_record_it_read_before_and_rereads_one_another_host_rewrote(emulator, tmp_path, s3_bucket, s3_sent):
    endpoint, bucket = s3_bucket
    found = quiet_tick(emulator, tmp_path / "ten", endpoint, bucket, s3_sent, 10)
    assert [k for k in found["plan"]["got"] if k.startswith("sets/")] == ["sets/nightly/20261121T080000Z.json"]
    assert not any(key.startswith("sets/") for key in found["apply"]["got"]), found["apply"]["got"]  # the next, no record

    client = s3_client(endpoint)
    (key,) = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="n10/sets/")["Contents"]]
    record = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    record["qbr_version"] = "9.9.9"  # another host rewrote it: same key, new etag
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())
    s3_sent.clear()
    described = qbr("sets", "describe", record["set_id"], "--json", cwd=tmp_path / "ten")
    assert described.exit_code == 0, described.output
    assert json.loads(described.stdout)["set"]["qbr_version"] == "9.9.9"
    assert [k for k in s3_sent.got if k.startswith("sets/")] == [key.split("/", 1)[1]]  # read again, once


def test_verify_judges_the_set_records_as_stored_never_a_local_copy(emulator, tmp_path, s3_bucket, s3_sent):
    endpoint, bucket = s3_bucket
    quiet_tick(emulator, tmp_path / "ten", endpoint, bucket, s3_sent, 10)  # its plan kept a copy of the record
    key = "sets/nightly/20261121T080000Z.json"
    copy = ReadCache.for_repository(S3Repository(bucket, "n10", endpoint, "us-east-1")).folder / sha256(key.encode()).hexdigest()
    head, _, body = copy.read_bytes().partition(b"\n")
    lie = b"x" * len(body)  # a copy that lies consistently: under the etag and size S3 lists, with its own sha256
    copy.write_bytes(json.dumps({**json.loads(head), "sha256": sha256(lie).hexdigest()}).encode() + b"\n" + lie)

    listed = qbr("sets", "--json", cwd=tmp_path / "ten")  # the control: the copy is what a plan reads
    assert listed.exit_code != 0 or json.loads(listed.stdout) == [], listed.output
    s3_sent.clear()
    verify = qbr("verify", cwd=tmp_path / "ten")
    assert verify.exit_code == 0, verify.output
    assert s3_sent.got[key] == 1  # read from S3


def test_a_dedup_tick_reads_no_chunk_list_or_index_object_it_read_before(emulator, tmp_path, s3_bucket, s3_sent):
    endpoint, bucket = s3_bucket
    found = quiet_tick(emulator, tmp_path / "ten", endpoint, bucket, s3_sent, 10, dedup=True)
    lists = [k for k in found["plan"]["got"] if k.startswith("snapshots/")]
    assert len(lists) == 10, found["plan"]["got"]  # the first quiet tick reads each archive's chunk list
    assert any(k.startswith("index/") for k in found["plan"]["got"])  # and the chunk index's objects
    assert set(found["apply"]["got"]) == {"locks/exclusive.json"}, found["apply"]["got"]  # then only the lock
