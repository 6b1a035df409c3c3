"""What a Qdrant cluster agrees on through consensus: collections, shard placement, aliases, and
the views snapshots and GET endpoints are made from. Shard keys, payload indexes and replica
states are in layout.py, point operations in pointops.py, recovery in recovery.py, the data
model in model.py.

Every node of a distributed emulator cluster shares one `ClusterState` (the consensus view);
independent single-node servers each have their own. Replicas of a shard share one point store
while they are in sync; a replica a test sets out of sync (or a `no_sync` recover) gets a store
of its own, so stale and divergent replicas can be modelled.
"""

from __future__ import annotations

import copy
import math
import threading
from typing import Any

from tests.emulator.config import (  # noqa: F401 - re-exported for older imports
    DISTANCES,
    PRIORITIES,
    build_config,
    is_custom,
    update_config,
    validate_collection_name,
)
from tests.emulator.errors import ApiError, bad_input, bad_request, collection_not_found
from tests.emulator.layout import STANDALONE, LayoutOps  # noqa: F401
from tests.emulator.model import (  # noqa: F401 - the model, re-exported
    READABLE,
    REPLICA_STATES,
    UPDATABLE,
    ArchiveData,
    Collection,
    Shard,
    ShardView,
)
from tests.emulator.pointops import PointOps
from tests.emulator.points import index_info, indexed_points, point_sort_key


class ClusterState(PointOps, LayoutOps):
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
        self.engine: Any = None  # edge_store.EdgeEngine in edge mode: shards keep their points in EdgeShards

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
            if self.engine is not None:
                self.engine.attach(collection)
            self.collections[name] = collection
            self.commit += 1
            return collection

    _add_collection = add_collection

    def delete_collection(self, name: str) -> bool:
        with self.lock:
            if name not in self.collections:
                return False
            removed = self.collections.pop(name)
            if self.engine is not None:
                self.engine.detach(removed)
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
