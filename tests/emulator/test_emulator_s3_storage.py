"""Server-side S3 snapshot storage in the emulator, against moto over real HTTP (tests/s3_fixture.py)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile

import httpx
import pytest

from tests.emulator import snapshots as snapshot_store
from tests.emulator.__main__ import cluster_from_args
from tests.emulator.s3storage import S3Settings
from tests.s3_fixture import s3_client

VECTORS = {"size": 3, "distance": "Cosine"}
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
MIB = 1024 * 1024


@pytest.fixture
def http():
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def s3_cluster(emulator, s3_bucket):
    """A factory of clusters whose snapshots live in the test's bucket under `snapshots/`."""
    endpoint, bucket = s3_bucket

    def start(nodes: int = 1, **kw):
        config = {"endpoint_url": endpoint, "bucket": bucket, "prefix": "snapshots", "region": "us-east-1",
                  **kw.pop("s3", {})}
        return emulator(nodes=nodes, snapshots_s3=config, **kw)

    return start


def seed(http, url, name="docs", points=12, **body):
    assert http.put(f"{url}/collections/{name}", json={"vectors": VECTORS, **body}).status_code == 200
    r = http.put(f"{url}/collections/{name}/points?wait=true", json={"points": [
        {"id": i, "vector": [float(i), 0.5, -1.0], "payload": {"n": i}} for i in range(points)]})
    assert r.status_code == 200, r.text


def result(response: httpx.Response):
    assert response.status_code == 200, response.text
    return response.json()["result"]


def archive_ids(data: bytes, member: str) -> list:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        blob = tar.extractfile(member).read()
    return sorted(json.loads(line)["id"] for line in blob.splitlines() if line.strip())


def test_settings_from_a_url_and_keys():
    settings = S3Settings.from_url("http://127.0.0.1:9000/bkt/a/b", part_size=5 * MIB)
    assert (settings.endpoint_url, settings.bucket, settings.prefix) == ("http://127.0.0.1:9000", "bkt", "a/b")
    assert S3Settings.from_url("http://h:1/bkt").prefix == "snapshots"
    assert settings.key("docs/shards/0", "x.snapshot") == "a/b/docs/shards/0/x.snapshot"
    assert S3Settings(bucket="b", prefix="").key(".", "full.snapshot") == "full.snapshot"
    with pytest.raises(ValueError):
        S3Settings.from_config({"bucket": "b", "snapshots_path": "x"})


def test_create_uploads_to_the_bucket_with_no_checksum_anywhere(s3_cluster, http):
    cluster = s3_cluster()
    node = cluster.nodes[0]
    seed(http, node.url)
    desc = result(http.post(f"{node.url}/collections/docs/snapshots"))
    assert set(desc) == {"name", "creation_time", "size"} and STAMP.match(desc["creation_time"])
    assert desc["name"].startswith(f"docs-{node.peer_id}-")
    assert cluster.s3_objects() == {f"snapshots/docs/{desc['name']}": desc["size"]}
    assert node.s3.calls["CreateMultipartUpload"] == node.s3.calls["CompleteMultipartUpload"] == 1
    assert node.s3.calls["HeadObject"] == 1 and node.s3.uploaded_bytes == desc["size"]
    assert not (node.snapshots_dir / "docs").exists() or not any((node.snapshots_dir / "docs").iterdir())
    assert not any(node.snapshots.tmp.iterdir())
    shard = result(http.post(f"{node.url}/collections/docs/shards/0/snapshots"))
    assert "checksum" not in shard
    assert f"snapshots/docs/shards/0/{shard['name']}" in cluster.s3_objects()


