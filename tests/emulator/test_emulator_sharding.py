"""Custom sharding with shard keys: creation, routing, cluster views, snapshots and recovery."""

from __future__ import annotations

import io
import json
import tarfile

import httpx
import pytest

VECTORS = {"size": 2, "distance": "Dot"}
CUSTOM = {"vectors": VECTORS, "sharding_method": "custom"}


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def points(ids, tag):
    return [{"id": i, "vector": [1.0, float(i)], "payload": {"tag": tag}} for i in ids]


def error(r) -> str:
    return r.json()["status"]["error"]


def custom_collection(http, url, name="c", keys=(("eu", 2), (7, 1)), **body):
    assert http.put(f"{url}/collections/{name}", json={**CUSTOM, **body}).status_code == 200
    for key, shards in keys:
        r = http.put(f"{url}/collections/{name}/shards", json={"shard_key": key, "shards_number": shards})
        assert r.status_code == 200 and r.json()["result"] is True, r.text


def test_standalone_mode_cannot_create_shard_keys(emulator, http):
    url = emulator().urls[0]
    assert http.put(f"{url}/collections/c", json=CUSTOM).status_code == 200
    params = http.get(f"{url}/collections/c").json()["result"]["config"]["params"]
    assert params["sharding_method"] == "custom" and params["shard_number"] == 1
    r = http.put(f"{url}/collections/c/shards", json={"shard_key": "eu"})
    assert r.status_code == 405 and error(r) == "Qdrant is running in standalone mode"
    r = http.put(f"{url}/collections/c/points", json={"points": points([1], "x")})
    assert r.status_code == 400 and error(r) == "Wrong input: Shard key not specified"


def test_shard_keys_get_ids_after_the_highest_and_spread_over_the_nodes(emulator, http):
    cluster = emulator(nodes=3)
    url = cluster.urls[0]
    custom_collection(http, url)
    assert http.get(f"{url}/collections/c/shards").json()["result"] == {"shard_keys": [{"key": "eu"}, {"key": 7}]}
    assert cluster.shard_keys("c") == {"eu": [1, 2], 7: [3]}
    info = http.get(f"{url}/collections/c/cluster").json()["result"]
    assert info["shard_count"] == 3
    seen = {(s["shard_id"], s["shard_key"]) for s in info["local_shards"] + info["remote_shards"]}
    assert seen == {(1, "eu"), (2, "eu"), (3, 7)}
    holders = {sid: [n for n, _ in states.items()] for sid, states in cluster.replica_states("c").items()}
    assert len({n for ns in holders.values() for n in ns}) == 3  # one shard per node
    r = http.put(f"{url}/collections/c/shards", json={"shard_key": "eu"})
    assert r.status_code == 400 and error(r) == "Bad request: Sharding key eu already exists for collection c"
    assert http.put(f"{url}/collections/c/shards", json={"shard_key": "7"}).status_code == 200  # "7" is not 7
    peer = cluster.nodes[2].peer_id
    r = http.put(f"{url}/collections/c/shards", json={"shard_key": "pinned", "placement": [peer]})
    assert r.status_code == 200 and cluster.replica_states("c")[5] == {2: "Active"}
    r = http.put(f"{url}/collections/c/shards", json={"shard_key": "x", "placement": [12345]})
    assert r.status_code == 400 and error(r) == "Bad request: Peer 12345 does not exist"
    http.put(f"{url}/collections/auto", json={"vectors": VECTORS})
    r = http.put(f"{url}/collections/auto/shards", json={"shard_key": "eu"})
    assert r.status_code == 400 and error(r) == "Bad request: Shard Key cannot be created with Auto sharding method"
    assert http.get(f"{url}/collections/auto/shards").json()["result"] == {}
    r = http.put(f"{url}/collections/auto/points", json={"points": points([1], "x"), "shard_key": "eu"})
    assert r.status_code == 400 and error(r) == "Wrong input: Shard key eu not found"


def test_upserts_go_to_their_key_and_need_one(emulator, http):
    cluster = emulator(nodes=2)
    url = cluster.urls[1]
    custom_collection(http, url, replication_factor=2)
    r = http.put(f"{url}/collections/c/points?wait=true", json={"points": points(range(10), "eu")})
    assert r.status_code == 400 and error(r) == "Wrong input: Shard key not specified"
    r = http.put(f"{url}/collections/c/points", json={"points": points([1], "x"), "shard_key": "nope"})
    assert r.status_code == 400 and error(r) == "Wrong input: Shard key nope not found"
    assert http.put(f"{url}/collections/c/points?wait=true",
                    json={"points": points(range(10), "eu"), "shard_key": "eu"}).status_code == 200
    http.put(f"{url}/collections/c/points?wait=true", json={"points": points([3, 100], "seven"), "shard_key": 7})
    by_shard = {sid: set(cluster.shard_points("c", sid)) for sid in (1, 2, 3)}
    assert by_shard[1] | by_shard[2] == set(range(10)) and by_shard[1] and by_shard[2]
    assert by_shard[3] == {3, 100}  # ids are unique only within a key
    count = lambda **b: http.post(f"{url}/collections/c/points/count", json=b).json()["result"]["count"]  # noqa: E731
    assert count() == 12 and count(shard_key="eu") == 10 and count(shard_key=7) == 2
    local = http.get(f"{url}/collections/c/cluster").json()["result"]["local_shards"]
    assert {(s["shard_key"], s["points_count"]) for s in local} == {
        ("eu", len(by_shard[1])), ("eu", len(by_shard[2])), (7, 2)}
    r = http.post(f"{url}/collections/c/points/delete?wait=true", json={"points": [3]})
    assert r.status_code == 400  # deletes need a key as well
    http.post(f"{url}/collections/c/points/delete?wait=true", json={"points": [3], "shard_key": ["eu", 7]})
    assert count() == 10


