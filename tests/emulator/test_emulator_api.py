"""The emulator's service, collection, alias, point and auth endpoints behave like Qdrant's."""

from __future__ import annotations

import time

import httpx
import pytest

VECTORS = {"size": 3, "distance": "Cosine"}


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def make_collection(http, url, name="docs", points=10, **body):
    r = http.put(f"{url}/collections/{name}", json={"vectors": VECTORS, **body})
    assert r.status_code == 200, r.text
    if points:
        r = http.put(f"{url}/collections/{name}/points?wait=true",
                     json={"points": [{"id": i, "vector": [float(i), 1.0, 2.0], "payload": {"n": i}}
                                      for i in range(points)]})
        assert r.status_code == 200, r.text


def test_start_is_fast_and_nodes_share_one_port(emulator):
    started = time.monotonic()
    cluster = emulator(nodes=3)
    assert time.monotonic() - started < 0.2
    ports = {url.rsplit(":", 1)[1] for url in cluster.urls}
    assert len(ports) == 1
    assert [url.split("//")[1].split(":")[0] for url in cluster.urls] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert len({node.peer_id for node in cluster.nodes}) == 3


def test_root_health_and_version(emulator, http):
    cluster = emulator(version="1.18.3")
    root = http.get(cluster.urls[0] + "/").json()
    assert root["title"] == "qdrant - vector search engine"
    assert root["version"] == "1.18.3"
    for path, text in (("/healthz", "healthz check passed"), ("/livez", "healthz check passed"),
                       ("/readyz", "all shards are ready")):
        r = http.get(cluster.urls[0] + path)
        assert r.status_code == 200 and r.text == text
        assert r.headers["content-type"].startswith("text/plain")


def test_cluster_status_single_node_is_disabled(emulator, http):
    cluster = emulator()
    body = http.get(cluster.urls[0] + "/cluster").json()
    assert body["status"] == "ok" and isinstance(body["time"], float)
    assert body["result"] == {"status": "disabled"}


def test_cluster_status_reports_p2p_uris_not_rest_urls(emulator, http):
    cluster = emulator(nodes=3)
    result = http.get(cluster.urls[1] + "/cluster").json()["result"]
    assert result["status"] == "enabled"
    assert result["peer_id"] == cluster.nodes[1].peer_id
    assert result["peers"] == {str(n.peer_id): {"uri": f"http://127.0.0.{n.index + 1}:6335/"} for n in cluster.nodes}
    raft = result["raft_info"]
    assert raft["leader"] == cluster.nodes[0].peer_id and raft["role"] == "Follower" and raft["is_voter"] is True
    assert http.get(cluster.urls[0] + "/cluster").json()["result"]["raft_info"]["role"] == "Leader"


def test_collection_lifecycle_and_defaults(emulator, http):
    cluster = emulator(nodes=3)
    url = cluster.urls[0]
    make_collection(http, url, points=0)
    info = http.get(f"{url}/collections/docs").json()["result"]
    params = info["config"]["params"]
    assert params["shard_number"] == 3 and params["replication_factor"] == 1
    assert params["vectors"] == VECTORS
    assert info["status"] == "green" and info["optimizer_status"] == "ok" and info["points_count"] == 0
    assert http.get(f"{url}/collections").json()["result"] == {"collections": [{"name": "docs"}]}
    assert http.get(f"{url}/collections/docs/exists").json()["result"] == {"exists": True}
    assert http.get(f"{url}/collections/nope/exists").json()["result"] == {"exists": False}
    again = http.put(f"{url}/collections/docs", json={"vectors": VECTORS})
    assert again.status_code == 409
    assert again.json()["status"]["error"] == "Wrong input: Collection `docs` already exists!"
    assert http.delete(f"{url}/collections/docs").json()["result"] is True
    missing = http.get(f"{url}/collections/docs")
    assert missing.status_code == 404
    assert missing.json()["status"] == {"error": "Not found: Collection `docs` doesn't exist!"}
    assert "result" not in missing.json()


