"""Backups end to end, through the CLI, against a 3-node emulator cluster and moto's S3."""

from __future__ import annotations

import json
import time

import pytest

from qbr.repository import open_local_repository, open_s3_repository
from qbr.state_store import StateLock, StateStore
from tests.e2e.helpers import make_collection, qbr, qbr_process, read_sets, sha256_of, upsert, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

T0 = "2026-11-21T08:00:00Z"


def two_repo_manifest(cluster, endpoint: str, bucket: str, *, only_changed: bool = True, rpo: str = "1h") -> str:
    return f"""
version: 1
clusters:
  prod: {{url: "{cluster.urls[0]}"}}
repositories:
  s3main:
    s3: {{bucket: {bucket}, prefix: prod, endpoint_url: "{endpoint}", region: us-east-1}}
  folder:
    path: ./backups
backups:
  to-s3:
    cluster: prod
    repository: s3main
    collections: ["*"]
    rpo: {rpo}
    only_changed: {str(only_changed).lower()}
  to-folder:
    cluster: prod
    repository: folder
    collections: ["*", "!logs"]
    rpo: {rpo}
    only_changed: {str(only_changed).lower()}
"""


def folder_manifest(cluster, *, rpo: str, only_changed: bool = False) -> str:
    """One single-node cluster backed up into ./backups."""
    return f"""
version: 1
clusters: {{prod: {{url: "{cluster.urls[0]}"}}}}
repositories: {{folder: {{path: ./backups}}}}
backups: {{nightly: {{cluster: prod, repository: folder, rpo: {rpo}, only_changed: {str(only_changed).lower()}}}}}
"""


@pytest.fixture
def prod(emulator):
    cluster = emulator(nodes=3)
    make_collection(cluster.urls[0], "docs", points=120, shards=3)
    for name, count in (("images", 40), ("notes", 7), ("logs", 15)):
        make_collection(cluster.urls[0], name, points=count, shards=1)
    return cluster


def _check_repository(repo, cluster) -> list[dict]:
    sets = read_sets(repo)
    for record in sets:
        for name, collection in record["collections"].items():
            assert collection["points_count"] == len(cluster.points(name))
            assert collection["qdrant_version"] == "1.19.0"
            covered = sorted(s for a in collection["archives"] for s in a["shard_ids"])
            assert covered == list(range(collection["shard_number"])), f"every shard of {name} is covered"
            for archive in collection["archives"]:
                data = repo.get_bytes(archive["key"])
                assert len(data) == archive["size"]
                assert sha256_of(data) == archive["sha256"]
    return sets


