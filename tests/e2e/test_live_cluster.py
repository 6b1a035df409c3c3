"""A live, real-shaped cluster (issue: correctness on a cluster that is never quiet): in-place
updates, writes during a backup, answers lost after the work was done, custom sharding,
payload indexes, one listed node of a distributed cluster, saved plans applied late."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx

from qbr.manifest import DEFAULT_MANIFEST_PATH, load_manifest
from qbr.repository import open_local_repository
from tests.e2e.helpers import all_points, make_collection, qbr, read_sets, upsert, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plans"
T0 = "2026-11-21T08:00:00Z"
T1 = "2026-11-21T10:00:00Z"  # past a 1h rpo
T2 = "2026-11-21T12:00:00Z"


def backup_and_replica(source, target, folder: Path, *, backup_extra: str = "", repo: str = "{path: ./repo}",
                       prod_extra: str = "") -> None:
    write_manifest(folder, f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}"{prod_extra}}}
  dr: {{url: "{target.urls[0]}"}}
repositories:
  main: {repo}
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


# ---------------------------------------------------------------- finding 2: writes during a backup


def _write_when(cluster, method: str, path: str, action) -> threading.Thread:
    """Run `action` as soon as `cluster` has received a request (`method`, `path` regex)."""

    def watch() -> None:
        deadline = time.monotonic() + 20
        while cluster.count_requests(method=method, path=path) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_write_between_the_count_and_the_snapshot_does_not_make_the_set_unrestorable(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    backup_and_replica(source, target, tmp_path)
    # The snapshot request waits a moment before Qdrant takes its view; 5 points land meanwhile.
    source.nodes[0].faults.add(method="POST", path=r"/collections/docs/snapshots$", latency=0.6)
    writer = _write_when(source, "POST", r"/collections/docs/snapshots$",
                         lambda: make_collection(source.urls[0], "docs", points=5, start=10))
    first = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    writer.join(5)
    assert first.exit_code == 0, first.output
    assert len(all_points(target.urls[0], "docs")) == 15  # the archive holds the write
    record = read_sets_of(tmp_path)[0]["collections"]["docs"]
    assert record["points_range"] == [10, 15]
    again = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert again.exit_code == 0 and "No changes" in again.stdout, again.output


def test_a_count_the_record_cannot_explain_fails_once_and_is_not_retried_blindly(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    backup_and_replica(source, target, tmp_path)
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    # A set whose record disagrees with its archive (edited, or made by a buggy writer).
    sets = tmp_path / "repo" / "sets" / "nightly"
    [path] = sets.iterdir()
    data = json.loads(path.read_text())
    data["set_id"] = "20261121T090000Z"
    data["created"] = "2026-11-21T09:00:00Z"
    data["collections"]["docs"]["points_count"] = 99
    data["collections"]["docs"]["points_range"] = [99, 99]
    data["collections"]["docs"]["copied_in"] = "20261121T090000Z"
    (sets / "20261121T090000Z.json").write_text(json.dumps(data))
    failed = qbr("apply", "--auto-approve", "--now", "2026-11-21T09:30:00Z", cwd=tmp_path)
    assert failed.exit_code == 1
    assert "has 10 points, but set 20261121T090000Z recorded 99" in failed.output
    after = qbr("plan", "--now", "2026-11-21T09:40:00Z", cwd=tmp_path)
    assert after.exit_code == 0 and "No changes" in after.stdout, after.output
    assert "did not pass its points check" in after.stdout
    status = qbr("status", "--now", "2026-11-21T09:40:00Z", cwd=tmp_path)
    assert "docs on dr: NOT TRUSTED: restored collection docs on cluster dr has 10 points" in status.stdout


# ---------------------------------------------------------------- finding 3: answers lost after the work


def _node_snapshots(cluster, collection: str) -> list[str]:
    with QdrantClient(cluster.urls[0]) as client:
        return [s.name for s in client.list_snapshots(collection)]


def test_a_create_whose_answer_was_lost_is_adopted_and_no_snapshot_is_left_on_the_node(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    backup_and_replica(source, target, tmp_path)
    source.nodes[0].faults.add(method="POST", path=r"/collections/docs/snapshots$", after_work="reset")
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert source.count_requests(method="POST", path=r"^/collections/docs/snapshots$") == 1
    assert _node_snapshots(source, "docs") == []  # the one Qdrant made was adopted, stored, deleted
    assert len(all_points(target.urls[0], "docs")) == 10


def test_a_create_whose_answer_hangs_past_the_timeout_is_adopted(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    backup_and_replica(source, target, tmp_path, prod_extra=", snapshot_timeout: 1s")
    source.nodes[0].faults.add(method="POST", path=r"/collections/docs/snapshots$", after_work="hang", hold=3.0)
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert source.count_requests(method="POST", path=r"^/collections/docs/snapshots$") == 1
    assert _node_snapshots(source, "docs") == []


def test_a_recover_whose_answer_was_lost_is_waited_out_and_never_overlapped(emulator, tmp_path, s3_bucket):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    endpoint, bucket = s3_bucket
    backup_and_replica(source, target, tmp_path,
                       repo=f'{{s3: {{bucket: {bucket}, prefix: p, endpoint_url: "{endpoint}", region: us-east-1}}}}')
    overlaps: list[int] = []
    target.nodes[0].recover_latency = 1.0
    target.nodes[0].during_recover(lambda node, collection, shard: overlaps.append(
        node.activity.telemetry()[0]["running_snapshot_recovery"]), times=None)
    target.nodes[0].faults.add(method="PUT", path=r"/collections/docs/snapshots/recover$", after_work="reset")
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert overlaps and max(overlaps) == 1  # never two recovers of docs at once
    assert len(all_points(target.urls[0], "docs")) == 10


# ---------------------------------------------------------------- finding 6: one listed node of a distributed cluster


def test_one_listed_node_of_a_distributed_cluster_is_refused_in_one_sentence(emulator, tmp_path):
    source = emulator(nodes=3)
    make_collection(source.urls[0], "docs", points=60, shards=3)
    write_manifest(tmp_path, f"""
