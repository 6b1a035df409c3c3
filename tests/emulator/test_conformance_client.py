"""The official qdrant-client (REST) drives the emulator: its pydantic models parse every answer."""

from __future__ import annotations

import importlib.metadata
import uuid
import warnings

import pytest
from qdrant_client import QdrantClient, models

N_POINTS = 40


def client_for(url: str, api_key: str | None = None) -> QdrantClient:
    # the client checks the server version on a background thread; test_server_version does it in the open
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
        return QdrantClient(url=url, prefer_grpc=False, api_key=api_key, timeout=30, check_compatibility=False)


def sample_points() -> list[models.PointStruct]:
    points = []
    for i in range(N_POINTS):
        point_id = i if i % 4 else str(uuid.UUID(int=i + 1))
        points.append(models.PointStruct(
            id=point_id,
            vector=[0.25 * i, -1.5, 3.0, float(i % 7)],
            payload={"i": i, "name": f"doc-{i}", "tags": ["a", "b"][: i % 3], "nested": {"x": i / 8}},
        ))
    return points


def all_points(client: QdrantClient, collection: str) -> dict:
    """Every point by id, read with scroll pages of 7 to exercise next_page_offset."""
    found: dict = {}
    offset = None
    while True:
        records, offset = client.scroll(collection, limit=7, offset=offset, with_payload=True, with_vectors=True)
        for record in records:
            found[record.id] = (record.vector, record.payload)
        if offset is None:
            return found


@pytest.fixture
def source(emulator):
    cluster = emulator()
    client = client_for(cluster.urls[0])
    client.create_collection("docs", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.upsert("docs", points=sample_points(), wait=True)
    yield cluster, client
    client.close()


def expected() -> dict:
    return {p.id: (p.vector, p.payload) for p in sample_points()}


def test_server_version_is_understood_and_compatible(emulator):
    from qdrant_client.common.version_check import get_server_version, is_compatible

    cluster = emulator(version="1.19.0")
    client = client_for(cluster.urls[0])
    assert client.info().version == "1.19.0"
    assert get_server_version(cluster.urls[0], {}, None, 5) == "1.19.0"
    assert is_compatible(importlib.metadata.version("qdrant-client"), "1.19.0")
    client.close()


def test_collection_points_and_info_round_trip(source):
    cluster, client = source
    assert client.collection_exists("docs") and not client.collection_exists("nope")
    assert [c.name for c in client.get_collections().collections] == ["docs"]
    info = client.get_collection("docs")
    assert info.status == models.CollectionStatus.GREEN
    assert info.points_count == N_POINTS
    assert info.config.params.vectors.size == 4 and info.config.params.vectors.distance == models.Distance.COSINE
    assert info.config.params.shard_number == 1
    assert info.config.hnsw_config.m == 16 and info.config.optimizer_config.flush_interval_sec == 5
    assert client.count("docs", exact=True).count == N_POINTS
    assert all_points(client, "docs") == expected()
    got = client.retrieve("docs", ids=[1, 2], with_vectors=True)
    assert [(r.id, r.vector) for r in got] == [(1, [0.25, -1.5, 3.0, 1.0]), (2, [0.5, -1.5, 3.0, 2.0])]
    assert client.delete("docs", points_selector=models.PointIdsList(points=[1, 2]), wait=True).status == \
        models.UpdateStatus.COMPLETED
    assert client.count("docs").count == N_POINTS - 2
    assert client.delete_collection("docs") is True
    assert not client.collection_exists("docs")


def test_collection_snapshot_recovers_on_a_second_cluster_from_the_download_url(source, emulator):
    cluster, client = source
    description = client.create_snapshot("docs", wait=True)
    assert description.name.startswith(f"docs-{cluster.nodes[0].peer_id}-") and len(description.checksum) == 64
    assert [s.name for s in client.list_snapshots("docs")] == [description.name]
    target = emulator()
    target_client = client_for(target.urls[0])
    location = f"{cluster.urls[0]}/collections/docs/snapshots/{description.name}"
    assert target_client.recover_snapshot("restored", location=location, checksum=description.checksum,
                                          priority=models.SnapshotPriority.SNAPSHOT, wait=True) is True
    assert all_points(target_client, "restored") == expected()
    assert target_client.get_collection("restored").config.params.vectors.size == 4
    assert client.delete_snapshot("docs", description.name, wait=True) is True
    assert client.list_snapshots("docs") == []
    assert client.create_snapshot("docs", wait=False) is None
    cluster.wait_background()
    assert len(client.list_snapshots("docs")) == 1
    target_client.close()


def test_shard_snapshots_through_the_client(source):
    cluster, client = source
    description = client.create_shard_snapshot("docs", shard_id=0, wait=True)
    assert description.name.startswith("docs-shard-0-")
    assert [s.name for s in client.list_shard_snapshots("docs", shard_id=0)] == [description.name]
    client.delete("docs", points_selector=models.PointIdsList(points=[3, 5, 6]), wait=True)
    assert client.recover_shard_snapshot("docs", shard_id=0, location=description.name,
                                         priority=models.SnapshotPriority.SNAPSHOT, wait=True) is True
    assert all_points(client, "docs") == expected()
    assert client.delete_shard_snapshot("docs", shard_id=0, snapshot_name=description.name) is True
    assert client.list_shard_snapshots("docs", shard_id=0) == []


def test_full_snapshots_through_the_client(source):
    _, client = source
    description = client.create_full_snapshot(wait=True)
    assert description.name.startswith("full-snapshot-")
    assert [s.name for s in client.list_full_snapshots()] == [description.name]
    assert client.delete_full_snapshot(description.name, wait=True) is True
    assert client.list_full_snapshots() == []


def test_aliases_through_the_client(source):
    _, client = source
    client.create_collection("other", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    assert client.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="docs", alias_name="live")),
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="other", alias_name="tmp")),
    ]) is True
    assert client.count("live").count == N_POINTS
    client.update_collection_aliases(change_aliases_operations=[
        models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name="tmp", new_alias_name="spare")),
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="live")),
    ])
    assert [(a.alias_name, a.collection_name) for a in client.get_aliases().aliases] == [("spare", "other")]
    assert [a.alias_name for a in client.get_collection_aliases("other").aliases] == ["spare"]
    assert client.get_collection_aliases("docs").aliases == []