def test_three_node_cluster_is_backed_up_to_s3_and_a_folder_then_idempotent(prod, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    write_manifest(tmp_path, two_repo_manifest(prod, endpoint, bucket))
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert "Apply complete" in run.stdout

    s3_sets = _check_repository(open_s3_repository(bucket, prefix="prod", endpoint_url=endpoint), prod)
    folder_sets = _check_repository(open_local_repository(tmp_path / "backups"), prod)
    assert len(s3_sets) == 1 and len(folder_sets) == 1
    assert sorted(s3_sets[0]["collections"]) == ["docs", "images", "logs", "notes"]
    assert sorted(folder_sets[0]["collections"]) == ["docs", "images", "notes"]
    assert len(s3_sets[0]["collections"]["docs"]["archives"]) == 3, "one archive per shard of the sharded collection"
    nodes_used = {a["node"] for a in s3_sets[0]["collections"]["docs"]["archives"]}
    assert len(nodes_used) == 3, "each shard's snapshot is taken on a node holding it"

    with QdrantClient(prod.urls[0]) as seed:
        for url in prod.urls:
            with QdrantClient(url) as node:
                for name in seed.list_collections():
                    assert node.list_snapshots(name) == [], f"node-local snapshots of {name} on {url} are deleted"
                    for shard in range(3 if name == "docs" else 1):
                        try:
                            assert node.list_snapshots(name, shard_id=shard) == []
                        except Exception as error:  # the shard is not local to this node
                            assert "not" in str(error).lower()

    again = qbr("plan", "--detailed-exitcode", "--now", "2026-11-21T08:30:00Z", cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert "No changes" in again.stdout

    later = qbr("plan", "--json", "--detailed-exitcode", "--now", "2026-11-21T09:01:00Z", cwd=tmp_path)
    assert later.exit_code == 2, later.output
    plan = json.loads(later.stdout)
    commits = [a for a in plan["actions"] if a["kind"] == "commit_set"]
    assert sorted(a["params"]["backup"] for a in commits) == ["to-folder", "to-s3"], "exactly one new set per backup"
    assert all(a["kind"] == "commit_set" for a in plan["actions"]), "only_changed: nothing changed, nothing copied"

    state = json.loads((tmp_path / ".qbr" / "state.json").read_text())
    assert state["format_version"] == 1 and state["serial"] >= 1 and state["lineage"]
    assert all(entry["status"] == "done" for entry in state["journal"])
    assert state["node_snapshots"] == []
    assert (tmp_path / ".qbr" / "state.json").stat().st_mode & 0o777 == 0o600


def test_apply_twice_creates_exactly_one_set(emulator, tmp_path):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=30)
    write_manifest(tmp_path, folder_manifest(cluster, rpo="24h"))
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    second = qbr("apply", "--auto-approve", cwd=tmp_path)
    assert second.exit_code == 0, second.output
    assert "No changes" in second.stdout
    assert len(list((tmp_path / "backups" / "sets" / "nightly").iterdir())) == 1


def test_only_changed_copies_the_changed_collection_and_references_the_others(emulator, tmp_path):
    cluster = emulator(nodes=1)
    for name in ("docs", "images", "notes"):
        make_collection(cluster.urls[0], name, points=20)
    write_manifest(tmp_path, folder_manifest(cluster, rpo="1h", only_changed=True))
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    with QdrantClient(cluster.urls[0]) as client:
        upsert(client, "images", range(20, 25))
    run = qbr("apply", "--auto-approve", "--now", "2026-11-21T10:00:00Z", cwd=tmp_path)
    assert run.exit_code == 0, run.output
    repo = open_local_repository(tmp_path / "backups")
    first, second = sorted(read_sets(repo), key=lambda s: s["set_id"])
    assert second["collections"]["images"]["copied_in"] == second["set_id"]
    assert second["collections"]["images"]["points_count"] == 25
    for name in ("docs", "notes"):
        assert second["collections"][name]["copied_in"] == first["set_id"]
        assert second["collections"][name]["archives"] == first["collections"][name]["archives"]
    assert len(list(repo.list("snapshots/"))) == 4, "three archives from the first set, one new"


def test_a_saved_plan_made_stale_by_another_apply_is_refused_and_a_fresh_one_applies(emulator, tmp_path):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=10)
    write_manifest(tmp_path, folder_manifest(cluster, rpo="1h"))
    saved = qbr("plan", "-o", "stale.json", "--now", T0, cwd=tmp_path)
    assert saved.exit_code == 0 and (tmp_path / "stale.json").stat().st_mode & 0o777 == 0o600
    shown = qbr("show", "stale.json", cwd=tmp_path)
    assert "+ set" in shown.stdout and "Plan: 2 to create" in shown.stdout
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    refused = qbr("apply", "stale.json", "--now", T0, cwd=tmp_path)  # young enough: the serial is what refuses it
    assert refused.exit_code == 1
    assert "the state changed since this plan was made" in refused.stderr and "run qbr plan again" in refused.stderr
    assert "Traceback" not in refused.output

    fresh = qbr("plan", "-o", "fresh.json", "--now", "2026-11-21T09:30:00Z", cwd=tmp_path)
    assert fresh.exit_code == 0
    applied = qbr("apply", "fresh.json", "--now", "2026-11-21T09:31:00Z", cwd=tmp_path)
    assert applied.exit_code == 0, applied.output
    assert len(list((tmp_path / "backups" / "sets" / "nightly").iterdir())) == 2

    (tmp_path / "qbr.yaml").write_text((tmp_path / "qbr.yaml").read_text().replace("rpo: 1h", "rpo: 2h"))
    qbr("plan", "-o", "edited.json", "--now", "2026-11-22T09:30:00Z", cwd=tmp_path)
    (tmp_path / "qbr.yaml").write_text((tmp_path / "qbr.yaml").read_text().replace("rpo: 2h", "rpo: 3h"))
    changed = qbr("apply", "edited.json", "--now", "2026-11-22T09:31:00Z", cwd=tmp_path)
    assert changed.exit_code == 1 and "manifest" in changed.stderr and "changed since this plan" in changed.stderr


