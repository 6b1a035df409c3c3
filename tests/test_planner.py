"""The planner is pure: manifest + observed + state + now -> Plan. Tested here exhaustively."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from qbr.errors import PlanError
from qbr.manifest import load_manifest_text
from qbr.plan import Plan
from qbr.plan_file import plan_from_dict
from qbr.planner import make_plan, version_refusal
from qbr.records import ArchiveRecord, CollectionRecord, SetRecord, config_digest, set_id_for, utc_iso
from qbr.state import State
from qbr.world import (
    ArchiveObject,
    NodeSnapshot,
    Observed,
    ObservedCluster,
    ObservedCollection,
    ObservedNode,
    ObservedRepository,
    PendingObject,
    ShardReplica,
)

NOW = datetime(2026, 11, 21, 8, 0, 0, tzinfo=timezone.utc)
CONFIG = {"params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1, "replication_factor": 1}}


def manifest(extra: str = "", *, backup: str | None = None, repo: str = "path: /tmp/qbr-test-repo") -> object:
    text = f"""
version: 1
clusters:
  prod: {{url: "http://127.0.0.1:6333"}}
  dr: {{url: "http://127.0.0.2:6333"}}
repositories:
  main:
    {repo}
backups:
  nightly:
{backup or '''    cluster: prod
    repository: main
    collections: ["*", "!tmp_*"]
    rpo: 24h
    only_changed: true'''}
{extra}
"""
    return load_manifest_text(text, "qbr.yaml", Path("/tmp"), env={})


def collection(name: str, points: int = 10, *, shards: int = 1, config: dict | None = None, aliases=(), replicas=()) -> ObservedCollection:
    cfg = config or {**CONFIG, "params": {**CONFIG["params"], "shard_number": shards}}
    return ObservedCollection(
        name=name,
        points_count=points,
        config=cfg,
        config_sha256=config_digest(cfg),
        shard_number=shards,
        replication_factor=1,
        aliases=tuple(aliases),
        replicas=tuple(replicas),
    )


def cluster(name: str, collections: list[ObservedCollection], *, nodes: int = 1, version: str = "1.19.0", others=(), aliases=None) -> ObservedCluster:
    return ObservedCluster(
        name=name,
        nodes=tuple(ObservedNode(f"http://127.0.0.{i + 1}:6333", i + 1, version) for i in range(nodes)),
        distributed=nodes > 1,
        collection_names=tuple(sorted([c.name for c in collections] + list(others))),
        collections={c.name: c for c in collections},
        aliases=dict(aliases or {}),
    )


def set_record(set_id: str, collections: dict[str, ObservedCollection], *, backup: str = "nightly", copied_in: dict | None = None, version="1.19.0") -> SetRecord:
    created = datetime.strptime(set_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    records = {}
    for name, c in collections.items():
        origin = (copied_in or {}).get(name, set_id)
        records[name] = CollectionRecord(
            name=name,
            points_count=c.points_count,
            config=c.config,
            config_sha256=c.config_sha256,
            aliases=c.aliases,
            shard_number=c.shard_number,
            qdrant_version=version,
            copied_in=origin,
            archives=(ArchiveRecord(f"snapshots/{name}/{backup}.{origin}.{name}.snapshot", 100, "ab" * 32, "collection", (0,), "http://127.0.0.1:6333", c.points_count),),
        )
    return SetRecord(backup=backup, set_id=set_id, created=utc_iso(created), cluster="prod", qdrant_version=version, collections=records)


def repository(sets: list[SetRecord], *, extra_archives: dict[str, str] | None = None, presign=False, pending=()) -> ObservedRepository:
    archives = {}
    for s in sets:
        for key in s.archive_keys():
            archives[key] = ArchiveObject(key, 100, s.created)
    for key, modified in (extra_archives or {}).items():
        archives[key] = ArchiveObject(key, 100, modified)
    return ObservedRepository("main", "/tmp/qbr-test-repo", presign, tuple(sets), archives, tuple(pending))


def observed(clusters: list[ObservedCluster], repo: ObservedRepository) -> Observed:
    return Observed({c.name: c for c in clusters}, {"main": repo})


def kinds(p: Plan) -> list[str]:
    return [a.kind for a in p.actions]


# ---------------------------------------------------------------- backups due or not


def test_first_backup_copies_every_selected_collection_and_commits_a_set():
    world = observed([cluster("prod", [collection("docs"), collection("images"), collection("tmp_x")]), cluster("dr", [])], repository([]))
    p = make_plan(manifest(), world, State(), NOW)
    copies = [a for a in p.actions if a.kind == "copy_archive"]
    assert sorted(a.params["collection"] for a in copies) == ["docs", "images"]
    commit = p.action(f"backup.nightly.{set_id_for(NOW)}.commit")
    assert set(commit.depends_on) == {a.id for a in copies}
    assert commit.reason == "this backup has no set yet"
    assert commit.params["created"] == "2026-11-21T08:00:00Z"
    assert all(a.params["kind"] == "collection" and a.params["shard_id"] is None for a in copies)


def test_backup_within_rpo_plans_nothing_and_says_why():
    docs = collection("docs")
    recent = set_record(set_id_for(NOW - timedelta(hours=3)), {"docs": docs})
    world = observed([cluster("prod", [docs]), cluster("dr", [])], repository([recent]))
    p = make_plan(manifest(), world, State(), NOW)
    assert not p.has_changes
    assert any("3h old, within the rpo of 1d" in n.reason for n in p.unchanged)


def test_backup_past_rpo_plans_exactly_one_new_set():
    docs = collection("docs")
    old = set_record(set_id_for(NOW - timedelta(hours=25)), {"docs": docs})
    world = observed([cluster("prod", [docs]), cluster("dr", [])], repository([old]))
    p = make_plan(manifest(), world, State(), NOW)
    assert kinds(p).count("commit_set") == 1
    assert "past the rpo of 1d" in p.action(f"backup.nightly.{set_id_for(NOW)}.commit").reason


def test_only_changed_carries_unchanged_collections_by_reference():
    docs, images = collection("docs", 10), collection("images", 5)
    old = set_record(set_id_for(NOW - timedelta(days=2)), {"docs": docs, "images": images})
    world = observed([cluster("prod", [collection("docs", 11), images]), cluster("dr", [])], repository([old]))
    p = make_plan(manifest(), world, State(), NOW)
    copies = [a.params["collection"] for a in p.actions if a.kind == "copy_archive"]
    assert copies == ["docs"]
    commit = next(a for a in p.actions if a.kind == "commit_set")
    assert list(commit.params["carried"]) == ["images"]
    assert commit.params["carried"]["images"]["copied_in"] == old.set_id
    copy = next(a for a in p.actions if a.kind == "copy_archive")
    assert "10 -> 11 points" in copy.reason


def test_only_changed_copies_again_when_config_changed_or_archive_missing():
    docs = collection("docs", 10)
    changed_cfg = collection("docs", 10, config={**CONFIG, "params": {**CONFIG["params"], "on_disk_payload": True}})
    old = set_record(set_id_for(NOW - timedelta(days=2)), {"docs": docs})
    p = make_plan(manifest(), observed([cluster("prod", [changed_cfg]), cluster("dr", [])], repository([old])), State(), NOW)
    assert "config changed: params.on_disk_payload" in next(a for a in p.actions if a.kind == "copy_archive").reason
    broken_repo = replace(repository([old]), archives={})
    p = make_plan(manifest(), observed([cluster("prod", [docs]), cluster("dr", [])], broken_repo), State(), NOW)
    assert "missing from the repository" in next(a for a in p.actions if a.kind == "copy_archive").reason


def test_without_only_changed_every_collection_is_copied():
    docs = collection("docs")
    old = set_record(set_id_for(NOW - timedelta(days=2)), {"docs": docs})
    m = manifest(backup="    cluster: prod\n    repository: main\n    rpo: 1d")
    p = make_plan(m, observed([cluster("prod", [docs]), cluster("dr", [])], repository([old])), State(), NOW)
    assert [a.reason for a in p.actions if a.kind == "copy_archive"] == ["only_changed is off"]


def test_multi_node_cluster_is_backed_up_shard_by_shard_on_active_replicas_spread_over_nodes():
    replicas = [
        ShardReplica(0, "http://127.0.0.1:6333", "Active"),
        ShardReplica(0, "http://127.0.0.2:6333", "Active"),
        ShardReplica(1, "http://127.0.0.2:6333", "Active"),
        ShardReplica(1, "http://127.0.0.3:6333", "Dead"),
        ShardReplica(2, "http://127.0.0.3:6333", "Active"),
    ]
    docs = collection("docs", shards=3, replicas=replicas)
    p = make_plan(manifest(), observed([cluster("prod", [docs], nodes=3), cluster("dr", [])], repository([])), State(), NOW)
    copies = {a.params["shard_id"]: a.params["node"] for a in p.actions if a.kind == "copy_archive"}
    assert copies == {0: "http://127.0.0.1:6333", 1: "http://127.0.0.2:6333", 2: "http://127.0.0.3:6333"}


def test_a_shard_without_an_active_replica_fails_the_plan_with_a_sentence():
    docs = collection("docs", shards=2, replicas=[ShardReplica(0, "http://127.0.0.1:6333", "Active"), ShardReplica(1, "http://127.0.0.2:6333", "Dead")])
    with pytest.raises(PlanError, match="shard 1 of collection docs has no active replica"):
        make_plan(manifest(), observed([cluster("prod", [docs], nodes=2), cluster("dr", [])], repository([])), State(), NOW)


def test_no_matching_collection_is_a_warning_not_a_set():
    p = make_plan(manifest(), observed([cluster("prod", [collection("tmp_a")]), cluster("dr", [])], repository([])), State(), NOW)
    assert not p.has_changes
    assert "no collection on cluster prod matches" in p.warnings[0]


# ---------------------------------------------------------------- retention and garbage


def test_retention_counts_the_planned_set_and_deletes_after_it_commits():
    docs = collection("docs", 10)
    ids = [set_id_for(NOW - timedelta(days=d)) for d in (3, 2, 1.5)]
    sets = [set_record(i, {"docs": collection("docs", 10 + n)}) for n, i in enumerate(ids)]
    m = manifest(backup="    cluster: prod\n    repository: main\n    rpo: 1d\n    retention: {keep_last: 2}")
    p = make_plan(m, observed([cluster("prod", [docs]), cluster("dr", [])], repository(sets)), State(), NOW)
    deletes = [a for a in p.actions if a.kind == "delete_set"]
    assert sorted(a.params["set_id"] for a in deletes) == sorted(ids[:2])
    commit = next(a for a in p.actions if a.kind == "commit_set")
    assert all(a.depends_on == (commit.id,) for a in deletes)
    assert all("not kept by keep_last 2" in a.reason for a in deletes)
    gc = [a for a in p.actions if a.kind == "delete_archive"]
    assert sorted(a.params["key"] for a in gc) == sorted(k for s in sets[:2] for k in s.archive_keys())
    assert all(set(a.depends_on) == {d.id for d in deletes} for a in gc)


def test_retention_never_deletes_an_archive_a_kept_or_planned_set_still_references():
    docs = collection("docs", 10)
    first = set_record(set_id_for(NOW - timedelta(days=3)), {"docs": docs})
    second = set_record(set_id_for(NOW - timedelta(days=2)), {"docs": docs}, copied_in={"docs": first.set_id})
    m = manifest(backup="    cluster: prod\n    repository: main\n    rpo: 1d\n    only_changed: true\n    retention: {keep_last: 1}")
    p = make_plan(m, observed([cluster("prod", [docs]), cluster("dr", [])], repository([first, second])), State(), NOW)
    assert sorted(a.params["set_id"] for a in p.actions if a.kind == "delete_set") == sorted([first.set_id, second.set_id])
    assert not [a for a in p.actions if a.kind == "delete_archive"], "the new set carries docs' archive"


def test_orphan_archives_wait_for_the_grace_period_and_pending_uploads_are_aborted():
    docs = collection("docs")
    recent = set_record(set_id_for(NOW - timedelta(hours=1)), {"docs": docs})
    repo = repository(
        [recent],
        extra_archives={"snapshots/docs/old-orphan": utc_iso(NOW - timedelta(days=2)), "snapshots/docs/new-orphan": utc_iso(NOW - timedelta(hours=2))},
        pending=[PendingObject("snapshots/docs/x", "u1", utc_iso(NOW - timedelta(days=3))), PendingObject("snapshots/docs/y", "u2", utc_iso(NOW))],
    )
    p = make_plan(manifest(), observed([cluster("prod", [docs]), cluster("dr", [])], repo), State(), NOW)
    assert [a.params["key"] for a in p.actions if a.kind == "delete_archive"] == ["snapshots/docs/old-orphan"]
    assert [a.params["upload_id"] for a in p.actions if a.kind == "abort_upload"] == ["u1"]


def test_empty_retention_deletes_nothing():
    sets = [set_record(set_id_for(NOW - timedelta(days=d)), {"docs": collection("docs", d)}) for d in range(2, 9)]
    p = make_plan(manifest(), observed([cluster("prod", [collection("docs")]), cluster("dr", [])], repository(sets)), State(), NOW)
    assert not [a for a in p.actions if a.kind in ("delete_set", "delete_archive")]


# ---------------------------------------------------------------- restores

RESTORE = """
restores:
  dr-replica:
    from: nightly
    to: dr
    collections: {"docs": "docs_dr", "images": "*"}
    if_exists: replace
