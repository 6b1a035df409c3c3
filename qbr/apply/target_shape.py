"""Shape a restore's target collection before any data reaches it: the collection from the
recorded config, its shard keys (custom sharding) in their original order, and its payload
indexes. Qdrant's recover does none of this for shard archives (a recover that creates the
collection brings neither shard keys, qdrant/qdrant#10135, nor, from shard snapshots, the
collection's index schema), so qbr does it, then maps each recorded shard to the target's."""

from __future__ import annotations

import json
from typing import Any

from qbr import faultpoints
from qbr.errors import QbrError, QdrantError
from qbr.records import CollectionRecord


def compatible(info: dict[str, Any], source: CollectionRecord) -> bool:
    """Qdrant recovers over an existing collection only with the same vectors and shard count."""
    params = (info.get("config") or {}).get("params") or {}
    wanted = source.config.get("params") or {}
    return params.get("vectors") == wanted.get("vectors") and int(params.get("shard_number") or 1) == source.shard_number


def create_collection(
    seed: Any, target: str, source: CollectionRecord, node_count: int,
    replication_factor: int | None = None, write_consistency_factor: int | None = None,
) -> None:
    """Create the target from the recorded config, with the recorded shard number and a replication
    that fits the cluster (or the restore's topology: its replication and write consistency)."""
    replication = replication_factor or max(1, min(_replication_factor(source), node_count))
    config = source.config
    if write_consistency_factor is not None:
        config = {**config, "params": {**(config.get("params") or {}), "write_consistency_factor": write_consistency_factor}}
    create_shaped(seed, target, config, source.shard_number, replication)


def create_shaped(seed: Any, target: str, config: dict[str, Any], shard_number: int, replication_factor: int) -> None:
    """Create a collection shaped like `config` with this shard number and replication."""
    try:
        seed.create_collection(target, config, shard_number=shard_number, replication_factor=replication_factor)
    except QdrantError as error:
        # A create whose answer was lost (a timeout) is sent again by the client and meets the
        # collection it made: 409. One of another shape is still refused.
        if error.status != 409 or not seed.collection_exists(target):
            raise
        params = (seed.collection_info(target).get("config") or {}).get("params") or {}
        wanted = config.get("params") or {}
        if params.get("vectors") != wanted.get("vectors") or int(params.get("shard_number") or 1) != shard_number:
            raise
    faultpoints.reached("restore.collection_created")


def ensure_shard_keys(
    seed: Any, target: str, source: CollectionRecord, node_count: int, replication_factor: int | None = None
) -> dict[int, int]:
    """Create the recorded shard keys the target lacks, lowest source shard id first, and map each
    recorded shard id to the target's shard of the same key and position. {} without custom sharding."""
    if not source.shard_keys:
        return {}
    replication = replication_factor or max(1, min(_replication_factor(source), node_count))
    have = _target_keys(seed, target)
    for entry in source.shard_keys:
        if _key_id(entry["key"]) not in have:
            seed.create_shard_key(target, entry["key"], shards_number=len(entry["shard_ids"]), replication_factor=replication)
    have = _target_keys(seed, target)
    mapping: dict[int, int] = {}
    for entry in source.shard_keys:
        theirs = have.get(_key_id(entry["key"]), [])
        if len(theirs) != len(entry["shard_ids"]):
            raise QbrError(
                f"collection {target} has {len(theirs)} shards under shard key {entry['key']!r}, the set recorded "
                f"{len(entry['shard_ids'])}; delete it (or restore under another name) and apply again"
            )
        mapping.update(zip(sorted(entry["shard_ids"]), sorted(theirs), strict=True))
    return mapping


def ensure_payload_indexes(seed: Any, target: str, source: CollectionRecord) -> None:
    """Create every recorded payload index (creating one that exists is harmless), so filtered
    searches on the restored collection are indexed as they were on the source."""
    create_payload_indexes(seed, target, source.payload_schema)


def create_payload_indexes(seed: Any, target: str, payload_schema: dict[str, Any]) -> None:
    """Create the indexes a `CollectionInfo.payload_schema` describes ({field: {data_type, params}})."""
    for field_name, info in sorted(payload_schema.items()):
        schema = info.get("params") or info.get("data_type")
        if schema is not None:
            seed.create_payload_index(target, field_name, schema)


def ensure_keys(seed: Any, target: str, keys: list[Any], shards_number: int, replication_factor: int) -> None:
    """Create these shard keys (custom sharding), each with `shards_number` shards, unless present."""
    have = _target_keys(seed, target)
    for key in keys:
        if _key_id(key) not in have:
            seed.create_shard_key(target, key, shards_number=shards_number, replication_factor=replication_factor)


def live_shard_keys(conn: Any, cluster: str, collection: str) -> list[Any]:
    """A live custom-sharded collection's shard keys, lowest shard id first ([] without custom sharding)."""
    first: dict[str, tuple[int, Any]] = {}
    for node in conn.cluster_nodes(cluster):
        view = conn.client(cluster, node.url).collection_cluster(collection)
        for shard in (view.get("local_shards") or []) + (view.get("remote_shards") or []):
            key = shard.get("shard_key")
            if key is not None:
                known = first.get(_key_id(key))
                if known is None or int(shard["shard_id"]) < known[0]:
                    first[_key_id(key)] = (int(shard["shard_id"]), key)
    return [key for _, key in sorted(first.values(), key=lambda item: item[0])]


def shard_holders(conn: Any, cluster: str, nodes: list[Any], collection: str) -> dict[int, list[str]]:
    holders: dict[int, list[str]] = {}
    for node in nodes:
        view = conn.client(cluster, node.url).collection_cluster(collection)
        for shard in view.get("local_shards") or []:
            holders.setdefault(int(shard["shard_id"]), []).append(node.url)
    return {s: sorted(n) for s, n in holders.items()}


def _target_keys(seed: Any, target: str) -> dict[str, list[int]]:
    view = seed.collection_cluster(target)
    keys: dict[str, list[int]] = {}
    for shard in (view.get("local_shards") or []) + (view.get("remote_shards") or []):
        if shard.get("shard_key") is not None:
            ids = keys.setdefault(_key_id(shard["shard_key"]), [])
            if int(shard["shard_id"]) not in ids:
                ids.append(int(shard["shard_id"]))
    return keys


def _key_id(key: Any) -> str:
    return json.dumps(key, sort_keys=True)


def _replication_factor(source: CollectionRecord) -> int:
    return int((source.config.get("params") or {}).get("replication_factor") or 1)
