"""PATCH /collections/{c} through the official qdrant-client: every part of UpdateCollection a
restore's storage override sends is applied and read back as Qdrant 1.19 does (merge per field,
quantization replaced or "Disabled", per-vector on_disk/hnsw under `vectors`)."""

from __future__ import annotations

import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from tests.emulator.test_conformance_client import client_for

SCALAR = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
    type=models.ScalarType.INT8, quantile=0.99, always_ram=True))


@pytest.fixture
def client(emulator):
    cluster = emulator()
    client = client_for(cluster.urls[0])
    client.create_collection("docs", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.create_collection("multi", vectors_config={
        "text": models.VectorParams(size=4, distance=models.Distance.COSINE),
        "image": models.VectorParams(size=3, distance=models.Distance.DOT, on_disk=False),
    })
    yield client
    client.close()


def test_update_collection_applies_vectors_quantization_hnsw_optimizers_and_params(client):
    assert client.update_collection(
        "docs",
        vectors_config={"": models.VectorParamsDiff(on_disk=True, hnsw_config=models.HnswConfigDiff(m=8))},
        quantization_config=SCALAR,
        hnsw_config=models.HnswConfigDiff(m=32, ef_construct=200),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0, deleted_threshold=0.3),
        collection_params=models.CollectionParamsDiff(write_consistency_factor=2, on_disk_payload=False,
                                                      read_fan_out_factor=1),
    ) is True
    config = client.get_collection("docs").config
    vector = config.params.vectors
    assert (vector.size, vector.on_disk, vector.hnsw_config.m) == (4, True, 8)
    assert config.quantization_config == SCALAR
    assert (config.hnsw_config.m, config.hnsw_config.ef_construct, config.hnsw_config.full_scan_threshold) == (32, 200, 10000)
    assert (config.optimizer_config.indexing_threshold, config.optimizer_config.deleted_threshold,
            config.optimizer_config.flush_interval_sec) == (0, 0.3, 5)
    assert (config.params.write_consistency_factor, config.params.on_disk_payload,
            config.params.read_fan_out_factor, config.params.shard_number) == (2, False, 1, 1)

    client.update_collection("docs", quantization_config=models.Disabled.DISABLED)
    assert client.get_collection("docs").config.quantization_config is None
    client.update_collection("docs", hnsw_config=models.HnswConfigDiff(payload_m=4))
    hnsw = client.get_collection("docs").config.hnsw_config
    assert (hnsw.m, hnsw.payload_m) == (32, 4), "a diff merges into what is there"


def test_update_collection_changes_only_the_named_vectors(client):
    client.update_collection("multi", vectors_config={
        "image": models.VectorParamsDiff(on_disk=True, quantization_config=models.BinaryQuantization(
            binary=models.BinaryQuantizationConfig(always_ram=True))),
    })
    vectors = client.get_collection("multi").config.params.vectors
    assert vectors["image"].on_disk is True and vectors["image"].quantization_config.binary.always_ram is True
    assert vectors["text"].on_disk is None and vectors["text"].quantization_config is None
    client.update_collection("multi", vectors_config={"image": models.VectorParamsDiff(
        quantization_config=models.Disabled.DISABLED)})
    assert client.get_collection("multi").config.params.vectors["image"].quantization_config is None


def test_update_collection_refuses_a_vector_the_collection_does_not_have(client):
    with pytest.raises(UnexpectedResponse) as raised:
        client.update_collection("multi", vectors_config={"audio": models.VectorParamsDiff(on_disk=True)})
    assert raised.value.status_code == 400
    assert "Not existing vector name error: audio" in raised.value.content.decode()
    with pytest.raises(UnexpectedResponse) as unnamed:
        client.update_collection("multi", vectors_config={"": models.VectorParamsDiff(on_disk=True)})
    assert unnamed.value.status_code == 400
    assert client.get_collection("multi").config.params.vectors["text"].on_disk is None, "nothing half-applied"
