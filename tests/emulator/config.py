"""Collection configuration: the internal config a snapshot's config.json holds, built from a
CreateCollection body with Qdrant's defaults, and the checks recovery makes against it."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.emulator.errors import bad_request, validation_error

DISTANCES = ("Cosine", "Euclid", "Dot", "Manhattan")
PRIORITIES = ("no_sync", "snapshot", "replica")
SHARDING_METHODS = ("auto", "custom")
INVALID_NAME_CHARS = set('<>:"/\\|?*\0\x1f')

DEFAULT_HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000, "max_indexing_threads": 0, "on_disk": False}
DEFAULT_OPTIMIZER = {
    "deleted_threshold": 0.2,
    "vacuum_min_vector_number": 1000,
    "default_segment_number": 0,
    "max_segment_size": None,
    "memmap_threshold": None,
    "indexing_threshold": 10000,
    "flush_interval_sec": 5,
    "max_optimization_threads": None,
}
DEFAULT_WAL = {"wal_capacity_mb": 32, "wal_segments_ahead": 0, "wal_retain_closed": 1}
DEFAULT_STRICT_MODE = {"enabled": False}


def strip_nulls(value: Any) -> Any:
    """Drop null members recursively, as serde does for skipped optional fields."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def validate_collection_name(name: str) -> None:
    if not 1 <= len(name) <= 255 or any(ch in INVALID_NAME_CHARS for ch in name):
        raise validation_error("path parameters", f"collection_name: value {name} is not a valid collection name")


def merge(base: dict, diff: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (diff or {}).items():
        if value is not None:
            out[key] = copy.deepcopy(value)
    return out


def _validate_vector_params(params: Any, where: str) -> dict:
    if not isinstance(params, dict):
        raise bad_request(f"Format error in JSON body: {where} must be an object")
    size = params.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise validation_error("JSON body", f"{where}.size: value {size} invalid, must be 1 or larger")
    if params.get("distance") not in DISTANCES:
        raise bad_request(
            f"Format error in JSON body: {where}.distance: unknown variant `{params.get('distance')}`, "
            f"expected one of {', '.join(DISTANCES)}"
        )
    return strip_nulls(params)


def build_config(body: dict, *, default_shard_number: int) -> dict:
    """The internal collection config from a CreateCollection body.

    Custom sharding defaults to one shard per shard key, whatever the node count
    (`toc/create_collection.rs`); automatic sharding to `default_shard_number`.
    """
    vectors = body.get("vectors")
    if vectors is None:
        vectors = {}
    elif isinstance(vectors, dict) and "size" in vectors:
        vectors = _validate_vector_params(vectors, "vectors")
    elif isinstance(vectors, dict):
        vectors = {name: _validate_vector_params(p, f"vectors.{name}") for name, p in vectors.items()}
    else:
        raise bad_request("Format error in JSON body: vectors must be an object")
    sharding_method = body.get("sharding_method")
    if sharding_method is not None and sharding_method not in SHARDING_METHODS:
        raise bad_request(f"Json deserialize error: sharding_method: unknown variant `{sharding_method}`, "
                          "expected `auto` or `custom`")
    default_shards = 1 if sharding_method == "custom" else default_shard_number
    shard_number = body.get("shard_number") or default_shards
    replication_factor = body.get("replication_factor") or 1
    write_consistency_factor = body.get("write_consistency_factor") or 1
    for name, value in (("shard_number", shard_number), ("replication_factor", replication_factor),
                        ("write_consistency_factor", write_consistency_factor)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise validation_error("JSON body", f"{name}: value {value} invalid, must be 1 or larger")
    params: dict[str, Any] = {
        "vectors": vectors,
        "shard_number": shard_number,
        "replication_factor": replication_factor,
        "write_consistency_factor": write_consistency_factor,
        "on_disk_payload": body.get("on_disk_payload", True) if body.get("on_disk_payload") is not None else True,
    }
    if sharding_method is not None:
        params["sharding_method"] = sharding_method
    if body.get("sparse_vectors"):
        params["sparse_vectors"] = strip_nulls(body["sparse_vectors"])
    return {
        "params": params,
        "hnsw_config": merge(DEFAULT_HNSW, body.get("hnsw_config")),
        "optimizer_config": merge(DEFAULT_OPTIMIZER, body.get("optimizers_config")),
        "wal_config": merge(DEFAULT_WAL, body.get("wal_config")),
        "quantization_config": strip_nulls(body.get("quantization_config")),
        "strict_mode_config": merge(DEFAULT_STRICT_MODE, body.get("strict_mode_config")),
        "metadata": body.get("metadata"),
        "uuid": str(uuid.uuid4()),
    }


def is_custom(config: dict) -> bool:
    return (config.get("params") or {}).get("sharding_method") == "custom"


def config_compatible(existing: dict, incoming: dict) -> bool:
    """Recovery into an existing collection needs the same vectors and shard_number (recover.rs)."""
    a, b = existing.get("params", {}), incoming.get("params", {})
    return strip_nulls(a.get("vectors") or {}) == strip_nulls(b.get("vectors") or {}) and int(
        a.get("shard_number", 1)
    ) == int(b.get("shard_number", 1))


def update_config(cfg: dict, body: dict) -> None:
    """PATCH /collections/{c}: the parts of the config that can change in place."""
    if body.get("optimizers_config"):
        cfg["optimizer_config"] = merge(cfg["optimizer_config"], body["optimizers_config"])
    if body.get("hnsw_config"):
        cfg["hnsw_config"] = merge(cfg["hnsw_config"], body["hnsw_config"])
    if body.get("params"):
        cfg["params"] = merge(cfg["params"], {k: v for k, v in body["params"].items()
                                              if k in ("replication_factor", "write_consistency_factor",
                                                       "on_disk_payload")})
    if body.get("strict_mode_config"):
        cfg["strict_mode_config"] = merge(cfg["strict_mode_config"], body["strict_mode_config"])
    if body.get("metadata") is not None:
        cfg["metadata"] = {**(cfg.get("metadata") or {}), **body["metadata"]}
