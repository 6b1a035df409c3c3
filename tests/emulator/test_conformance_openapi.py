"""Real emulator responses validate against Qdrant's OpenAPI document (v1.19.0).

The document lives beside the repository in ../shared/reference/ (where CI also puts it); the
module skips, saying why, where it is absent. OpenAPI 3.0's `nullable` is turned into JSON Schema
so that validation is strict: a null is accepted only where the document allows it.
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
from functools import cache
from pathlib import Path

import httpx
import jsonschema
import pytest

SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "reference" / "qdrant-openapi-v1.19.0.json"

if not SPEC_PATH.is_file():
    pytest.skip(f"Qdrant's OpenAPI document is not at {SPEC_PATH} (it sits in ../shared/reference beside "
                "the repository); the OpenAPI conformance checks need it", allow_module_level=True)

SCHEMA_LISTS = ("anyOf", "oneOf", "allOf")
ANY_TYPE_KEYS = ("type", "enum", "$ref", "anyOf", "oneOf", "allOf", "properties", "items", "const")


def to_json_schema(node):
    """OpenAPI 3.0 schema -> JSON Schema 2020-12: `nullable: true` becomes an explicit null type."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_json_schema(schema) for name, schema in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        elif key in SCHEMA_LISTS:
            out[key] = [to_json_schema(v) for v in value]
        elif key != "nullable":
            out[key] = value
    if not node.get("nullable"):
        return out
    if not any(k in out for k in ANY_TYPE_KEYS):
        return {**out, "type": "null"}  # `{"nullable": true}` inside anyOf: the null branch
    if isinstance(out.get("type"), str) and "$ref" not in out and not any(k in out for k in SCHEMA_LISTS):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [out, {"type": "null"}]}


@cache
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


@cache
def components() -> dict:
    return {"schemas": {name: to_json_schema(s) for name, s in spec()["components"]["schemas"].items()}}


def validator_for(schema: dict) -> jsonschema.Draft202012Validator:
    root = {**to_json_schema(copy.deepcopy(schema)), "components": components()}
    return jsonschema.Draft202012Validator(root)


def component_validator(name: str) -> jsonschema.Draft202012Validator:
    return validator_for({"$ref": f"#/components/schemas/{name}"})


def response_schema(template: str, method: str, status: int) -> tuple[str, dict]:
    responses = spec()["paths"][template][method.lower()]["responses"]
    response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses["default"]
    (content_type, media), = response["content"].items()
    return content_type, media["schema"]


class Checker:
    """Makes requests to the emulator and validates each answer against the document."""

    def __init__(self, http: httpx.Client, base: str):
        self.http = http
        self.base = base
        self.covered: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, template: str, status: int = 200, path_params: dict | None = None, **kw):
        path = template.format(**(path_params or {}))
        response = self.http.request(method, self.base + path, **kw)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        content_type, schema = response_schema(template, method, status)
        body = response.json() if content_type == "application/json" else response.text
        errors = sorted(validator_for(schema).iter_errors(body), key=lambda e: list(e.path))
        assert not errors, f"{method} {template} -> {status}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5])
        if content_type == "application/json" and status == 200 and template != "/":
            assert body["status"] == "ok" and "result" in body and isinstance(body["time"], float)
        self.covered.add((method, template, status))
        return body


@pytest.fixture
def http():
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


