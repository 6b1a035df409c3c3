"""The emulator's edge engine (`engine="edge"`, `--engine edge`): the official qdrant-client
against it, and its snapshots, which hold Qdrant's segment files that Qdrant's engine opens."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import pytest

pytest.importorskip("qdrant_edge", reason="the edge engine needs qdrant-edge-py (the test extra installs it)")

from qdrant_client import QdrantClient, models  # noqa: E402

from qbr.apply.archive_reader import QdrantEdgeReader  # noqa: E402
from tests.emulator.__main__ import cluster_from_args  # noqa: E402
from tests.emulator.edge_archive import shard_snapshot  # noqa: E402

UUID = "5b4e3a3c-6c3f-4c1d-9a8e-2f1e0d9c8b7a"


def _client(url: str) -> QdrantClient:
    return QdrantClient(url=url, prefer_grpc=False, timeout=60, check_compatibility=False)


def _fill(client: QdrantClient, name: str = "docs", shards: int = 2, count: int = 30) -> None:
    client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                             shard_number=shards)
    points = [models.PointStruct(id=i, vector=[i / 8, 0.5, -1.0, 2.0], payload={"n": i, "tag": ["a", "b"][i % 2]})
              for i in range(count)]
    points.append(models.PointStruct(id=UUID, vector=[0.25, 0.5, 0.75, 1.0], payload={"n": -1, "nested": {"k": [1, 2]}}))
    client.upsert(name, points)


def _everything(client: QdrantClient, name: str = "docs") -> dict:
    points, offset = {}, None
    while True:
        page, offset = client.scroll(name, limit=7, offset=offset, with_vectors=True, with_payload=True)
        points.update({str(p.id): (p.vector, p.payload) for p in page})
        if offset is None:
            return points


def _opened_by_qdrant_edge(archive: Path, shard_id: int, scratch: Path) -> dict:
    """The points of one shard of a collection archive, read by qbr's reader with Qdrant's engine."""
    scratch.mkdir(parents=True, exist_ok=True)
    pages = QdrantEdgeReader().open(shard_snapshot(archive, shard_id, scratch / f"{shard_id}.tar"), scratch / f"s{shard_id}")
    try:
        points, offset = {}, None
        while True:
            page, offset = pages.scroll(offset, 10)
            points.update({str(p["id"]): (p["vector"], p["payload"]) for p in page})
            if offset is None:
                return points
    finally:
        pages.close()


def test_the_engine_flag_starts_edge_shards():
    cluster = cluster_from_args(["--engine", "edge", "--port", "0"])
    try:
        assert cluster.engine == "edge" and cluster.nodes[0].state.engine is not None
    finally:
        cluster.stop()
    assert cluster_from_args(["--port", "0"]).nodes[0].state.engine is None


def test_qdrant_client_writes_reads_and_snapshots_real_segments(emulator, tmp_path):
    cluster = emulator(engine="edge")
    client = _client(cluster.urls[0])
    _fill(client)
    assert client.count("docs").count == 31
    assert client.count("docs", count_filter=models.Filter(must=[
        models.FieldCondition(key="tag", match=models.MatchValue(value="a"))])).count == 15
    client.set_payload("docs", {"extra": True}, points=[3, 4])
    client.delete("docs", models.PointIdsList(points=[5]))
    [three] = client.retrieve("docs", [3], with_vectors=True)
    assert (three.payload, three.vector) == ({"n": 3, "tag": "b", "extra": True}, [0.375, 0.5, -1.0, 2.0])
    before = _everything(client)
    assert len(before) == 30 and before[UUID] == ([0.25, 0.5, 0.75, 1.0], {"n": -1, "nested": {"k": [1, 2]}})

    snapshot = client.create_snapshot("docs")
    assert [s.name for s in client.list_snapshots("docs")] == [snapshot.name]
    path = cluster.nodes[0].snapshots.collection_dir("docs") / snapshot.name
    with tarfile.open(path) as tar:
        names = tar.getnames()
        segment = next(m for m in tar if m.name.startswith("0/segments/") and m.name.endswith(".tar"))
        with tarfile.open(fileobj=tar.extractfile(segment)) as inner:
            inner_names = inner.getnames()
    assert {"version.info", "config.json", "payload_index.json", "0/replica_state.json", "1/shard_config.json"} <= set(names)
    assert not any(n.endswith("points.jsonl") for n in names), "Qdrant's segments, not the Python engine's JSON lines"
    assert {"snapshot/files/segment.json", "snapshot/files/version.info"} <= set(inner_names)
    opened = {**_opened_by_qdrant_edge(path, 0, tmp_path / "x"), **_opened_by_qdrant_edge(path, 1, tmp_path / "x")}
    assert opened == {k: (list(v), p) for k, (v, p) in before.items()}


def test_recovering_an_edge_snapshot_by_url_and_by_upload_gives_identical_points(emulator):
    source, target = emulator(engine="edge"), emulator(engine="edge")
    client = _client(source.urls[0])
    _fill(client, shards=1, count=12)
    before = _everything(client)
    name = client.create_snapshot("docs").name
    url = f"{source.urls[0]}/collections/docs/snapshots/{name}"
    other = _client(target.urls[0])
    assert other.recover_snapshot("docs", url)
    assert _everything(other) == before
    client.delete("docs", models.PointIdsList(points=[0, 1, 2]))  # the source moves on; the upload brings it back
    data = httpx.get(url, timeout=60).content
    answer = httpx.post(f"{source.urls[0]}/collections/docs/snapshots/upload", files={"snapshot": (name, data)}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert _everything(client) == before


def test_a_shard_snapshot_of_an_edge_shard_recovers_that_shard(emulator):
    cluster = emulator(engine="edge")
    client = _client(cluster.urls[0])
    _fill(client, shards=2, count=10)
    before = _everything(client)
    base = f"{cluster.urls[0]}/collections/docs/shards/1/snapshots"
    name = httpx.post(base, timeout=60).json()["result"]["name"]
    data = httpx.get(f"{base}/{name}", timeout=60).content
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert any(n.startswith("segments/") and n.endswith(".tar") for n in tar.getnames())
    client.delete("docs", models.PointIdsList(points=list(range(10))))
    assert httpx.post(f"{base}/upload", files={"snapshot": (name, data)}, timeout=60).status_code == 200
    after = _everything(client)
    assert after == {k: v for k, v in before.items() if k in after} and 0 < len(after) < len(before)


def _members(path: Path) -> dict[str, bytes]:
    """{segment tar/inner file: bytes} of every segment in a collection snapshot."""
    found = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if "/segments/" in member.name and member.name.endswith(".tar"):
                with tarfile.open(fileobj=tar.extractfile(member)) as inner:
                    for item in inner:
                        if item.isfile():
                            found[f"{member.name}/{item.name}"] = inner.extractfile(item).read()
    return found


def test_the_optimizer_catches_up_before_a_snapshot_so_old_vectors_stay_byte_identical(emulator):
    """Past the indexing threshold the segment becomes immutable (as Qdrant's optimizer makes it):
    an update then lands in a new segment and the old one's vector file is unchanged, which is
    what makes a second archive dedup."""
    cluster = emulator(engine="edge")
    client = _client(cluster.urls[0])
    client.create_collection("docs", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                             optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1))
    client.upsert("docs", [models.PointStruct(id=i, vector=[i, 1.0, 2.0, 3.0], payload={"n": i}) for i in range(200)])
    folder = cluster.nodes[0].snapshots.collection_dir("docs")
    first = _members(folder / client.create_snapshot("docs").name)
    live = cluster.nodes[0].state.resolve("docs").shards[0].points.shard.snapshot_manifest()
    assert {name.split(".tar/")[0].rsplit("/", 1)[1] for name in first} == set(live), \
        "only the engine's live segments, not the folders of those the optimizer replaced"
    client.upsert("docs", [models.PointStruct(id=7, vector=[7.0, 7.0, 7.0, 7.0], payload={"n": "seven"})])
    second = _members(folder / client.create_snapshot("docs").name)
    [matrix] = [name for name in first if name.endswith("vector_storage/matrix.dat")]
    assert second[matrix] == first[matrix], "the immutable segment's vectors are the same bytes"
    [seven] = client.retrieve("docs", [7], with_vectors=True)
    assert (seven.vector, seven.payload, client.count("docs").count) == ([7.0, 7.0, 7.0, 7.0], {"n": "seven"}, 200)


def test_the_python_engine_recovers_an_archive_of_real_segments_point_for_point(emulator):
    source, target = emulator(engine="edge"), emulator()
    client = _client(source.urls[0])
    _fill(client, shards=1, count=12)
    name = client.create_snapshot("docs").name
    other = _client(target.urls[0])
    assert other.recover_snapshot("docs", f"{source.urls[0]}/collections/docs/snapshots/{name}")
    assert _everything(other) == _everything(client)
