"""Payload indexes: create, delete, report, and what collection and shard snapshots carry of them.

Two levels, as in Qdrant: consensus knows the collection's indexes (payload_index.json in
collection snapshots; `cluster.payload_indexes`), and each shard's segments carry the indexes
they were built with (shard snapshots take those along). GET /collections reports the segments'.
"""

from __future__ import annotations

import io
import json
import tarfile

import httpx
import pytest

VECTORS = {"size": 2, "distance": "Dot"}
INT_PARAMS = {"type": "integer", "lookup": True, "range": False}


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def seed(http, url, name="docs", **body):
    assert http.put(f"{url}/collections/{name}", json={"vectors": VECTORS, **body}).status_code == 200
    http.put(f"{url}/collections/{name}/points?wait=true", json={"points": [
        {"id": i, "vector": [1.0, float(i)], "payload": {"n": i, **({"tag": "t"} if i % 2 else {})}}
        for i in range(10)]})


def index(http, url, name="docs"):
    for field, schema in (("tag", "keyword"), ("n", INT_PARAMS)):
        r = http.put(f"{url}/collections/{name}/index?wait=true", json={"field_name": field, "field_schema": schema})
        assert r.status_code == 200 and r.json()["result"]["status"] == "completed", r.text


def schema_of(http, url, name="docs") -> dict:
    return http.get(f"{url}/collections/{name}").json()["result"]["payload_schema"]


def members(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_create_report_and_delete_indexes(emulator, http):
    cluster = emulator(nodes=2)
    url = cluster.urls[0]
    seed(http, url)
    index(http, url)
    assert schema_of(http, url) == {"tag": {"data_type": "keyword", "points": 5},
                                    "n": {"data_type": "integer", "params": INT_PARAMS, "points": 10}}
    assert cluster.payload_indexes("docs") == {"tag": "keyword", "n": INT_PARAMS}
    r = http.put(f"{url}/collections/docs/index", json={"field_name": "x"})
    assert r.status_code == 400
    assert r.json()["status"]["error"] == ("Bad request: Can't auto-detect field type, please specify `field_schema` "
                                           "in the request")
    assert http.put(f"{url}/collections/docs/index", json={"field_name": "x", "field_schema": "colour"}
                    ).status_code == 400
    r = http.delete(f"{url}/collections/docs/index/tag")
    assert r.status_code == 200 and r.json()["result"]["status"] == "acknowledged"
    assert set(schema_of(http, url)) == {"n"} and cluster.payload_indexes("docs") == {"n": INT_PARAMS}


def test_collection_snapshot_carries_indexes_and_a_recover_that_creates_registers_them(emulator, http):
    source, target = emulator(), emulator()
    seed(http, source.urls[0])
    index(http, source.urls[0])
    desc = http.post(f"{source.urls[0]}/collections/docs/snapshots").json()["result"]
    data = http.get(f"{source.urls[0]}/collections/docs/snapshots/{desc['name']}").content
    assert json.loads(members(data)["payload_index.json"]) == {"schema": {"tag": "keyword", "n": INT_PARAMS}}
    http.post(f"{target.urls[0]}/collections/docs/snapshots/upload", files={"snapshot": ("d.snapshot", data)})
    assert target.payload_indexes("docs") == source.payload_indexes("docs")
    assert schema_of(http, target.urls[0]) == schema_of(http, source.urls[0])


def test_recover_into_an_existing_collection_does_not_register_the_indexes(emulator, http):
    source, target = emulator(), emulator()
    seed(http, source.urls[0])
    index(http, source.urls[0])
    desc = http.post(f"{source.urls[0]}/collections/docs/snapshots").json()["result"]
    data = http.get(f"{source.urls[0]}/collections/docs/snapshots/{desc['name']}").content
    http.put(f"{target.urls[0]}/collections/docs", json={"vectors": VECTORS})
    http.post(f"{target.urls[0]}/collections/docs/snapshots/upload", files={"snapshot": ("d.snapshot", data)})
    assert target.payload_indexes("docs") == {}  # consensus never heard of them
    assert set(schema_of(http, target.urls[0])) == {"tag", "n"}  # the restored segments still index


def test_shard_snapshots_carry_segment_indexes_but_not_the_collections(emulator, http):
    source, target = emulator(), emulator()
    seed(http, source.urls[0])
    index(http, source.urls[0])
    desc = http.post(f"{source.urls[0]}/collections/docs/shards/0/snapshots").json()["result"]
    data = http.get(f"{source.urls[0]}/collections/docs/shards/0/snapshots/{desc['name']}").content
    assert "payload_index.json" not in members(data)
    assert json.loads(members(data)["segments/payload_index.json"]) == {"indexed_fields": {"tag": "keyword",
                                                                                           "n": INT_PARAMS}}
    http.put(f"{target.urls[0]}/collections/docs", json={"vectors": VECTORS})
    r = http.post(f"{target.urls[0]}/collections/docs/shards/0/snapshots/upload", files={"snapshot": ("s", data)})
    assert r.status_code == 200, r.text
    assert target.payload_indexes("docs") == {}
    assert set(schema_of(http, target.urls[0])) == {"tag", "n"}
    again = http.post(f"{target.urls[0]}/collections/docs/snapshots").json()["result"]
    later = members(http.get(f"{target.urls[0]}/collections/docs/snapshots/{again['name']}").content)
    assert json.loads(later["payload_index.json"]) == {"schema": {}}  # lost for every later collection restore


def test_new_shard_key_shards_get_only_the_indexes_consensus_knows(emulator, http):
    cluster = emulator(nodes=1, distributed=True)
    url = cluster.urls[0]
    http.put(f"{url}/collections/c", json={"vectors": VECTORS, "sharding_method": "custom"})
    http.put(f"{url}/collections/c/index", json={"field_name": "tag", "field_schema": "keyword"})
    assert schema_of(http, url, "c") == {"tag": {"data_type": "keyword", "points": 0}}  # no shards yet
    http.put(f"{url}/collections/c/shards", json={"shard_key": "a"})
    http.put(f"{url}/collections/c/points?wait=true", json={"shard_key": "a", "points": [
        {"id": 1, "vector": [1.0, 1.0], "payload": {"tag": "x"}}]})
    assert schema_of(http, url, "c") == {"tag": {"data_type": "keyword", "points": 1}}