version: 1
clusters:
  prod: {{nodes: ["{source.urls[0]}"]}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
""")
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, run.stderr
    assert "held only by nodes the manifest does not list" in errors[0] and "shard" in errors[0]
    assert not (tmp_path / "repo" / "sets").exists()


def test_a_distributed_cluster_with_every_node_listed_is_backed_up_shard_by_shard(emulator, tmp_path):
    source = emulator(nodes=3)
    make_collection(source.urls[0], "docs", points=60, shards=3)
    nodes = ", ".join(f'"{u}"' for u in source.urls)
    write_manifest(tmp_path, f"""
version: 1
clusters:
  prod: {{nodes: [{nodes}]}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
""")
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    archives = read_sets_of(tmp_path)[0]["collections"]["docs"]["archives"]
    assert sorted(a["shard_ids"] for a in archives) == [[0], [1], [2]] and {a["kind"] for a in archives} == {"shard"}


# ---------------------------------------------------------------- findings 4 and 5: shard keys, payload indexes


def _restore_only(source, target, folder: Path) -> None:
    write_manifest(folder, f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}"}}
  dr: {{url: "{target.urls[0]}"}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
restores:
  replica: {{from: nightly, to: dr, if_exists: replace}}
""")


def _custom_sharded(url: str) -> None:
    """docs with custom sharding: key eu on 2 shards, key us on 1, 10 points under each key."""
    with httpx.Client(base_url=url) as http:
        http.put("/collections/docs", json={"vectors": {"size": 4, "distance": "Cosine"}, "sharding_method": "custom"}).raise_for_status()
        http.put("/collections/docs/shards", json={"shard_key": "eu", "shards_number": 2}).raise_for_status()
        http.put("/collections/docs/shards", json={"shard_key": "us"}).raise_for_status()
        for key, start in (("eu", 0), ("us", 100)):
            points = [{"id": i, "vector": [0.1, 0.2, 0.3, float(i % 7)], "payload": {"key": key}} for i in range(start, start + 10)]
            http.put("/collections/docs/points?wait=true", json={"points": points, "shard_key": key}).raise_for_status()


def test_custom_sharding_is_backed_up_whole_and_restored_with_its_shard_keys(emulator, tmp_path):
    source, target = emulator(nodes=3), emulator(nodes=2)
    _custom_sharded(source.urls[0])
    _restore_only(source, target, tmp_path)
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    record = read_sets_of(tmp_path)[0]["collections"]["docs"]
    assert sorted(a["shard_ids"][0] for a in record["archives"]) == sorted(s for ids in source.shard_keys("docs").values() for s in ids)
    assert {k["key"]: len(k["shard_ids"]) for k in record["shard_keys"]} == {"eu": 2, "us": 1}
    assert {k: len(v) for k, v in target.shard_keys("docs").items()} == {"eu": 2, "us": 1}
    restored = all_points(target.urls[0], "docs")
    assert len(restored) == 20 and {p["key"] for _, p in restored.values()} == {"eu", "us"}


def test_payload_indexes_are_recorded_and_recreated_before_the_data(emulator, tmp_path):
    source, target = emulator(nodes=3), emulator(nodes=2)
    make_collection(source.urls[0], "docs", points=30, shards=3)
    with httpx.Client(base_url=source.urls[0]) as http:
        http.put("/collections/docs/index?wait=true", json={"field_name": "tag", "field_schema": "keyword"}).raise_for_status()
        http.put("/collections/docs/index?wait=true",
                 json={"field_name": "name", "field_schema": {"type": "text", "tokenizer": "word"}}).raise_for_status()
    _restore_only(source, target, tmp_path)
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    schema = read_sets_of(tmp_path)[0]["collections"]["docs"]["payload_schema"]
    assert schema["tag"]["data_type"] == "keyword" and schema["name"]["params"]["type"] == "text"
    assert set(target.payload_indexes("docs")) == {"tag", "name"}
    assert len(all_points(target.urls[0], "docs")) == 30


# ---------------------------------------------------------------- finding 9: saved plans applied late


def test_a_saved_plan_stamps_its_set_with_the_snapshot_time_and_has_a_shelf_life(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    backup_and_replica(source, target, tmp_path)
    assert qbr("plan", "-o", "plan.json", "--now", T0, cwd=tmp_path).exit_code == 0
    too_late = qbr("apply", "plan.json", "--now", "2026-11-21T15:00:00Z", cwd=tmp_path)
    assert too_late.exit_code == 1 and "was made 7h ago, longer than the 6h a saved plan is trusted for" in too_late.stderr
    assert not (tmp_path / "repo" / "sets").exists()
    applied = qbr("apply", "plan.json", "--now", "2026-11-21T11:00:00Z", cwd=tmp_path)
    assert applied.exit_code == 0, applied.output
    [record] = read_sets_of(tmp_path)
    assert record["set_id"] == "20261121T080000Z" and record["created"] == "2026-11-21T11:00:00Z"


def test_apply_refuses_now_without_the_test_switch(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    backup_and_replica(source, target, tmp_path)
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path, env={"QBR_TEST_CLOCK": "0"})
    assert run.exit_code == 1 and "apply always runs at the real time" in run.stderr
    assert "--now" not in qbr("apply", "--help", cwd=tmp_path).stdout


def test_replicas_backup_reads_an_active_one_and_restore_keeps_the_replication_factor(emulator, tmp_path):
    source, target = emulator(nodes=3), emulator(nodes=2)
    with httpx.Client(base_url=source.urls[0]) as http:
        http.put("/collections/docs", json={"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 2,
                                            "replication_factor": 2}).raise_for_status()
    make_collection(source.urls[0], "docs", points=20)
    # Every replica of shard 0 but one goes Dead and then misses an update: only the Active one is current.
    holders = sorted(n for n, state in source.replica_states("docs")[0].items())
    source.set_replica_state("docs", 0, holders[0], "Dead")
    with QdrantClient(source.urls[0]) as client:
        upsert(client, "docs", range(20), tag="v2")
    _restore_only(source, target, tmp_path)
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    archives = {a["shard_ids"][0]: a["node"] for a in read_sets_of(tmp_path)[0]["collections"]["docs"]["archives"]}
    assert archives[0] == source.urls[holders[1]]  # not the Dead replica's node
    assert payload_tags(target.urls[0], "docs") == {"v2"}
    with QdrantClient(target.urls[0]) as client:
        assert client.collection_info("docs")["config"]["params"]["replication_factor"] == 2


# ---------------------------------------------------------------- locked-down clusters: no URL recovery

URL_RECOVERY_OFF = {"status": {"error": "Forbidden: Snapshot recovery from remote URLs is disabled"}, "time": 0}


def test_a_node_that_refuses_url_recovery_gets_an_upload_under_via_auto_and_a_sentence_under_via_url(emulator, tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    repo = f'{{s3: {{bucket: {bucket}, prefix: p, endpoint_url: "{endpoint}", region: us-east-1}}}}'
    backup_and_replica(source, target, tmp_path, repo=repo)
    target.nodes[0].faults.add(method="PUT", path=r"/snapshots/recover$", status=403, body=URL_RECOVERY_OFF, times=None)
    strict = (tmp_path / "qbr.yaml").read_text().replace("if_exists: replace", "if_exists: replace\n    via: url")
    (tmp_path / "strict.yaml").write_text(strict)
    refused = qbr("apply", "--auto-approve", "--now", T0, "-f", "strict.yaml", cwd=tmp_path)
    assert refused.exit_code == 1
    assert "cannot recover from a URL" in refused.output and "set via: auto or upload" in refused.output
    assert "X-Amz" not in refused.output  # the presigned URL never reaches a message
    auto = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert auto.exit_code == 0, auto.output
    assert "could not fetch the archive by URL, so it was uploaded through qbr" in auto.output
    assert len(all_points(target.urls[0], "docs")) == 10 and target.upload_bytes() > 0


def test_apply_says_what_it_cost_in_s3_requests_per_repository(emulator, tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    backup_and_replica(source, target, tmp_path,
                       repo=f'{{s3: {{bucket: {bucket}, prefix: p, endpoint_url: "{endpoint}", region: us-east-1}}}}')
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    line = next(x for x in run.stdout.splitlines() if x.startswith("Repository main: S3: "))
    assert " PUT" in line and " GET" in line and "up" in line
    events = qbr("apply", "--auto-approve", "--json", "--now", T1, cwd=tmp_path)
    outcome = json.loads(events.stdout.strip().splitlines()[-1])
    assert outcome["type"] == "outcome" and outcome["s3_requests"]["main"]["LIST"] >= 1


def test_garbage_collection_reads_the_set_records_once_not_once_per_archive(emulator, tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    source, target = emulator(nodes=1), emulator(nodes=1)
    for name in ("a", "b", "c"):
        make_collection(source.urls[0], name, points=3)
    repo = f'{{s3: {{bucket: {bucket}, prefix: p, endpoint_url: "{endpoint}", region: us-east-1}}}}'
    backup_and_replica(source, target, tmp_path, repo=repo, backup_extra="    retention: {keep_last: 4}\n")
    for hour in (6, 8, 10, 12, 14):
        assert qbr("apply", "--auto-approve", "--now", f"2026-11-21T{hour:02d}:00:00Z", cwd=tmp_path).exit_code == 0
    run = qbr("apply", "--auto-approve", "--json", "--now", "2026-11-21T16:00:00Z", cwd=tmp_path)
    events = [json.loads(line) for line in run.stdout.splitlines()]
    deleted = [e for e in events if e["type"] == "action_finished" and e["action"].startswith("gc.")]
    assert len(deleted) == 3 and all(e["status"] == "done" for e in deleted)
    # 5 sets: observe reads each once and the GC check once more (11 GETs); before, the check
    # read every set record again for each of the 3 archives (19)
    assert events[-1]["s3_requests"]["main"]["GET"] <= 12


def test_a_quiet_tick_costs_requests_per_backup_not_per_collection(emulator, tmp_path):
    source, target = emulator(nodes=1), emulator(nodes=1)
    for i in range(30):
        make_collection(source.urls[0], f"c{i:02d}", points=2)
    backup_and_replica(source, target, tmp_path)
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    for node in source.nodes:
        node.reset_traffic()
    quiet = qbr("plan", "--now", "2026-11-21T08:30:00Z", cwd=tmp_path)  # within the 1h rpo
    assert quiet.exit_code == 0 and "No changes" in quiet.stdout, quiet.output
    assert source.count_requests() <= 6, source.route_counts()  # version, cluster, collections, aliases
    for node in source.nodes:
        node.reset_traffic()
    due = qbr("plan", "--now", T1, cwd=tmp_path)
    assert due.exit_code == 0 and due.stdout.count("+ copy collection") == 30
    assert source.count_requests() >= 30 * 3  # info, count and snapshot list per collection
