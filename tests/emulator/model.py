"""The emulator's data model: shards with replicas, states and points; collections; the views
snapshots are made from; what an archive carries back for recovery."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tests.emulator.config import is_custom

REPLICA_STATES = ("Active", "Dead", "Partial", "Initializing", "Listener", "PartialSnapshot", "Recovery",
                  "Resharding", "ReshardingScaleDown", "ActiveRead", "ManualRecovery")
# ReplicaState::is_updatable / is_readable in replica_set_state.rs (v1.19.0)
UPDATABLE = frozenset({"Active", "Partial", "Initializing", "Listener", "Resharding", "ReshardingScaleDown",
                       "ActiveRead"})
READABLE = frozenset({"Active", "ReshardingScaleDown", "ActiveRead"})


@dataclass
class Shard:
    """One shard: its replicas (node indexes) with their states, its points and its segment-level
    payload indexes (what its segments carry, which a shard snapshot takes along)."""

    shard_id: int
    replicas: list[int]
    points: dict[Any, dict] = field(default_factory=dict)  # the data of every replica in sync
    states: dict[int, str] = field(default_factory=dict)  # node -> ReplicaState (missing: Active)
    own: dict[int, dict[Any, dict]] = field(default_factory=dict)  # node -> data of a diverged replica
    indexes: dict[str, Any] = field(default_factory=dict)
    shard_key: str | int | None = None

    def state_of(self, node: int) -> str:
        return self.states.get(node, "Active")

    def points_on(self, node: int) -> dict[Any, dict]:
        """What the replica on `node` holds."""
        return self.own.get(node, self.points)

    def read_points(self, node: int | None) -> dict[Any, dict]:
        """Reads prefer the node's own replica when it is readable, else an in-sync one."""
        if node is not None and node in self.replicas and self.state_of(node) in READABLE:
            return self.points_on(node)
        return self.points

    def update_stores(self) -> list[dict[Any, dict]]:
        """Every store a write reaches: the in-sync data and each diverged replica that takes updates."""
        return [self.points] + [own for node, own in self.own.items() if self.state_of(node) in UPDATABLE]


@dataclass
class Collection:
    name: str
    config: dict  # CollectionConfigInternal: params, hnsw_config, optimizer_config, wal_config, ...
    payload_schema: dict  # consensus-level payload indexes {field: schema} (payload_index.json)
    shards: dict[int, Shard]
    synthetic_size: int | None = None  # snapshots of the local shard are generated, this many bytes

    @property
    def shard_number(self) -> int:
        return int(self.config["params"]["shard_number"])

    @property
    def custom(self) -> bool:
        return is_custom(self.config)

    def points_count(self) -> int:
        return sum(len(s.points) for s in self.shards.values())

    def key_mapping(self) -> list[tuple[str | int, list[int]]]:
        """Shard key -> shard ids, ordered by the keys' first shard id."""
        mapping: dict[Any, list[int]] = {}
        for sid, shard in sorted(self.shards.items()):
            if shard.shard_key is not None:
                mapping.setdefault((type(shard.shard_key).__name__, shard.shard_key), []).append(sid)
        return [(k[1], ids) for k, ids in sorted(mapping.items(), key=lambda item: item[1][0])]

    def rest_config(self) -> dict:
        cfg = {key: copy.deepcopy(self.config.get(key)) for key in (
            "params", "hnsw_config", "optimizer_config", "wal_config", "quantization_config", "strict_mode_config"
        )}
        if self.config.get("metadata") is not None:
            cfg["metadata"] = copy.deepcopy(self.config["metadata"])
        return cfg


@dataclass(frozen=True)
class ShardView:
    """One shard as a node snapshots it: a point-in-time copy."""

    replicas: list[int]
    points: list[dict] | None  # None: no local replica, the archive carries no data
    states: dict[int, str] = field(default_factory=dict)
    indexes: dict[str, Any] = field(default_factory=dict)
    shard_key: str | int | None = None


@dataclass(frozen=True)
class ArchiveData:
    """What a snapshot archive carries, as recovery needs it."""

    kind: str  # "collection" or "shard"
    config: dict | None
    payload_schema: dict
    shard_points: dict[int, list[dict] | None]  # shard id -> points (None: folder without data)
    shard_key_mapping: list[tuple[Any, list[int]]] | None = None  # custom sharding only
    shard_indexes: dict[int, dict] = field(default_factory=dict)  # segment-level indexes per shard
    source: Any = None  # the archive's path, for the edge engine to read its segments from
