"""A restore's target shape (topology and storage) against what a snapshot can carry: which way
each collection is restored, and what changes on the way. Pure.

Qdrant recovers a snapshot only into a collection with the same vectors and shard number. So a
target that keeps the recorded shard number is restored from its archives as always (into a
collection qbr creates with the wanted replication), and the rest is changed in place with
PATCH /collections/{c}: write consistency, HNSW, optimizers, quantization and each vector's
on_disk are all in Qdrant's UpdateCollection. A different shard number (or `method: logical`)
is a logical copy: the target is created in its new shape and the points are streamed into it
from the live source collection.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from qbr.manifest import RestoreConfig
from qbr.world import ObservedCollection


@dataclass(frozen=True)
class Route:
    """How one collection reaches its target, and why."""

    method: str  # snapshot | logical
    changes: tuple[str, ...] = ()  # "shard number 3 -> 6", ... (empty: the recorded shape)
    patch: dict[str, Any] = field(default_factory=dict)  # snapshot: the PATCH body sent after the recover
    shard_number: int = 1
    replication_factor: int | None = None  # None: as before topology existed (the recorded one, capped)
    write_consistency_factor: int | None = None
    refusal: str | None = None


def shape_of(restore: RestoreConfig) -> dict[str, Any]:
    """The manifest's topology and storage of a restore ({} when it sets none): recorded with
    each target's provenance, so a later change of them re-restores the target."""
    shape: dict[str, Any] = {}
    topology = {k: v for k, v in asdict(restore.topology).items() if v is not None}
    if topology:
        shape["topology"] = topology
    storage = storage_of(restore)
    if storage:
        shape["storage"] = storage
    return shape


def storage_of(restore: RestoreConfig) -> dict[str, Any]:
    s = restore.storage
    given = {"on_disk": s.on_disk, "quantization": s.quantization, "hnsw": s.hnsw, "optimizers": s.optimizers}
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in given.items() if v is not None}


def shaped_config(config: dict[str, Any], storage: Mapping[str, Any], write_consistency_factor: int | None = None) -> dict[str, Any]:
    """A `CollectionInfo.config` with the storage overrides (and write consistency) applied: what
    a logical copy creates its target from."""
    shaped = copy.deepcopy(config)
    params = shaped.setdefault("params", {})
    if write_consistency_factor is not None:
        params["write_consistency_factor"] = write_consistency_factor
    if storage.get("on_disk") is not None:
        for params_of_vector in _dense_vectors(params).values():
            params_of_vector["on_disk"] = bool(storage["on_disk"])
    if storage.get("hnsw"):
        shaped["hnsw_config"] = {**(shaped.get("hnsw_config") or {}), **storage["hnsw"]}
    if storage.get("optimizers"):
        shaped["optimizer_config"] = {**(shaped.get("optimizer_config") or {}), **storage["optimizers"]}
    if storage.get("quantization") is not None:
        shaped["quantization_config"] = None if storage["quantization"] == "disabled" else copy.deepcopy(storage["quantization"])
    return shaped


