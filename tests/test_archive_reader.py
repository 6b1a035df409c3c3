"""Reading a set's archives offline for a logical copy: shards cut out of collection archives,
a damaged archive refused, the engine chosen as QBR_COPY_ENGINE says, and Qdrant's own engine
(qdrant-edge-py, when installed) paging a real shard in qbr's id order."""

from __future__ import annotations

import hashlib
import json
import tarfile
import uuid

import pytest

from qbr.apply.archive_reader import ArchiveShards, QdrantEdgeReader, choose_reader
from qbr.apply.copy_streams import id_key
from qbr.errors import ChecksumError, QbrError
from qbr.records import ArchiveRecord, CollectionRecord
from qbr.repository import open_local_repository
from tests.copy_engine import SELECT, EmulatorShardReader
from tests.e2e.helpers import tar_bytes


def jsonl(points: list[dict]) -> bytes:
    return b"".join(json.dumps(p).encode() + b"\n" for p in points)


def points(ids) -> list[dict]:
    return [{"id": i, "vector": [0.5, float(n)], "payload": {"n": n}} for n, i in enumerate(ids)]


def record(archives: list[tuple[str, bytes, str, tuple[int, ...]]], repo) -> CollectionRecord:
    stored = []
    for key, data, kind, shard_ids in archives:
        repo.put_bytes(key, data)
        stored.append(ArchiveRecord(key, len(data), hashlib.sha256(data).hexdigest(), kind, shard_ids, "http://n:6333", 0))
    return CollectionRecord("docs", 0, {}, "", (), 2, "1.19.0", "s", tuple(stored))


def test_each_shard_is_cut_out_of_the_archive_that_holds_its_data(tmp_path):
    repo = open_local_repository(tmp_path / "repo")
    first, second = points(range(0, 10)), points([*range(10, 15), str(uuid.UUID(int=5))])
    node0 = tar_bytes([("config.json", b"{}"), ("0", None), ("0/segments/points.jsonl", jsonl(first)), ("1", None),
                       ("1/replica_state.json", b"{}")])  # node 0 holds shard 0 only
    node1 = tar_bytes([("1/segments/points.jsonl", jsonl(second)), ("1/replica_state.json", b"{}")])
    rec = record([("snapshots/docs/a", node0, "collection", (0, 1)), ("snapshots/docs/b", node1, "collection", (1,))], repo)
    (tmp_path / "scratch").mkdir()
    shards = ArchiveShards(repo, rec, tmp_path / "scratch")
    assert shards.shard_ids() == [0, 1]
    reader = EmulatorShardReader()
    for shard_id, expected in ((0, first), (1, second)):
        pages, got, offset = reader.open(shards.snapshot(shard_id), tmp_path / f"o{shard_id}"), [], None
        while True:
            page, offset = pages.scroll(offset, 4)
            got += page
            if offset is None:
                break
        assert got == sorted(expected, key=lambda p: id_key(p["id"]))
    assert shards.snapshot(1) == shards.snapshot(1), "cut once"


def test_a_damaged_archive_is_refused_and_a_missing_shard_named(tmp_path):
    repo = open_local_repository(tmp_path / "repo")
    data = tar_bytes([("segments/points.jsonl", jsonl(points(range(3))))])
    rec = record([("snapshots/docs/s0", data, "shard", (0,))], repo)
    repo.put_bytes("snapshots/docs/s0", data[:-1] + b"x")
    (tmp_path / "scratch").mkdir()
    with pytest.raises(ChecksumError, match="does not match the sha256 its set recorded"):
        ArchiveShards(repo, rec, tmp_path / "scratch").snapshot(0)
    with pytest.raises(QbrError, match="no archive of collection docs holds the data of shard 3"):
        ArchiveShards(repo, rec, tmp_path / "scratch").snapshot(3)


def test_the_engine_is_chosen_as_qbr_copy_engine_says():
    assert isinstance(choose_reader(SELECT), EmulatorShardReader)
    with pytest.raises(QbrError, match="QBR_COPY_ENGINE=nowhere:Reader cannot be loaded"):
        choose_reader("nowhere:Reader")


def test_qdrant_edge_pages_a_real_shard_in_qbrs_id_order(tmp_path):
    edge = pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is optional (pip install 'qbr[deep]')")
    folder = tmp_path / "shard"
    folder.mkdir()
    config = edge.EdgeConfig(vectors={"text": edge.EdgeVectorParams(size=4, distance=edge.Distance.Dot)})
    shard = edge.EdgeShard.create(str(folder), config)
    ids = list(range(20)) + [str(uuid.UUID(int=n * 7919 + 1)) for n in range(5)]
    shard.update(edge.UpdateOperation.upsert_points(
        [edge.Point(i, {"text": [n / 100, 0.5, 0.25, 1.0]}, {"n": n}) for n, i in enumerate(ids)]))
    shard.flush()
    shard.close()
    snapshot = tmp_path / "shard.tar"
    with tarfile.open(snapshot, "w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    pages = QdrantEdgeReader(edge).open(snapshot, tmp_path / "open")
    got, offset = [], None
    while True:
        page, offset = pages.scroll(offset, 6)
        got += page
        if offset is None:
            break
    pages.close()
    assert [p["id"] for p in got] == sorted((i if isinstance(i, int) else str(i) for i in ids), key=id_key)
    assert got[3]["payload"] == {"n": 3} and got[3]["vector"]["text"] == pytest.approx([0.03, 0.5, 0.25, 1.0])