def test_single_node_default_is_one_shard_and_named_vectors_work(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    named = {"text": {"size": 2, "distance": "Dot"}, "image": {"size": 3, "distance": "Euclid"}}
    assert http.put(f"{url}/collections/multi", json={"vectors": named, "replication_factor": 2}).status_code == 200
    params = http.get(f"{url}/collections/multi").json()["result"]["config"]["params"]
    assert params["shard_number"] == 1 and params["vectors"] == named
    r = http.put(f"{url}/collections/multi/points", json={"points": [
        {"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "vector": {"text": [1.0, 2.0]}, "payload": {}}]})
    assert r.json()["result"]["status"] == "acknowledged"
    bad = http.put(f"{url}/collections/multi/points?wait=true",
                   json={"points": [{"id": 1, "vector": {"text": [1.0]}}]})
    assert bad.status_code == 400 and bad.json()["status"]["error"].startswith("Wrong input: Vector dimension error")


def test_validation_errors(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    r = http.put(f"{url}/collections/bad", json={"vectors": {"size": 0, "distance": "Cosine"}})
    assert r.status_code == 422 and r.json()["status"]["error"].startswith("Validation error in JSON body")
    r = http.put(f"{url}/collections/bad", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = http.put(f"{url}/collections/a%3Ab", json={"vectors": VECTORS})
    assert r.status_code == 422


def test_points_upsert_scroll_count_get_delete(emulator, http):
    cluster = emulator(nodes=3)
    url = cluster.urls[1]
    make_collection(http, url, points=25)
    assert http.post(f"{url}/collections/docs/points/count", json={"exact": True}).json()["result"] == {"count": 25}
    page = http.post(f"{url}/collections/docs/points/scroll",
                     json={"limit": 10, "with_vector": True}).json()["result"]
    assert [p["id"] for p in page["points"]] == list(range(10))
    assert page["next_page_offset"] == 10
    assert page["points"][3] == {"id": 3, "payload": {"n": 3}, "vector": [3.0, 1.0, 2.0]}
    last = http.post(f"{url}/collections/docs/points/scroll", json={"limit": 10, "offset": 20,
                                                                   "with_payload": False}).json()["result"]
    assert [p["id"] for p in last["points"]] == list(range(20, 25)) and last["next_page_offset"] is None
    assert last["points"][0]["payload"] is None and last["points"][0]["vector"] is None
    filtered = http.post(f"{url}/collections/docs/points/count",
                         json={"filter": {"must": [{"key": "n", "range": {"gte": 20}}]}}).json()["result"]
    assert filtered == {"count": 5}
    one = http.get(f"{url}/collections/docs/points/7").json()["result"]
    assert one == {"id": 7, "payload": {"n": 7}, "vector": [7.0, 1.0, 2.0]}
    assert http.get(f"{url}/collections/docs/points/99").status_code == 404
    got = http.post(f"{url}/collections/docs/points", json={"ids": [1, 2, 99]}).json()["result"]
    assert [p["id"] for p in got] == [1, 2]
    r = http.post(f"{url}/collections/docs/points/delete?wait=true", json={"points": [0, 1, 2]})
    assert r.json()["result"]["status"] == "completed"
    assert http.post(f"{url}/collections/docs/points/count", json={}).json()["result"]["count"] == 22
    assert sorted(cluster.points("docs")) == list(range(3, 25))
    # points are spread over the three shards, all reachable from any node
    counts = [len(s.points) for s in cluster.nodes[0].state.collections["docs"].shards.values()]
    assert len(counts) == 3 and all(counts) and sum(counts) == 22


def test_batch_upsert_and_uuid_ids_order_after_integers(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    make_collection(http, url, points=0)
    uid = "00000000-0000-0000-0000-00000000000A"
    r = http.put(f"{url}/collections/docs/points?wait=true", json={"batch": {
        "ids": [uid, 5], "vectors": [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], "payloads": [{"a": 1}, None]}})
    assert r.status_code == 200, r.text
    ids = [p["id"] for p in http.post(f"{url}/collections/docs/points/scroll", json={}).json()["result"]["points"]]
    assert ids == [5, uid.lower()]


def test_aliases_create_repoint_rename_delete(emulator, http):
    cluster = emulator(nodes=2)
    url = cluster.urls[0]
    make_collection(http, url, "a", points=3)
    make_collection(http, url, "b", points=0)
    post = lambda actions: http.post(f"{url}/collections/aliases", json={"actions": actions})  # noqa: E731
    assert post([{"create_alias": {"collection_name": "a", "alias_name": "live"}}]).json()["result"] is True
    # aliases resolve on collection paths, from any node
    assert http.post(f"{cluster.urls[1]}/collections/live/points/count", json={}).json()["result"]["count"] == 3
    assert post([{"create_alias": {"collection_name": "b", "alias_name": "live"}}]).status_code == 200
    assert http.get(f"{url}/aliases").json()["result"] == {"aliases": [{"alias_name": "live", "collection_name": "b"}]}
    assert post([{"rename_alias": {"old_alias_name": "live", "new_alias_name": "prod"}}]).status_code == 200
    assert http.get(f"{url}/collections/b/aliases").json()["result"]["aliases"] == [
        {"alias_name": "prod", "collection_name": "b"}]
    assert http.get(f"{url}/collections/a/aliases").json()["result"]["aliases"] == []
    missing = post([{"rename_alias": {"old_alias_name": "nope", "new_alias_name": "x"}}])
    assert missing.status_code == 404
    no_collection = post([{"create_alias": {"collection_name": "zzz", "alias_name": "x"}}])
    assert no_collection.status_code == 404
    assert "Collection `zzz` doesn't exist" in no_collection.json()["status"]["error"]
    assert post([{"delete_alias": {"alias_name": "never-was"}}]).status_code == 200
    # deleting a collection drops its aliases
    assert http.delete(f"{url}/collections/b").json()["result"] is True
    assert http.get(f"{url}/aliases").json()["result"]["aliases"] == []


def test_auth_api_key_and_bearer(emulator, http):
    cluster = emulator(api_key="secret")
    url = cluster.urls[0]
    assert http.get(url + "/").status_code == 200 and http.get(url + "/healthz").status_code == 200
    missing = http.get(url + "/collections")
    assert missing.status_code == 401
    assert missing.text == "Must provide an API key or an Authorization bearer token"
    assert missing.headers["content-type"].startswith("text/plain")
    wrong = http.get(url + "/collections", headers={"api-key": "nope"})
    assert wrong.status_code == 401 and wrong.text == "Invalid API key or JWT"
    assert http.get(url + "/collections", headers={"api-key": "secret"}).status_code == 200
    assert http.get(url + "/collections", headers={"Authorization": "Bearer secret"}).status_code == 200


def test_read_only_key_reads_but_cannot_manage(emulator, http):
    cluster = emulator(api_key="rw", read_only_api_key="ro")
    url = cluster.urls[0]
    with httpx.Client(headers={"api-key": "rw"}, trust_env=False) as admin:
        make_collection(admin, url, points=2)
    ro = {"api-key": "ro"}
    assert http.get(f"{url}/collections/docs", headers=ro).status_code == 200
    assert http.post(f"{url}/collections/docs/points/scroll", json={}, headers=ro).status_code == 200
    for method, path in (("POST", "/collections/docs/snapshots"), ("DELETE", "/collections/docs"),
                         ("PUT", "/collections/docs/snapshots/recover"), ("POST", "/snapshots")):
        r = http.request(method, url + path, headers=ro, json={"location": "file:///x"})
        assert r.status_code == 403, (method, path)
        assert r.json()["status"]["error"] == "Forbidden: Global manage access is required"


def test_unknown_route_is_404(emulator, http):
    cluster = emulator()
    assert http.get(cluster.urls[0] + "/no/such/thing").status_code == 404


def test_request_log_records_method_path_and_query(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    make_collection(http, url, points=1)
    assert ("PUT", "/collections/docs/points", {"wait": "true"}) in cluster.nodes[0].requests
    assert cluster.nodes[0].requests[0] == ("PUT", "/collections/docs", {})


def test_independent_nodes_when_not_distributed(emulator, http):
    cluster = emulator(nodes=2, distributed=False)
    make_collection(http, cluster.urls[0], points=1)
    assert http.get(cluster.urls[1] + "/collections/docs").status_code == 404
    assert http.get(cluster.urls[1] + "/cluster").json()["result"] == {"status": "disabled"}
    assert cluster.collection_names() == ["docs"] and cluster.collection_names(node=1) == []


def test_upload_is_authorised_before_anything_is_stored(emulator, http):
    cluster = emulator(api_key="secret")
    url = cluster.urls[0]
    r = http.post(f"{url}/collections/docs/snapshots/upload", files={"snapshot": ("a.snapshot", b"x" * 3_000_000)})
    assert r.status_code == 401 and r.text == "Must provide an API key or an Authorization bearer token"
    assert not (cluster.nodes[0].snapshots_dir / "docs").exists()
    assert http.get(url + "/").status_code == 200  # the connection was drained and still works