def test_cluster_views_through_the_client(emulator):
    single = client_for(emulator().urls[0])
    assert single.http.distributed_api.cluster_status().result.status == "disabled"
    cluster = emulator(nodes=3, api_key="k")
    clients = [client_for(url, api_key="k") for url in cluster.urls]
    clients[0].create_collection("docs", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    clients[0].upsert("docs", points=sample_points(), wait=True)
    status = clients[2].http.distributed_api.cluster_status().result
    assert status.status == "enabled" and status.peer_id == cluster.nodes[2].peer_id
    assert {int(k): v.uri for k, v in status.peers.items()} == {
        n.peer_id: f"http://127.0.0.{n.index + 1}:6335/" for n in cluster.nodes}
    total = 0
    for node, client in zip(cluster.nodes, clients):
        info = client.http.distributed_api.collection_cluster_info("docs").result
        assert info.peer_id == node.peer_id and info.shard_count == 3
        assert [s.shard_id for s in info.local_shards] == [node.index]
        assert info.local_shards[0].state == models.ReplicaState.ACTIVE
        assert sorted(s.shard_id for s in info.remote_shards) == sorted({0, 1, 2} - {node.index})
        total += info.local_shards[0].points_count
    assert total == N_POINTS
    assert all_points(clients[1], "docs") == expected()
    for client in [single, *clients]:
        client.close()


def test_in_place_updates_and_payload_indexes_through_the_client(source):
    cluster, client = source
    assert client.set_payload("docs", payload={"extra": 1}, points=[1, 2], wait=True).status == \
        models.UpdateStatus.COMPLETED
    client.overwrite_payload("docs", payload={"only": True}, points=models.Filter(must=[models.FieldCondition(
        key="i", range=models.Range(gte=38))]), wait=True)
    client.update_vectors("docs", points=[models.PointVectors(id=3, vector=[1.0, 1.0, 1.0, 1.0])], wait=True)
    got = {r.id: r for r in client.retrieve("docs", ids=[1, 3, 39], with_vectors=True)}
    assert got[1].payload["extra"] == 1 and got[39].payload == {"only": True} and got[3].vector == [1.0] * 4
    client.create_payload_index("docs", "name", field_schema=models.PayloadSchemaType.KEYWORD, wait=True)
    client.create_payload_index("docs", "i", field_schema=models.IntegerIndexParams(
        type=models.IntegerIndexType.INTEGER, lookup=True, range=True), wait=True)
    schema = client.get_collection("docs").payload_schema
    assert schema["name"].data_type == models.PayloadSchemaType.KEYWORD and schema["name"].points == N_POINTS - 2
    assert schema["i"].params.lookup is True and schema["i"].points == N_POINTS - 2
    client.delete_payload_index("docs", "name", wait=True)
    assert set(client.get_collection("docs").payload_schema) == {"i"}


def test_custom_sharding_and_replica_states_through_the_client(emulator):
    cluster = emulator(nodes=2)
    client = client_for(cluster.urls[0])
    client.create_collection("tenants", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                             sharding_method=models.ShardingMethod.CUSTOM, replication_factor=2)
    assert client.create_shard_key("tenants", "eu", shards_number=2) is True
    assert client.create_shard_key("tenants", 7) is True
    client.upsert("tenants", points=sample_points()[:10], shard_key_selector="eu", wait=True)
    client.upsert("tenants", points=sample_points()[10:12], shard_key_selector=7, wait=True)
    keys = client.http.distributed_api.list_shard_keys("tenants").result.shard_keys
    assert [k.key for k in keys] == ["eu", 7]
    cluster.set_replica_state("tenants", 3, 1, "Dead")
    cluster.set_replica_state("tenants", 1, 0, "ManualRecovery")
    info = client.http.distributed_api.collection_cluster_info("tenants").result
    assert {(s.shard_id, s.shard_key, s.state) for s in info.local_shards} == {
        (1, "eu", models.ReplicaState.MANUALRECOVERY), (2, "eu", models.ReplicaState.ACTIVE),
        (3, 7, models.ReplicaState.ACTIVE)}
    assert (3, 7, models.ReplicaState.DEAD) in {(s.shard_id, s.shard_key, s.state) for s in info.remote_shards}
    assert client.count("tenants", shard_key_selector=7).count == 2
    assert client.delete_shard_key("tenants", 7) is True
    assert client.count("tenants").count == 10
    client.close()


def test_telemetry_through_the_client(source):
    cluster, client = source
    client.create_snapshot("docs", wait=True)
    telemetry = client.http.service_api.telemetry(details_level=2).result
    assert telemetry.collections.number_of_collections == 1
    (snapshots,) = telemetry.collections.snapshots
    assert (snapshots.id, snapshots.running_snapshots, snapshots.running_snapshot_recovery,
            snapshots.total_snapshot_creations) == ("docs", 0, 0, 1)
    assert client.http.service_api.telemetry().result.collections.snapshots is None
    aggregated = client.http.service_api.telemetry(details_level=1).result.collections.collections
    assert aggregated[0].vectors == N_POINTS and aggregated[0].params.vectors.size == 4


def test_s3_snapshot_storage_answers_parse_in_the_client(emulator, s3_bucket):
    endpoint, bucket = s3_bucket
    cluster = emulator(snapshots_s3={"endpoint_url": endpoint, "bucket": bucket})
    client = client_for(cluster.urls[0])
    client.create_collection("docs", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.upsert("docs", points=sample_points(), wait=True)
    description = client.create_snapshot("docs", wait=True)
    assert isinstance(description, models.SnapshotDescription) and description.checksum is None
    assert description.size > 0 and description.creation_time
    shard = client.create_shard_snapshot("docs", shard_id=0, wait=True)
    assert shard.checksum is None
    listed = client.list_snapshots("docs")  # recursive: the shard snapshot is listed too
    assert sorted(s.name for s in listed) == sorted([description.name, shard.name])
    assert all(s.checksum is None for s in listed)
    assert [s.name for s in client.list_shard_snapshots("docs", shard_id=0)] == [shard.name]
    full = client.create_full_snapshot(wait=True)
    everything = {s.name for s in client.list_full_snapshots()}  # recursive over the whole prefix
    assert everything == {key.rsplit("/", 1)[-1] for key in cluster.s3_objects()} >= {description.name, full.name}
    client.delete("docs", points_selector=models.PointIdsList(points=[3, 5]), wait=True)
    assert client.recover_shard_snapshot("docs", shard_id=0, location=shard.name,
                                         priority=models.SnapshotPriority.SNAPSHOT, wait=True) is True
    assert all_points(client, "docs") == expected()
    assert client.delete_snapshot("docs", description.name, wait=True) is True
    remaining = {s.name for s in client.list_snapshots("docs")}
    assert description.name not in remaining and shard.name in remaining
    client.close()
