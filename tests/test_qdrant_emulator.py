"""qbr.qdrant against the Qdrant emulator over real HTTP: round trips, clusters, auth and faults."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

import pytest

from qbr.errors import QdrantError
from qbr.qdrant import NodeRef, TransferInterrupted, create_body_from_config
from tests.qdrant_testing import TestingClient as QdrantClient

KEY = "emulator-api-key-0123456789abcdef"
POINTS = [{"id": i, "vector": [1.0, float(i), 0.5, -1.0], "payload": {"i": i, "tag": f"t{i % 3}"}}
          for i in range(1, 41)]
VECTORS = {"size": 4, "distance": "Cosine"}


def client_for(url: str, **kw) -> QdrantClient:
    kw.setdefault("backoff", 0)
    return QdrantClient(url, kw.pop("api_key", KEY), cluster=kw.pop("cluster", "emu"), **kw)


def download(client: QdrantClient, collection: str, name: str, **kw) -> bytes:
    with client.download_snapshot(collection, name, chunk_size=4096, **kw) as stream:
        data = b"".join(stream)
        assert stream.size in (None, len(data))
    return data


def archive_of(data: bytes, chunk: int = 1000):
    """An open_archive factory over bytes, yielding them in small chunks."""

    @contextmanager
    def open_archive() -> Iterator[Iterator[bytes]]:
        yield (data[i:i + chunk] for i in range(0, len(data), chunk))

    return open_archive


def by_id(points) -> dict:
    return {p["id"]: p.get("payload") for p in points}


def test_backup_and_restore_round_trip_on_one_node(emulator):
    url = emulator(nodes=1, api_key=KEY).urls[0]
    with client_for(url) as qdrant:
        assert qdrant.version() == "1.19.0"
        assert qdrant.nodes() == [NodeRef(None, url)]
        qdrant.create_collection("docs", {"params": {"vectors": VECTORS, "shard_number": 1}})
        assert qdrant.collection_exists("docs") and not qdrant.collection_exists("other")
        qdrant.upsert_points("docs", POINTS)
        qdrant.update_aliases([{"create_alias": {"collection_name": "docs", "alias_name": "live"}}])
        assert qdrant.list_aliases() == [("live", "docs")]
        assert qdrant.collection_aliases("docs") == ["live"]

        info = qdrant.create_snapshot("docs")
        assert info is not None and info.name.startswith("docs-") and info.checksum
        assert info in qdrant.list_snapshots("docs")
        data = download(qdrant, "docs", info.name)
        assert len(data) == info.size
        assert hashlib.sha256(data).hexdigest() == info.checksum

        qdrant.delete_collection("docs")
        assert qdrant.list_collections() == []
        qdrant.upload_snapshot("docs", archive_of(data), filename=info.name, size=len(data),
                               checksum=info.checksum)
        assert qdrant.count_points("docs") == len(POINTS)
        assert by_id(qdrant.scroll_points("docs", batch=7)) == by_id(POINTS)
        qdrant.delete_snapshot("docs", info.name)
        assert info.name not in [s.name for s in qdrant.list_snapshots("docs")]


def test_config_from_collection_info_recreates_the_collection(emulator):
    url = emulator(nodes=1).urls[0]
    with client_for(url, api_key=None) as qdrant:
        qdrant.create_collection("src", {"params": {"vectors": {"size": 8, "distance": "Dot"}, "shard_number": 2},
                                         "hnsw_config": {"m": 32}})
        source = qdrant.collection_info("src")["config"]
        body = create_body_from_config(source)
        assert body["vectors"] == {"size": 8, "distance": "Dot"} and body["shard_number"] == 2
        qdrant.create_collection("copy", source)
        copy = qdrant.collection_info("copy")["config"]
        assert copy["params"]["vectors"] == source["params"]["vectors"]
        assert copy["params"]["shard_number"] == 2 and copy["hnsw_config"]["m"] == 32
        with pytest.raises(QdrantError) as caught:
            qdrant.create_collection("copy", source)
        assert caught.value.status == 409 and "already exists" in str(caught.value)


def test_recover_from_another_clusters_download_url(emulator):
    source = emulator(nodes=1, api_key=KEY).urls[0]
    target = emulator(nodes=1, api_key="target-key-0123456789").urls[0]
    with client_for(source) as src, client_for(target, api_key="target-key-0123456789") as dst:
        src.create_collection("docs", {"params": {"vectors": VECTORS}})
        src.upsert_points("docs", POINTS)
        info = src.create_snapshot("docs")
        location = f"{source}/collections/docs/snapshots/{info.name}"
        dst.recover_snapshot("docs", location, api_key=KEY, checksum=info.checksum)
        assert dst.count_points("docs") == len(POINTS)
        with pytest.raises(QdrantError) as caught:
            dst.recover_snapshot("fresh", location + "?X-Amz-Signature=feedface", api_key="wrong-key-xyz")
        message = str(caught.value)
        assert "the archive URL" in message and "feedface" not in message and "wrong-key-xyz" not in message
        assert source not in message


def test_cluster_peers_map_to_rest_urls_and_shards_snapshot_per_node(emulator):
    cluster = emulator(nodes=3, api_key=KEY)
    with client_for(cluster.urls[1]) as seed:
        nodes = seed.nodes()
        by_peer = sorted(cluster.nodes, key=lambda node: node.peer_id)
        assert nodes == [NodeRef(node.peer_id, node.url) for node in by_peer]
        seed.create_collection("docs", {"params": {"vectors": VECTORS, "shard_number": 3}})
        seed.upsert_points("docs", POINTS)

    seen_shards = set()
    for ref in nodes:
        with seed.for_node(ref.url) as node:
            layout = node.collection_cluster("docs")
            assert layout["peer_id"] == ref.peer_id
            for shard in layout["local_shards"]:
                info = node.create_snapshot("docs", shard_id=shard["shard_id"])
                data = download(node, "docs", info.name, shard_id=shard["shard_id"])
                assert hashlib.sha256(data).hexdigest() == info.checksum
                assert info in node.list_snapshots("docs", shard_id=shard["shard_id"])
                seen_shards.add(shard["shard_id"])
    assert seen_shards == {0, 1, 2}


def test_auth_errors_are_sentences(emulator):
    cluster = emulator(nodes=1, api_key=KEY, read_only_api_key="read-only-key-0123456789")
    url = cluster.urls[0]
    with client_for(url, api_key="wrong-key-0123456789") as wrong:
        with pytest.raises(QdrantError) as caught:
            wrong.list_collections()
    assert str(caught.value) == (
        f"Qdrant node {url} (cluster 'emu') rejected the API key (401 Invalid API key or JWT); "
        "set api_key for cluster 'emu'."
    )
    with client_for(url, api_key=None) as anonymous:
        assert anonymous.version() == "1.19.0"  # GET / needs no key
        with pytest.raises(QdrantError, match=r"requires an API key \(401 Must provide an API key"):
            anonymous.list_collections()
    with client_for(url) as admin:
        admin.create_collection("docs", {"params": {"vectors": VECTORS}})
    with client_for(url, api_key="read-only-key-0123456789") as reader:
        assert reader.list_snapshots("docs") == []
        with pytest.raises(QdrantError) as caught:
            reader.create_snapshot("docs")
    assert caught.value.status == 403
    assert "use an API key with manage access for cluster 'emu'" in str(caught.value)


def test_missing_collection_and_snapshot(emulator):
    url = emulator(nodes=1).urls[0]
    with client_for(url, api_key=None) as qdrant:
        with pytest.raises(QdrantError, match="collection `nope` does not exist; check the collection name"):
            qdrant.create_snapshot("nope")
        qdrant.create_collection("docs", {"params": {"vectors": VECTORS}})
        with pytest.raises(QdrantError) as caught:
            download(qdrant, "docs", "missing.snapshot")
        assert caught.value.status == 404 and "could not download snapshot `missing.snapshot`" in str(caught.value)


def test_retries_through_injected_faults(emulator):
    cluster = emulator(nodes=1)
    node, url = cluster.nodes[0], cluster.urls[0]
    sleeps: list[float] = []
    with client_for(url, api_key=None, sleep=sleeps.append) as qdrant:
        qdrant.create_collection("docs", {"params": {"vectors": VECTORS}})
        qdrant.upsert_points("docs", POINTS)

        node.faults.add(method="POST", path=r"/collections/docs/snapshots$", status=503, times=2)
        before = len(node.requests)
        info = qdrant.create_snapshot("docs")
        assert info is not None
        assert [r[:2] for r in node.requests[before:]] == [("POST", "/collections/docs/snapshots")] * 3

        node.faults.add(path=r"^/collections$", status=429, retry_after=1)
        assert qdrant.list_collections() == ["docs"]
        assert sleeps[-1] == 1.0

        node.faults.add(path=r"^/collections/docs/points/count$", reset=True)
        assert qdrant.count_points("docs") == len(POINTS)

        node.faults.add(method="POST", path="upload", status=503)
        data = download(qdrant, "docs", info.name)
        qdrant.upload_snapshot("docs", archive_of(data), filename="again.snapshot", size=len(data))
        assert qdrant.count_points("docs") == len(POINTS)

        node.faults.add(method="GET", path=r"^/collections$", status=500, times=None)
        with pytest.raises(QdrantError, match=r"answered 500 to GET /collections after 5 attempts: "):
            qdrant.list_collections()
        node.faults.clear()


def test_cut_download_raises_transfer_interrupted(emulator):
    cluster = emulator(nodes=1)
    url = cluster.urls[0]
    with client_for(url, api_key=None) as qdrant:
        qdrant.create_collection("docs", {"params": {"vectors": VECTORS}})
        qdrant.upsert_points("docs", POINTS)
        info = qdrant.create_snapshot("docs")
        assert info.size > 1000
        cluster.nodes[0].faults.add(method="GET", path=r"/snapshots/.+", cut_after=1000)
        with pytest.raises(TransferInterrupted, match=f"cut short after 1000 of {info.size} bytes"):
            download(qdrant, "docs", info.name)
        assert hashlib.sha256(download(qdrant, "docs", info.name)).hexdigest() == info.checksum


def test_node_down_is_unreachable(emulator):
    cluster = emulator(nodes=1)
    url = cluster.urls[0]
    cluster.nodes[0].down()
    with client_for(url, api_key=None, retries=1) as qdrant:
        with pytest.raises(QdrantError) as caught:
            qdrant.version()
    assert str(caught.value) == (
        f"Cannot reach Qdrant node {url} (cluster 'emu') after 2 attempts: connection refused; "
        "check that it is running and that the manifest's url is right."
    )
