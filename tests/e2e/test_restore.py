"""Restores end to end: n source nodes -> x target nodes, renames, aliases, replicas, refusals."""

from __future__ import annotations

import json

import pytest

from qbr.repository import open_local_repository
from tests.e2e.helpers import all_points, make_collection, qbr, read_sets, upsert, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

T0 = "2026-11-21T08:00:00Z"


def manifest_text(source, targets: dict, repo_yaml: str, restores: str, *, only_changed=True) -> str:
    clusters = "\n".join(f'  {name}: {{url: "{c.urls[0]}"}}' for name, c in {"prod": source, **targets}.items())
    return f"""
version: 1
clusters:
{clusters}
repositories:
  main:
    {repo_yaml}
backups:
  nightly:
    cluster: prod
    repository: main
    rpo: 1h
    only_changed: {str(only_changed).lower()}
restores:
{restores}
"""


@pytest.fixture
def prod3(emulator):
    """A 3-node source: docs sharded over all nodes, two single-shard collections, aliases."""
    cluster = emulator(nodes=3)
    make_collection(cluster.urls[0], "docs", points=150, shards=3)
    make_collection(cluster.urls[0], "images", points=40)
    make_collection(cluster.urls[0], "notes", points=9)
    with QdrantClient(cluster.urls[0]) as client:
        client.update_aliases([
            {"create_alias": {"collection_name": "docs", "alias_name": "docs_current"}},
            {"create_alias": {"collection_name": "images", "alias_name": "pics"}},
        ])
    return cluster


def s3_repo_yaml(s3_bucket) -> str:
    endpoint, bucket = s3_bucket
    return f's3: {{bucket: {bucket}, prefix: p, endpoint_url: "{endpoint}", region: us-east-1}}'


def restore_block(name: str, to: str, collections: str = '{"docs": "docs_dr", "images": "*", "notes": "*"}', if_exists="replace", extra="") -> str:
    return f"""  {name}:
    from: nightly
    to: {to}
    collections: {collections}
    if_exists: {if_exists}
{extra}"""


def assert_same_points(source_url, source_name, target_url, target_name):
    expected = all_points(source_url, source_name)
    got = all_points(target_url, target_name)
    assert len(got) == len(expected) > 0
    assert got == expected


def test_three_nodes_restore_onto_one_node_with_a_rename_and_aliases_then_nothing(prod3, emulator, s3_bucket, tmp_path):
    dr = emulator(nodes=1)
    write_manifest(tmp_path, manifest_text(prod3, {"dr": dr}, s3_repo_yaml(s3_bucket), restore_block("to-dr", "dr")))
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    for source, target in (("docs", "docs_dr"), ("images", "images"), ("notes", "notes")):
        assert_same_points(prod3.urls[0], source, dr.urls[0], target)
    with QdrantClient(dr.urls[0]) as client:
        assert dict(client.list_aliases()) == {"docs_current": "docs_dr", "pics": "images"}
        assert client.list_snapshots("docs_dr") == [], "nothing left in the target's snapshot folder"
    recover_calls = [r for r in dr.nodes[0].requests if r[1].endswith("/recover")]
    assert recover_calls and all(r[0] == "PUT" for r in recover_calls), "S3 repositories restore from presigned URLs"
    state = json.loads((tmp_path / ".qbr" / "state.json").read_text())
    provenance = state["restores"]["to-dr"]
    assert set(provenance) == {"docs_dr", "images", "notes"}
    assert provenance["docs_dr"]["source_collection"] == "docs"
    assert "X-Amz-Signature" not in (tmp_path / ".qbr" / "state.json").read_text()
    assert "X-Amz-Signature" not in run.output

    again = qbr("apply", "--auto-approve", "--now", "2026-11-21T08:20:00Z", cwd=tmp_path)
    assert again.exit_code == 0 and "No changes" in again.stdout, again.output


def test_same_set_onto_two_nodes_and_a_one_node_set_onto_three_nodes(prod3, emulator, s3_bucket, tmp_path):
    two = emulator(nodes=2)
    write_manifest(tmp_path, manifest_text(prod3, {"two": two}, s3_repo_yaml(s3_bucket), restore_block("to-two", "two", '{"*": "*"}')))
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    for name in ("docs", "images", "notes"):
        assert_same_points(prod3.urls[0], name, two.urls[0], name)
    with QdrantClient(two.urls[0]) as client:
        assert client.collection_info("docs")["config"]["params"]["shard_number"] == 3

    single = emulator(nodes=1)
    make_collection(single.urls[0], "docs", points=80, shards=2)
    three = emulator(nodes=3)
    other = tmp_path / "other"
    other.mkdir()
    write_manifest(other, manifest_text(single, {"three": three}, "path: ./backups", restore_block("to-three", "three", '{"*": "*"}')))
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=other)
    assert run.exit_code == 0, run.output
    assert_same_points(single.urls[0], "docs", three.urls[0], "docs")
    uploads = [r for n in three.nodes for r in n.requests if r[1].endswith("/snapshots/upload")]
    assert uploads, "a local-folder repository restores through the upload endpoint"


