"""The example manifests the README lists: all valid with no environment set, each doing
what its header says."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from qbr.manifest import load_manifest, load_manifest_text

PLANS = Path(__file__).resolve().parent.parent / "examples" / "plans"
README_LISTS = {"quickstart.yaml", "nightly-s3.yaml", "tiers.yaml", "dr-replica.yaml", "migration.yaml", "qdrant-writes-s3.yaml",
                "s3-compatible.yaml", "reshard.yaml"}


def example(name: str, env: dict[str, str] | None = None):
    return load_manifest(PLANS / name, env=env or {})


def test_the_example_set_is_what_the_readme_lists():
    assert {p.name for p in PLANS.iterdir()} == README_LISTS


@pytest.mark.parametrize("name", sorted(README_LISTS))
def test_example_is_valid_without_environment_and_has_a_header(name):
    manifest = example(name)
    assert manifest.backups
    header = (PLANS / name).read_text().splitlines()[0]
    assert header.startswith("# ") and len(header) > 20


@pytest.mark.parametrize("name", sorted(README_LISTS))
def test_example_api_keys_come_from_the_environment(name):
    text = (PLANS / name).read_text()
    for line in text.splitlines():
        if line.strip().startswith("api_key:"):
            assert "${" in line, line
    keyed = example(name, env={var: "from-env" for var in ("QDRANT_API_KEY", "QDRANT_DR_API_KEY", "OLD_QDRANT_API_KEY", "NEW_QDRANT_API_KEY")})
    assert all(c.api_key == "from-env" for c in keyed.clusters.values())
    assert all(c.api_key is None for c in example(name).clusters.values())


def test_quickstart_keeps_backups_in_a_local_folder():
    m = example("quickstart.yaml")
    [repo] = m.repositories.values()
    assert repo.kind == "path" and repo.path == PLANS / "qbr-backups"
    assert m.state.path == PLANS / ".qbr" / "state.json"
    assert m.clusters["local"].urls == ("http://localhost:6333",)


def test_nightly_s3_uses_s3_with_retention_and_s3_state():
    m = example("nightly-s3.yaml", env={"S3_ENDPOINT": "http://127.0.0.1:9000", "QBR_BUCKET": "b-123"})
    [repo] = m.repositories.values()
    assert (repo.kind, repo.bucket, repo.prefix, repo.endpoint_url) == ("s3", "b-123", "prod", "http://127.0.0.1:9000")
    assert m.state.describe() == "s3://b-123/qbr/state.json"
    nightly = m.backups["nightly"]
    assert nightly.rpo == timedelta(hours=24)
    assert not nightly.retention.is_empty()
    assert nightly.selects("docs") and not nightly.selects("tmp_docs")
    assert example("nightly-s3.yaml").repositories["s3"].endpoint_url is None


def test_tiers_do_not_overlap_and_cover_everything():
    m = example("tiers.yaml")
    rpo = {name: b.rpo for name, b in m.backups.items()}
    assert rpo == {"critical": timedelta(minutes=15), "important": timedelta(hours=1), "rest": timedelta(hours=24)}
    for collection in ["critical_orders", "important_users", "docs", "critical", "important_", "logs_critical_x"]:
        owners = [name for name, b in m.backups.items() if b.selects(collection)]
        assert len(owners) == 1, (collection, owners)
    assert m.backups["critical"].selects("critical_orders")
    assert m.backups["rest"].selects("logs_critical_x")


def test_dr_replica_restores_latest_into_a_second_cluster():
    m = example("dr-replica.yaml")
    [restore] = m.restores.values()
    backup = m.backups[restore.from_backup]
    assert restore.to != backup.cluster
    assert restore.at is None
    assert restore.if_exists == "replace"
    assert restore.target_name("docs") == "docs"


def test_migration_moves_three_listed_nodes_to_one_node_with_renames():
    m = example("migration.yaml")
    old, new = m.clusters["old"], m.clusters["new"]
    assert len(old.urls) == 3 and old.discover is False
    assert len(new.urls) == 1
    [restore] = m.restores.values()
    backup = m.backups[restore.from_backup]
    assert (backup.cluster, restore.to) == ("old", "new")
    assert restore.aliases and backup.aliases
    sources = ["products_v1", "reviews", "users_2023", "users_2024"]
    assert all(backup.selects(s) for s in sources)
    assert [restore.target_name(s) for s in sources] == ["products", "reviews", "customers_2023", "customers_2024"]


def test_the_readme_manifest_is_valid():
    """The manifest a newcomer reads first in the README must itself validate."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## The manifest\s+```yaml\n(.*?)```", readme, re.S)
    assert block is not None, "README has a yaml block under 'The manifest'"
    manifest = load_manifest_text(block.group(1), "README.md", Path("/tmp"), env={"QDRANT_API_KEY": "k"})
    assert set(manifest.backups) == {"nightly"} and set(manifest.restores) == {"dr-replica"}
    assert manifest.restores["dr-replica"].target_name("docs") == "docs_dr"


