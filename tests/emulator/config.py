"""Collection configuration: the internal config a snapshot's config.json holds, built from a
CreateCollection body with Qdrant's defaults, and the checks recovery makes against it."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.emulator.errors import bad_input, bad_request, validation_error

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


PARAMS_DIFF = ("replication_factor", "write_consistency_factor", "read_fan_out_factor", "read_fan_out_delay_ms",
               "on_disk_payload")


def update_config(cfg: dict, body: dict) -> None:
    """PATCH /collections/{c} (UpdateCollection), in the order Qdrant applies it
    (`toc/collection_meta_ops.rs::update_collection`): optimizers, params, hnsw, vectors,
    quantization, sparse vectors, strict mode, metadata. Each diff merges field by field; a
    quantization diff replaces the config, "Disabled" removes it. A part applied before a later
    one fails stays applied, as in Qdrant; vector names are all checked before any vector changes."""
    if not isinstance(body, dict):
        raise bad_request("Format error in JSON body: expected an UpdateCollection object")
    _validate_update(body)
    optimizers = body.get("optimizers_config", body.get("optimizer_config"))
    if optimizers:
        cfg["optimizer_config"] = merge(cfg["optimizer_config"], optimizers)
    params = body.get("params")
    if params:
        cfg["params"] = merge(cfg["params"], {k: v for k, v in params.items() if k in PARAMS_DIFF})
        if params.get("payload") is not None:
            cfg["params"]["payload"] = merge(cfg["params"].get("payload") or {}, params["payload"])
    if body.get("hnsw_config"):
        cfg["hnsw_config"] = merge(cfg["hnsw_config"], body["hnsw_config"])
    if body.get("vectors") is not None:
        _update_vectors(cfg["params"], body["vectors"])
    quantization = body.get("quantization_config", body.get("quantization"))
    if quantization is not None:
        cfg["quantization_config"] = _quantization(quantization)
    if body.get("sparse_vectors") is not None:
        sparse = cfg["params"].get("sparse_vectors") or {}
        for name, diff in body["sparse_vectors"].items():
            if name not in sparse:
                raise bad_input(f"Not existing vector name error: {name}")
        for name, diff in body["sparse_vectors"].items():
            sparse[name] = merge(sparse[name], diff)
    if body.get("strict_mode_config"):
        cfg["strict_mode_config"] = merge(cfg["strict_mode_config"], body["strict_mode_config"])
    if body.get("metadata") is not None:
        metadata = {**(cfg.get("metadata") or {}), **body["metadata"]}
        cfg["metadata"] = {k: v for k, v in metadata.items() if v is not None}


def _validate_update(body: dict) -> None:
    """The request's own validation (before anything changes): the ranges UpdateCollection declares."""
    for name in ("replication_factor", "write_consistency_factor"):
        value = (body.get("params") or {}).get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise validation_error("JSON body", f"params.{name}: value {value} invalid, must be 1 or larger")
    hnsw_diffs = [("hnsw_config", body.get("hnsw_config") or {})]
    hnsw_diffs += [(f"vectors.{n}.hnsw_config", (d or {}).get("hnsw_config") or {})
                   for n, d in (body.get("vectors") or {}).items() if isinstance(d, dict)]
    for where, diff in hnsw_diffs:
        for name, least in (("ef_construct", 4), ("full_scan_threshold", 10)):
            if diff.get(name) is not None and diff[name] < least:
                raise validation_error("JSON body", f"{where}.{name}: value {diff[name]} invalid, must be {least} or larger")
    deleted = (body.get("optimizers_config") or {}).get("deleted_threshold")
    if deleted is not None and not 0.0 <= deleted <= 1.0:
        raise validation_error("JSON body", f"optimizers_config.deleted_threshold: value {deleted} invalid, "
                                            "must be in the range 0.0..=1.0")


def _quantization(diff: Any) -> dict | None:
    if diff == "Disabled":
        return None
    if not isinstance(diff, dict) or len(diff) != 1 or next(iter(diff)) not in ("scalar", "product", "binary", "turbo"):
        raise bad_request("Format error in JSON body: data did not match any variant of untagged enum "
                          "QuantizationConfigDiff")
    return strip_nulls(diff)


def _update_vectors(params: dict, diffs: Any) -> None:
    """`vectors`: {name: VectorParamsDiff}, "" naming the single unnamed vector
    (`CollectionParams::update_vectors_from_diff`)."""
    if not isinstance(diffs, dict):
        raise bad_request("Format error in JSON body: vectors must be an object")
    vectors = params.get("vectors") or {}
    unnamed = "size" in vectors
    for name in diffs:
        if (name != "") if unnamed else (name not in vectors):
            raise bad_input(f"Not existing vector name error: {name}")
    for name, diff in diffs.items():
        target = vectors if unnamed else vectors[name]
        diff = diff or {}
        if diff.get("hnsw_config") is not None:
            target["hnsw_config"] = merge(target.get("hnsw_config") or {}, diff["hnsw_config"])
        quantization = diff.get("quantization_config", diff.get("quantization"))
        if quantization is not None:
            target.pop("quantization_config", None)
            if _quantization(quantization) is not None:
                target["quantization_config"] = _quantization(quantization)
        for key in ("on_disk", "memory"):
            if diff.get(key) is not None:
                target[key] = diff[key]
