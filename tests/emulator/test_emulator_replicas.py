"""Replicas on several nodes with replica states: placement, cluster views, stale replicas and
what a snapshot of a replica that is not Active holds."""

from __future__ import annotations

import io
import json
import tarfile

import httpx
import pytest

VECTORS = {"size": 2, "distance": "Dot"}


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def seed(http, url, ids=range(10), **body):
    assert http.put(f"{url}/collections/docs", json={"vectors": VECTORS, **body}).status_code == 200
    upsert(http, url, ids)


def upsert(http, url, ids):
    r = http.put(f"{url}/collections/docs/points?wait=true",
                 json={"points": [{"id": i, "vector": [1.0, float(i)], "payload": {"i": i}} for i in ids]})
    assert r.status_code == 200, r.text


def cluster_view(http, url) -> dict:
    return http.get(f"{url}/collections/docs/cluster").json()["result"]


def archive_ids(data: bytes) -> tuple[list, dict]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    jsonl = next(v for k, v in files.items() if k.endswith("points.jsonl"))
    state = next(json.loads(v) for k, v in files.items() if k.endswith("replica_state.json"))
    return sorted(json.loads(line)["id"] for line in jsonl.splitlines()), state


def test_replication_factor_places_replicas_on_several_nodes(emulator, http):
    cluster = emulator(nodes=3)
    seed(http, cluster.urls[0], shard_number=3, replication_factor=2)
    states = cluster.replica_states("docs")
    assert all(len(nodes) == 2 for nodes in states.values())
    for node in cluster.nodes:
        view = cluster_view(http, node.url)
        local = {s["shard_id"] for s in view["local_shards"]}
        assert local == {sid for sid, nodes in states.items() if node.index in nodes} and len(local) == 2
        remote = {(s["shard_id"], s["peer_id"]) for s in view["remote_shards"]}
        assert remote == {(sid, cluster.nodes[n].peer_id) for sid, nodes in states.items() for n in nodes
                          if n != node.index}
        assert all(s["state"] == "Active" for s in view["local_shards"] + view["remote_shards"])


def test_states_show_in_local_and_remote_shards(emulator, http):
    cluster = emulator(nodes=2)
    seed(http, cluster.urls[0], shard_number=1, replication_factor=2)
    cluster.set_replica_state("docs", 0, 1, "Partial")
    n0, n1 = (cluster_view(http, n.url) for n in cluster.nodes)
    assert n1["local_shards"][0]["state"] == "Partial" and n1["remote_shards"][0]["state"] == "Active"
    assert n0["remote_shards"] == [{"shard_id": 0, "peer_id": cluster.nodes[1].peer_id, "state": "Partial"}]
    assert cluster.replica_states("docs") == {0: {0: "Active", 1: "Partial"}}
    with pytest.raises(ValueError):
        cluster.set_replica_state("docs", 0, 1, "Sleepy")
    with pytest.raises(KeyError):
        cluster.set_replica_state("docs", 5, 1, "Dead")


def test_a_dead_replica_goes_stale_and_its_shard_snapshot_still_succeeds(emulator, http):
    """Qdrant checks only that the shard is local (ShardHolder::create_shard_snapshot), not its state."""
    cluster = emulator(nodes=2)
    seed(http, cluster.urls[0], ids=range(5), shard_number=1, replication_factor=2)
    cluster.set_replica_state("docs", 0, 1, "Dead")
    upsert(http, cluster.urls[0], [5, 6])
    n1 = cluster.nodes[1]
    assert cluster_view(http, n1.url)["local_shards"][0] == {"shard_id": 0, "points_count": 5, "state": "Dead"}
    r = http.post(f"{n1.url}/collections/docs/shards/0/snapshots")
    assert r.status_code == 200
    data = http.get(f"{n1.url}/collections/docs/shards/0/snapshots/{r.json()['result']['name']}").content
    ids, replica_state = archive_ids(data)
    assert ids == [0, 1, 2, 3, 4]  # stale, and nothing said so
    assert replica_state["peers"] == {str(cluster.nodes[0].peer_id): "Active", str(n1.peer_id): "Dead"}
    collection = http.post(f"{n1.url}/collections/docs/snapshots").json()["result"]
    assert archive_ids(http.get(f"{n1.url}/collections/docs/snapshots/{collection['name']}").content)[0] == ids
    # reads on node 1 skip its unreadable replica
    assert http.post(f"{n1.url}/collections/docs/points/count", json={}).json()["result"]["count"] == 7
    cluster.set_replica_state("docs", 0, 1, "Active")  # a finished transfer re-syncs it
    assert cluster_view(http, n1.url)["local_shards"][0]["points_count"] == 7


def test_a_partial_replica_takes_updates_on_top_of_what_it_has(emulator, http):
    cluster = emulator(nodes=2)
    seed(http, cluster.urls[0], ids=range(6), shard_number=1, replication_factor=2)
    cluster.set_replica_state("docs", 0, 1, "Partial", points=[{"id": 0, "vector": [1.0, 0.0], "payload": {}}])
    upsert(http, cluster.urls[1], [6])
    assert sorted(cluster.shard_points("docs", 0, node=1)) == [0, 6]
    assert sorted(cluster.shard_points("docs", 0)) == list(range(7))


def test_no_sync_recover_leaves_replicas_diverged_and_each_node_reads_its_own(emulator, http):
    cluster = emulator(nodes=2)
    url0, url1 = cluster.urls
    seed(http, url0, ids=range(4), shard_number=1, replication_factor=2)
    desc = http.post(f"{url0}/collections/docs/snapshots").json()["result"]
    location = (cluster.nodes[0].snapshots_dir / "docs" / desc["name"]).as_uri()
    upsert(http, url0, [10, 11])
    r = http.put(f"{url0}/collections/docs/snapshots/recover", json={"location": location, "priority": "no_sync"})
    assert r.status_code == 200
    count = lambda url: http.post(f"{url}/collections/docs/points/count", json={}).json()["result"]["count"]  # noqa: E731
    assert (count(url0), count(url1)) == (4, 6)
    assert [s["points_count"] for s in cluster_view(http, url1)["remote_shards"] + cluster_view(http, url0)[
        "local_shards"] if "points_count" in s] == [4]
    http.put(f"{url0}/collections/docs/snapshots/recover", json={"location": location, "priority": "snapshot"})
    assert (count(url0), count(url1)) == (4, 4)
