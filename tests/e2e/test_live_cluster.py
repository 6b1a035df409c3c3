"""A live, real-shaped cluster (issue: correctness on a cluster that is never quiet): in-place
updates, writes during a backup, answers lost after the work was done, custom sharding,
payload indexes, one listed node of a distributed cluster, saved plans applied late."""

from __future__ import annotations

from pathlib import Path

from qbr.manifest import DEFAULT_MANIFEST_PATH, load_manifest
from qbr.repository import open_local_repository
from tests.e2e.helpers import all_points, make_collection, qbr, read_sets, upsert, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plans"
T0 = "2026-11-21T08:00:00Z"
T1 = "2026-11-21T10:00:00Z"  # past a 1h rpo
T2 = "2026-11-21T12:00:00Z"


def backup_and_replica(source, target, folder: Path, *, backup_extra: str = "") -> None:
    write_manifest(folder, f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}"}}
  dr: {{url: "{target.urls[0]}"}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly:
    cluster: prod
    repository: main
    rpo: 1h
{backup_extra}
restores:
  replica:
    from: nightly
    to: dr
    if_exists: replace
""")


def payload_tags(url: str, collection: str) -> set[str]:
    return {payload["tag"] for _, payload in all_points(url, collection).values()}


# ---------------------------------------------------------------- finding 1: in-place updates


def test_the_embedded_default_copies_a_collection_updated_in_place_again(emulator, tmp_path):
    source = emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    env = {"QDRANT_URL": source.urls[0]}
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path, env=env).exit_code == 0
    with QdrantClient(source.urls[0]) as client:
        upsert(client, "docs", range(10), tag="v2")  # same ids, same count, new payloads
    later = qbr("apply", "--auto-approve", "--now", "2026-11-22T09:00:00Z", cwd=tmp_path, env=env)
    assert later.exit_code == 0, later.output
    sets = read_sets(open_local_repository(tmp_path / "qbr-backups"))
    newest = max(sets, key=lambda s: s["set_id"])
    assert len(sets) == 2 and newest["collections"]["docs"]["copied_in"] == newest["set_id"]


def test_in_place_updates_reach_the_replica_when_only_changed_is_left_at_its_default(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    backup_and_replica(source, target, tmp_path)
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    with QdrantClient(source.urls[0]) as client:
        upsert(client, "docs", range(10), tag="v2")  # same ids, same count, new payloads
    second = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path)
    assert second.exit_code == 0, second.output
    newest = max(read_sets_of(tmp_path), key=lambda s: s["set_id"])
    assert newest["collections"]["docs"]["copied_in"] == newest["set_id"]
    assert payload_tags(target.urls[0], "docs") == {"v2"}


def read_sets_of(folder: Path) -> list[dict]:
    return read_sets(open_local_repository(folder / "repo"))


def test_the_embedded_default_and_every_example_leave_only_changed_off(tmp_path):
    paths = [DEFAULT_MANIFEST_PATH, *sorted(EXAMPLES.glob("*.yaml"))]
    for path in paths:
        manifest = load_manifest(str(path), env={"QDRANT_API_KEY": "k", "S3_ENDPOINT": ""})
        assert manifest.backups and not any(b.only_changed for b in manifest.backups.values()), path


def test_only_changed_says_what_it_compared_and_a_reference_older_than_max_reference_age_is_copied(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    backup_and_replica(source, target, tmp_path, backup_extra="    only_changed: true\n    max_reference_age: 3h\n")
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    with QdrantClient(source.urls[0]) as client:
        upsert(client, "docs", range(10), tag="v2")
    plan = qbr("plan", "--now", T1, cwd=tmp_path)
    assert "points count and config unchanged" in plan.stdout and "in-place updates are not detected" in plan.stdout
    assert qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path).exit_code == 0
    assert payload_tags(target.urls[0], "docs") == {"v1"}  # what only_changed trades away, said in the plan
    late = qbr("plan", "--now", T2, cwd=tmp_path)
    assert "past max_reference_age 3h" in late.stdout, late.stdout
    assert qbr("apply", "--auto-approve", "--now", T2, cwd=tmp_path).exit_code == 0
    assert payload_tags(target.urls[0], "docs") == {"v2"}