def test_every_json_endpoint_answers_what_the_document_describes(emulator, http):
    cluster = emulator(nodes=2)
    check = Checker(http, cluster.urls[0])
    c = {"collection_name": "docs"}
    check("GET", "/")
    check("GET", "/healthz")
    check("GET", "/livez")
    check("GET", "/readyz")
    check("GET", "/cluster")
    check("PUT", "/collections/{collection_name}", path_params=c,
          json={"vectors": {"size": 3, "distance": "Cosine"}, "shard_number": 2})
    check("PUT", "/collections/{collection_name}", 409, path_params=c, json={"vectors": {"size": 3, "distance": "Cosine"}})
    check("GET", "/collections/{collection_name}", 404, path_params={"collection_name": "nope"})
    check("GET", "/collections")
    check("GET", "/collections/{collection_name}/exists", path_params=c)
    check("PUT", "/collections/{collection_name}/points", path_params=c, params={"wait": "true"}, json={"points": [
        {"id": i, "vector": [1.0, float(i), 0.5], "payload": {"i": i, "s": None}} for i in range(12)]})
    check("GET", "/collections/{collection_name}", path_params=c)
    check("GET", "/collections/{collection_name}/cluster", path_params=c)
    check("POST", "/collections/{collection_name}/points/count", path_params=c, json={"exact": True})
    check("POST", "/collections/{collection_name}/points/scroll", path_params=c,
          json={"limit": 5, "with_vector": True})
    check("POST", "/collections/{collection_name}/points", path_params=c, json={"ids": [1, 2], "with_vector": True})
    check("GET", "/collections/{collection_name}/points/{id}", path_params={**c, "id": 3})
    check("POST", "/collections/{collection_name}/points/delete", path_params=c, params={"wait": "true"},
          json={"points": [11]})
    check("POST", "/collections/aliases", json={"actions": [
        {"create_alias": {"collection_name": "docs", "alias_name": "live"}}]})
    check("GET", "/aliases")
    check("GET", "/collections/{collection_name}/aliases", path_params=c)

    # collection snapshots: create, accepted create, list, delete, recover, upload
    snapshot = check("POST", "/collections/{collection_name}/snapshots", path_params=c)["result"]
    check("POST", "/collections/{collection_name}/snapshots", 202, path_params=c, params={"wait": "false"})
    cluster.wait_background()
    check("GET", "/collections/{collection_name}/snapshots", path_params=c)
    data = http.get(f"{cluster.urls[0]}/collections/docs/snapshots/{snapshot['name']}").content
    location = (cluster.nodes[0].snapshots_dir / "docs" / snapshot["name"]).as_uri()
    check("PUT", "/collections/{collection_name}/snapshots/recover", path_params={"collection_name": "copy"},
          json={"location": location, "priority": "snapshot", "checksum": snapshot["checksum"]})
    check("PUT", "/collections/{collection_name}/snapshots/recover", 400, path_params={"collection_name": "copy"},
          json={"location": "s3://bucket/key"})
    check("PUT", "/collections/{collection_name}/snapshots/recover", 422, path_params={"collection_name": "copy"},
          json={"location": location, "checksum": "xyz"})
    check("POST", "/collections/{collection_name}/snapshots/upload", path_params={"collection_name": "up"},
          params={"priority": "snapshot"}, files={"snapshot": ("up.snapshot", data)})
    check("POST", "/collections/{collection_name}/snapshots/upload", 202, path_params={"collection_name": "up2"},
          params={"wait": "false"}, files={"snapshot": ("up2.snapshot", data)})
    check("DELETE", "/collections/{collection_name}/snapshots/{snapshot_name}",
          path_params={**c, "snapshot_name": snapshot["name"]})

    # shard snapshots
    s0 = {**c, "shard_id": 0}
    shard = check("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots", path_params=s0)["result"]
    check("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots", 400, path_params={**c, "shard_id": 1})
    check("GET", "/collections/{collection_name}/shards/{shard_id}/snapshots", path_params=s0)
    check("PUT", "/collections/{collection_name}/shards/{shard_id}/snapshots/recover", path_params=s0,
          json={"location": shard["name"], "priority": "snapshot"})
    shard_data = http.get(f"{cluster.urls[0]}/collections/docs/shards/0/snapshots/{shard['name']}").content
    check("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots/upload", path_params=s0,
          files={"snapshot": ("s.snapshot", shard_data)})
    check("DELETE", "/collections/{collection_name}/shards/{shard_id}/snapshots/{snapshot_name}",
          path_params={**s0, "snapshot_name": shard["name"]})

    # full snapshots
    full = check("POST", "/snapshots")["result"]
    check("GET", "/snapshots")
    check("DELETE", "/snapshots/{snapshot_name}", path_params={"snapshot_name": full["name"]})
    check("DELETE", "/collections/{collection_name}", path_params=c)

    # in-place updates, payload indexes, shard keys, replica states, telemetry
    d = {"collection_name": "docs2"}
    check("PUT", "/collections/{collection_name}", path_params=d, json={"vectors": {"size": 3, "distance": "Dot"}})
    check("PUT", "/collections/{collection_name}/points", path_params=d, params={"wait": "true"}, json={"points": [
        {"id": i, "vector": [1.0, 0.0, float(i)], "payload": {"i": i}} for i in range(4)]})
    check("POST", "/collections/{collection_name}/points/payload", path_params=d, params={"wait": "true"},
          json={"payload": {"k": "v"}, "points": [1, 2]})
    check("POST", "/collections/{collection_name}/points/payload", 404, path_params=d, json={"payload": {}, "points": [9]})
    check("PUT", "/collections/{collection_name}/points/payload", path_params=d, json={"payload": {"only": 1},
                                                                                      "filter": {"must": []}})
    check("PUT", "/collections/{collection_name}/points/vectors", path_params=d, params={"wait": "true"},
          json={"points": [{"id": 1, "vector": [0.0, 1.0, 0.0]}]})
    check("PUT", "/collections/{collection_name}/index", path_params=d, params={"wait": "true"},
          json={"field_name": "i", "field_schema": {"type": "integer", "range": True}})
    check("PUT", "/collections/{collection_name}/index", path_params=d, json={"field_name": "k", "field_schema": "keyword"})
    check("PUT", "/collections/{collection_name}/index", 400, path_params=d, json={"field_name": "x"})
    check("GET", "/collections/{collection_name}", path_params=d)
    check("DELETE", "/collections/{collection_name}/index/{field_name}", path_params={**d, "field_name": "k"})
    cluster.set_replica_state("docs2", 0, 0, "Dead")
    check("GET", "/collections/{collection_name}/cluster", path_params=d)
    check("GET", "/collections/{collection_name}/shards", path_params=d)
    s = {"collection_name": "tenants"}
    check("PUT", "/collections/{collection_name}", path_params=s,
          json={"vectors": {"size": 3, "distance": "Dot"}, "sharding_method": "custom"})
    check("PUT", "/collections/{collection_name}/shards", path_params=s, json={"shard_key": "eu", "shards_number": 2})
    check("PUT", "/collections/{collection_name}/shards", path_params=s,
          json={"shard_key": 7, "replication_factor": 2, "placement": [cluster.nodes[1].peer_id]})
    check("PUT", "/collections/{collection_name}/shards", 400, path_params=s, json={"shard_key": "eu"})
    check("PUT", "/collections/{collection_name}/points", path_params=s, params={"wait": "true"},
          json={"shard_key": "eu", "points": [{"id": 1, "vector": [1.0, 0.0, 0.0]}]})
    check("PUT", "/collections/{collection_name}/points", 400, path_params=s,
          json={"points": [{"id": 1, "vector": [1.0, 0.0, 0.0]}]})
    check("GET", "/collections/{collection_name}/shards", path_params=s)
    check("GET", "/collections/{collection_name}/cluster", path_params=s)
    check("POST", "/collections/{collection_name}/shards/delete", path_params=s, json={"shard_key": 7})
    for level in ("0", "1", "2"):
        check("GET", "/telemetry", params={"details_level": level})
    assert 'snapshot_created_total{id="docs"} 3' in check("GET", "/metrics")

    # and the enabled cluster shape, from the second node
    check.base = cluster.urls[1]
    check("GET", "/cluster")
    assert {(m, t) for m, t, _ in check.covered} == SERVED


