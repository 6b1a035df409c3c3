"""A cluster whose nodes write their snapshots to S3 themselves (Qdrant's S3 snapshot storage):
backups into an S3 repository on the same store move no archive byte through qbr, and the sets
are retained, verified and restored like any other."""

from __future__ import annotations

from tests.e2e.helpers import all_points, make_collection, qbr, write_manifest
from tests.s3_fixture import s3_client

T0, T1 = "2026-11-21T08:00:00Z", "2026-11-21T10:00:00Z"


def _manifest(folder, source, target, endpoint: str, bucket: str) -> None:
    write_manifest(folder, f"""
version: 1
clusters:
  prod:
    url: "{source.urls[0]}"
    snapshot_storage:
      s3: {{bucket: {bucket}, prefix: snapshots, endpoint_url: "{endpoint}", region: us-east-1}}
  dr: {{url: "{target.urls[0]}"}}
repositories:
  main:
    s3: {{bucket: {bucket}, prefix: qbr, endpoint_url: "{endpoint}", region: us-east-1}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h, retention: {{keep_last: 1}}}}
restores:
  replica: {{from: nightly, to: dr, if_exists: replace}}
""")


def _keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_cluster_writing_to_s3_is_backed_up_retained_verified_and_restored_with_zero_bytes_through_qbr(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    store = {"bucket": bucket, "endpoint_url": endpoint, "prefix": "snapshots", "region": "us-east-1"}
    source, target = emulator(nodes=3, snapshots_s3=store), emulator(nodes=2)
    make_collection(source.urls[0], "docs", points=60, shards=3)
    make_collection(source.urls[0], "notes", points=9)
    _manifest(tmp_path, source, target, endpoint, bucket)
    plan = qbr("plan", "--now", T0, cwd=tmp_path)
    assert plan.exit_code == 0 and plan.stdout.count("(server-side: 0 bytes through qbr)") == 4, plan.output
    first = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert first.exit_code == 0, first.output
    second = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path)  # a new set; retention drops the first
    assert second.exit_code == 0, second.output
    assert source.download_bytes() == 0 and target.upload_bytes() == 0  # no archive byte through qbr
    for collection in ("docs", "notes"):
        assert all_points(target.urls[0], collection) == all_points(source.urls[0], collection)
    assert _keys(endpoint, bucket, "snapshots/") == []  # Qdrant's own copies deleted through its API
    sets = _keys(endpoint, bucket, "qbr/sets/")
    archives = _keys(endpoint, bucket, "qbr/snapshots/")
    assert len(sets) == 1 and len(archives) == 4 and all("20261121T100000Z" in k for k in archives)
    verified = qbr("verify", "--deep", cwd=tmp_path, env={"QBR_DEEP_ENGINE": "tests.verify_engine:EmulatorPointCounter"})
    assert verified.exit_code == 0, verified.output


def test_a_cluster_whose_s3_settings_are_ignored_is_named_in_one_sentence(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    store = {"bucket": bucket, "endpoint_url": endpoint, "prefix": "snapshots", "region": "us-east-1"}
    source, target = emulator(nodes=1, snapshots_s3=store, snapshots_s3_broken=True), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=5)
    _manifest(tmp_path, source, target, endpoint, bucket)
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 1
    assert "wrote docs-" in run.output and "elsewhere (Qdrant falls back to its local disk when its S3 settings are wrong)" in run.output
