"""Retention and garbage collection end to end, then `qbr status`, through the CLI (emulator + moto S3)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from qbr.repository import open_s3_repository
from tests.e2e.helpers import all_points, make_collection, qbr, read_sets, sha256_of, upsert, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

T0 = datetime(2026, 11, 21, 0, 0, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest(prod, endpoint, bucket, restores: str = "", dr=None) -> str:
    dr_line = f'\n  dr: {{url: "{dr.urls[0]}"}}' if dr else ""
    return f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}{dr_line}
repositories:
  main:
    s3: {{bucket: {bucket}, prefix: r, endpoint_url: "{endpoint}", region: us-east-1}}
backups:
  nightly:
    cluster: prod
    repository: main
    rpo: 6h
    only_changed: true
    retention: {{keep_last: 2, daily: 2}}
{restores}"""


def assert_mark_and_sweep_holds(repo) -> None:
    sets = read_sets(repo)
    referenced = {a["key"]: a for s in sets for c in s["collections"].values() for a in c["archives"]}
    stored = {o.key for o in repo.list("snapshots/")}
    assert stored == set(referenced), f"unreferenced: {stored - set(referenced)}, missing: {set(referenced) - stored}"
    for key, archive in referenced.items():
        assert sha256_of(repo.get_bytes(key)) == archive["sha256"]


def test_retention_keeps_exactly_the_rule_sets_sweeps_garbage_and_every_kept_set_restores(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    prod = emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=20)
    make_collection(prod.urls[0], "static", points=8)
    write_manifest(tmp_path, manifest(prod, endpoint, bucket))
    repo = open_s3_repository(bucket, prefix="r", endpoint_url=endpoint)
    expected_points = {}
    for step in range(12):  # every 6 hours for three days
        now = T0 + timedelta(hours=6 * step)
        if step % 2 == 1:
            with QdrantClient(prod.urls[0]) as client:
                upsert(client, "docs", range(20 + step, 21 + step))
        run = qbr("apply", "--auto-approve", "--now", iso(now), cwd=tmp_path)
        assert run.exit_code == 0, run.output
        expected_points[now.strftime("%Y%m%dT%H%M%SZ")] = len(prod.points("docs"))
        assert_mark_and_sweep_holds(repo)

    kept = sorted(s["set_id"] for s in read_sets(repo))
    # Hand computation at 2026-11-23T18:00Z: keep_last 2 keeps 23T18 and 23T12; daily 2 keeps the newest set of
    # 2026-11-23 (23T18, again) and of 2026-11-22 (22T18). Everything older was deleted along the way.
    assert kept == ["20261122T180000Z", "20261123T120000Z", "20261123T180000Z"]

    verbose = qbr("plan", "-v", "--now", iso(T0 + timedelta(hours=67)), cwd=tmp_path)
    assert verbose.exit_code == 0
    assert "keep set 20261123T180000Z: keep_last #1, daily #1, newest complete set" in verbose.stdout
    assert "keep set 20261122T180000Z: daily #2" in verbose.stdout

    later = qbr("plan", "--json", "--now", iso(T0 + timedelta(hours=72)), cwd=tmp_path)
    actions = json.loads(later.stdout)["actions"]
    deletions = {a["params"]["set_id"]: a["reason"] for a in actions if a["kind"] == "delete_set"}
    # At 2026-11-24T00:00Z the planned set 24T00 joins: keep_last 2 keeps 24T00 and 23T18, daily 2 keeps
    # 24T00 (day 24) and 23T18 (day 23); so 23T12 and 22T18 go.
    assert deletions == {"20261123T120000Z": "not kept by keep_last 2, daily 2", "20261122T180000Z": "not kept by keep_last 2, daily 2"}

    dr = emulator(nodes=1)
    restores = "restores:\n" + "".join(
        f"""  from-{set_id}:
    from: nightly
    to: dr
    at: {set_id[:4]}-{set_id[4:6]}-{set_id[6:8]}T{set_id[9:11]}:{set_id[11:13]}:{set_id[13:15]}Z
    collections: {{"docs": "docs_{set_id[6:11].lower()}", "static": "static_{set_id[6:11].lower()}"}}
"""
        for set_id in kept
    )
    write_manifest(tmp_path, manifest(prod, endpoint, bucket, restores, dr))
    run = qbr("apply", "--auto-approve", "--now", iso(T0 + timedelta(hours=67)), cwd=tmp_path)
    assert run.exit_code == 0, run.output
    for set_id in kept:
        suffix = set_id[6:11].lower()
        assert len(all_points(dr.urls[0], f"docs_{suffix}")) == expected_points[set_id]
        assert all_points(dr.urls[0], f"static_{suffix}") == all_points(prod.urls[0], "static")


def test_status_reports_ok_then_late_with_exit_codes(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    prod = emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=20)
    write_manifest(tmp_path, manifest(prod, endpoint, bucket))
    never = qbr("status", "--now", iso(T0), cwd=tmp_path)
    assert never.exit_code == 3 and "LATE  no set yet" in never.stdout
    assert qbr("apply", "--auto-approve", "--now", iso(T0), cwd=tmp_path).exit_code == 0
    ok = qbr("status", "--now", iso(T0 + timedelta(hours=2)), cwd=tmp_path)
    assert ok.exit_code == 0, ok.output
    assert "backup nightly: OK  newest set 20261121T000000Z is 2h old (rpo 6h)" in ok.stdout
    assert "collections: docs" in ok.stdout
    late = qbr("status", "--json", "--now", iso(T0 + timedelta(hours=7)), cwd=tmp_path)
    assert late.exit_code == 3
    report = json.loads(late.stdout)
    assert report["backups"][0]["late"] is True and report["backups"][0]["age"] == "7h"
    assert report["backups"][0]["unique_bytes"] > 0
    broken = qbr("status", "-f", "missing.yaml", cwd=tmp_path)
    assert broken.exit_code == 1 and "Traceback" not in broken.output


def test_status_names_a_restore_that_did_not_finish():
    from qbr.render.status import render_status
    from qbr.status import RestoreTarget, StatusReport

    report = StatusReport(
        now="2026-11-21T00:00:00Z",
        restores={"dr": (RestoreTarget("docs_dr", "dr", "nightly", "20261120T000000Z", "docs", None, None, incomplete=True),)},
    )
    text = render_status(report)
    assert "docs_dr on dr: a restore from set 20261120T000000Z collection docs did not finish" in text
    assert "None" not in text
