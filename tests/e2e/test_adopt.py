"""Adopting what operators already have: snapshot objects in Qdrant's S3 key layout (plus the
scripts' alias CSV) become sets of a backup, copied inside S3, then restore like any other set."""

from __future__ import annotations

from qbr.repository import open_s3_repository
from tests.e2e.helpers import all_points, make_collection, qbr, read_sets, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient
from tests.s3_fixture import s3_client

LATER = "2030-01-01T00:00:00Z"  # the test clock of the applies: after the snapshots' real times


def _snapshot_bytes(url: str, collection: str, shard_id: int | None = None) -> tuple[str, bytes]:
    with QdrantClient(url) as client:
        made = client.create_snapshot(collection, shard_id=shard_id)
        with client.download_snapshot(collection, made.name, shard_id=shard_id) as stream:
            data = b"".join(stream)
        client.delete_snapshot(collection, made.name, shard_id=shard_id)
    return made.name, data


def _holder(cluster, collection: str, shard_id: int) -> str:
    states = cluster.replica_states(collection)[shard_id]
    return cluster.urls[sorted(states)[0]]


def test_a_bucket_left_by_scripts_is_adopted_into_sets_that_restore_every_point_and_alias(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    source, target = emulator(nodes=3), emulator(nodes=2)
    make_collection(source.urls[0], "my-docs", points=12)  # a '-' in the name: names parse from the right
    make_collection(source.urls[0], "notes", points=5)
    make_collection(source.urls[0], "sharded", points=30, shards=3)
    s3 = s3_client(endpoint)
    for collection in ("my-docs", "notes"):
        name, data = _snapshot_bytes(_holder(source, collection, 0), collection)
        s3.put_object(Bucket=bucket, Key=f"snapshots/{collection}/{name}", Body=data)
    for shard_id in range(3):
        name, data = _snapshot_bytes(_holder(source, "sharded", shard_id), "sharded", shard_id)
        s3.put_object(Bucket=bucket, Key=f"snapshots/sharded/shards/{shard_id}/{name}", Body=data)
    s3.put_object(Bucket=bucket, Key="snapshots/notes/notes-not-a-qdrant-name.snapshot", Body=b"junk")
    s3.put_object(Bucket=bucket, Key="snapshots/collections.csv", Body=b"host,collection,snapshot\n")
    (tmp_path / "collection_aliases").write_text("collection,alias\nmy-docs,current\nnotes,memo\n")
    write_manifest(tmp_path, f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}"}}
  dr: {{url: "{target.urls[0]}"}}
repositories:
  main:
    s3: {{bucket: {bucket}, prefix: qbr, endpoint_url: "{endpoint}", region: us-east-1}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 3650d}}
restores:
  replica: {{from: nightly, to: dr, at: "2029-01-01T00:00:00Z", if_exists: replace}}
adopt:
  legacy:
    from: {{s3: {{bucket: {bucket}, prefix: snapshots, endpoint_url: "{endpoint}"}}}}
    into: nightly
    window: 10m
    aliases_csv: ./collection_aliases
""")
    plan = qbr("plan", "--now", LATER, cwd=tmp_path)
    assert plan.exit_code == 0, plan.output
    assert "from 5 snapshots of my-docs, notes, sharded (copied inside S3: 0 bytes through qbr)" in plan.stdout
    assert "not adopted, left where it is: snapshots/notes/notes-not-a-qdrant-name.snapshot" in plan.stdout
    assert "snapshots/collections.csv (not in Qdrant's layout" in plan.stdout
    uploads_before = target.upload_bytes()
    first = qbr("apply", "--auto-approve", "--now", LATER, cwd=tmp_path)
    assert first.exit_code == 0, first.output
    second = qbr("apply", "--auto-approve", "--now", LATER, cwd=tmp_path)  # the restore sees the adopted set now
    assert second.exit_code == 0 and "from 5 snapshots" not in second.stdout, second.output
    third = qbr("apply", "--auto-approve", "--now", LATER, cwd=tmp_path)
    assert third.exit_code == 0 and "No changes" in third.stdout, third.output
    for collection in ("my-docs", "notes", "sharded"):
        assert all_points(target.urls[0], collection) == all_points(source.urls[0], collection)
    with QdrantClient(target.urls[0]) as client:
        assert dict(client.list_aliases()) == {"current": "my-docs", "memo": "notes"}
    assert target.upload_bytes() == uploads_before  # restored by presigned URL, not through qbr
    repo = open_s3_repository(bucket, prefix="qbr", endpoint_url=endpoint)
    adopted = [s for s in read_sets(repo) if any(a.get("adopted_from") for c in s["collections"].values() for a in c["archives"])]
    assert len(adopted) == 1 and adopted[0]["collections"]["my-docs"]["aliases"] == ["current"]
    left = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="snapshots/")["Contents"]}
    assert "snapshots/notes/notes-not-a-qdrant-name.snapshot" in left and len(left) == 7  # nothing deleted