def test_list_is_recursive_and_shared_by_every_node(s3_cluster, http):
    cluster = s3_cluster(nodes=2)
    seed(http, cluster.urls[0], shard_number=2)
    seed(http, cluster.urls[0], name="docs2")
    made = {result(http.post(f"{n.url}/collections/docs/snapshots"))["name"] for n in cluster.nodes}
    shard = result(http.post(f"{cluster.urls[1]}/collections/docs/shards/1/snapshots"))["name"]
    other = result(http.post(f"{cluster.urls[0]}/collections/docs2/snapshots"))["name"]
    endpoint, bucket = cluster.snapshots_s3.endpoint_url, cluster.snapshots_s3.bucket
    s3_client(endpoint).put_object(Bucket=bucket, Key="snapshots/docs/notes.txt", Body=b"hello")
    for node in cluster.nodes:
        listed = result(http.get(f"{node.url}/collections/docs/snapshots"))
        assert sorted(d["name"] for d in listed) == sorted([*made, shard, "notes.txt"])
        assert all("checksum" not in d and STAMP.match(d["creation_time"]) for d in listed)
    assert [d["name"] for d in result(http.get(f"{cluster.urls[1]}/collections/docs/shards/1/snapshots"))] == [shard]
    shard_url = f"{cluster.urls[0]}/collections/docs/shards/1/snapshots"  # node 0 holds no replica of shard 1
    assert http.get(shard_url).json()["status"]["error"] == "Wrong input: Shard 1 is not a local shard"
    assert http.get(f"{shard_url}/{shard}").status_code == 400  # the object is in the shared bucket all the same
    assert http.put(f"{shard_url}/recover", json={"location": shard}).status_code == 400
    assert http.delete(f"{shard_url}/{shard}").status_code == 400
    everything = {d["name"] for d in result(http.get(f"{cluster.urls[0]}/snapshots"))}
    assert everything == {*made, shard, "notes.txt", other}
    assert http.get(f"{cluster.urls[0]}/collections/nope/snapshots").status_code == 404


def test_download_streams_the_object_through_the_node_and_is_counted(s3_cluster, http):
    cluster = s3_cluster(nodes=2)
    seed(http, cluster.urls[0], shard_number=2)
    desc = result(http.post(f"{cluster.urls[0]}/collections/docs/snapshots"))
    for node in cluster.nodes:
        node.reset_traffic()
    r = http.get(f"{cluster.urls[1]}/collections/docs/snapshots/{desc['name']}")  # made on node 0: shared bucket
    assert r.status_code == 200 and "content-length" not in r.headers
    assert r.headers["transfer-encoding"] == "chunked" and len(r.content) == desc["size"]
    assert set(archive_ids(r.content, "0/segments/points.jsonl")) == set(cluster.shard_points("docs", 0))
    assert cluster.nodes[1].download_bytes() == desc["size"] == cluster.nodes[1].s3.downloaded_bytes
    assert cluster.nodes[0].download_bytes() == 0
    missing = http.get(f"{cluster.urls[0]}/collections/docs/snapshots/nope.snapshot")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/plain")
    assert "does not exist" in missing.text
    assert http.get(f"{cluster.urls[0]}/collections/nope/snapshots/{desc['name']}").status_code == 404


def test_delete_heads_then_deletes_through_s3(s3_cluster, http):
    cluster = s3_cluster()
    node = cluster.nodes[0]
    seed(http, node.url)
    name = result(http.post(f"{node.url}/collections/docs/snapshots"))["name"]
    assert result(http.delete(f"{node.url}/collections/docs/snapshots/{name}")) is True
    assert cluster.s3_objects() == {}
    again = http.delete(f"{node.url}/collections/docs/snapshots/{name}")
    assert again.status_code == 404 and f'raw: "snapshots/docs/{name}"' in again.json()["status"]["error"]
    assert node.s3.calls["HeadObject"] == 3 and node.s3.calls["DeleteObject"] == 1


def test_two_nodes_snapshotting_one_shard_in_the_same_second_write_one_key(s3_cluster, http, monkeypatch):
    cluster = s3_cluster(nodes=2)
    seed(http, cluster.urls[0], shard_number=1, replication_factor=2)
    cluster.set_replica_state("docs", 0, 1, "Dead", points=[{"id": 100, "vector": [1.0, 1.0, 1.0]}])
    monkeypatch.setattr(snapshot_store, "utc_stamp", lambda: "2026-01-02-03-04-05")
    first = result(http.post(f"{cluster.urls[0]}/collections/docs/shards/0/snapshots"))
    second = result(http.post(f"{cluster.urls[1]}/collections/docs/shards/0/snapshots"))
    assert first["name"] == second["name"] == "docs-shard-0-2026-01-02-03-04-05.snapshot"
    assert list(cluster.s3_objects()) == [f"snapshots/docs/shards/0/{first['name']}"]
    data = http.get(f"{cluster.urls[0]}/collections/docs/shards/0/snapshots/{first['name']}").content
    assert archive_ids(data, "segments/points.jsonl") == [100]  # node 1's upload won, silently


