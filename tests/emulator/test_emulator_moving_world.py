"""A world that moves: writes landing while a snapshot is made, and in-place updates."""

from __future__ import annotations

import io
import json
import tarfile
import threading

import httpx
import pytest

VECTORS = {"size": 2, "distance": "Dot"}


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def seed(http, url, name="docs", points=10, **body):
    assert http.put(f"{url}/collections/{name}", json={"vectors": VECTORS, **body}).status_code == 200
    if points:
        r = http.put(f"{url}/collections/{name}/points?wait=true", json={"points": [
            {"id": i, "vector": [1.0, float(i)], "payload": {"i": i, "v": 1}} for i in range(points)]})
        assert r.status_code == 200, r.text


def archived(http, url: str) -> dict:
    """{id: payload} of every points.jsonl in the archive at `url`."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(http.get(url).content), mode="r:") as tar:
        for member in tar:
            if member.name.endswith("points.jsonl"):
                for line in tar.extractfile(member):
                    point = json.loads(line)
                    found[point["id"]] = point["payload"]
    return found


def count(http, url, name="docs") -> int:
    return http.post(f"{url}/collections/{name}/points/count", json={"exact": True}).json()["result"]["count"]


def test_writes_during_snapshot_creation_are_not_in_the_archive(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    seed(http, url)
    seen = []

    def write(n, collection, shard_id):
        seen.append((n.index, collection, shard_id))
        with httpx.Client(timeout=10, trust_env=False) as other:  # a client of its own, over HTTP
            other.put(f"{url}/collections/docs/points?wait=true", json={"points": [
                {"id": 100, "vector": [0.0, 1.0], "payload": {"late": True}},
                {"id": 3, "vector": [0.0, 3.0], "payload": {"i": 3, "v": 2}}]})
            other.post(f"{url}/collections/docs/points/delete?wait=true", json={"points": [0]})

    node.during_snapshot(write)
    desc = http.post(f"{url}/collections/docs/snapshots").json()["result"]
    assert seen == [(0, "docs", None)]
    inside = archived(http, f"{url}/collections/docs/snapshots/{desc['name']}")
    assert sorted(inside) == list(range(10)) and inside[3] == {"i": 3, "v": 1}
    assert count(http, url) == 10 and sorted(cluster.points("docs")) == [*range(1, 10), 100]
    assert cluster.points("docs")[3]["payload"] == {"i": 3, "v": 2}
    # the hook was used up: the next snapshot holds the new data
    desc = http.post(f"{url}/collections/docs/snapshots").json()["result"]
    assert sorted(archived(http, f"{url}/collections/docs/snapshots/{desc['name']}")) == [*range(1, 10), 100]


def test_snapshot_latency_lets_a_concurrent_upsert_land_after_the_view(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    seed(http, url, points=5)
    node.snapshot_latency = 0.15
    view_taken = threading.Event()
    running = []

    def look(*_):  # after the view, before the latency: the creation is running
        running.extend(http.get(f"{url}/telemetry?details_level=2").json()["result"]["collections"]["snapshots"])
        view_taken.set()

    node.during_snapshot(look)
    holder: dict = {}
    creator = threading.Thread(target=lambda: holder.update(
        httpx.post(f"{url}/collections/docs/snapshots", timeout=10, trust_env=False).json()["result"]))
    creator.start()
    assert view_taken.wait(5)
    http.put(f"{url}/collections/docs/points?wait=true",
             json={"points": [{"id": 50, "vector": [1.0, 1.0], "payload": {}}]})
    creator.join()
    node.snapshot_latency = 0
    assert running == [{"id": "docs", "running_snapshots": 1, "running_snapshot_recovery": 0,
                        "total_snapshot_creations": 1}]
    assert sorted(archived(http, f"{url}/collections/docs/snapshots/{holder['name']}")) == list(range(5))
    assert count(http, url) == 6


def test_shard_snapshots_and_streams_take_their_view_first_too(emulator, http):
    cluster = emulator(nodes=2)
    seed(http, cluster.urls[0], shard_number=1, replication_factor=2, points=4)
    n1 = cluster.nodes[1]
    events = []
    n1.during_snapshot(lambda n, c, s: (events.append(s), http.put(
        f"{n.url}/collections/docs/points?wait=true", json={"points": [{"id": 9, "vector": [1.0, 1.0]}]})),
        times=2)
    desc = http.post(f"{n1.url}/collections/docs/shards/0/snapshots").json()["result"]
    assert sorted(archived(http, f"{n1.url}/collections/docs/shards/0/snapshots/{desc['name']}")) == [0, 1, 2, 3]
    http.post(f"{n1.url}/collections/docs/points/delete?wait=true", json={"points": [9]})
    assert sorted(archived(http, f"{n1.url}/collections/docs/shards/0/snapshot")) == [0, 1, 2, 3]
    assert events == [0, 0] and count(http, n1.url) == 5


def test_upsert_onto_existing_ids_replaces_payload_and_vector(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url, points=3)
    http.put(f"{url}/collections/docs/points?wait=true",
             json={"points": [{"id": 1, "vector": [9.0, 9.0], "payload": {"new": True}}]})
    assert cluster.points("docs")[1] == {"vector": [9.0, 9.0], "payload": {"new": True}}
    info = http.get(f"{url}/collections/docs").json()["result"]
    assert info["points_count"] == 3  # an in-place update changes no count: REST has no change signal
    r = http.put(f"{url}/collections/docs/points?wait=true", json={"update_mode": "insert_only", "points": [
        {"id": 1, "vector": [0.0, 0.0], "payload": {}}, {"id": 7, "vector": [0.0, 0.0], "payload": {}}]})
    assert r.status_code == 200 and cluster.points("docs")[1]["payload"] == {"new": True} and 7 in cluster.points("docs")


def test_set_and_overwrite_payload(emulator, http):
    cluster = emulator(nodes=2)
    url = cluster.urls[1]
    seed(http, url, points=40)
    r = http.post(f"{url}/collections/docs/points/payload?wait=true",
                  json={"payload": {"v": 2, "extra": "x"}, "points": [1, 2]})
    assert r.status_code == 200 and r.json()["result"]["status"] == "completed"
    points = cluster.points("docs")
    assert points[1]["payload"] == {"i": 1, "v": 2, "extra": "x"} and points[3]["payload"] == {"i": 3, "v": 1}
    http.post(f"{url}/collections/docs/points/payload", json={"payload": {"deep": 1}, "key": "meta.inner",
                                                              "filter": {"must": [{"key": "i", "range": {"gte": 38}}]}})
    assert cluster.points("docs")[39]["payload"] == {"i": 39, "v": 1, "meta": {"inner": {"deep": 1}}}
    r = http.put(f"{url}/collections/docs/points/payload", json={"payload": {"only": True}, "points": [5]})
    assert r.json()["result"]["status"] == "acknowledged"
    assert cluster.points("docs")[5]["payload"] == {"only": True}
    assert cluster.points("docs")[5]["vector"] == [1.0, 5.0]


def test_payload_update_of_a_missing_point_is_404_after_its_batch_was_applied(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url, points=3)
    r = http.post(f"{url}/collections/docs/points/payload", json={"payload": {"x": 1}, "points": [0, 99, 2]})
    assert r.status_code == 404 and r.json()["status"]["error"] == "Not found: No point with id 99 found"
    points = cluster.points("docs")
    assert points[0]["payload"]["x"] == 1 and points[2]["payload"]["x"] == 1 and 99 not in points
    assert http.post(f"{url}/collections/docs/points/payload", json={"payload": {}}).status_code == 422


def test_update_vectors_replaces_only_the_named_vectors_given(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    named = {"a": {"size": 2, "distance": "Dot"}, "b": {"size": 3, "distance": "Cosine"}}
    http.put(f"{url}/collections/multi", json={"vectors": named})
    http.put(f"{url}/collections/multi/points?wait=true", json={"points": [
        {"id": 1, "vector": {"a": [1.0, 1.0], "b": [1.0, 1.0, 1.0]}, "payload": {"p": 1}}]})
    r = http.put(f"{url}/collections/multi/points/vectors?wait=true", json={"points": [{"id": 1, "vector": {"b": [2.0, 2.0, 2.0]}}]})
    assert r.status_code == 200, r.text
    assert cluster.points("multi")[1] == {"vector": {"a": [1.0, 1.0], "b": [2.0, 2.0, 2.0]}, "payload": {"p": 1}}
    bad = http.put(f"{url}/collections/multi/points/vectors", json={"points": [{"id": 1, "vector": {"b": [1.0]}}]})
    assert bad.status_code == 400
    seed(http, url, points=2)
    http.put(f"{url}/collections/docs/points/vectors?wait=true", json={"points": [{"id": 0, "vector": [5.0, 5.0]}]})
    assert cluster.points("docs")[0] == {"vector": [5.0, 5.0], "payload": {"i": 0, "v": 1}}
    assert http.put(f"{url}/collections/docs/points/vectors", json={"points": [{"id": 8, "vector": [1.0, 1.0]}]}
                    ).status_code == 404