"""


def _restore_world(*, dr_collections=(), dr_version="1.19.0", dr_aliases=None, presign=False):
    docs = collection("docs", aliases=("docs_current",))
    images = collection("images")
    s = set_record(set_id_for(NOW - timedelta(hours=2)), {"docs": docs, "images": images})
    return observed(
        [cluster("prod", [docs, images]), cluster("dr", [], others=dr_collections, version=dr_version, aliases=dr_aliases)],
        repository([s], presign=presign),
    ), s


def test_restore_recovers_missing_targets_with_renames_and_their_aliases():
    world, s = _restore_world(presign=True)
    p = make_plan(manifest(RESTORE), world, State(), NOW)
    restores = {a.params["target_collection"]: a for a in p.actions if a.kind == "restore_collection"}
    assert set(restores) == {"docs_dr", "images"}
    assert restores["docs_dr"].params["source_collection"] == "docs"
    assert restores["docs_dr"].params["via"] == "url"
    assert restores["docs_dr"].change == "create"
    assert "100 B" in restores["docs_dr"].title
    aliases = p.action("restore.dr-replica.aliases")
    assert aliases.params["actions"] == [{"create_alias": {"collection_name": "docs_dr", "alias_name": "docs_current"}}]
    assert set(aliases.depends_on) == {a.id for a in restores.values()}


def test_local_repository_restores_go_through_upload():
    world, _ = _restore_world(presign=False)
    p = make_plan(manifest(RESTORE), world, State(), NOW)
    assert {a.params["via"] for a in p.actions if a.kind == "restore_collection"} == {"upload"}


def test_restore_is_idempotent_when_provenance_matches_the_selected_data():
    world, s = _restore_world(dr_collections=("docs_dr", "images"), dr_aliases={"docs_current": "docs_dr"})
    state = State(restores={"dr-replica": {t: {"set_id": s.set_id, "copied_in": s.set_id, "source_collection": src} for t, src in (("docs_dr", "docs"), ("images", "images"))}})
    p = make_plan(manifest(RESTORE), world, state, NOW)
    assert not p.has_changes


def test_at_latest_replica_follows_only_changed_collections_of_a_new_set():
    world, s = _restore_world(dr_collections=("docs_dr", "images"), dr_aliases={"docs_current": "docs_dr"})
    state = State(restores={"dr-replica": {t: {"set_id": s.set_id, "copied_in": s.set_id, "source_collection": src} for t, src in (("docs_dr", "docs"), ("images", "images"))}})
    later = NOW + timedelta(days=1)
    prod = replace(world.clusters["prod"], collections={**world.clusters["prod"].collections, "docs": collection("docs", 99, aliases=("docs_current",))})
    world = replace(world, clusters={**world.clusters, "prod": prod})
    p = make_plan(manifest(RESTORE), world, state, later)
    restores = [a for a in p.actions if a.kind == "restore_collection"]
    assert [a.params["target_collection"] for a in restores] == ["docs_dr"]
    commit = next(a for a in p.actions if a.kind == "commit_set")
    assert restores[0].depends_on == (commit.id,)
    assert restores[0].change == "replace"


def test_restore_at_a_timestamp_picks_the_newest_set_at_or_before_it():
    docs = collection("docs")
    older = set_record("20261101T000000Z", {"docs": docs})
    newer = set_record("20261110T000000Z", {"docs": docs})
    extra = RESTORE.replace("if_exists: replace", "if_exists: replace\n    at: 2026-11-05T00:00:00Z")
    p = make_plan(manifest(extra), observed([cluster("prod", [docs]), cluster("dr", [])], repository([older, newer])), State(), NOW)
    assert {a.params["set_id"] for a in p.actions if a.kind == "restore_collection"} == {older.set_id}
    extra = RESTORE.replace("if_exists: replace", "if_exists: replace\n    at: 2026-10-01T00:00:00Z")
    with pytest.raises(PlanError, match="has no set at or before 2026-10-01T00:00:00Z"):
        make_plan(manifest(extra), observed([cluster("prod", [docs]), cluster("dr", [])], repository([older, newer])), State(), NOW)


def test_a_refused_at_names_when_the_oldest_set_was_taken():
    # A set's id is the moment it was planned; it stands for its first snapshot, which can come a
    # second later. `at:` copied from the id alone then matches nothing: the refusal says why.
    docs = collection("docs")
    taken_later = replace(set_record("20261101T000000Z", {"docs": docs}), created="2026-11-01T00:00:01Z")
    extra = RESTORE.replace("if_exists: replace", "if_exists: replace\n    at: 2026-11-01T00:00:00Z")
    world = observed([cluster("prod", [docs]), cluster("dr", [])], repository([taken_later]))
    with pytest.raises(PlanError, match=r"has no set at or before 2026-11-01T00:00:00Z; its oldest set, "
                                        r"20261101T000000Z, stands for 2026-11-01T00:00:01Z"):
        make_plan(manifest(extra), world, State(), NOW)


def test_a_set_selected_by_a_restore_is_protected_from_retention():
    docs = collection("docs")
    older = set_record("20261101T000000Z", {"docs": docs})
    newer = set_record(set_id_for(NOW - timedelta(hours=1)), {"docs": docs})
    extra = RESTORE.replace("if_exists: replace", "if_exists: replace\n    at: 2026-11-05T00:00:00Z")
    m = manifest(extra, backup="    cluster: prod\n    repository: main\n    retention: {keep_last: 1}")
    p = make_plan(m, observed([cluster("prod", [docs]), cluster("dr", [])], repository([older, newer])), State(), NOW)
    assert not [a for a in p.actions if a.kind == "delete_set"]
    assert any("selected by a restore" in n.reason for n in p.kept)


@pytest.mark.parametrize(
    "made, target, fragment",
    [
        ("1.19.0", "1.18.3", "older than the 1.19.0"),
        ("1.19.2", "1.19.0", "older than the 1.19.2"),
        ("1.17.0", "1.19.0", "more than one minor version newer"),
        ("1.19.0", "2.0.0", "more than one minor version newer"),
    ],
)
def test_version_refusals(made, target, fragment):
    assert fragment in version_refusal(made, target)


@pytest.mark.parametrize("made, target", [("1.19.0", "1.19.0"), ("1.18.3", "1.19.0"), ("1.19.0", "1.19.4")])
def test_version_accepted(made, target):
    assert version_refusal(made, target) is None


def test_restore_into_an_older_qdrant_is_refused_at_plan_time():
    world, _ = _restore_world(dr_version="1.18.3")
    with pytest.raises(PlanError, match="refusing to restore set .* into cluster dr: it runs Qdrant 1.18.3"):
        make_plan(manifest(RESTORE), world, State(), NOW)


def test_if_exists_fail_and_skip():
    world, _ = _restore_world(dr_collections=("images",))
    with pytest.raises(PlanError, match="collection images already exists on cluster dr and if_exists is fail"):
        make_plan(manifest(RESTORE.replace("replace", "fail")), world, State(), NOW)
    p = make_plan(manifest(RESTORE.replace("replace", "skip")), world, State(), NOW)
    assert [a.params["target_collection"] for a in p.actions if a.kind == "restore_collection"] == ["docs_dr"]
    assert any(n.reason == "it exists and if_exists is skip" for n in p.unchanged)


def test_restore_never_overwrites_a_collection_the_manifest_backs_up():
    extra = RESTORE.replace("to: dr", "to: prod").replace('"images": "*"', '"images": "images_copy"').replace('"docs": "docs_dr"', '"docs": "docs_v2"')
    world, _ = _restore_world()
    with pytest.raises(PlanError, match="refusing to restore into collection docs_v2 on cluster prod, because backup nightly backs it up"):
        make_plan(manifest(extra), world, State(), NOW)


def test_aliases_owned_by_others_are_left_alone():
    world, _ = _restore_world(dr_collections=("other",), dr_aliases={"docs_current": "other"})
    p = make_plan(manifest(RESTORE), world, State(), NOW)
    assert not [a for a in p.actions if a.kind == "update_aliases"]
    assert any("which this restore does not own" in n.reason for n in p.unchanged)


# ---------------------------------------------------------------- cleanup, purity, round trip


def test_snapshots_qbr_left_on_a_node_are_cleaned_up():
    docs = replace(collection("docs"), node_snapshots=(NodeSnapshot("http://127.0.0.1:6333", "docs-1-x.snapshot"), NodeSnapshot("http://127.0.0.1:6333", "theirs.snapshot")))
    recent = set_record(set_id_for(NOW - timedelta(hours=1)), {"docs": docs})
    state = State(node_snapshots=[{"cluster": "prod", "node": "http://127.0.0.1:6333", "collection": "docs", "shard_id": None, "name": "docs-1-x.snapshot"}])
    p = make_plan(manifest(), observed([cluster("prod", [docs]), cluster("dr", [])], repository([recent])), state, NOW)
    assert [a.params["name"] for a in p.actions if a.kind == "delete_node_snapshot"] == ["docs-1-x.snapshot"]


def test_plan_is_deterministic_and_round_trips_through_json_and_the_schema():
    world, _ = _restore_world()
    m = manifest(RESTORE)
    first = make_plan(m, world, State(), NOW + timedelta(days=1))
    second = make_plan(m, world, State(), NOW + timedelta(days=1))
    assert first.to_json() == second.to_json()
    again = plan_from_dict(json.loads(first.to_json()))
    assert again == first
    assert again.summary()["create"] == sum(1 for a in first.actions if a.change == "create")


def test_two_sources_restored_into_one_target_are_refused_at_plan_time():
    docs, docs_dr = collection("docs"), collection("docs_dr")
    s = set_record(set_id_for(NOW - timedelta(hours=1)), {"docs": docs, "docs_dr": docs_dr})
    extra = RESTORE.replace('{"docs": "docs_dr", "images": "*"}', '{"docs": "docs_dr", "*": "*"}')
    world = observed([cluster("prod", [docs, docs_dr]), cluster("dr", [])], repository([s]))
    with pytest.raises(PlanError, match="collections docs and docs_dr would both be restored into docs_dr"):
        make_plan(manifest(extra), world, State(), NOW)


def test_a_cluster_storing_snapshots_in_s3_below_1_19_is_warned_about_the_bucket_advisory():
    from dataclasses import replace as _replace

    from qbr.manifest import SnapshotStorage

    m = manifest()
    m = _replace(m, clusters={**m.clusters, "prod": _replace(m.clusters["prod"], snapshot_storage=SnapshotStorage("b"))})
    old = observed([cluster("prod", [collection("docs")], version="1.18.3"), cluster("dr", [])], repository([]))
    new = observed([cluster("prod", [collection("docs")], version="1.19.0"), cluster("dr", [])], repository([]))
    assert any("GHSA-p9c2-9vq2-gxh8" in w for w in make_plan(m, old, State(), NOW).warnings)
    assert not any("GHSA" in w for w in make_plan(m, new, State(), NOW).warnings)