def test_multipart_parts_and_a_failed_upload_left_unfinished(s3_cluster, http):
    cluster = s3_cluster(s3={"part_size": 5 * MIB})
    node = cluster.nodes[0]
    cluster.add_synthetic_collection("big", 6 * MIB)
    desc = result(http.post(f"{node.url}/collections/big/snapshots"))
    assert node.s3.calls["UploadPart"] == 2 and cluster.s3_objects()[f"snapshots/big/{desc['name']}"] == desc["size"]
    cluster.add_synthetic_collection("big2", 6 * MIB)
    node.s3.fail_uploads(after_parts=1)
    r = http.post(f"{node.url}/collections/big2/snapshots")
    assert r.status_code == 500 and "Failed to finish upload" in r.json()["status"]["error"]
    assert "failed to store snapshot archive" in r.json()["status"]["error"]
    (key,) = cluster.s3_unfinished_uploads()
    assert key.startswith("snapshots/big2/big2-") and key not in cluster.s3_objects()
    assert [d["name"] for d in result(http.get(f"{node.url}/collections/big2/snapshots"))] == []
    assert node.s3.calls["UploadPart"] == 3 and node.s3.calls["AbortMultipartUpload"] == 0
    assert not node.snapshots.tmp.exists() or not any(node.snapshots.tmp.iterdir())


def test_recover_s3_urls_refused_http_and_presigned_urls_work(s3_cluster, emulator, http):
    cluster = s3_cluster()
    url = cluster.urls[0]
    seed(http, url)
    name = result(http.post(f"{url}/collections/docs/snapshots"))["name"]
    key = f"snapshots/docs/{name}"
    r = http.put(f"{url}/collections/copy/snapshots/recover", json={"location": f"s3://{cluster.snapshots_s3.bucket}/{key}"})
    assert r.status_code == 400 and "with scheme s3 is not supported" in r.json()["status"]["error"]
    presigned = s3_client(cluster.snapshots_s3.endpoint_url).generate_presigned_url(
        "get_object", Params={"Bucket": cluster.snapshots_s3.bucket, "Key": key}, ExpiresIn=600)
    target = emulator()
    assert result(http.put(f"{target.urls[0]}/collections/copy/snapshots/recover", json={"location": presigned}))
    assert target.points("copy") == cluster.points("docs")
    own_url = f"{url}/collections/docs/snapshots/{name}"  # the node's own download URL (Qdrant's e2e test)
    assert result(http.put(f"{url}/collections/again/snapshots/recover", json={"location": own_url}))
    assert cluster.points("again") == cluster.points("docs")


def test_shard_recover_by_bare_name_reads_s3_and_a_checksum_breaks_it(s3_cluster, http):
    cluster = s3_cluster()
    node = cluster.nodes[0]
    seed(http, node.url)
    name = result(http.post(f"{node.url}/collections/docs/shards/0/snapshots"))["name"]
    data = http.get(f"{node.url}/collections/docs/shards/0/snapshots/{name}").content
    http.post(f"{node.url}/collections/docs/points/delete?wait=true", json={"points": [1, 2, 3]})
    before = node.s3.downloaded_bytes
    recover = f"{node.url}/collections/docs/shards/0/snapshots/recover"
    assert result(http.put(recover, json={"location": name})) is True
    assert len(cluster.points("docs")) == 12 and node.s3.downloaded_bytes - before == len(data)
    r = http.put(recover, json={"location": name, "checksum": hashlib.sha256(data).hexdigest()})
    assert r.status_code == 500 and "failed to open file" in r.json()["status"]["error"]
    missing = http.put(recover, json={"location": "nope.snapshot"})
    assert missing.status_code == 404
    r = http.put(recover, json={"location": f"s3://{cluster.snapshots_s3.bucket}/snapshots/docs/shards/0/{name}"})
    assert r.status_code == 400 and "URLs with s3 scheme are not supported" in r.json()["status"]["error"]


