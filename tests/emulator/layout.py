"""Cluster layout operations of the cluster state: shard keys (custom sharding), payload indexes
and replica states. Mixed into ClusterState, which provides `lock`, `resolve`, `get`, `commit`,
`distributed`, `node_indexes`, `peer_ids` and `next_operation`."""

from __future__ import annotations

import copy
from typing import Any

from tests.emulator.errors import ApiError, bad_request, validation_error
from tests.emulator.model import REPLICA_STATES, UPDATABLE, Shard
from tests.emulator.points import field_schema, normalize_point_id, shard_key

STANDALONE = "Qdrant is running in standalone mode"


class LayoutOps:
    _key_cursor = 0

    def _even_placement(self, pool: list[int], count: int, replication_factor: int) -> list[list[int]]:
        """`generate_even_placement`: walk the pool in a cycle. Qdrant shuffles the pool first; the
        emulator continues the cycle from the previous shard key instead, so runs are repeatable."""
        per_shard = max(1, min(replication_factor, len(pool)))
        placement = []
        for _ in range(count):
            placement.append([pool[(self._key_cursor + r) % len(pool)] for r in range(per_shard)])
            self._key_cursor += per_shard
        return placement

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
