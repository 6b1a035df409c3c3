"""Snapshots in the emulator: real tar archives, checksums, placement, recovery and uploads."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile

import httpx
import pytest

VECTORS = {"size": 3, "distance": "Cosine"}
NAME_RE = re.compile(r"^docs-(\d+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}\.snapshot$")


@pytest.fixture
def http():
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


def seed(http, url, name="docs", points=30, **body):
    assert http.put(f"{url}/collections/{name}", json={"vectors": VECTORS, **body}).status_code == 200
    if points:
        r = http.put(f"{url}/collections/{name}/points?wait=true", json={"points": [
            {"id": i, "vector": [float(i), 0.5, -1.0], "payload": {"n": i, "tag": f"t{i % 3}"}} for i in range(points)]})
        assert r.status_code == 200, r.text


def members(data: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar}


def jsonl_ids(blob: bytes) -> list:
    return [json.loads(line)["id"] for line in blob.splitlines() if line.strip()]


def upload(http, url, data: bytes, filename="up.snapshot", **params):
    return http.post(url, params=params, files={"snapshot": (filename, data, "application/octet-stream")})


def test_collection_snapshot_is_a_real_tar_with_checksum_sidecar(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url)
    r = http.post(f"{url}/collections/docs/snapshots")
    assert r.status_code == 200
    desc = r.json()["result"]
    m = NAME_RE.match(desc["name"])
    assert m and int(m.group(1)) == cluster.nodes[0].peer_id
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", desc["creation_time"])
    data = http.get(f"{url}/collections/docs/snapshots/{desc['name']}")
    assert data.status_code == 200 and int(data.headers["content-length"]) == desc["size"] == len(data.content)
    assert hashlib.sha256(data.content).hexdigest() == desc["checksum"]
    sidecar = cluster.nodes[0].snapshots_dir / "docs" / f"{desc['name']}.checksum"
    assert sidecar.read_text() == desc["checksum"]
    files = members(data.content)
    assert files["version.info"] == b"0.4.2"
    config = json.loads(files["config.json"])
    assert set(config) >= {"params", "hnsw_config", "optimizer_config", "wal_config", "quantization_config"}
    assert config["params"]["vectors"] == VECTORS
    assert json.loads(files["payload_index.json"]) == {"schema": {}}
    assert {"0/replica_state.json", "0/shard_config.json", "0/newest_clocks.json"} <= set(files)
    assert jsonl_ids(files["0/segments/points.jsonl"]) == list(range(30))
    listed = http.get(f"{url}/collections/docs/snapshots").json()["result"]
    assert listed == [desc]


def test_each_node_snapshot_carries_only_its_local_shards(emulator, http):
    cluster = emulator(nodes=3)
    seed(http, cluster.urls[0], shard_number=3)
    seen: dict[int, list] = {}
    for node in cluster.nodes:
        local = http.get(f"{node.url}/collections/docs/cluster").json()["result"]["local_shards"]
        assert [s["shard_id"] for s in local] == [node.index]
        desc = http.post(f"{node.url}/collections/docs/snapshots").json()["result"]
        files = members(http.get(f"{node.url}/collections/docs/snapshots/{desc['name']}").content)
        for shard_id in range(3):
            assert f"{shard_id}/replica_state.json" in files and f"{shard_id}/shard_config.json" in files
            has_data = f"{shard_id}/segments/points.jsonl" in files
            assert has_data == (shard_id == node.index)
        seen[node.index] = jsonl_ids(files[f"{node.index}/segments/points.jsonl"])
        assert len(seen[node.index]) == local[0]["points_count"] > 0
    assert sorted(i for ids in seen.values() for i in ids) == list(range(30))


def test_multi_node_backup_restores_every_point_onto_a_matching_cluster(emulator, http):
    source, target = emulator(nodes=3), emulator(nodes=3)
    seed(http, source.urls[0], shard_number=3)
    for node, dest in zip(source.nodes, target.nodes):
        desc = http.post(f"{node.url}/collections/docs/snapshots").json()["result"]
        data = http.get(f"{node.url}/collections/docs/snapshots/{desc['name']}").content
        r = upload(http, f"{dest.url}/collections/docs/snapshots/upload", data, desc["name"],
                   priority="snapshot", checksum=desc["checksum"])
        assert r.status_code == 200 and r.json()["result"] is True, r.text
    assert target.points("docs") == source.points("docs")


def test_recover_from_url_of_another_node_with_api_key(emulator, http):
    source = emulator(api_key="src-key")
    target = emulator()
    with httpx.Client(headers={"api-key": "src-key"}, trust_env=False) as admin:
        seed(admin, source.urls[0])
    hdr = {"api-key": "src-key"}
    desc = http.post(f"{source.urls[0]}/collections/docs/snapshots", headers=hdr).json()["result"]
    location = f"{source.urls[0]}/collections/docs/snapshots/{desc['name']}"
    r = http.put(f"{target.urls[0]}/collections/restored/snapshots/recover",
                 json={"location": location, "priority": "snapshot", "checksum": desc["checksum"],
                       "api_key": "src-key"})
    assert r.status_code == 200 and r.json()["result"] is True, r.text
    assert target.points("restored") == source.points("docs")
    assert ("GET", f"/collections/docs/snapshots/{desc['name']}", {}) in source.nodes[0].requests
    # the wrong checksum is refused, and so is a source that needs a key we did not send
    bad = http.put(f"{target.urls[0]}/collections/other/snapshots/recover",
                   json={"location": location, "checksum": "0" * 64, "api_key": "src-key"})
    assert bad.status_code == 400
    assert bad.json()["status"]["error"] == f"Snapshot checksum mismatch: expected {'0' * 64}, got {desc['checksum']}"
    unauth = http.put(f"{target.urls[0]}/collections/other/snapshots/recover", json={"location": location})
    assert unauth.status_code == 400 and "HTTP 401" in unauth.json()["status"]["error"]
    assert "other" not in target.collection_names()


def test_recover_location_rules(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url)
    desc = http.post(f"{url}/collections/docs/snapshots").json()["result"]
    inside = cluster.nodes[0].snapshots_dir / "docs" / desc["name"]
    r = http.put(f"{url}/collections/copy/snapshots/recover", json={"location": inside.as_uri()})
    assert r.status_code == 200, r.text
    assert cluster.points("copy") == cluster.points("docs")
    outside = cluster.nodes[0].snapshots_dir.parent / "elsewhere.snapshot"
    outside.write_bytes(inside.read_bytes())
    r = http.put(f"{url}/collections/x/snapshots/recover", json={"location": outside.as_uri()})
    assert r.status_code == 403
    assert "Snapshot file path must be inside the snapshots directory" in r.json()["status"]["error"]
    r = http.put(f"{url}/collections/x/snapshots/recover",
                 json={"location": (cluster.nodes[0].snapshots_dir / "missing.snapshot").as_uri()})
    assert r.status_code == 400
    r = http.put(f"{url}/collections/x/snapshots/recover", json={"location": "s3://bucket/key.snapshot"})
    assert r.status_code == 400 and "not supported" in r.json()["status"]["error"]
    r = http.put(f"{url}/collections/x/snapshots/recover", json={"location": inside.as_uri(), "checksum": "abc"})
    assert r.status_code == 422
    r = http.put(f"{url}/collections/x/snapshots/recover", json={"location": inside.as_uri(), "priority": "bogus"})
    assert r.status_code == 400


def test_recover_into_existing_collection_replaces_data_and_checks_compatibility(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url, points=5)
    desc = http.post(f"{url}/collections/docs/snapshots").json()["result"]
    location = (cluster.nodes[0].snapshots_dir / "docs" / desc["name"]).as_uri()
    http.put(f"{url}/collections/docs/points?wait=true",
             json={"points": [{"id": 100, "vector": [1.0, 1.0, 1.0], "payload": {}}]})
    assert len(cluster.points("docs")) == 6
    assert http.put(f"{url}/collections/docs/snapshots/recover", json={"location": location}).status_code == 200
    assert sorted(cluster.points("docs")) == list(range(5))  # priority defaults to snapshot
    http.put(f"{url}/collections/other", json={"vectors": {"size": 4, "distance": "Dot"}})
    r = http.put(f"{url}/collections/other/snapshots/recover", json={"location": location})
    assert r.status_code == 400
    assert r.json()["status"]["error"].startswith("Wrong input: Snapshot is not compatible with existing collection: ")


def test_replica_priority_keeps_existing_data_when_another_replica_exists(emulator, http):
    cluster = emulator(nodes=2)
    url = cluster.urls[0]
    seed(http, url, points=4, shard_number=1, replication_factor=2)
    desc = http.post(f"{url}/collections/docs/snapshots").json()["result"]
    location = (cluster.nodes[0].snapshots_dir / "docs" / desc["name"]).as_uri()
    http.post(f"{url}/collections/docs/points/delete?wait=true", json={"points": [0, 1]})
    r = http.put(f"{url}/collections/docs/snapshots/recover", json={"location": location, "priority": "replica"})
    assert r.status_code == 200
    assert sorted(cluster.points("docs")) == [2, 3]
    r = http.put(f"{url}/collections/docs/snapshots/recover", json={"location": location, "priority": "no_sync"})
    assert sorted(cluster.points("docs")) == [0, 1, 2, 3]


def test_upload_stays_listed_and_checks_checksum(emulator, http):
    source, target = emulator(), emulator()
    seed(http, source.urls[0])
    desc = http.post(f"{source.urls[0]}/collections/docs/snapshots").json()["result"]
    data = http.get(f"{source.urls[0]}/collections/docs/snapshots/{desc['name']}").content
    wrong = "f" * 64
    r = upload(http, f"{target.urls[0]}/collections/docs/snapshots/upload", data, "nested/dir/mine.snapshot",
               checksum=wrong)
    assert r.status_code == 400
    assert r.json()["status"]["error"] == f"Checksum mismatch: expected {desc['checksum']}, actual {wrong}"
    assert "docs" not in target.collection_names()
    r = upload(http, f"{target.urls[0]}/collections/docs/snapshots/upload", data, "nested/dir/mine.snapshot",
               checksum="bad")
    assert r.status_code == 422
    r = upload(http, f"{target.urls[0]}/collections/docs/snapshots/upload?wait=true", data, "nested/dir/mine.snapshot",
               priority="snapshot", checksum=desc["checksum"].upper())
    assert r.status_code == 200, r.text
    assert target.points("docs") == source.points("docs")
    listed = http.get(f"{target.urls[0]}/collections/docs/snapshots").json()["result"]
    assert listed == [{"name": "mine.snapshot", "creation_time": listed[0]["creation_time"], "size": len(data)}]
    assert list((target.nodes[0].snapshots_dir.parent / "tmp").glob("*")) == []  # no spooled upload left


def test_chunked_upload_from_a_generator(emulator, http):
    source, target = emulator(), emulator()
    seed(http, source.urls[0])
    desc = http.post(f"{source.urls[0]}/collections/docs/snapshots").json()["result"]
    data = http.get(f"{source.urls[0]}/collections/docs/snapshots/{desc['name']}").content
    boundary = "emulator-boundary-7f3a"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; filename=\"c.snapshot\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        for i in range(0, len(data), 1000):  # small pieces: the boundary search crosses chunk edges
            yield data[i:i + 1000]
        yield tail

    r = http.post(f"{target.urls[0]}/collections/docs/snapshots/upload", content=body(),
                  headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert (target.nodes[0].snapshots_dir / "docs" / "c.snapshot").read_bytes() == data
    assert target.points("docs") == source.points("docs")


def test_wait_false_answers_202_and_finishes_in_background(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url)
    r = http.post(f"{url}/collections/docs/snapshots?wait=false")
    assert r.status_code == 202 and r.json()["status"] == "accepted" and "result" not in r.json()
    cluster.wait_background()
    listed = http.get(f"{url}/collections/docs/snapshots").json()["result"]
    assert len(listed) == 1
    r = http.delete(f"{url}/collections/docs/snapshots/{listed[0]['name']}?wait=false")
    assert r.status_code == 202
    cluster.wait_background()
    assert http.get(f"{url}/collections/docs/snapshots").json()["result"] == []
    # errors of accepted work are not reported to the caller
    assert http.post(f"{url}/collections/ghost/snapshots?wait=false").status_code == 202
    cluster.wait_background()
    assert any("ghost" in e for e in cluster.nodes[0].errors)


def test_snapshot_download_errors_are_plain_text(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url, points=1)
    r = http.get(f"{url}/collections/docs/snapshots/nope.snapshot")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain")
    assert r.text == "Not found: Snapshot nope.snapshot not found"
    (cluster.nodes[0].snapshots_dir / "secret.txt").write_text("x")
    assert http.get(f"{url}/collections/docs/snapshots/..%2Fsecret.txt").status_code == 404
    r = http.get(f"{url}/collections/missing/snapshots/x.snapshot")
    assert r.status_code == 404 and r.text == "Not found: Collection `missing` doesn't exist!"
    r = http.delete(f"{url}/collections/docs/snapshots/nope.snapshot")
    assert r.status_code == 404 and r.json()["status"]["error"].startswith("Not found")


def test_same_second_snapshots_overwrite_each_other(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url, points=2)
    for attempt in range(20):
        a = http.post(f"{url}/collections/docs/snapshots").json()["result"]
        http.put(f"{url}/collections/docs/points?wait=true",
                 json={"points": [{"id": 1000 + attempt, "vector": [1.0, 1.0, 1.0], "payload": {}}]})
        b = http.post(f"{url}/collections/docs/snapshots").json()["result"]
        if a["name"] == b["name"]:
            break
        for d in (a, b):
            http.delete(f"{url}/collections/docs/snapshots/{d['name']}")
    else:
        pytest.fail("never made two snapshots within one second")
    assert a["checksum"] != b["checksum"]
    assert http.get(f"{url}/collections/docs/snapshots").json()["result"] == [b]


def test_shard_snapshots_create_list_download_recover(emulator, http):
    cluster = emulator(nodes=2)
    seed(http, cluster.urls[0], shard_number=2)
    n0, n1 = cluster.nodes
    r = http.post(f"{n1.url}/collections/docs/shards/0/snapshots")
    assert r.status_code == 400
    assert r.json()["status"]["error"] == "Wrong input: Shard 0 is not a local or queue proxy shard"
    assert http.post(f"{n0.url}/collections/docs/shards/7/snapshots").status_code == 404
    desc = http.post(f"{n0.url}/collections/docs/shards/0/snapshots").json()["result"]
    assert re.fullmatch(r"docs-shard-0-\d{4}(-\d{2}){5}\.snapshot", desc["name"])
    assert http.get(f"{n0.url}/collections/docs/shards/0/snapshots").json()["result"] == [desc]
    assert http.get(f"{n0.url}/collections/docs/snapshots").json()["result"] == []
    data = http.get(f"{n0.url}/collections/docs/shards/0/snapshots/{desc['name']}").content
    assert hashlib.sha256(data).hexdigest() == desc["checksum"]
    files = members(data)
    assert {"segments/points.jsonl", "newest_clocks.json", "replica_state.json", "shard_config.json"} <= set(files)
    shard0 = sorted(jsonl_ids(files["segments/points.jsonl"]))
    assert shard0 == sorted(p for p, _ in cluster.nodes[0].state.collections["docs"].shards[0].points.items())
    # the stream endpoint builds one on the fly
    streamed = http.get(f"{n0.url}/collections/docs/shards/0/snapshot")
    assert streamed.headers.get("transfer-encoding") == "chunked"
    assert members(streamed.content)["segments/points.jsonl"] == files["segments/points.jsonl"]
    # recover by bare name after the shard lost its points
    http.post(f"{n0.url}/collections/docs/points/delete?wait=true", json={"points": shard0})
    assert len(cluster.points("docs")) == 30 - len(shard0)
    r = http.put(f"{n0.url}/collections/docs/shards/0/snapshots/recover",
                 json={"location": desc["name"], "checksum": desc["checksum"]})
    assert r.status_code == 200, r.text
    assert len(cluster.points("docs")) == 30
    r = http.put(f"{n0.url}/collections/docs/shards/0/snapshots/recover",
                 json={"location": (n0.snapshots_dir / "x").as_uri()})
    assert r.status_code == 400
    r = http.put(f"{n0.url}/collections/nope/shards/0/snapshots/recover", json={"location": desc["name"]})
    assert r.status_code == 404
    assert http.delete(f"{n0.url}/collections/docs/shards/0/snapshots/{desc['name']}").json()["result"] is True
    assert http.get(f"{n0.url}/collections/docs/shards/0/snapshots").json()["result"] == []


def test_shard_upload_into_fresh_collection_restores_the_shard(emulator, http):
    source, target = emulator(nodes=2), emulator(nodes=2)
    seed(http, source.urls[0], shard_number=2)
    http.put(f"{target.urls[0]}/collections/docs", json={"vectors": VECTORS, "shard_number": 2})
    for node, dest in zip(source.nodes, target.nodes):
        sid = node.index
        desc = http.post(f"{node.url}/collections/docs/shards/{sid}/snapshots").json()["result"]
        data = http.get(f"{node.url}/collections/docs/shards/{sid}/snapshots/{desc['name']}").content
        r = upload(http, f"{dest.url}/collections/docs/shards/{sid}/snapshots/upload", data, desc["name"],
                   priority="snapshot", checksum=desc["checksum"])
        assert r.status_code == 200, r.text
    assert target.points("docs") == source.points("docs")
    assert http.get(f"{target.urls[0]}/collections/docs/shards/0/snapshots").json()["result"] == []


def test_full_snapshot_holds_every_collection_and_the_aliases(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url, "a", points=3)
    seed(http, url, "b", points=2)
    http.post(f"{url}/collections/aliases", json={"actions": [{"create_alias": {"collection_name": "a",
                                                                                 "alias_name": "live"}}]})
    desc = http.post(f"{url}/snapshots").json()["result"]
    assert re.fullmatch(r"full-snapshot-\d{4}(-\d{2}){5}\.snapshot", desc["name"])
    assert http.get(f"{url}/snapshots").json()["result"] == [desc]
    data = http.get(f"{url}/snapshots/{desc['name']}").content
    assert hashlib.sha256(data).hexdigest() == desc["checksum"]
    files = members(data)
    config = json.loads(files["config.json"])
    assert set(config["collections_mapping"]) == {"a", "b"} and config["collections_aliases"] == {"live": "a"}
    inner = members(files[config["collections_mapping"]["a"]])
    assert jsonl_ids(inner["0/segments/points.jsonl"]) == [0, 1, 2]
    assert http.delete(f"{url}/snapshots/{desc['name']}").json()["result"] is True
    assert http.get(f"{url}/snapshots").json()["result"] == []
    assert http.get(f"{url}/snapshots/{desc['name']}").status_code == 404


def test_aliases_resolve_for_snapshots_and_name_uses_the_real_collection(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    seed(http, url, points=1)
    http.post(f"{url}/collections/aliases", json={"actions": [{"create_alias": {"collection_name": "docs",
                                                                                 "alias_name": "live"}}]})
    desc = http.post(f"{url}/collections/live/snapshots").json()["result"]
    assert desc["name"].startswith("docs-")
    assert os.path.exists(cluster.nodes[0].snapshots_dir / "docs" / desc["name"])


def test_synthetic_collection_snapshot_is_a_valid_tar_of_the_requested_size(emulator, http):
    cluster = emulator()
    cluster.add_synthetic_collection("big", snapshot_size=3 * 1024 * 1024 + 100)
    url = cluster.urls[0]
    desc = http.post(f"{url}/collections/big/snapshots").json()["result"]
    assert abs(desc["size"] - (3 * 1024 * 1024 + 100)) < 4096
    data = http.get(f"{url}/collections/big/snapshots/{desc['name']}").content
    assert len(data) == desc["size"] and hashlib.sha256(data).hexdigest() == desc["checksum"]
    files = members(data)
    assert files["version.info"] == b"0.4.2" and "0/segments/filler.bin" in files
    assert len(files["0/segments/filler.bin"]) > 3_000_000
    assert http.get(f"{url}/collections/big/snapshots").json()["result"] == [desc]
    # the same bytes again, and it recovers elsewhere as an empty collection of the same config
    assert http.get(f"{url}/collections/big/snapshots/{desc['name']}").content == data
    other = emulator()
    r = upload(http, f"{other.urls[0]}/collections/big/snapshots/upload", data, desc["name"])
    assert r.status_code == 200, r.text
    assert other.points("big") == {}
    assert http.delete(f"{url}/collections/big/snapshots/{desc['name']}").json()["result"] is True
    assert http.get(f"{url}/collections/big/snapshots").json()["result"] == []