# every documented operation the emulator serves with a JSON or text answer (downloads are binary)
SERVED = {
    ("GET", "/"), ("GET", "/healthz"), ("GET", "/livez"), ("GET", "/readyz"), ("GET", "/cluster"),
    ("GET", "/collections"), ("GET", "/collections/{collection_name}"), ("PUT", "/collections/{collection_name}"),
    ("DELETE", "/collections/{collection_name}"), ("GET", "/collections/{collection_name}/exists"),
    ("GET", "/collections/{collection_name}/cluster"), ("GET", "/aliases"), ("POST", "/collections/aliases"),
    ("GET", "/collections/{collection_name}/aliases"),
    ("PUT", "/collections/{collection_name}/points"), ("POST", "/collections/{collection_name}/points"),
    ("POST", "/collections/{collection_name}/points/count"), ("POST", "/collections/{collection_name}/points/scroll"),
    ("POST", "/collections/{collection_name}/points/delete"), ("GET", "/collections/{collection_name}/points/{id}"),
    ("POST", "/collections/{collection_name}/snapshots"), ("GET", "/collections/{collection_name}/snapshots"),
    ("DELETE", "/collections/{collection_name}/snapshots/{snapshot_name}"),
    ("PUT", "/collections/{collection_name}/snapshots/recover"),
    ("POST", "/collections/{collection_name}/snapshots/upload"),
    ("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots"),
    ("GET", "/collections/{collection_name}/shards/{shard_id}/snapshots"),
    ("DELETE", "/collections/{collection_name}/shards/{shard_id}/snapshots/{snapshot_name}"),
    ("PUT", "/collections/{collection_name}/shards/{shard_id}/snapshots/recover"),
    ("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots/upload"),
    ("POST", "/snapshots"), ("GET", "/snapshots"), ("DELETE", "/snapshots/{snapshot_name}"),
    ("POST", "/collections/{collection_name}/points/payload"), ("PUT", "/collections/{collection_name}/points/payload"),
    ("PUT", "/collections/{collection_name}/points/vectors"), ("PUT", "/collections/{collection_name}/index"),
    ("DELETE", "/collections/{collection_name}/index/{field_name}"), ("GET", "/collections/{collection_name}/shards"),
    ("PUT", "/collections/{collection_name}/shards"), ("POST", "/collections/{collection_name}/shards/delete"),
    ("GET", "/telemetry"), ("GET", "/metrics"),
}