def test_url_recovery_disabled_answers_403_but_names_and_uploads_work(emulator, http):
    cluster = emulator(url_recovery=False)
    url = cluster.urls[0]
    seed(http, url)
    name = result(http.post(f"{url}/collections/docs/snapshots"))["name"]
    location = f"{url}/collections/docs/snapshots/{name}"
    r = http.put(f"{url}/collections/copy/snapshots/recover", json={"location": location})
    assert r.status_code == 403
    assert r.json()["status"]["error"] == ("Forbidden: Snapshot recovery from remote URLs is disabled in the "
                                           "configuration")
    assert http.put(f"{url}/collections/docs/shards/0/snapshots/recover", json={"location": location}).status_code == 403
    assert http.put(f"{url}/collections/copy/snapshots/recover?wait=false", json={"location": location}).status_code == 202
    cluster.wait_background()
    assert "disabled" in cluster.nodes[0].errors[-1] and "copy" not in cluster.collection_names()
    shard = result(http.post(f"{url}/collections/docs/shards/0/snapshots"))["name"]
    assert result(http.put(f"{url}/collections/docs/shards/0/snapshots/recover", json={"location": shard}))
    blob = http.get(location).content
    r = http.post(f"{url}/collections/copy/snapshots/upload", files={"snapshot": ("up.snapshot", blob)})
    assert result(r) is True and cluster.points("copy") == cluster.points("docs")
    old = emulator(version="1.17.1", url_recovery=False)  # the key arrived in 1.18.0: ignored before
    assert result(http.put(f"{old.urls[0]}/collections/copy/snapshots/recover", json={"location": location}))


def test_upload_lands_on_local_disk_and_is_not_listed(s3_cluster, http):
    cluster = s3_cluster()
    node = cluster.nodes[0]
    seed(http, node.url)
    name = result(http.post(f"{node.url}/collections/docs/snapshots"))["name"]
    blob = http.get(f"{node.url}/collections/docs/snapshots/{name}").content
    r = http.post(f"{node.url}/collections/copy/snapshots/upload", files={"snapshot": ("up.snapshot", blob)})
    assert result(r) is True and cluster.points("copy") == cluster.points("docs")
    assert (node.snapshots_dir / "copy" / "up.snapshot").read_bytes() == blob
    assert result(http.get(f"{node.url}/collections/copy/snapshots")) == []
    assert list(cluster.s3_objects()) == [f"snapshots/docs/{name}"]


def test_full_snapshot_goes_to_the_bucket_root(s3_cluster, http):
    cluster = s3_cluster()
    url = cluster.urls[0]
    seed(http, url)
    full = result(http.post(f"{url}/snapshots"))
    assert full["name"].startswith("full-snapshot-") and "checksum" not in full
    assert f"snapshots/{full['name']}" in cluster.s3_objects()
    data = http.get(f"{url}/snapshots/{full['name']}")
    assert data.status_code == 200 and len(data.content) == full["size"]
    with tarfile.open(fileobj=io.BytesIO(data.content), mode="r:") as tar:
        config = json.loads(tar.extractfile("config.json").read())
    assert list(config["collections_mapping"]) == ["docs"]
    assert result(http.delete(f"{url}/snapshots/{full['name']}")) is True


def test_broken_s3_config_keeps_snapshots_on_local_disk(s3_cluster, http):
    cluster = s3_cluster(snapshots_s3_broken=True)
    node = cluster.nodes[0]
    seed(http, node.url)
    desc = result(http.post(f"{node.url}/collections/docs/snapshots"))
    assert len(desc["checksum"]) == 64 and (node.snapshots_dir / "docs" / desc["name"]).is_file()
    assert node.s3 is None and cluster.snapshots_s3 is not None and cluster.s3_objects() == {}


def test_command_line_serves_s3_storage_and_refuses_url_recovery(s3_bucket, tmp_path, http):
    endpoint, bucket = s3_bucket
    cluster = cluster_from_args(["--port", "0", "--data-dir", str(tmp_path), "--snapshots-s3",
                                 f"{endpoint}/{bucket}/qdrant/snaps", "--s3-part-size", str(5 * MIB),
                                 "--no-url-recovery"])
    assert cluster.snapshots_s3.part_size == 5 * MIB and not cluster.url_recovery
    with cluster:
        url = cluster.urls[0]
        seed(http, url)
        name = result(http.post(f"{url}/collections/docs/snapshots"))["name"]
        assert list(cluster.s3_objects()) == [f"qdrant/snaps/docs/{name}"]
        r = http.put(f"{url}/collections/x/snapshots/recover", json={"location": f"{url}/collections/docs/snapshots/{name}"})
        assert r.status_code == 403
    with pytest.raises(SystemExit):
        cluster_from_args(["--snapshots-s3", "s3://bucket/prefix"])