def test_the_qdrant_writes_to_s3_example_declares_the_nodes_store_and_adopts_the_scripts_snapshots():
    manifest = example("qdrant-writes-s3.yaml")
    store = manifest.clusters["prod"].snapshot_storage
    assert store is not None and (store.bucket, store.prefix) == ("qdrant-snapshots", "snapshots")
    assert manifest.repositories["main"].endpoint_url == store.endpoint_url  # same store: copies stay inside S3
    adoption = manifest.adopt["legacy"]
    assert (adoption.into, adoption.window) == ("nightly", timedelta(minutes=10)) and adoption.aliases_csv is not None


def test_the_s3_compatible_example_reaches_its_store_through_an_endpoint():
    assert example("s3-compatible.yaml").repositories["minio"].endpoint_url == "http://minio:9000"


def test_the_reshard_example_plans_a_logical_copy_into_six_shards_replicated_twice():
    from datetime import datetime, timezone

    from qbr.planner import make_plan
    from qbr.records import ArchiveRecord, CollectionRecord, SetRecord, config_digest
    from qbr.state import State
    from qbr.world import Observed, ObservedCluster, ObservedCollection, ObservedNode, ObservedRepository

    m = example("reshard.yaml")
    [restore] = m.restores.values()
    assert (m.backups[restore.from_backup].cluster, restore.to) == ("old", "new")
    assert (restore.topology.shard_number, restore.topology.replication_factor) == (6, 2)
    assert restore.method == "auto" and restore.verify_sample == 100 and restore.if_exists == "fail"
    config = {"params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 3, "replication_factor": 1},
              "hnsw_config": {"m": 16, "ef_construct": 100}}
    docs = ObservedCollection("docs", 1000, config, config_digest(config), 3, 1, ("docs_live",))

    def nodes(count: int, host: str) -> tuple[ObservedNode, ...]:
        return tuple(ObservedNode(f"http://{host}-{i}:6333", i + 1, "1.19.0") for i in range(count))

    record = SetRecord("old-cluster", "20261120T000000Z", "2026-11-20T00:00:00Z", "old", "1.19.0", {"docs": CollectionRecord(
        "docs", 1000, config, config_digest(config), ("docs_live",), 3, "1.19.0", "20261120T000000Z",
        (ArchiveRecord("snapshots/docs/a.snapshot", 10, "ab" * 32, "collection", (0, 1, 2), "http://old-0:6333", 1000),),
    )})
    world = Observed(
        {"old": ObservedCluster("old", nodes(3, "old"), True, ("docs",), {"docs": docs}, {"docs_live": "docs"}),
         "new": ObservedCluster("new", nodes(6, "new"), True, (), {}, {})},
        {"handover": ObservedRepository("handover", "./reshard-archives", False, (record,), {})},
    )
    plan = make_plan(m, world, State(), datetime(2026, 11, 20, 6, tzinfo=timezone.utc))
    [copy] = [a for a in plan.actions if a.kind == "copy_collection"]
    assert copy.title == ("collection docs on cluster new: shard number 3 -> 6, replication factor 1 -> 2, hnsw ef_construct "
                          "100 -> 128: logical copy of ~1000 points from cluster old collection docs")
    assert (copy.params["shard_number"], copy.params["replication_factor"], copy.params["verify_sample"]) == (6, 2, 100)
    assert plan.action("restore.to-new.aliases").params["actions"] == [
        {"create_alias": {"collection_name": "docs", "alias_name": "docs_live"}}]