def test_two_applies_started_together_one_runs_the_other_fails_naming_the_holder(emulator, tmp_path):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=10)
    cluster.nodes[0].faults.add(method="POST", path=r"/collections/docs/snapshots$", latency=3.0, times=None)
    write_manifest(tmp_path, folder_manifest(cluster, rpo="1h"))
    first = qbr_process("apply", "--auto-approve", "--lock-timeout", "1s", cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not (tmp_path / ".qbr" / "state.json.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = qbr_process("apply", "--auto-approve", "--lock-timeout", "1s", cwd=tmp_path)
    out2, err2 = second.communicate(timeout=60)
    out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 4, out2 + err2  # a lock error has its own exit code
    assert "is locked by" in err2 and "pid" in err2 and "force-unlock" in err2
    assert "Traceback" not in err2
    assert not (tmp_path / ".qbr" / "state.json.lock").exists(), "the lock is released"
    assert len(list((tmp_path / "backups" / "sets" / "nightly").iterdir())) == 1


def test_force_unlock_removes_a_dead_holders_lock_and_expired_leases_are_taken_over(emulator, tmp_path, monkeypatch):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=10)
    write_manifest(tmp_path, folder_manifest(cluster, rpo="1h"))
    from qbr.manifest import load_manifest

    store = StateStore(load_manifest(tmp_path / "qbr.yaml").state)
    dead = StateLock(store, "apply")
    dead.acquire(0)
    dead._stop.set()  # a holder that died: nobody renews, nobody releases
    lock_id = dead.info.id
    blocked = qbr("apply", "--auto-approve", "--lock-timeout", "0s", cwd=tmp_path)
    assert blocked.exit_code == 4 and lock_id in blocked.stderr
    wrong = qbr("force-unlock", "not-the-id", "--yes", cwd=tmp_path)
    assert wrong.exit_code == 4 and lock_id in wrong.stderr
    unlocked = qbr("force-unlock", lock_id, "--yes", cwd=tmp_path)
    assert unlocked.exit_code == 0 and "Removed the lock" in unlocked.stdout
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0

    monkeypatch.setenv("QBR_LOCK_LEASE", "1")
    expired = StateLock(store, "apply")
    expired.acquire(0)
    expired._stop.set()
    time.sleep(1.2)
    taken = qbr("apply", "--auto-approve", "--now", "2026-11-21T10:00:00Z", cwd=tmp_path, env={"QBR_LOCK_LEASE": "30"})
    assert taken.exit_code == 0, taken.output
    assert "took over the state lock held by" in taken.stderr and expired.info.id in taken.stderr


def test_the_readme_main_job_backs_up_qdrant_url_into_a_folder_with_the_embedded_default(emulator, tmp_path):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=12)
    env = {"QDRANT_URL": cluster.urls[0]}
    first = qbr("apply", "--auto-approve", cwd=tmp_path, env=env)
    assert first.exit_code == 0, first.output
    assert "embedded default manifest" in first.stderr
    sets = list((tmp_path / "qbr-backups" / "sets" / "default").iterdir())
    assert len(sets) == 1
    second = qbr("apply", "--auto-approve", cwd=tmp_path, env=env)
    assert second.exit_code == 0 and "No changes" in second.stdout
    status = qbr("status", cwd=tmp_path, env=env)
    assert status.exit_code == 0 and "backup default: OK" in status.stdout
