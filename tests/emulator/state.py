"""What a Qdrant cluster agrees on through consensus: collections, shard placement and shard keys,
payload indexes, replica states and aliases. Point operations are in pointops.py, recovery in
recovery.py.

Every node of a distributed emulator cluster shares one `ClusterState` (the consensus view);
independent single-node servers each have their own. Replicas of a shard share one point store
while they are in sync; a replica a test sets out of sync (or a `no_sync` recover) gets a store
of its own, so stale and divergent replicas can be modelled.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.emulator.config import (  # noqa: F401 - re-exported for older imports
    DISTANCES,
    PRIORITIES,
    build_config,
    config_compatible,
    is_custom,
    strip_nulls,
    update_config,
    validate_collection_name,
)
from tests.emulator.errors import ApiError, bad_input, bad_request, collection_not_found, validation_error
from tests.emulator.pointops import PointOps
from tests.emulator.points import (  # noqa: F401 - re-exported for older imports
    field_schema,
    filter_matches,
    index_info,
    indexed_points,
    normalize_point_id,
    point_sort_key,
    shard_for_point,
    shard_key,
)

REPLICA_STATES = ("Active", "Dead", "Partial", "Initializing", "Listener", "PartialSnapshot", "Recovery",
                  "Resharding", "ReshardingScaleDown", "ActiveRead", "ManualRecovery")
# ReplicaState::is_updatable / is_readable in replica_set_state.rs (v1.19.0)
UPDATABLE = frozenset({"Active", "Partial", "Initializing", "Listener", "Resharding", "ReshardingScaleDown",
                       "ActiveRead"})
READABLE = frozenset({"Active", "ReshardingScaleDown", "ActiveRead"})
STANDALONE = "Qdrant is running in standalone mode"


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


class ClusterState(PointOps):
    """Collections, aliases and placement as the cluster's consensus sees them. Thread-safe."""

    def __init__(self, node_indexes: list[int], peer_ids: dict[int, int], distributed: bool):
        self.node_indexes = list(node_indexes)
        self.peer_ids = dict(peer_ids)
        self.distributed = distributed
        self.lock = threading.RLock()
        self.collections: dict[str, Collection] = {}
        self.aliases: dict[str, str] = {}
        self.commit = 0
        self.operation_id = 0
        self._key_cursor = 0

    # -- names ------------------------------------------------------------------------------
    def resolve(self, name: str) -> Collection:
        """The collection by name or alias (404 when neither exists)."""
        with self.lock:
            if name in self.collections:
                return self.collections[name]
            real = self.aliases.get(name)
            if real is not None and real in self.collections:
                return self.collections[real]
        raise collection_not_found(name)

    def get(self, name: str) -> Collection:
        with self.lock:
            if name in self.collections:
                return self.collections[name]
        raise collection_not_found(name)

    def next_operation(self) -> dict:
        with self.lock:
            self.operation_id += 1
            return {"operation_id": self.operation_id, "status": "completed"}

    # -- placement --------------------------------------------------------------------------
    def place_shards(self, shard_number: int, replication_factor: int) -> dict[int, Shard]:
        nodes = self.node_indexes
        replicas = max(1, min(replication_factor, len(nodes)))
        return {
            sid: Shard(sid, [nodes[(sid + r) % len(nodes)] for r in range(replicas)])
            for sid in range(shard_number)
        }

    def _even_placement(self, pool: list[int], count: int, replication_factor: int) -> list[list[int]]:
        """`generate_even_placement`: walk the pool in a cycle. Qdrant shuffles the pool first; the
        emulator continues the cycle from the previous shard key instead, so runs are repeatable."""
        per_shard = max(1, min(replication_factor, len(pool)))
        placement = []
        for _ in range(count):
            placement.append([pool[(self._key_cursor + r) % len(pool)] for r in range(per_shard)])
            self._key_cursor += per_shard
        return placement

    # -- collections ------------------------------------------------------------------------
    def create_collection(self, name: str, body: dict, *, synthetic_size: int | None = None,
                          replicas_on: list[int] | None = None) -> Collection:
        validate_collection_name(name)
        default_shards = len(self.node_indexes) if self.distributed else 1
        config = build_config(body, default_shard_number=default_shards)
        return self.add_collection(name, config, {}, synthetic_size=synthetic_size, replicas_on=replicas_on)

    def add_collection(self, name: str, config: dict, payload_schema: dict, *,
                       synthetic_size: int | None = None, replicas_on: list[int] | None = None) -> Collection:
        """Register a collection; custom sharding starts without shards (they come with shard keys)."""
        with self.lock:
            if name in self.collections:
                raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
            if name in self.aliases:
                raise bad_input(f"Alias with name {name} already exists")
            params = config["params"]
            if is_custom(config):
                shards: dict[int, Shard] = {}
            elif replicas_on is not None:
                shards = {sid: Shard(sid, list(replicas_on)) for sid in range(int(params["shard_number"]))}
            else:
                shards = self.place_shards(int(params["shard_number"]), int(params.get("replication_factor", 1)))
            for shard in shards.values():
                shard.indexes = copy.deepcopy(payload_schema)
            collection = Collection(name, config, payload_schema, shards, synthetic_size)
            self.collections[name] = collection
            self.commit += 1
            return collection

    _add_collection = add_collection

    def delete_collection(self, name: str) -> bool:
        with self.lock:
            if name not in self.collections:
                return False
            del self.collections[name]
            self.aliases = {a: c for a, c in self.aliases.items() if c != name}
            self.commit += 1
            return True

    def update_collection(self, name: str, body: dict) -> bool:
        with self.lock:
            update_config(self.resolve(name).config, body)
            self.commit += 1
            return True

    # -- aliases ----------------------------------------------------------------------------
    def alias_list(self, collection: str | None = None) -> list[dict]:
        with self.lock:
            return [
                {"alias_name": a, "collection_name": c}
                for a, c in sorted(self.aliases.items())
                if collection is None or c == collection
            ]

    def update_aliases(self, actions: list) -> bool:
        """Apply actions in order; each is kept even when a later one fails (as in Qdrant)."""
        if not isinstance(actions, list):
            raise bad_request("Format error in JSON body: actions must be a list")
        with self.lock:
            for action in actions:
                if not isinstance(action, dict) or len(action) != 1:
                    raise bad_request(f"Format error in JSON body: unknown alias action {action!r}")
                (kind, args), = action.items()
                if kind == "create_alias":
                    coll, alias = args.get("collection_name"), args.get("alias_name")
                    if coll not in self.collections:
                        raise collection_not_found(coll)
                    if alias in self.collections:
                        raise ApiError(409, f"Wrong input: Collection `{alias}` already exists!")
                    self.aliases[alias] = coll
                elif kind == "delete_alias":
                    self.aliases.pop(args.get("alias_name"), None)
                elif kind == "rename_alias":
                    old, new = args.get("old_alias_name"), args.get("new_alias_name")
                    if old not in self.aliases:
                        raise ApiError(404, f"Not found: Alias {old} does not exists!")
                    self.aliases[new] = self.aliases.pop(old)
                else:
                    raise bad_request(f"Format error in JSON body: unknown variant `{kind}`")
                self.commit += 1
            return True

    # -- shard keys (src/common/collections.rs, collection/sharding_keys.rs) -----------------
    def create_shard_key(self, name: str, body: dict) -> bool:
        """New shards for a key: ids continue after the highest mapped id (the first key gets 1)."""
        if not self.distributed:
            raise ApiError(405, STANDALONE)
        key = shard_key(body.get("shard_key"))
        for option in ("shards_number", "replication_factor"):
            value = body.get(option)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise validation_error("JSON body", f"{option}: value {value} invalid, must be 1 or larger")
        initial_state = body.get("initial_state")
        if initial_state is not None and initial_state not in ("Active", "Partial"):
            raise bad_request(f"Initial state cannot be {initial_state}, only Active or Partial are allowed")
        with self.lock:
            collection = self.resolve(name)
            if not collection.custom:
                raise bad_request("Shard Key cannot be created with Auto sharding method")
            if any(k == key and type(k) is type(key) for k, _ in collection.key_mapping()):
                raise bad_request(f"Sharding key {key} already exists for collection {name}")
            params = collection.config["params"]
            count = body.get("shards_number") or int(params["shard_number"])
            default_rf = 1 if initial_state is not None else int(params.get("replication_factor", 1))
            placement = body.get("placement")
            if placement is not None:
                if not placement:
                    raise bad_request(f"Sharding key {key} placement cannot be empty. If you want to use random "
                                      "placement, do not specify placement")
                by_peer = {peer: node for node, peer in self.peer_ids.items()}
                for peer in placement:
                    if peer not in by_peer:
                        raise bad_request(f"Peer {peer} does not exist")
                pool = [by_peer[peer] for peer in placement]
            else:
                pool = list(self.node_indexes)
            base = max(collection.shards, default=0) + 1
            for offset, replicas in enumerate(self._even_placement(pool, count, body.get("replication_factor")
                                                                   or default_rf)):
                sid = base + offset
                collection.shards[sid] = Shard(sid, replicas, shard_key=key,
                                               states={n: initial_state for n in replicas} if initial_state else {},
                                               indexes=copy.deepcopy(collection.payload_schema))
            self.commit += 1
            return True

    def drop_shard_key(self, name: str, body: dict) -> bool:
        if not self.distributed:
            raise ApiError(405, STANDALONE)
        key = shard_key(body.get("shard_key"))
        with self.lock:
            collection = self.resolve(name)
            if not collection.custom:
                raise bad_request("Shard Key cannot be created with Auto sharding method")
            doomed = [sid for sid, s in collection.shards.items() if s.shard_key == key
                      and type(s.shard_key) is type(key)]
            if not doomed:
                raise bad_request(f"Sharding key {key} does not exist for collection {name}")
            for sid in doomed:
                del collection.shards[sid]
            self.commit += 1
            return True

    def shard_keys(self, name: str) -> dict:
        """ShardKeysResponse: `shard_keys` only for custom sharding (skipped otherwise)."""
        with self.lock:
            collection = self.resolve(name)
            if not collection.custom:
                return {}
            return {"shard_keys": [{"key": key} for key, _ in collection.key_mapping()]}

    # -- payload indexes --------------------------------------------------------------------
    def create_index(self, name: str, field_name: Any, schema: Any) -> dict:
        """Registered in consensus, then built on every shard (`do_create_index`)."""
        if not isinstance(field_name, str) or not field_name:
            raise bad_request("Json deserialize error: missing field `field_name`")
        if schema is None:
            raise bad_request("Can't auto-detect field type, please specify `field_schema` in the request")
        schema = field_schema(schema)
        with self.lock:
            collection = self.resolve(name)
            collection.payload_schema[field_name] = copy.deepcopy(schema)
            for shard in collection.shards.values():
                shard.indexes[field_name] = copy.deepcopy(schema)
            self.commit += 1
        return self.next_operation()

    def delete_index(self, name: str, field_name: str) -> dict:
        with self.lock:
            collection = self.resolve(name)
            collection.payload_schema.pop(field_name, None)
            for shard in collection.shards.values():
                shard.indexes.pop(field_name, None)
            self.commit += 1
        return self.next_operation()

    # -- replica states ---------------------------------------------------------------------
    def set_replica_state(self, name: str, shard_id: int, node: int, state: str,
                          points: dict | list | None = None) -> None:
        """Set what consensus says of one replica. Out of sync states that take no updates (Dead,
        Recovery, ...) freeze the replica's data as it is now; Active re-syncs it (a finished
        transfer); `points` gives the replica data of its own (a stale or partial copy)."""
        if state not in REPLICA_STATES:
            raise ValueError(f"unknown replica state {state!r}; one of {', '.join(REPLICA_STATES)}")
        with self.lock:
            shard = self.get(name).shards.get(shard_id)
            if shard is None or node not in shard.replicas:
                raise KeyError(f"node {node} holds no replica of shard {shard_id} of {name!r}")
            if points is not None:
                items = points.items() if isinstance(points, dict) else ((p["id"], p) for p in points)
                shard.own[node] = {normalize_point_id(pid): {"vector": copy.deepcopy(d.get("vector")),
                                                             "payload": copy.deepcopy(d.get("payload") or {})}
                                   for pid, d in items}
            elif state == "Active":
                shard.own.pop(node, None)
            elif state not in UPDATABLE and node not in shard.own:
                shard.own[node] = copy.deepcopy(shard.points)
            shard.states[node] = state
            self.commit += 1

    # -- views ------------------------------------------------------------------------------
    def snapshot_view(self, collection: Collection, node: int | None = None
                      ) -> tuple[dict, dict, dict[int, ShardView], list[tuple[Any, list[int]]] | None]:
        """A point-in-time copy of what a snapshot made on `node` holds: config, consensus payload
        indexes, each shard (data only where `node` has a replica) and the shard key mapping."""
        with self.lock:
            shards = {}
            for sid, shard in sorted(collection.shards.items()):
                local = node is None or node in shard.replicas
                data = shard.points_on(node) if node is not None and local else shard.points
                points = [{"id": pid, "vector": copy.deepcopy(d["vector"]), "payload": copy.deepcopy(d["payload"])}
                          for pid, d in sorted(data.items(), key=lambda item: point_sort_key(item[0]))]
                shards[sid] = ShardView(list(shard.replicas), points if local else None,
                                        {n: shard.state_of(n) for n in shard.replicas},
                                        copy.deepcopy(shard.indexes), shard.shard_key)
            mapping = collection.key_mapping() if collection.custom else None
            return copy.deepcopy(collection.config), copy.deepcopy(collection.payload_schema), shards, mapping

    def collection_info(self, collection: Collection) -> dict:
        """CollectionInfo; payload_schema sums what the shards' segments index, as Qdrant does
        (the consensus schema only when the collection has no shards at all)."""
        with self.lock:
            points = collection.points_count()
            schema: dict[str, dict] = {}
            for shard in collection.shards.values():
                for key, value in shard.indexes.items():
                    count = indexed_points(shard.points, key)
                    if key in schema:
                        schema[key]["points"] += count
                    else:
                        schema[key] = index_info(value, count)
            if not collection.shards:
                schema = {key: index_info(value, 0) for key, value in collection.payload_schema.items()}
            return {
                "status": "green",
                "optimizer_status": "ok",
                "warnings": [],
                "indexed_vectors_count": 0,
                "points_count": points,
                "segments_count": max(1, math.ceil(points / 10000)) * len(collection.shards),
                "config": collection.rest_config(),
                "payload_schema": schema,
                "update_queue": {"length": 0},
            }

    def cluster_info(self, collection: Collection, node: int) -> dict:
        """CollectionClusterInfo as `node` sees it: its replicas with their states and point counts."""
        local, remote = [], []
        with self.lock:
            for sid, shard in sorted(collection.shards.items()):
                key = {} if shard.shard_key is None else {"shard_key": shard.shard_key}
                if node in shard.replicas:
                    local.append({"shard_id": sid, **key, "points_count": len(shard.points_on(node)),
                                  "state": shard.state_of(node)})
                for replica in shard.replicas:
                    if replica != node:
                        remote.append({"shard_id": sid, **key, "peer_id": self.peer_ids[replica],
                                       "state": shard.state_of(replica)})
            return {"peer_id": self.peer_ids[node], "shard_count": len(collection.shards), "local_shards": local,
                    "remote_shards": remote, "shard_transfers": []}