def test_at_latest_replica_re_recovers_exactly_the_changed_collections(prod3, emulator, s3_bucket, tmp_path):
    dr = emulator(nodes=1)
    write_manifest(tmp_path, manifest_text(prod3, {"dr": dr}, s3_repo_yaml(s3_bucket), restore_block("replica", "dr")))
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    with QdrantClient(prod3.urls[0]) as client:
        upsert(client, "images", range(40, 55), tag="v2")
    plan = qbr("plan", "--json", "--now", "2026-11-21T09:30:00Z", cwd=tmp_path)
    actions = json.loads(plan.stdout)["actions"]
    restores = [a["params"]["target_collection"] for a in actions if a["kind"] == "restore_collection"]
    assert restores == ["images"]
    run = qbr("apply", "--auto-approve", "--now", "2026-11-21T09:30:00Z", cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert_same_points(prod3.urls[0], "images", dr.urls[0], "images")
    assert len(all_points(dr.urls[0], "images")) == 55


def test_restores_from_a_local_folder_go_through_upload_with_the_same_points(emulator, tmp_path):
    prod = emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=60)
    dr = emulator(nodes=1)
    write_manifest(tmp_path, manifest_text(prod, {"dr": dr}, "path: ./backups", restore_block("to-dr", "dr", '{"docs": "docs_copy"}')))
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert_same_points(prod.urls[0], "docs", dr.urls[0], "docs_copy")
    uploads = [r for r in dr.nodes[0].requests if r[1].endswith("/snapshots/upload")]
    assert uploads and all(r[2].get("priority") == "snapshot" and len(r[2].get("checksum", "")) == 64 for r in uploads)
    with QdrantClient(dr.urls[0]) as client:
        assert client.list_snapshots("docs_copy") == [], "the uploaded copy Qdrant keeps is deleted"


def test_restore_into_an_older_qdrant_is_refused_with_a_sentence(emulator, tmp_path):
    prod = emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=5)
    old = emulator(nodes=1, version="1.18.3")
    write_manifest(tmp_path, manifest_text(prod, {"old": old}, "path: ./backups", restore_block("to-old", "old")))
    run = qbr("plan", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 1
    assert "refusing to restore set" in run.stderr and "into cluster old: it runs Qdrant 1.18.3, older than the 1.19.0" in run.stderr
    assert "Traceback" not in run.output


def test_restore_over_a_source_collection_is_refused(emulator, tmp_path):
    prod = emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=5)
    make_collection(prod.urls[0], "docs_v2", points=5)
    write_manifest(tmp_path, manifest_text(prod, {}, "path: ./backups", restore_block("back", "prod", '{"docs": "docs_v2"}')))
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 1
    run = qbr("plan", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 1
    assert "refusing to restore into collection docs_v2 on cluster prod, because backup nightly backs it up" in run.stderr


def test_a_damaged_archive_is_refused_and_nothing_is_restored(emulator, tmp_path):
    prod = emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=30)
    dr = emulator(nodes=1)
    m = manifest_text(prod, {"dr": dr}, "path: ./backups", "")
    write_manifest(tmp_path, m.replace("restores:\n", ""))
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    repo = open_local_repository(tmp_path / "backups")
    archive = read_sets(repo)[0]["collections"]["docs"]["archives"][0]["key"]
    path = tmp_path / "backups" / archive
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    write_manifest(tmp_path, manifest_text(prod, {"dr": dr}, "path: ./backups", restore_block("to-dr", "dr", '{"docs": "docs_dr"}')))
    run = qbr("apply", "--auto-approve", "--now", "2026-11-21T08:10:00Z", cwd=tmp_path)
    assert run.exit_code == 1
    assert "checksum" in run.stderr.lower() or "sha256" in run.stderr.lower()
    with QdrantClient(dr.urls[0]) as client:
        assert not client.collection_exists("docs_dr")


def test_a_bulk_restore_that_stops_halfway_resumes_where_it_stopped(emulator, tmp_path):
    prod = emulator(nodes=1)
    names = [f"c{i:02d}" for i in range(30)]
    for name in names:
        make_collection(prod.urls[0], name, points=3)
    dr = emulator(nodes=1)
    # Collections c15..c29 cannot be recovered on the first run (the node answers 500 for them).
    dr.nodes[0].faults.add(method="POST", path=r"/collections/c(1[5-9]|2[0-9])/snapshots/upload", status=500, times=None)
    write_manifest(tmp_path, manifest_text(prod, {"dr": dr}, "path: ./backups", restore_block("bulk", "dr", '{"*": "*"}')))
    first = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert first.exit_code == 1
    assert "15 failed" in first.stdout
    state = json.loads((tmp_path / ".qbr" / "state.json").read_text())
    assert sorted(state["restores"]["bulk"]) == names[:15], "each restored collection is journaled as it finishes"
    dr.nodes[0].faults.clear()
    before = len(dr.nodes[0].requests)
    plan = json.loads(qbr("plan", "--json", "--now", T0, cwd=tmp_path).stdout)
    assert sorted(a["params"]["target_collection"] for a in plan["actions"] if a["kind"] == "restore_collection") == names[15:]
    second = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert second.exit_code == 0, second.output
    uploads = [r for r in dr.nodes[0].requests[before:] if r[1].endswith("/snapshots/upload")]
    assert sorted(r[1].split("/")[2] for r in uploads) == names[15:], "only the missing half is recovered again"
    for name in names:
        assert all_points(dr.urls[0], name) == all_points(prod.urls[0], name)


def test_replace_over_an_incompatible_collection_recreates_it(emulator, tmp_path):
    prod = emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=25)
    dr = emulator(nodes=1)
    make_collection(dr.urls[0], "docs_dr", points=3, dim=8)
    write_manifest(tmp_path, manifest_text(prod, {"dr": dr}, "path: ./backups", restore_block("to-dr", "dr", '{"docs": "docs_dr"}')))
    plan = json.loads(qbr("plan", "--json", "--now", T0, cwd=tmp_path).stdout)
    (restore,) = [a for a in plan["actions"] if a["kind"] == "restore_collection"]
    assert restore["change"] == "replace" and "was not restored by qbr, and if_exists is replace" in restore["reason"]
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert_same_points(prod.urls[0], "docs", dr.urls[0], "docs_dr")