def route(
    restore: RestoreConfig,
    source: str,
    recorded: dict[str, Any],
    recorded_shards: int,
    live: ObservedCollection | None,
    source_cluster: str,
    target_nodes: int,
) -> Route:
    """Snapshot (then PATCH) where a snapshot can carry the target's shape; a logical copy from
    the live source where it cannot; a refusal (one sentence) where neither can be done."""
    topology = restore.topology
    want_shards = topology.shard_number or recorded_shards
    logical = restore.method == "logical" or want_shards != recorded_shards
    if logical and restore.method == "snapshot":
        return Route("snapshot", refusal=(
            f"method snapshot cannot change the shard number of collection {source} ({recorded_shards} -> {want_shards}): "
            "a snapshot recovers only into a collection with the same shard number; set method to auto or logical"
        ))
    offline = logical and restore.copy_from == "archive"  # read from the set's archives: no live source
    if logical and live is None and not offline:
        why = f"shard number {recorded_shards} -> {want_shards}" if want_shards != recorded_shards else "method is logical"
        return Route("logical", refusal=(
            f"collection {source} needs a logical copy ({why}) from the live collection {source} on cluster "
            f"{source_cluster}, and that cluster holds no such collection now (or its backup no longer selects it); "
            "copy_from: archive reads the set's archives instead"
        ))
    config = live.config if logical and not offline and live is not None else recorded
    params = config.get("params") or {}
    have_shards = int(params.get("shard_number") or recorded_shards) if logical else recorded_shards
    have_rf = int(params.get("replication_factor") or 1)
    have_wcf = int(params.get("write_consistency_factor") or 1)
    if topology.replication_factor is not None and topology.replication_factor > target_nodes:
        return Route("logical" if logical else "snapshot", refusal=(
            f"replication_factor {topology.replication_factor} needs at least {topology.replication_factor} nodes, "
            f"and the target cluster has {target_nodes}"
        ))
    want_rf = topology.replication_factor or max(1, min(have_rf, target_nodes))
    want_wcf = topology.write_consistency_factor or min(have_wcf, want_rf)
    if want_wcf > want_rf:
        return Route("logical" if logical else "snapshot", refusal=(
            f"write_consistency_factor {want_wcf} is more than the replication factor {want_rf} of collection {source}"
        ))
    changes: list[str] = []
    patch: dict[str, Any] = {}
    if want_shards != have_shards:
        changes.append(f"shard number {have_shards} -> {want_shards}")
    if topology.replication_factor is not None and want_rf != have_rf:
        changes.append(f"replication factor {have_rf} -> {want_rf}")
        patch.setdefault("params", {})["replication_factor"] = want_rf
    if topology.write_consistency_factor is not None and want_wcf != have_wcf:
        changes.append(f"write consistency factor {have_wcf} -> {want_wcf}")
        patch.setdefault("params", {})["write_consistency_factor"] = want_wcf
    _storage_changes(storage_of(restore), config, changes, patch)
    if logical:
        if restore.method == "logical" and want_shards == have_shards:
            changes.insert(0, "method is logical")
        return Route("logical", tuple(changes), {}, want_shards, want_rf, want_wcf)
    return Route(
        "snapshot", tuple(changes), patch, want_shards,
        topology.replication_factor, topology.write_consistency_factor,
    )


def _storage_changes(storage: Mapping[str, Any], config: dict[str, Any], changes: list[str], patch: dict[str, Any]) -> None:
    on_disk = storage.get("on_disk")
    if on_disk is not None:
        vectors = _dense_vectors(config.get("params") or {})
        moved = {name: bool(p.get("on_disk")) for name, p in vectors.items() if bool(p.get("on_disk")) != on_disk}
        if moved:
            which = "vectors" if list(moved) == [""] else "vectors " + ", ".join(sorted(moved))
            changes.append(f"{which} on_disk {_word(not on_disk)} -> {_word(on_disk)}")
            patch["vectors"] = {name: {"on_disk": on_disk} for name in sorted(moved)}
    for key, config_key, patch_key in (("hnsw", "hnsw_config", "hnsw_config"), ("optimizers", "optimizer_config", "optimizers_config")):
        have = config.get(config_key) or {}
        for name, value in sorted((storage.get(key) or {}).items()):
            if have.get(name) != value:
                changes.append(f"{key} {name} {_word(have.get(name))} -> {_word(value)}")
                patch.setdefault(patch_key, {})[name] = value
    quantization = storage.get("quantization")
    if quantization is not None:
        have_q = config.get("quantization_config") or None
        want_q = None if quantization == "disabled" else quantization
        if have_q != want_q:
            old, new = _quantization_name(have_q), _quantization_name(want_q)
            changes.append(f"quantization {old} -> {new}" if old != new else f"quantization {new} settings")
            patch["quantization_config"] = "Disabled" if want_q is None else copy.deepcopy(want_q)


def _dense_vectors(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> VectorParams ("" for the single unnamed vector, as PATCH names it)."""
    vectors = params.get("vectors")
    if not isinstance(vectors, dict) or not vectors:
        return {}
    if "size" in vectors:
        return {"": vectors}
    return {name: p for name, p in vectors.items() if isinstance(p, dict)}


def _quantization_name(config: Any) -> str:
    if not isinstance(config, dict) or not config:
        return "none"
    kind = next(iter(config))
    detail = (config.get(kind) or {}).get("type") or (config.get(kind) or {}).get("compression")
    return f"{kind} {detail}" if detail else str(kind)


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "unset" if value is None else str(value)


def sample_words(size: int, source: str) -> str:
    """What verify_sample does after a snapshot recovery: Qdrant loaded those points itself, so
    they are compared with the set's archives, which qbr reads with the copy engine."""
    return (
        f"then {size} sampled points are compared by id, vector and payload with the set's archives of collection "
        f"{source}, read offline with Qdrant's engine (qdrant-edge-py) on this machine"
    )
