"""What a quiet tick costs in requests, through the CLI against an emulator node and moto's S3.

A quiet tick (every backup's newest set within its rpo) is what cron runs most of the time: it
must cost requests per backup, not per collection, to Qdrant and to the S3 repository alike.
Qdrant's requests are counted by the emulator as it serves them; S3's as botocore sends them from
the repository's client (retries included: the `before-send` event qbr's own accounting uses).
"""

from __future__ import annotations

from collections import Counter

import pytest

from qbr.repository.accounting import RequestCounter
from tests.e2e.helpers import make_collection, qbr, write_manifest

T0 = "2026-11-21T08:00:00Z"
QUIET = "2026-11-21T08:30:00Z"  # within the 1h rpo


@pytest.fixture
def s3_sent(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """S3 requests sent by every repository client qbr opens, by botocore operation name."""
    sent: Counter = Counter()
    attach = RequestCounter.attach

    def count(event_name: str = "", **_: object) -> None:
        sent[event_name.rsplit(".", 1)[-1]] += 1

    def attach_and_count(self: RequestCounter, client: object) -> None:
        attach(self, client)
        client.meta.events.register("before-send.s3", count)  # type: ignore[attr-defined]

    monkeypatch.setattr(RequestCounter, "attach", attach_and_count)
    return sent


def quiet_tick(emulator, folder, endpoint: str, bucket: str, sent: Counter, collections: int) -> dict:
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
  main: {{s3: {{bucket: {bucket}, prefix: n{collections}, endpoint_url: "{endpoint}", region: us-east-1}}}}
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
        found[command] = {"qdrant": dict(source.route_counts()), "s3": dict(sent)}
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