def test_downloads_are_tar_archives_of_the_declared_type(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    http.put(f"{url}/collections/docs", json={"vectors": {"size": 2, "distance": "Dot"}})
    name = http.post(f"{url}/collections/docs/snapshots").json()["result"]["name"]
    response = http.get(f"{url}/collections/docs/snapshots/{name}")
    declared = spec()["paths"]["/collections/{collection_name}/snapshots/{snapshot_name}"]["get"]["responses"]["200"]
    assert response.headers["content-type"] in declared["content"]
    assert tarfile.open(fileobj=io.BytesIO(response.content), mode="r:").getnames()[0] == "version.info"


def test_s3_storage_answers_match_the_document(emulator, http, s3_bucket):
    endpoint, bucket = s3_bucket
    cluster = emulator(snapshots_s3={"endpoint_url": endpoint, "bucket": bucket}, url_recovery=False)
    url = cluster.urls[0]
    check = Checker(http, url)
    c, s0 = {"collection_name": "docs"}, {"collection_name": "docs", "shard_id": 0}
    check("PUT", "/collections/{collection_name}", path_params=c, json={"vectors": {"size": 2, "distance": "Dot"}})
    snapshot = check("POST", "/collections/{collection_name}/snapshots", path_params=c)["result"]
    shard = check("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots", path_params=s0)["result"]
    assert "checksum" not in snapshot and "checksum" not in shard
    listed = check("GET", "/collections/{collection_name}/snapshots", path_params=c)["result"]
    assert len(listed) == 2
    check("GET", "/collections/{collection_name}/shards/{shard_id}/snapshots", path_params=s0)
    check("POST", "/snapshots")
    check("GET", "/snapshots")
    check("PUT", "/collections/{collection_name}/snapshots/recover", 403, path_params={"collection_name": "copy"},
          json={"location": f"{url}/collections/docs/snapshots/{snapshot['name']}"})
    check("PUT", "/collections/{collection_name}/snapshots/recover", 400, path_params={"collection_name": "copy"},
          json={"location": f"s3://{bucket}/snapshots/docs/{snapshot['name']}"})
    check("PUT", "/collections/{collection_name}/shards/{shard_id}/snapshots/recover", 500, path_params=s0,
          json={"location": shard["name"], "checksum": "0" * 64})
    check("DELETE", "/collections/{collection_name}/snapshots/{snapshot_name}",
          path_params={**c, "snapshot_name": snapshot["name"]})
    check("DELETE", "/collections/{collection_name}/snapshots/{snapshot_name}", 404,
          path_params={**c, "snapshot_name": snapshot["name"]})


def test_the_validator_rejects_malformed_bodies():
    info = component_validator("CollectionInfo")
    good = {
        "status": "green", "optimizer_status": "ok", "points_count": None, "indexed_vectors_count": 0,
        "segments_count": 1, "payload_schema": {},
        "config": {"params": {"vectors": {"size": 3, "distance": "Cosine"}},
                   "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                   "optimizer_config": {"default_segment_number": 0, "flush_interval_sec": 5},
                   "wal_config": None, "quantization_config": None},
    }
    assert list(info.iter_errors(good)) == []  # nullable fields accept null
    for broken in (
        {**good, "status": "purple"},
        {**good, "points_count": "many"},
        {**good, "segments_count": None},  # not nullable
        {k: v for k, v in good.items() if k != "config"},
        {**good, "config": {**good["config"], "params": {"vectors": {"size": 3, "distance": "Hamming"}}}},
        {**good, "optimizer_status": {"error": "x", "extra": 1}},
    ):
        assert list(info.iter_errors(broken)), broken
    description = component_validator("SnapshotDescription")
    assert list(description.iter_errors({"name": "a", "size": 1, "checksum": None, "creation_time": None})) == []
    assert list(description.iter_errors({"name": "a"}))
    cluster = component_validator("ClusterStatus")
    assert list(cluster.iter_errors({"status": "disabled"})) == []
    assert list(cluster.iter_errors({"status": "enabled", "peer_id": 1, "peers": {}}))