def test_dropping_a_key_drops_its_shards_and_frees_the_highest_id(emulator, http):
    cluster = emulator(nodes=2)
    url = cluster.urls[0]
    custom_collection(http, url)
    http.put(f"{url}/collections/c/points?wait=true", json={"points": points([1, 2], "s"), "shard_key": 7})
    assert http.post(f"{url}/collections/c/shards/delete", json={"shard_key": 7}).json()["result"] is True
    assert cluster.shard_keys("c") == {"eu": [1, 2]} and cluster.points("c") == {}
    r = http.post(f"{url}/collections/c/shards/delete", json={"shard_key": 7})
    assert r.status_code == 400 and error(r) == "Bad request: Sharding key 7 does not exist for collection c"
    http.put(f"{url}/collections/c/shards", json={"shard_key": "us"})
    assert cluster.shard_keys("c") == {"eu": [1, 2], "us": [3]}


def test_collection_snapshot_carries_the_shard_key_mapping(emulator, http):
    cluster = emulator(nodes=1, distributed=True)
    url = cluster.urls[0]
    custom_collection(http, url)
    desc = http.post(f"{url}/collections/c/snapshots").json()["result"]
    with tarfile.open(fileobj=io.BytesIO(http.get(f"{url}/collections/c/snapshots/{desc['name']}").content)) as tar:
        names = tar.getnames()
        mapping = json.load(tar.extractfile("shard_key_mapping.json"))
        config = json.load(tar.extractfile("config.json"))
    assert mapping == [{"key": "eu", "shard_ids": [1, 2]}, {"key": 7, "shard_ids": [3]}]
    assert config["params"]["sharding_method"] == "custom"
    assert {"1/replica_state.json", "2/replica_state.json", "3/segments/points.jsonl"} <= set(names)


def backup(http, cluster) -> bytes:
    url = cluster.urls[0]
    custom_collection(http, url)
    http.put(f"{url}/collections/c/points?wait=true", json={"points": points(range(6), "eu"), "shard_key": "eu"})
    http.put(f"{url}/collections/c/points?wait=true", json={"points": points([50], "seven"), "shard_key": 7})
    desc = http.post(f"{url}/collections/c/snapshots").json()["result"]
    return http.get(f"{url}/collections/c/snapshots/{desc['name']}").content


def test_recover_creating_a_custom_collection_restores_no_keys_and_no_points(emulator, http):
    """Qdrant 1.19 creates the collection from config.json alone (qdrant/qdrant#10135)."""
    data = backup(http, emulator(nodes=1, distributed=True))
    target = emulator(nodes=1, distributed=True)
    r = http.post(f"{target.urls[0]}/collections/c/snapshots/upload", files={"snapshot": ("c.snapshot", data)})
    assert r.status_code == 200 and r.json()["result"] is True
    assert target.shard_keys("c") == {} and target.points("c") == {}
    assert http.get(f"{target.urls[0]}/collections/c/shards").json()["result"] == {"shard_keys": []}


def test_recover_into_keys_made_in_the_same_order_restores_every_point(emulator, http):
    source = emulator(nodes=1, distributed=True)
    data = backup(http, source)
    target = emulator(nodes=1, distributed=True)
    custom_collection(http, target.urls[0])
    r = http.post(f"{target.urls[0]}/collections/c/snapshots/upload", files={"snapshot": ("c.snapshot", data)})
    assert r.status_code == 200
    assert target.points("c") == source.points("c")
    count = http.post(f"{target.urls[0]}/collections/c/points/count", json={"shard_key": 7}).json()["result"]
    assert count == {"count": 1}


def test_recover_into_keys_made_in_another_order_puts_points_under_the_wrong_key(emulator, http):
    data = backup(http, emulator(nodes=1, distributed=True))
    target = emulator(nodes=1, distributed=True)
    custom_collection(http, target.urls[0], keys=((7, 1), ("eu", 2)))  # 7 -> [1], eu -> [2, 3]
    http.post(f"{target.urls[0]}/collections/c/snapshots/upload", files={"snapshot": ("c.snapshot", data)})
    by_key = {k: http.post(f"{target.urls[0]}/collections/c/points/count", json={"shard_key": k}).json()["result"]
              for k in ("eu", 7)}
    assert by_key[7]["count"] > 0 and by_key["eu"]["count"] + by_key[7]["count"] == 7
    assert 50 not in {p["id"] for p in http.post(f"{target.urls[0]}/collections/c/points/scroll",
                                                 json={"shard_key": 7, "limit": 100}).json()["result"]["points"]}


def test_recover_can_model_the_proposed_fix(emulator, http):
    source = emulator(nodes=1, distributed=True)
    data = backup(http, source)
    target = emulator(nodes=1, distributed=True, recover_recreates_shard_keys=True)
    r = http.post(f"{target.urls[0]}/collections/c/snapshots/upload", files={"snapshot": ("c.snapshot", data)})
    assert r.status_code == 200
    assert target.shard_keys("c") == {"eu": [1, 2], 7: [3]} and target.points("c") == source.points("c")
