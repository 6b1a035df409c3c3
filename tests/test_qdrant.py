"""qbr.qdrant against mocked HTTP (respx): request shapes, result parsing, errors, retries, streams.

A few tests at the end use a tiny real HTTP server on 127.0.0.1 to prove what a mock cannot:
Content-Length and multipart framing on a real socket, and a body cut by a closed connection.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.server
import io
import json
import socket
import threading
import tracemalloc
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

import httpx
import pytest
import respx
from werkzeug.wrappers import Request as WerkzeugRequest

from qbr.errors import OutcomeUnknown, QbrError, QdrantError
from qbr.qdrant import (
    NodeRef,
    SnapshotInfo,
    SnapshotStream,
    TransferInterrupted,
    create_body_from_config,
    rest_urls_from_cluster,
)
from tests.qdrant_testing import TestingClient as QdrantClient

URL = "http://q0:6333"
KEY = "s3cr3t-api-key-0123456789"
SNAP = "docs-3766212330831337-2024-07-22-08-31-55.snapshot"
SHA = "a" * 64


def ok(result, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"result": result, "status": "ok", "time": 0.002, "usage": {"cpu": 1}})


def accepted() -> httpx.Response:
    return httpx.Response(202, json={"status": "accepted", "time": 0.0})


def err(status: int, message: str, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json={"status": {"error": message}, "time": 0.0}, headers=headers)


def text(status: int, body: str) -> httpx.Response:
    return httpx.Response(status, text=body, headers={"content-type": "text/plain"})


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps) -> Iterator[QdrantClient]:
    with QdrantClient(URL + "/", KEY, cluster="prod", backoff=0, sleep=sleeps.append) as c:
        yield c


def body_of(route: respx.Route) -> dict:
    return json.loads(route.calls.last.request.content)


# ------------------------------------------------------------------ rest_urls_from_cluster


def enabled(peers: dict) -> dict:
    return {
        "status": "enabled",
        "peer_id": 2,
        "peers": {str(pid): {"uri": uri} for pid, uri in peers.items()},
        "raft_info": {"term": 1, "commit": 5, "pending_operations": 0, "is_voter": True},
        "consensus_thread_status": {"consensus_thread_status": "working"},
        "message_send_failures": {},
    }


def test_rest_urls_single_node_is_the_seed():
    assert rest_urls_from_cluster({"status": "disabled"}, "http://q0:6333/") == [NodeRef(None, "http://q0:6333")]


def test_rest_urls_map_p2p_uris_to_rest_port_of_seed_sorted_by_peer_id():
    result = enabled({30: "http://10.0.0.3:6335/", 2: "http://10.0.0.1:6335/", 11: "http://10.0.0.2:6335/"})
    assert rest_urls_from_cluster(result, "http://10.0.0.1:6333") == [
        NodeRef(2, "http://10.0.0.1:6333"),
        NodeRef(11, "http://10.0.0.2:6333"),
        NodeRef(30, "http://10.0.0.3:6333"),
    ]


def test_rest_urls_explicit_rest_port_wins():
    result = enabled({1: "http://q0:6335/", 2: "http://q1:6335/"})
    assert [n.url for n in rest_urls_from_cluster(result, "http://lb:80", rest_port=7333)] == [
        "http://q0:7333",
        "http://q1:7333",
    ]


def test_rest_urls_keep_the_seed_scheme_and_default_port():
    result = enabled({5: "http://q0.internal:6335/", 6: "http://[fd00::6]:6335/"})
    assert rest_urls_from_cluster(result, "https://q0.example") == [
        NodeRef(5, "https://q0.internal"),
        NodeRef(6, "https://[fd00::6]"),
    ]
    assert rest_urls_from_cluster(result, "https://q0.example:6333")[0].url == "https://q0.internal:6333"


def test_rest_urls_refuse_a_malformed_cluster_status():
    with pytest.raises(QdrantError, match="malformed cluster status"):
        rest_urls_from_cluster({"status": "weird"}, URL)
    with pytest.raises(QdrantError, match="no peers"):
        rest_urls_from_cluster({"status": "enabled", "peers": {}}, URL)
    with pytest.raises(QdrantError, match="without a usable address"):
        rest_urls_from_cluster({"status": "enabled", "peers": {"1": {"url": "x"}}}, URL)


# ------------------------------------------------------------------ create_body_from_config

INFO_CONFIG = {
    "params": {
        "vectors": {"size": 4, "distance": "Cosine", "on_disk": None},
        "shard_number": 3,
        "sharding_method": None,
        "replication_factor": 2,
        "write_consistency_factor": 2,
        "read_fan_out_factor": None,
        "read_fan_out_delay_ms": 50,
        "on_disk_payload": True,
        "sparse_vectors": {"text": {"modifier": "idf"}},
    },
    "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000, "payload_m": None},
    "optimizer_config": {"deleted_threshold": 0.2, "default_segment_number": 0, "flush_interval_sec": 5,
                         "max_optimization_threads": None},
    "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
    "quantization_config": {"scalar": {"type": "int8", "always_ram": True}},
    "strict_mode_config": {"enabled": False},
    "metadata": {"owner": "search", "note": None},
}


def test_create_body_renames_optimizer_config_and_drops_nulls():
    body = create_body_from_config(INFO_CONFIG)
    assert body == {
        "vectors": {"size": 4, "distance": "Cosine"},
        "shard_number": 3,
        "replication_factor": 2,
        "write_consistency_factor": 2,
        "on_disk_payload": True,
        "sparse_vectors": {"text": {"modifier": "idf"}},
        "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
        "optimizers_config": {"deleted_threshold": 0.2, "default_segment_number": 0, "flush_interval_sec": 5},
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        "quantization_config": {"scalar": {"type": "int8", "always_ram": True}},
        "strict_mode_config": {"enabled": False},
        "metadata": {"owner": "search", "note": None},
    }


def test_create_body_overrides_shards_and_caps_write_consistency():
    body = create_body_from_config(INFO_CONFIG, shard_number=1, replication_factor=1)
    assert (body["shard_number"], body["replication_factor"], body["write_consistency_factor"]) == (1, 1, 1)
    assert INFO_CONFIG["params"]["shard_number"] == 3  # the input is left alone


def test_create_body_from_minimal_config():
    assert create_body_from_config({"params": {"vectors": {}}, "optimizers_config": {"flush_interval_sec": 1}}) == {
        "vectors": {},
        "optimizers_config": {"flush_interval_sec": 1},
    }


# ------------------------------------------------------------------ metadata


def test_root_is_bare_json_and_version_reads_it(api, client):
    route = api.get("/").respond(json={"title": "qdrant - vector search engine", "version": "1.19.0", "commit": None})
    assert client.root()["title"] == "qdrant - vector search engine"
    assert client.version() == "1.19.0"
    assert route.call_count == 2
    assert route.calls.last.request.headers["api-key"] == KEY


def test_no_api_key_header_without_a_key(api):
    route = api.get("/").respond(json={"version": "1.19.0"})
    with QdrantClient(URL) as anonymous:
        assert anonymous.version() == "1.19.0"
    assert "api-key" not in route.calls.last.request.headers


def test_version_missing_is_malformed(api, client):
    api.get("/").respond(json={"title": "nginx"})
    with pytest.raises(QdrantError, match=r"returned a malformed response to GET / \(no version\)"):
        client.version()


def test_cluster_status_and_nodes(api, client):
    result = enabled({7: "http://q1:6335/", 3: "http://q0:6335/"})
    route = api.get("/cluster").mock(return_value=ok(result))
    assert client.cluster_status() == result
    assert client.nodes() == [NodeRef(3, "http://q0:6333"), NodeRef(7, "http://q1:6333")]
    assert client.nodes(rest_port=16333)[1] == NodeRef(7, "http://q1:16333")
    assert route.call_count == 3


def test_nodes_single_node(api, client):
    api.get("/cluster").mock(return_value=ok({"status": "disabled"}))
    assert client.nodes() == [NodeRef(None, URL)]


def test_nodes_malformed_names_the_cluster(api, client):
    api.get("/cluster").mock(return_value=ok({"status": "enabled", "peers": {}}))
    with pytest.raises(QdrantError, match=r"Qdrant node http://q0:6333 \(cluster 'prod'\) reported cluster mode"):
        client.nodes()


def test_collection_cluster(api, client):
    layout = {"peer_id": 1, "shard_count": 2, "local_shards": [{"shard_id": 0, "points_count": 5, "state": "Active"}],
              "remote_shards": [{"shard_id": 1, "peer_id": 2, "state": "Active"}], "shard_transfers": []}
    api.get("/collections/docs/cluster").mock(return_value=ok(layout))
    assert client.collection_cluster("docs") == layout


def test_for_node_keeps_key_and_cluster(api, client):
    route = api.get("http://q1:6333/").respond(json={"version": "1.19.0"})
    other = client.for_node("http://q1:6333")
    assert (other.url, other.cluster) == ("http://q1:6333", "prod")
    assert other.version() == "1.19.0"
    assert route.calls.last.request.headers["api-key"] == KEY


def test_url_must_be_http(sleeps):
    with pytest.raises(QdrantError, match=r"The url 'q0:6333' of cluster 'prod' is not a Qdrant REST URL"):
        QdrantClient("q0:6333", cluster="prod")


def test_repr_and_node_hide_credentials():
    c = QdrantClient("http://user:pw@q0:6333/", KEY)
    assert c.node == "http://q0:6333"
    assert KEY not in repr(c) and "pw" not in repr(c)


# ------------------------------------------------------------------ collections and aliases


def test_list_collections_sorted(api, client):
    api.get("/collections").mock(return_value=ok({"collections": [{"name": "b"}, {"name": "a"}]}))
    assert client.list_collections() == ["a", "b"]


def test_collection_info_and_exists(api, client):
    info = {"status": "green", "points_count": 3, "config": INFO_CONFIG}
    api.get("/collections/docs").mock(return_value=ok(info))
    api.get("/collections/docs/exists").mock(return_value=ok({"exists": True}))
    api.get("/collections/gone/exists").mock(return_value=ok({"exists": False}))
    assert client.collection_info("docs") == info
    assert client.collection_exists("docs") is True
    assert client.collection_exists("gone") is False


def test_names_are_quoted_in_paths(api, client):
    route = api.get(url__regex=r"/collections/.*/exists$").mock(return_value=ok({"exists": True}))
    client.collection_exists("a/b c?d#e")
    assert route.calls.last.request.url.raw_path == b"/collections/a%2Fb%20c%3Fd%23e/exists"


def test_create_collection_sends_create_body(api, client):
    route = api.put("/collections/docs").mock(return_value=ok(True))
    client.create_collection("docs", INFO_CONFIG, shard_number=2)
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json"
    assert body_of(route) == create_body_from_config(INFO_CONFIG, shard_number=2)
    assert "optimizers_config" in body_of(route) and "optimizer_config" not in body_of(route)


def test_delete_collection(api, client):
    route = api.delete("/collections/docs").mock(return_value=ok(True))
    client.delete_collection("docs")
    assert route.called


def test_aliases(api, client):
    pairs = [{"alias_name": "z", "collection_name": "docs"}, {"alias_name": "a", "collection_name": "docs"}]
    api.get("/aliases").mock(return_value=ok({"aliases": pairs}))
    api.get("/collections/docs/aliases").mock(return_value=ok({"aliases": pairs}))
    update = api.post("/collections/aliases").mock(return_value=ok(True))
    assert client.list_aliases() == [("a", "docs"), ("z", "docs")]
    assert client.collection_aliases("docs") == ["a", "z"]
    actions = [{"delete_alias": {"alias_name": "a"}},
               {"create_alias": {"collection_name": "docs", "alias_name": "b"}}]
    client.update_aliases(actions)
    assert body_of(update) == {"actions": actions}


# ------------------------------------------------------------------ points


def test_upsert_points(api, client):
    route = api.put("/collections/docs/points").mock(return_value=ok({"operation_id": 1, "status": "completed"}))
    points = [{"id": 1, "vector": [0.1, 0.2], "payload": {"k": "v"}}]
    client.upsert_points("docs", points)
    assert route.calls.last.request.url.params["wait"] == "true"
    assert body_of(route) == {"points": points}


def test_count_points(api, client):
    route = api.post("/collections/docs/points/count").mock(return_value=ok({"count": 42}))
    assert client.count_points("docs") == 42
    assert body_of(route) == {"exact": True}
    client.count_points("docs", exact=False)
    assert body_of(route) == {"exact": False}


def test_scroll_points_follows_pages(api, client):
    pages = [
        ok({"points": [{"id": 1}, {"id": 2}], "next_page_offset": 3}),
        ok({"points": [{"id": 3}], "next_page_offset": None}),
    ]
    route = api.post("/collections/docs/points/scroll").mock(side_effect=pages)
    assert [p["id"] for p in client.scroll_points("docs", batch=2, with_vectors=False)] == [1, 2, 3]
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert bodies == [
        {"limit": 2, "with_payload": True, "with_vector": False},
        {"limit": 2, "with_payload": True, "with_vector": False, "offset": 3},
    ]


def test_count_of_wrong_shape_is_malformed(api, client):
    api.post("/collections/docs/points/count").mock(return_value=ok({"total": 1}))
    with pytest.raises(QdrantError, match=r"malformed response to POST /collections/docs/points/count"):
        client.count_points("docs")


# ------------------------------------------------------------------ snapshots (JSON endpoints)

DESCRIPTION = {"name": SNAP, "creation_time": "2024-07-22T08:31:55", "size": 1024, "checksum": SHA}


def test_create_snapshot_waits_and_parses(api, client):
    route = api.post("/collections/docs/snapshots").mock(return_value=ok(DESCRIPTION))
    info = client.create_snapshot("docs")
    assert info == SnapshotInfo(SNAP, 1024, SHA, "2024-07-22T08:31:55")
    assert route.calls.last.request.url.params["wait"] == "true"
    assert route.calls.last.request.content == b""


def test_create_snapshot_without_checksum_or_time(api, client):
    api.post("/collections/docs/snapshots").mock(return_value=ok({"name": SNAP, "size": 7, "creation_time": None}))
    assert client.create_snapshot("docs") == SnapshotInfo(SNAP, 7, None, None)


def test_create_snapshot_accepted_returns_none(api, client):
    route = api.post("/collections/docs/shards/2/snapshots").mock(return_value=accepted())
    assert client.create_snapshot("docs", shard_id=2, wait=False) is None
    assert route.calls.last.request.url.params["wait"] == "false"


def test_list_and_delete_snapshots(api, client):
    api.get("/collections/docs/snapshots").mock(return_value=ok([DESCRIPTION, {"name": "b.snapshot", "size": 1}]))
    shard_list = api.get("/collections/docs/shards/0/snapshots").mock(return_value=ok([]))
    delete = api.delete(f"/collections/docs/snapshots/{SNAP}").mock(return_value=ok(True))
    shard_delete = api.delete("/collections/docs/shards/1/snapshots/s.snapshot").mock(return_value=accepted())
    assert [s.name for s in client.list_snapshots("docs")] == [SNAP, "b.snapshot"]
    assert client.list_snapshots("docs", shard_id=0) == []
    assert shard_list.called
    client.delete_snapshot("docs", SNAP)
    assert delete.calls.last.request.url.params["wait"] == "true"
    client.delete_snapshot("docs", "s.snapshot", shard_id=1, wait=False)
    assert shard_delete.calls.last.request.url.params["wait"] == "false"


def test_snapshot_list_of_wrong_shape_is_malformed(api, client):
    api.get("/collections/docs/snapshots").mock(return_value=ok([{"name": SNAP}]))
    with pytest.raises(QdrantError, match="malformed response to GET /collections/docs/snapshots"):
        client.list_snapshots("docs")


def test_full_snapshots(api, client):
    create = api.post("/snapshots").mock(return_value=ok({"name": "full-snapshot-2024.snapshot", "size": 9}))
    api.get("/snapshots").mock(return_value=ok([{"name": "full-snapshot-2024.snapshot", "size": 9}]))
    delete = api.delete("/snapshots/full-snapshot-2024.snapshot").mock(return_value=ok(True))
    download = api.get("/snapshots/full-snapshot-2024.snapshot").respond(200, content=b"full-bytes")
    assert client.create_full_snapshot().name == "full-snapshot-2024.snapshot"
    assert create.calls.last.request.url.params["wait"] == "true"
    assert client.list_full_snapshots() == [SnapshotInfo("full-snapshot-2024.snapshot", 9, None, None)]
    with client.download_full_snapshot("full-snapshot-2024.snapshot") as stream:
        assert b"".join(stream) == b"full-bytes"
    assert download.calls.last.request.headers["accept-encoding"] == "identity"
    client.delete_full_snapshot("full-snapshot-2024.snapshot", wait=False)
    assert delete.calls.last.request.url.params["wait"] == "false"


def test_recover_sends_priority_checksum_and_api_key(api, client):
    route = api.put("/collections/docs/snapshots/recover").mock(return_value=ok(True))
    client.recover_snapshot("docs", "http://q0:6333/collections/docs/snapshots/x.snapshot",
                            checksum=SHA, api_key="remote-key")
    assert route.calls.last.request.url.params["wait"] == "true"
    assert route.calls.last.request.headers["api-key"] == KEY
    assert body_of(route) == {"location": "http://q0:6333/collections/docs/snapshots/x.snapshot",
                              "priority": "snapshot", "checksum": SHA, "api_key": "remote-key"}


def test_recover_shard_with_explicit_priority(api, client):
    route = api.put("/collections/docs/shards/4/snapshots/recover").mock(return_value=accepted())
    client.recover_snapshot("docs", "file:///qdrant/snapshots/x.snapshot", shard_id=4, priority="replica",
                            wait=False)
    assert body_of(route) == {"location": "file:///qdrant/snapshots/x.snapshot", "priority": "replica"}
    assert route.calls.last.request.url.params["wait"] == "false"


def test_recover_shard_from_a_bare_name_names_it(api, client):
    route = api.put("/collections/docs/shards/0/snapshots/recover").mock(
        return_value=err(404, "Not found: Snapshot docs-shard-0.snapshot not found")
    )
    with pytest.raises(QdrantError) as caught:
        client.recover_snapshot("docs", "docs-shard-0.snapshot", shard_id=0)
    assert body_of(route) == {"location": "docs-shard-0.snapshot", "priority": "snapshot"}
    assert str(caught.value) == (
        "Qdrant node http://q0:6333 (cluster 'prod') could not recover shard 0 of collection `docs` from snapshot "
        "`docs-shard-0.snapshot`: not found (404 Not found: Snapshot docs-shard-0.snapshot not found); "
        "check that it exists."
    )


def test_redirect_is_not_followed(api, client):
    route = api.get("/collections").mock(return_value=httpx.Response(301, headers={"location": "http://x/"}))
    with pytest.raises(QdrantError, match=r"answered 301 to GET /collections \(a redirect\); check that"):
        client.list_collections()
    assert route.call_count == 1


def test_unknown_priority_is_refused_before_any_request(api, client):
    route = api.put("/collections/docs/snapshots/recover").mock(return_value=ok(True))
    with pytest.raises(QdrantError, match="use one of no_sync, snapshot, replica"):
        client.recover_snapshot("docs", "http://x/y", priority="newest")
    assert not route.called


# ------------------------------------------------------------------ download stream


def test_download_streams_chunks_with_size(api, client):
    payload = bytes(range(256)) * 40  # 10240 bytes
    route = api.get(f"/collections/docs/snapshots/{SNAP}").respond(
        200, content=payload, headers={"content-type": "application/octet-stream"}
    )
    with client.download_snapshot("docs", SNAP, chunk_size=4096) as stream:
        assert isinstance(stream, SnapshotStream)
        assert stream.size == len(payload)
        chunks = list(stream)
    assert b"".join(chunks) == payload
    assert max(len(c) for c in chunks) <= 4096 and len(chunks) >= 3
    request = route.calls.last.request
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["api-key"] == KEY


def test_download_shard_snapshot_path(api, client):
    route = api.get("/collections/docs/shards/3/snapshots/s%20p.snapshot").respond(200, content=b"abc")
    with client.download_snapshot("docs", "s p.snapshot", shard_id=3) as stream:
        assert b"".join(stream) == b"abc"
    assert route.called


def test_download_cut_short_raises_retryable(api, client):
    def short(request):
        return httpx.Response(200, headers={"content-length": "100"}, stream=httpx.ByteStream(b"x" * 40))

    api.get(f"/collections/docs/snapshots/{SNAP}").mock(side_effect=short)
    with client.download_snapshot("docs", SNAP) as stream:
        assert stream.size == 100
        with pytest.raises(TransferInterrupted) as caught:
            b"".join(stream)
    assert caught.value.retryable is True
    assert isinstance(caught.value, QdrantError)
    assert str(caught.value) == (
        f"Could not download snapshot `{SNAP}` of collection `docs` from Qdrant node http://q0:6333 "
        "(cluster 'prod'): the transfer was cut short after 40 of 100 bytes; retry the transfer."
    )


def test_download_connection_drop_mid_body_raises_retryable(api, client):
    class Dropping(httpx.SyncByteStream):
        def __iter__(self):
            yield b"first"
            raise httpx.ReadError("connection reset")

    api.get(f"/collections/docs/snapshots/{SNAP}").mock(
        side_effect=lambda request: httpx.Response(200, stream=Dropping())
    )
    with client.download_snapshot("docs", SNAP, chunk_size=5) as stream:
        assert stream.size is None
        received = []
        with pytest.raises(TransferInterrupted, match="cut short after 5 bytes"):
            for chunk in stream:
                received.append(chunk)
    assert received == [b"first"]


def test_download_plain_text_404_fails_before_first_chunk(api, client):
    route = api.get("/collections/docs/snapshots/nope.snapshot").mock(
        return_value=text(404, "Not found: Snapshot nope.snapshot not found")
    )
    with pytest.raises(QdrantError) as caught:
        with client.download_snapshot("docs", "nope.snapshot"):
            pytest.fail("the context must not be entered")
    assert caught.value.status == 404
    assert str(caught.value) == (
        "Qdrant node http://q0:6333 (cluster 'prod') could not download snapshot `nope.snapshot` of collection "
        "`docs`: not found (404 Not found: Snapshot nope.snapshot not found); check that it exists."
    )
    assert route.call_count == 1


def test_download_retries_503_before_streaming(api, client):
    route = api.get(f"/collections/docs/snapshots/{SNAP}").mock(
        side_effect=[text(503, "busy"), httpx.Response(200, content=b"data")]
    )
    with client.download_snapshot("docs", SNAP) as stream:
        assert b"".join(stream) == b"data"
    assert route.call_count == 2


# ------------------------------------------------------------------ upload stream


def parse_multipart(request: httpx.Request, content: bytes) -> tuple[str, str, bytes]:
    """Check the body's framing byte by byte and parse it with werkzeug; return (field, filename, data)."""
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    boundary = ctype.split("boundary=", 1)[1].encode()
    assert content.startswith(b"--" + boundary + b"\r\n")
    assert content.endswith(b"\r\n--" + boundary + b"--\r\n")
    assert content.count(b"--" + boundary) == 2
    parsed = WerkzeugRequest.from_values(
        input_stream=io.BytesIO(content), content_length=len(content), content_type=ctype, method="POST"
    )
    assert list(parsed.files.keys()) == ["snapshot"] and not parsed.form
    part = parsed.files["snapshot"]
    return "snapshot", part.filename, part.read()


