"""Restores and migrations into another shape, through the CLI: another shard count (a logical copy
from the live source), another replication and HNSW (snapshots, then PATCH), a logical copy
killed midway and resumed, and a live-to-live migration into another vectors storage."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pyrage
import pytest

from qbr.faultpoints import KILL_ENV
from tests.copy_engine import SELECT as COPY_ENGINE
from tests.copy_engine import EmulatorShardReader
from tests.e2e.helpers import all_points, make_collection, qbr, qbr_process, upsert, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

T0 = "2026-11-21T08:00:00Z"
T1 = "2026-11-21T08:20:00Z"
UPSERTS = r"/collections/[^/]+/points$"


def manifest(folder: Path, source, target, restore: str, *, source_name: str = "prod", target_name: str = "big") -> None:
    write_manifest(folder, f"""
version: 1
clusters:
  {source_name}: {{url: "{source.urls[0]}"}}
  {target_name}: {{url: "{target.urls[0]}"}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly: {{cluster: {source_name}, repository: main, rpo: 1h}}
{restore}""")


def provenance(folder: Path, restore: str) -> dict:
    return json.loads((folder / ".qbr" / "state.json").read_text())["restores"][restore]


def replicas_per_shard(cluster, collection: str) -> dict[int, int]:
    """Shard id -> how many nodes hold a replica of it."""
    held: dict[int, int] = {}
    for url in cluster.urls:
        with QdrantClient(url) as client:
            for shard in client.collection_cluster(collection)["local_shards"]:
                held[shard["shard_id"]] = held.get(shard["shard_id"], 0) + 1
    return held


def test_three_shards_on_three_nodes_become_six_shards_replicated_twice_on_six_nodes(emulator, tmp_path):
    prod, big = emulator(nodes=3), emulator(nodes=6)
    make_collection(prod.urls[0], "docs", points=300, shards=3)
    with QdrantClient(prod.urls[0]) as client:
        client.create_payload_index("docs", "n", "integer")
        client.create_payload_index("docs", "tag", "keyword")
        client.update_aliases([{"create_alias": {"collection_name": "docs", "alias_name": "docs_current"}}])
    manifest(tmp_path, prod, big, """restores:
  reshard:
    from: nightly
    to: big
    topology: {shard_number: 6, replication_factor: 2}
    batch_size: 64
    verify_sample: 40
""")
    plan = qbr("plan", "--now", T0, "-o", "plan.json", cwd=tmp_path)
    assert plan.exit_code == 0, plan.output
    assert ("collection docs on cluster big: shard number 3 -> 6, replication factor 1 -> 2: logical copy of ~300 points "
            "from cluster prod collection docs") in plan.stdout
    assert "cluster prod must be reachable while apply runs" in plan.stdout

    run = qbr("apply", "plan.json", "--now", T0, cwd=tmp_path)  # the saved plan, as reviewed
    assert run.exit_code == 0, run.output
    assert all_points(big.urls[0], "docs") == all_points(prod.urls[0], "docs") and len(all_points(big.urls[0], "docs")) == 300
    with QdrantClient(big.urls[0]) as client:
        info = client.collection_info("docs")
        assert (info["config"]["params"]["shard_number"], info["config"]["params"]["replication_factor"]) == (6, 2)
        assert set(info["payload_schema"]) == {"n", "tag"}
        assert dict(client.list_aliases()) == {"docs_current": "docs"}
    assert replicas_per_shard(big, "docs") == {shard: 2 for shard in range(6)}
    assert big.count_requests(path=r"/snapshots/(recover|upload)$") == 0, "no snapshot is recovered"
    restored = provenance(tmp_path, "reshard")["docs"]
    assert {k: restored[k] for k in ("method", "source_cluster", "points_count", "source_points", "sample_checked")} == {
        "method": "logical", "source_cluster": "prod", "points_count": 300, "source_points": 300, "sample_checked": 40,
    }
    assert "incomplete" not in restored and "copy" not in restored

    again = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path)
    assert again.exit_code == 0 and "No changes" in again.stdout, again.output
    assert "copied from cluster prod collection docs" in again.stdout


def test_same_shards_recover_snapshots_then_patch_replication_and_hnsw(emulator, tmp_path):
    prod, dr = emulator(nodes=2), emulator(nodes=2)
    make_collection(prod.urls[0], "docs", points=120, shards=2)
    manifest(tmp_path, prod, dr, """restores:
  replica:
    from: nightly
    to: dr
    topology: {replication_factor: 2}
    storage: {hnsw: {m: 32, ef_construct: 200}}
""", target_name="dr")
    plan = qbr("plan", "--now", T0, cwd=tmp_path)
    assert "with replication factor 1 -> 2, hnsw ef_construct 100 -> 200, hnsw m 16 -> 32" in plan.stdout, plan.output
    assert "recovered as always and the rest is changed in place (PATCH /collections/docs)" in plan.stdout
    assert "logical copy" not in plan.stdout

    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert all_points(dr.urls[0], "docs") == all_points(prod.urls[0], "docs")
    with QdrantClient(dr.urls[0]) as client:
        config = client.collection_info("docs")["config"]
    assert (config["params"]["shard_number"], config["params"]["replication_factor"]) == (2, 2)
    assert (config["hnsw_config"]["m"], config["hnsw_config"]["ef_construct"]) == (32, 200)
    assert replicas_per_shard(dr, "docs") == {0: 2, 1: 2}
    assert dr.count_requests(method="PATCH") == 1
    assert dr.count_requests(method="PUT", path=UPSERTS) == 0, "no point is copied one by one"
    restored = provenance(tmp_path, "replica")["docs"]
    assert restored["method"] == "snapshot" and restored["shape"] == {
        "topology": {"replication_factor": 2}, "storage": {"hnsw": {"m": 32, "ef_construct": 200}}}

    assert "No changes" in qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path).stdout


def test_a_copy_killed_midway_resumes_where_its_journal_says_without_copying_a_batch_twice(emulator, tmp_path):
    prod, big = emulator(nodes=1), emulator(nodes=2)
    make_collection(prod.urls[0], "docs", points=100, shards=1)
    manifest(tmp_path, prod, big, "")
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0  # the set exists
    manifest(tmp_path, prod, big, """restores:
  reshard:
    from: nightly
    to: big
    topology: {shard_number: 2}
    batch_size: 10
""")
    env = {"QBR_LOCK_LEASE": "1"}
    killed = qbr_process("apply", "--auto-approve", "--now", T1, "--parallelism", "1", cwd=tmp_path, env={**env, KILL_ENV: "restore.copy_batch:4"})
    out, err = killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, out + err
    mark = provenance(tmp_path, "reshard")["docs"]
    assert mark["incomplete"] and mark["copy"]["copied"] == 40
    assert mark["copy"]["streams"]["*"] == {"offset": 40, "done": False, "islands": []}
    assert big.count_requests(method="PUT", path=UPSERTS) == 4

    plan = qbr("plan", "--now", T1, cwd=tmp_path, env=env)
    assert "did not finish; it may be incomplete" in plan.stdout, plan.output
    rerun = qbr("apply", "--auto-approve", "--now", T1, "--parallelism", "1", cwd=tmp_path, env=env)
    assert rerun.exit_code == 0, rerun.output
    assert big.count_requests(method="PUT", path=UPSERTS) == 10, "the six batches left, and no journaled one again"
    assert all_points(big.urls[0], "docs") == all_points(prod.urls[0], "docs")
    done = provenance(tmp_path, "reshard")["docs"]
    assert done["points_count"] == done["source_points"] == 100 and "incomplete" not in done


def test_a_live_to_live_migration_into_vectors_on_disk_with_scalar_quantization(emulator, tmp_path):
    old, new = emulator(nodes=2), emulator(nodes=3)
    vectors = {"text": {"size": 4, "distance": "Cosine"}, "image": {"size": 3, "distance": "Dot"}}
    with QdrantClient(old.urls[0]) as client:
        client.create_collection("products", {"params": {"vectors": vectors}}, shard_number=2)
        client.upsert_points("products", [
            {"id": i, "vector": {"text": [i / 100, 0.5, 0.25, 1.0], "image": [1.0, i / 50, 0.5]}, "payload": {"sku": f"p{i}"}}
            for i in range(120)
        ])
        client.create_payload_index("products", "sku", "keyword")
    manifest(tmp_path, old, new, """restores:
  move:
    from: nightly
    to: new
    collections: {products: products_v2}
    method: logical
    storage:
      on_disk: true
      quantization: {scalar: {type: int8, quantile: 0.99, always_ram: true}}
    verify_sample: 30
""", source_name="old", target_name="new")
    plan = qbr("plan", "--now", T0, cwd=tmp_path)
    assert ("collection products_v2 on cluster new: method is logical, vectors image, text on_disk false -> true, "
            "quantization none -> scalar int8: logical copy of ~120 points from cluster old collection products") in plan.stdout, plan.output
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert all_points(new.urls[0], "products_v2") == all_points(old.urls[0], "products")
    assert len(all_points(new.urls[0], "products_v2")) == 120
    with QdrantClient(new.urls[0]) as client:
        info = client.collection_info("products_v2")
    params = info["config"]["params"]
    assert {name: v.get("on_disk") for name, v in params["vectors"].items()} == {"text": True, "image": True}
    assert info["config"]["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
    assert params["shard_number"] == 2 and set(info["payload_schema"]) == {"sku"}
    assert new.count_requests(method="PATCH") == 0, "created in its new shape: nothing to change afterwards"
    moved = provenance(tmp_path, "move")["products_v2"]
    assert moved["sample_checked"] == 30 and moved["source_collection"] == "products"
    assert "No changes" in qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path).stdout


def test_copy_from_archive_reads_the_sets_own_points_offline_into_another_shard_count(emulator, tmp_path):
    prod, big = emulator(nodes=3), emulator(nodes=4)
    make_collection(prod.urls[0], "docs", points=150, shards=3)
    with QdrantClient(prod.urls[0]) as client:
        client.create_payload_index("docs", "n", "integer")
    manifest(tmp_path, prod, big, "")
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0  # the set
    backed_up = all_points(prod.urls[0], "docs")
    with QdrantClient(prod.urls[0]) as client:  # the live collection moves on after the set
        upsert(client, "docs", range(10), tag="after-the-set")
        client.upsert_points("docs", [{"id": 9999, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"tag": "new"}}])
    manifest(tmp_path, prod, big, """restores:
  offline:
    from: nightly
    to: big
    topology: {shard_number: 4, replication_factor: 2}
    copy_from: archive
    batch_size: 20
    verify_sample: 15
""")
    env = {"QBR_COPY_ENGINE": COPY_ENGINE}
    plan = qbr("plan", "--now", T1, cwd=tmp_path, env=env)
    assert "shard number 3 -> 4, replication factor 1 -> 2: logical copy of ~150 points from set " in plan.stdout, plan.output
    assert "archives of collection docs" in plan.stdout and "cluster prod is not needed" in plan.stdout
    reads = prod.count_requests(path=r"/points/scroll$")
    run = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path, env=env)
    assert run.exit_code == 0, run.output
    assert prod.count_requests(path=r"/points/scroll$") == reads, "the source cluster's points are never read"
    assert all_points(big.urls[0], "docs") == backed_up, "the set's points, not the live collection's"
    with QdrantClient(big.urls[0]) as client:
        info = client.collection_info("docs")
    assert (info["config"]["params"]["shard_number"], set(info["payload_schema"])) == (4, {"n"})
    done = provenance(tmp_path, "offline")["docs"]
    assert (done["copy_from"], done["points_count"], done["sample_checked"]) == ("archive", 150, 15)

    without = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path, env={"QBR_COPY_ENGINE": "no_such_module:Reader"})
    assert without.exit_code == 0 and "No changes" in without.stdout  # nothing left to read


def test_copy_from_archive_without_an_engine_stops_in_one_sentence_before_touching_the_target(emulator, tmp_path, monkeypatch):
    monkeypatch.setattr("qbr.apply.archive_reader.ENGINE_MODULE", "qdrant_edge_not_installed")
    prod, big = emulator(nodes=1), emulator(nodes=2)
    make_collection(prod.urls[0], "docs", points=20, shards=1)
    manifest(tmp_path, prod, big, "")
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    manifest(tmp_path, prod, big, "restores:\n  offline: {from: nightly, to: big, method: logical, copy_from: archive}\n")
    run = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path, env={"QBR_COPY_ENGINE": ""})
    assert run.exit_code == 1
    assert "reads the archives with Qdrant's engine, which is not installed here: install qdrant-edge-py" in run.output
    with QdrantClient(big.urls[0]) as client:
        assert client.list_collections() == []


def test_snapshot_restore_with_a_storage_override_ends_with_exactly_that_storage(emulator, tmp_path):
    prod, dr = emulator(nodes=1), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=80, shards=1)
    manifest(tmp_path, prod, dr, """restores:
  replica:
    from: nightly
    to: dr
    storage:
      on_disk: true
      quantization: {scalar: {type: int8, quantile: 0.95, always_ram: true}}
      hnsw: {m: 8}
""", target_name="dr")
    plan = qbr("plan", "--now", T0, cwd=tmp_path)
    assert "vectors on_disk false -> true" in plan.stdout and "quantization none -> scalar int8" in plan.stdout, plan.output
    assert "logical copy" not in plan.stdout

    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert all_points(dr.urls[0], "docs") == all_points(prod.urls[0], "docs")
    with QdrantClient(prod.urls[0]) as client:
        before = client.collection_info("docs")["config"]
    with QdrantClient(dr.urls[0]) as client:
        after = client.collection_info("docs")["config"]
    assert after["params"]["vectors"] == {**before["params"]["vectors"], "on_disk": True}
    assert after["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.95, "always_ram": True}}
    assert after["hnsw_config"] == {**before["hnsw_config"], "m": 8}
    assert {k: after[k] for k in ("optimizer_config", "wal_config")} == {k: before[k] for k in ("optimizer_config", "wal_config")}
    assert dr.count_requests(method="PATCH") == 1 and dr.count_requests(method="PUT", path=UPSERTS) == 0
    assert "No changes" in qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path).stdout


def test_verify_sample_after_a_snapshot_recovery_compares_the_target_with_the_sets_archives(emulator, tmp_path, monkeypatch):
    prod, dr = emulator(nodes=2), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=90, shards=2)
    manifest(tmp_path, prod, dr, "")
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    manifest(tmp_path, prod, dr, "restores:\n  replica: {from: nightly, to: dr, verify_sample: 25}\n", target_name="dr")
    env = {"QBR_COPY_ENGINE": COPY_ENGINE}
    plan = qbr("plan", "--now", T1, cwd=tmp_path, env=env)
    assert plan.exit_code == 0 and "logical copy" not in plan.stdout, plan.output
    assert ("then 25 sampled points are compared by id, vector and payload with the set's archives of collection docs, "
            "read offline with Qdrant's engine (qdrant-edge-py) on this machine") in plan.stdout

    monkeypatch.setattr("qbr.apply.archive_reader.ENGINE_MODULE", "qdrant_edge_not_installed")
    without = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path, env={"QBR_COPY_ENGINE": ""})
    assert without.exit_code == 1 and "Traceback" not in without.output
    assert ("verify_sample compares restored points with the set's archives read with Qdrant's engine, which is not "
            "installed here: install qdrant-edge-py (pip install 'qbr[deep]'), or remove verify_sample") in without.stderr
    with QdrantClient(dr.urls[0]) as client:
        assert client.list_collections() == [], "stopped before the target was touched"
    monkeypatch.undo()

    run = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path, env=env)
    assert run.exit_code == 0, run.output
    assert all_points(dr.urls[0], "docs") == all_points(prod.urls[0], "docs")
    restored = provenance(tmp_path, "replica")["docs"]
    assert (restored["points_count"], restored["sample_checked"]) == (90, 25)
    assert dr.count_requests(method="PUT", path=UPSERTS) == 0, "recovered from snapshots, not copied"
    assert "No changes" in qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path, env=env).stdout


class AlteringReader(EmulatorShardReader):
    """Reads the emulator's archives, with point 7's payload not what the target will hold."""

    def open(self, shard_snapshot, scratch):
        pages = super().open(shard_snapshot, scratch)
        scroll = pages.scroll

        def altered(offset, limit):
            points, after = scroll(offset, limit)
            return [{**p, "payload": {"changed": True}} if p["id"] == 7 else p for p in points], after

        pages.scroll = altered
        return pages


def test_verify_sample_after_a_snapshot_recovery_reports_a_point_that_differs_from_the_archive(emulator, tmp_path):
    prod, dr = emulator(nodes=1), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=12, shards=1)
    manifest(tmp_path, prod, dr, "restores:\n  replica: {from: nightly, to: dr, verify_sample: 12}\n", target_name="dr")
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path, env={"QBR_COPY_ENGINE": f"{__name__}:AlteringReader"})
    assert run.exit_code == 1 and "Traceback" not in run.output
    assert "1 of 12 sampled points of collection docs on cluster dr differ from set " in run.output
    assert "archives of collection docs (ids 7); the restore is not trusted" in run.output
    assert "points_check_failed" in provenance(tmp_path, "replica")["docs"]


@pytest.mark.parametrize("kind", ["encrypted", "dedup"])
def test_copy_from_archive_reads_encrypted_and_deduplicated_archives_with_the_source_down(emulator, tmp_path, kind):
    prod, big = emulator(nodes=2), emulator(nodes=3)
    make_collection(prod.urls[0], "docs", points=70, shards=2)
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "age.key").write_text(f"{identity}\n")
    (tmp_path / "age.key").chmod(0o600)
    repo = (f'{{path: ./repo, encryption: {{recipients: ["{identity.to_public()}"]}}}}' if kind == "encrypted"
            else "{path: ./repo, dedup: true}")
    text = f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
  big: {{url: "{big.urls[0]}"}}
repositories:
  main: {repo}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
"""
    write_manifest(tmp_path, text)
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    backed_up = all_points(prod.urls[0], "docs")
    prod.stop()
    write_manifest(tmp_path, text + """restores:
  offline: {from: nightly, to: big, topology: {shard_number: 3}, copy_from: archive, batch_size: 16, verify_sample: 20}
""")
    env = {"QBR_COPY_ENGINE": COPY_ENGINE, "QBR_AGE_IDENTITY_FILE": str(tmp_path / "age.key")}
    if kind == "encrypted":
        without = qbr("apply", "--auto-approve", "--target", "offline", "--now", T1, cwd=tmp_path,
                      env={**env, "QBR_AGE_IDENTITY_FILE": ""})
        assert without.exit_code == 1 and "Traceback" not in without.output
        assert "is encrypted; restoring it needs the private key of one of its recipients" in without.stderr
        with QdrantClient(big.urls[0]) as client:
            assert client.list_collections() == [], "stopped before the target was touched"
    run = qbr("apply", "--auto-approve", "--target", "offline", "--now", T1, cwd=tmp_path, env=env)
    assert run.exit_code == 0, run.output
    assert all_points(big.urls[0], "docs") == backed_up and len(backed_up) == 70
    done = provenance(tmp_path, "offline")["docs"]
    assert (done["copy_from"], done["points_count"], done["sample_checked"]) == ("archive", 70, 20)