class Archive:
    """An archive source: a factory of context managers yielding chunks, recording opens and reads."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.opened = 0
        self.closed = 0
        self.pulled = 0

    @contextmanager
    def open(self) -> Iterator[Iterator[bytes]]:
        self.opened += 1
        try:
            yield self._generate()
        finally:
            self.closed += 1

    def _generate(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


class Capture(httpx.BaseTransport):
    """Records how far the archive was read when the request reached the transport, then reads it."""

    def __init__(self, archive: Archive, reply: httpx.Response) -> None:
        self.archive, self.reply, self.seen = archive, reply, {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen["pulled_before_read"] = self.archive.pulled
        self.seen["body_is_a_stream"] = not isinstance(request.stream, httpx.ByteStream)
        self.seen["content"] = b"".join(request.stream)
        self.seen["request"] = request
        return self.reply


def test_upload_streams_a_well_formed_multipart_body():
    archive = Archive([b"tar-part-1\r\n--not-a-boundary", b"", b"\x00" * 1000, b"end"])
    size = sum(len(c) for c in archive.chunks)
    transport = Capture(archive, ok(True))
    with QdrantClient(URL, KEY, transport=transport, backoff=0) as c:
        c.upload_snapshot("docs", archive.open, filename="docs-1.snapshot", size=size, checksum=SHA)
    seen = transport.seen
    request, content = seen["request"], seen["content"]
    # the body is produced from the archive's generator as it is sent, not beforehand
    assert seen["pulled_before_read"] == 0 and seen["body_is_a_stream"]
    assert request.method == "POST" and request.url.path == "/collections/docs/snapshots/upload"
    assert int(request.headers["content-length"]) == len(content)
    assert "transfer-encoding" not in request.headers
    assert parse_multipart(request, content) == ("snapshot", "docs-1.snapshot", b"".join(archive.chunks))
    assert dict(request.url.params) == {"wait": "true", "priority": "snapshot", "checksum": SHA}
    assert request.headers["api-key"] == KEY
    assert (archive.opened, archive.closed) == (1, 1)


def test_upload_without_size_is_chunked_and_shard_path(api, client):
    archive = Archive([b"abc", b"def"])
    seen = {}

    def handler(request):
        seen["content"], seen["request"] = request.read(), request
        return accepted()

    route = api.post("/collections/docs/shards/1/snapshots/upload").mock(side_effect=handler)
    client.upload_snapshot("docs", archive.open, filename="../evil\"name.snapshot", shard_id=1,
                           priority="no_sync", wait=False)
    request = seen["request"]
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    _, filename, data = parse_multipart(request, seen["content"])
    assert (filename, data) == ("evilname.snapshot", b"abcdef")
    assert dict(route.calls.last.request.url.params) == {"wait": "false", "priority": "no_sync"}


def test_upload_retry_reopens_the_archive(api, client):
    archive = Archive([b"0123456789"])
    contents = []

    def handler(request):
        contents.append(request.read())
        return err(503, "Service unavailable") if len(contents) == 1 else ok(True)

    api.post("/collections/docs/snapshots/upload").mock(side_effect=handler)
    client.upload_snapshot("docs", archive.open, filename="a.snapshot", size=10)
    assert (archive.opened, archive.closed) == (2, 2)
    assert contents[0] == contents[1] and b"0123456789" in contents[1]


def test_upload_refuses_an_archive_of_the_wrong_size(api, client):
    api.post("/collections/docs/snapshots/upload").mock(side_effect=lambda request: (request.read(), ok(True))[1])
    with pytest.raises(QdrantError, match="recorded size is 5; verify the archive"):
        client.upload_snapshot("docs", Archive([b"123", b"456"]).open, filename="a.snapshot", size=5)
    with pytest.raises(QdrantError, match="recorded size is 9"):
        client.upload_snapshot("docs", Archive([b"123"]).open, filename="a.snapshot", size=9)


def test_upload_memory_stays_flat():
    """64 MiB go through a consuming transport while traced memory stays under 4 MiB."""
    chunk = b"\xab" * (1 << 20)
    total = {"bytes": 0}

    class Sink(httpx.BaseTransport):
        def handle_request(self, request):
            for part in request.stream:
                total["bytes"] += len(part)
            return ok(True)

    @contextmanager
    def open_archive():
        yield (chunk for _ in range(64))

    client = QdrantClient(URL, transport=Sink(), backoff=0)
    tracemalloc.start()
    try:
        client.upload_snapshot("docs", open_archive, filename="big.snapshot", size=64 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total["bytes"] > 64 << 20
    assert peak < 4 << 20


# ------------------------------------------------------------------ error shapes


@pytest.mark.parametrize(
    "response, expected",
    [
        (
            text(401, "Invalid API key or JWT"),
            "Qdrant node http://q0:6333 (cluster 'prod') rejected the API key (401 Invalid API key or JWT); "
            "set api_key for cluster 'prod'.",
        ),
        (
            err(403, "Forbidden: Global manage access is required"),
            "Qdrant node http://q0:6333 (cluster 'prod') refused to create a snapshot of collection `docs` "
            "(403 Forbidden: Global manage access is required); use an API key with manage access for cluster 'prod'.",
        ),
        (
            text(403, "Forbidden: read-only key"),
            "Qdrant node http://q0:6333 (cluster 'prod') refused to create a snapshot of collection `docs` "
            "(403 Forbidden: read-only key); use an API key with manage access for cluster 'prod'.",
        ),
        (
            err(404, "Not found: Collection `docs` doesn't exist!"),
            "Qdrant node http://q0:6333 (cluster 'prod') could not create a snapshot of collection `docs`: "
            "collection `docs` does not exist; check the collection name.",
        ),
        (
            err(409, "Wrong input: already there"),
            "Qdrant node http://q0:6333 (cluster 'prod') could not create a snapshot of collection `docs`: it already "
            "exists (409 Wrong input: already there); delete it first or choose another name.",
        ),
        (
            err(422, "Validation error in path parameters: [name: too long]"),
            "Qdrant node http://q0:6333 (cluster 'prod') rejected the request to create a snapshot of collection "
            "`docs` as invalid (422 Validation error in path parameters: [name: too long]); check the names and "
            "values sent, and that this Qdrant version supports them.",
        ),
        (
            err(500, "Service internal error: disk full"),
            "Qdrant node http://q0:6333 (cluster 'prod') answered 500 to POST /collections/docs/snapshots: "
            "Service internal error: disk full; check the node's health and logs, then retry.",
        ),
        (
            err(507, "No space left"),
            "Qdrant node http://q0:6333 (cluster 'prod') answered 507 to POST /collections/docs/snapshots: "
            "No space left; check the node's health and logs, then retry.",
        ),
    ],
)
def test_error_sentences(api, client, response, expected):
    route = api.post("/collections/docs/snapshots").mock(return_value=response)
    with pytest.raises(QdrantError) as caught:
        client.create_snapshot("docs")
    assert str(caught.value) == expected
    assert caught.value.status == response.status_code
    assert caught.value.node == "http://q0:6333"
    assert isinstance(caught.value, QbrError) and caught.value.exit_code == 1
    assert route.call_count == 1  # none of these is retried


def test_401_without_a_key_says_one_is_needed(api):
    api.get("/collections").mock(return_value=text(401, "Must provide an API key or an Authorization bearer token"))
    with pytest.raises(QdrantError) as caught:
        QdrantClient(URL, cluster="prod").list_collections()
    assert str(caught.value) == (
        "Qdrant node http://q0:6333 (cluster 'prod') requires an API key (401 Must provide an API key or an "
        "Authorization bearer token); set api_key for cluster 'prod'."
    )


def test_message_without_cluster_name(api):
    api.get("/collections").mock(return_value=text(401, "Invalid API key or JWT"))
    with pytest.raises(QdrantError) as caught:
        QdrantClient(URL, KEY).list_collections()
    assert str(caught.value) == (
        "Qdrant node http://q0:6333 rejected the API key (401 Invalid API key or JWT); "
        "set api_key for this cluster in the manifest."
    )


def test_400_checksum_mismatch(api, client):
    api.post("/collections/docs/snapshots/upload").mock(
        return_value=err(400, f"Checksum mismatch: expected {'b' * 64}, actual {SHA}")
    )
    with pytest.raises(QdrantError) as caught:
        client.upload_snapshot("docs", Archive([b"x"]).open, filename="a.snapshot", size=1, checksum=SHA)
    assert caught.value.status == 400
    assert str(caught.value).startswith(
        "Qdrant node http://q0:6333 (cluster 'prod') could not upload snapshot `a.snapshot` to collection `docs`: "
        "the archive's checksum does not match (400 Checksum mismatch: expected"
    )
    assert str(caught.value).endswith("; the archive is damaged or not the one recorded, verify the repository.")


def test_400_incompatible_snapshot(api, client):
    api.post("/collections/docs/snapshots/upload").mock(
        return_value=err(400, "Wrong input: Snapshot is not compatible with existing collection: vectors differ")
    )
    with pytest.raises(QdrantError, match="delete the collection first or restore under another name"):
        client.upload_snapshot("docs", Archive([b"x"]).open, filename="a.snapshot")


def test_400_other_is_not_retried(api, client):
    route = api.put("/collections/docs").mock(return_value=err(400, "Bad request: alias with this name exists"))
    with pytest.raises(QdrantError, match=r"refused to create collection `docs` \(400 Bad request: alias"):
        client.create_collection("docs", INFO_CONFIG)
    assert route.call_count == 1


def test_html_error_page_is_summarised(api, client):
    api.get("/collections").mock(
        return_value=httpx.Response(502, html="<html><body><h1>502 Bad Gateway</h1>" + "x" * 5000 + "</body></html>")
    )
    with pytest.raises(QdrantError) as caught:
        client.list_collections()
    assert str(caught.value) == (
        "Qdrant node http://q0:6333 (cluster 'prod') answered 502 to GET /collections after 5 attempts: "
        "an HTML page instead of Qdrant's error (Bad Gateway); check the node's health and logs, then retry."
    )


def test_long_plain_text_error_is_truncated(api, client):
    api.get("/collections").mock(return_value=text(500, "boom " * 500))
    with pytest.raises(QdrantError) as caught:
        client.list_collections()
    message = str(caught.value)
    assert message.endswith("boom boom bo...; check the node's health and logs, then retry.")
    assert len(message) < 450


@pytest.mark.parametrize(
    "response, why",
    [
        (httpx.Response(200, text="<html>welcome to nginx</html>"), "not JSON"),
        (httpx.Response(200, json={"status": "ok"}), "no result in the envelope"),
        (httpx.Response(200, json=[1, 2]), "not a JSON object"),
        (ok({"names": []}), "unexpected result shape: KeyError"),
    ],
)
def test_malformed_responses(api, client, response, why):
    api.get("/collections").mock(return_value=response)
    with pytest.raises(QdrantError) as caught:
        client.list_collections()
    assert str(caught.value) == (
        f"Qdrant node http://q0:6333 (cluster 'prod') returned a malformed response to GET /collections ({why}); "
        "check that the url points at Qdrant's REST port (usually 6333)."
    )


# ------------------------------------------------------------------ retries


def test_503_then_200_succeeds_after_two_attempts(api, client):
    route = api.post("/collections/docs/snapshots").mock(
        side_effect=[err(503, "Service unavailable: shard not ready"), ok(DESCRIPTION)]
    )
    assert client.create_snapshot("docs").name == SNAP
    assert route.call_count == 2


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_statuses_are_retried(api, client, status):
    route = api.get("/collections").mock(side_effect=[text(status, "gateway"), ok({"collections": []})])
    assert client.list_collections() == []
    assert route.call_count == 2


def test_503_exhaustion_gives_the_sentence(api, client):
    route = api.post("/collections/docs/snapshots").mock(return_value=err(503, "Service unavailable: no leader"))
    with pytest.raises(QdrantError) as caught:
        client.create_snapshot("docs")
    assert route.call_count == 5
    assert caught.value.status == 503
    assert str(caught.value) == (
        "Qdrant node http://q0:6333 (cluster 'prod') answered 503 to POST /collections/docs/snapshots after "
        "5 attempts: Service unavailable: no leader; check the node's health and logs, then retry."
    )


def test_retries_zero_means_one_attempt(api, sleeps):
    route = api.get("/collections").mock(return_value=err(503, "busy"))
    with pytest.raises(QdrantError, match=r"answered 503 to GET /collections: busy"):
        QdrantClient(URL, retries=0, backoff=0, sleep=sleeps.append).list_collections()
    assert route.call_count == 1


def test_429_honours_retry_after(api, client, sleeps):
    route = api.get("/collections").mock(
        side_effect=[err(429, "Rate limiting exceeded", headers={"Retry-After": "3"}), ok({"collections": []})]
    )
    assert client.list_collections() == []
    assert route.call_count == 2
    assert sleeps == [3.0]


def test_retry_after_is_capped_by_max_backoff(api, sleeps):
    api.get("/collections").mock(
        side_effect=[err(429, "slow down", headers={"Retry-After": "600"}), ok({"collections": []})]
    )
    QdrantClient(URL, backoff=0, max_backoff=2.5, sleep=sleeps.append).list_collections()
    assert sleeps == [2.5]


def test_retry_after_as_http_date(api, client, sleeps):
    when = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=8), usegmt=True)
    api.get("/collections").mock(
        side_effect=[err(429, "slow down", headers={"Retry-After": when}), ok({"collections": []})]
    )
    client.list_collections()
    assert len(sleeps) == 1 and 6.0 <= sleeps[0] <= 8.0


def test_429_exhaustion_advises_waiting(api, client):
    api.get("/collections").mock(return_value=err(429, "Rate limiting exceeded"))
    with pytest.raises(QdrantError, match=r"after 5 attempts: Rate limiting exceeded; wait and retry"):
        client.list_collections()


def test_backoff_is_exponential_with_jitter_and_capped(api, sleeps):
    api.get("/collections").mock(return_value=err(503, "busy"))
    with pytest.raises(QdrantError):
        QdrantClient(URL, retries=5, backoff=1.0, max_backoff=3.0, sleep=sleeps.append).list_collections()
    assert len(sleeps) == 5
    bounds = [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0), (1.5, 3.0), (1.5, 3.0)]
    for delay, (low, high) in zip(sleeps, bounds):
        assert low <= delay <= high


@pytest.mark.parametrize(
    "fault",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
    ],
)
def test_connection_faults_are_retried(api, client, fault):
    route = api.get("/collections").mock(side_effect=[fault, ok({"collections": [{"name": "a"}]})])
    assert client.list_collections() == ["a"]
    assert route.call_count == 2


def test_unreachable_node_sentence(api, client):
    route = api.get("/collections").mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(QdrantError) as caught:
        client.list_collections()
    assert route.call_count == 5
    assert caught.value.status is None and caught.value.node == "http://q0:6333"
    assert str(caught.value) == (
        "Cannot reach Qdrant node http://q0:6333 (cluster 'prod') after 5 attempts: connection refused; "
        "check that it is running and that the manifest's url is right."
    )


def test_read_timeout_sentence_names_the_snapshot_timeout(api, sleeps):
    route = api.post("/collections/docs/snapshots").mock(side_effect=httpx.ReadTimeout("timed out"))
    c = QdrantClient(URL, cluster="prod", retries=1, backoff=0, snapshot_timeout=7200, sleep=sleeps.append)
    with pytest.raises(OutcomeUnknown) as caught:
        c.create_snapshot("docs")
    # Sent once: Qdrant goes on making the snapshot after the client gives up (issue 10, finding 3).
    assert route.call_count == 1
    assert str(caught.value) == (
        "Qdrant node http://q0:6333 (cluster 'prod') did not answer POST /collections/docs/snapshots within "
        "7200 s; it may still be working on it, so check its logs before retrying, "
        "or raise the timeout."
    )


@pytest.mark.parametrize("fault", [httpx.ReadTimeout("timed out"), httpx.RemoteProtocolError("peer closed"), 502, 504])
@pytest.mark.parametrize("call", ["create", "recover", "upload"])
def test_calls_that_make_qdrant_work_are_never_resent_after_an_ambiguous_failure(api, client, fault, call):
    method, path = {"create": ("POST", "/collections/docs/snapshots"), "recover": ("PUT", "/collections/docs/snapshots/recover"),
                    "upload": ("POST", "/collections/docs/snapshots/upload")}[call]
    route = api.route(method=method, path=path).mock(
        side_effect=fault if isinstance(fault, Exception) else None,
        return_value=None if isinstance(fault, Exception) else httpx.Response(fault, text="bad gateway"),
    )
    with pytest.raises(OutcomeUnknown):
        if call == "create":
            client.create_snapshot("docs")
        elif call == "recover":
            client.recover_snapshot("docs", "http://store/archive?X-Amz-Signature=s")
        else:
            client.upload_snapshot("docs", lambda: contextlib.nullcontext(iter([b"abc"])), filename="a.snapshot", size=3)
    assert route.call_count == 1


@pytest.mark.parametrize("status", [429, 503])
def test_a_create_refused_before_any_work_is_sent_again(api, client, status):
    route = api.post("/collections/docs/snapshots").mock(side_effect=[
        httpx.Response(status, json={"status": {"error": "busy"}, "time": 0}),
        httpx.Response(200, json={"result": {"name": SNAP, "size": 3}, "status": "ok", "time": 0}),
    ])
    assert client.create_snapshot("docs").name == SNAP
    assert route.call_count == 2


def test_reset_connection_sentence(api, client):
    api.post("/collections/docs/points/count").mock(side_effect=httpx.RemoteProtocolError("peer closed"))
    with pytest.raises(QdrantError, match=(
        r"Qdrant node http://q0:6333 \(cluster 'prod'\) failed to count the points of collection `docs` after "
        r"5 attempts: the connection closed unexpectedly; check the node's health and the network, then retry\."
    )):
        client.count_points("docs")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_no_retry_on_client_errors(api, client, status):
    route = api.get("/collections/docs").mock(return_value=err(status, "nope"))
    with pytest.raises(QdrantError):
        client.collection_info("docs")
    assert route.call_count == 1


def test_500_is_retried_on_reads_but_not_on_writes(api, client):
    read = api.get("/collections/docs").mock(return_value=err(500, "nope"))
    with pytest.raises(QdrantError, match="answered 500 to GET /collections/docs after 5 attempts"):
        client.collection_info("docs")
    assert read.call_count == 5
    write = api.post("/collections/docs/snapshots").mock(return_value=err(500, "nope"))
    with pytest.raises(QdrantError):
        client.create_snapshot("docs")
    assert write.call_count == 1, "a write may already have done its work"


def test_timeouts_metadata_and_snapshot(api):
    seen = {}

    def record(request):
        seen[request.url.path] = request.extensions["timeout"]
        return ok(DESCRIPTION) if request.method == "POST" else ok({"collections": []})

    api.route().mock(side_effect=record)
    c = QdrantClient(URL, timeout=12.0, snapshot_timeout=999.0, backoff=0)
    c.list_collections()
    c.create_snapshot("docs")
    assert seen["/collections"] == {"connect": 10.0, "read": 12.0, "write": 12.0, "pool": 12.0}
    assert seen["/collections/docs/snapshots"] == {"connect": 10.0, "read": 999.0, "write": 999.0, "pool": 999.0}


# ------------------------------------------------------------------ secrets


PRESIGNED = (
    "https://backups.s3.amazonaws.com/prod/snapshots/docs/docs-1.snapshot?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=deadbeefcafe1234"
)


def assert_clean(exc: BaseException) -> None:
    for rendering in (str(exc), repr(exc), " ".join(map(str, exc.args))):
        for secret in (KEY, "X-Amz-Signature", "deadbeefcafe1234", "AKIAEXAMPLE", "remote-secret",
                       "backups.s3.amazonaws.com"):
            assert secret not in rendering, rendering


@pytest.mark.parametrize(
    "response",
    [
        err(400, f"Bad request: failed to download {PRESIGNED} with api-key {KEY} and remote-secret"),
        err(400, f"Snapshot checksum mismatch for {PRESIGNED}: expected x, got y"),
        text(403, f"Forbidden: cannot fetch {PRESIGNED}"),
        err(500, f"Service internal error: {PRESIGNED} (remote-secret) 404"),
        err(503, f"unavailable {PRESIGNED}"),
        httpx.Response(200, text=f"garbage {PRESIGNED}"),
    ],
)
def test_secrets_never_appear_in_recover_errors(api, client, response):
    api.put("/collections/docs/snapshots/recover").mock(return_value=response)
    with pytest.raises(QdrantError) as caught:
        client.recover_snapshot("docs", PRESIGNED, api_key="remote-secret", checksum=SHA)
    assert_clean(caught.value)


def test_recover_errors_say_the_archive_url(api, client):
    api.put("/collections/docs/snapshots/recover").mock(
        return_value=err(400, f"Bad request: failed to download {PRESIGNED}: 403")
    )
    with pytest.raises(QdrantError) as caught:
        client.recover_snapshot("docs", PRESIGNED)
    assert str(caught.value) == (
        "Qdrant node http://q0:6333 (cluster 'prod') refused to recover collection `docs` from the archive URL "
        "(400 Bad request: failed to download the archive URL: 403); check the request's names and settings."
    )


def test_secrets_never_appear_in_transport_errors(api, client):
    api.put("/collections/docs/snapshots/recover").mock(side_effect=httpx.ConnectError(f"refused {PRESIGNED} {KEY}"))
    with pytest.raises(QdrantError) as caught:
        client.recover_snapshot("docs", PRESIGNED, api_key="remote-secret")
    assert_clean(caught.value)


def test_secrets_scrubbed_from_other_urls_and_the_key(api, client):
    other = "https://elsewhere.example/x.snapshot?X-Amz-Signature=deadbeefcafe1234&token=abc"
    api.get("/collections").mock(return_value=err(500, f"echo {KEY} {other} api_key=remote-secret"))
    with pytest.raises(QdrantError) as caught:
        client.list_collections()
    message = str(caught.value)
    assert KEY not in message and "deadbeefcafe1234" not in message and "remote-secret" not in message
    assert "https://elsewhere.example/x.snapshot" in message  # the harmless part stays, to help the reader


# ------------------------------------------------------------------ real sockets


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: dict = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        if self.path.endswith("/short.snapshot"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"y" * 400)
            self.wfile.flush()
            self.close_connection = True
            return
        body = b"z" * 3000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = self.headers.get("Content-Length")
        if length is not None:
            data = self.rfile.read(int(length))
        else:
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        type(self).received = {"headers": dict(self.headers), "body": data}
        reply = json.dumps({"result": True, "status": "ok", "time": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture(scope="module")
def real_node() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("with_size", [True, False])
def test_real_upload_is_framed_right(real_node, with_size):
    archive = Archive([b"a" * 70000, b"b" * 5, b"c" * 123457])
    size = sum(map(len, archive.chunks))
    with QdrantClient(real_node, KEY, backoff=0) as c:
        c.upload_snapshot("docs", archive.open, filename="real.snapshot", size=size if with_size else None)
    headers, body = _Handler.received["headers"], _Handler.received["body"]
    if with_size:
        assert int(headers["Content-Length"]) == len(body)
    request = httpx.Request("POST", real_node, headers={"content-type": headers["Content-Type"]})
    assert parse_multipart(request, body) == ("snapshot", "real.snapshot", b"".join(archive.chunks))


def test_real_download_and_cut_short(real_node):
    with QdrantClient(real_node, backoff=0) as c:
        with c.download_snapshot("docs", "full.snapshot", chunk_size=1024) as stream:
            assert stream.size == 3000
            assert b"".join(stream) == b"z" * 3000
        with c.download_snapshot("docs", "short.snapshot") as stream:
            with pytest.raises(TransferInterrupted, match="cut short after 400 of 1000 bytes"):
                b"".join(stream)


def test_real_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(QdrantError) as caught:
        QdrantClient(f"http://127.0.0.1:{port}", cluster="prod", retries=1, backoff=0).version()
    assert str(caught.value) == (
        f"Cannot reach Qdrant node http://127.0.0.1:{port} (cluster 'prod') after 2 attempts: connection refused; "
        "check that it is running and that the manifest's url is right."
    )
