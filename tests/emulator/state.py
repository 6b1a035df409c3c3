"""What a Qdrant cluster agrees on through consensus: collections, shard placement, points, aliases.

Every node of a distributed emulator cluster shares one `ClusterState` (the consensus view);
independent single-node servers each have their own. Replicas of a shard share one point store,
so there is no replication lag to model.
"""

from __future__ import annotations

import copy
import math
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from tests.emulator.errors import ApiError, bad_input, bad_request, collection_not_found, validation_error

DISTANCES = ("Cosine", "Euclid", "Dot", "Manhattan")
PRIORITIES = ("no_sync", "snapshot", "replica")
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


# ---------------------------------------------------------------------------------------------
# Point ids, vectors, payload selection, filters


def normalize_point_id(raw: Any) -> int | str:
    """Integers stay integers; strings must be UUIDs and are returned hyphenated, lower case."""
    if isinstance(raw, bool):
        raise bad_request(f"Unable to parse point id {raw!r}")
    if isinstance(raw, int):
        if raw < 0 or raw >= 2**64:
            raise bad_request(f"Unable to parse point id {raw!r}: must be an unsigned 64-bit integer")
        return raw
    if isinstance(raw, str):
        if raw.isdigit():
            raise bad_request(f"Unable to parse UUID: {raw}")
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            raise bad_request(f"Unable to parse UUID: {raw}") from None
    raise bad_request(f"Unable to parse point id {raw!r}")


def point_sort_key(point_id: int | str) -> tuple[int, Any]:
    """Qdrant orders integer ids before UUIDs."""
    return (0, point_id) if isinstance(point_id, int) else (1, point_id)


def shard_for_point(point_id: int | str, shard_number: int) -> int:
    """Stable routing of a point to a shard (not Qdrant's hash ring, but stable across runs)."""
    return zlib.crc32(str(point_id).encode()) % shard_number


def select_payload(payload: dict | None, with_payload: Any) -> dict | None:
    if with_payload is None:
        with_payload = True
    if with_payload is False:
        return None
    payload = payload or {}
    if with_payload is True:
        return copy.deepcopy(payload)
    if isinstance(with_payload, list):
        return {k: copy.deepcopy(v) for k, v in payload.items() if k in with_payload}
    if isinstance(with_payload, dict):
        if "include" in with_payload:
            keep = with_payload["include"] or []
            return {k: copy.deepcopy(v) for k, v in payload.items() if k in keep}
        if "exclude" in with_payload:
            drop = with_payload["exclude"] or []
            return {k: copy.deepcopy(v) for k, v in payload.items() if k not in drop}
    raise bad_request(f"Unsupported with_payload selector: {with_payload!r}")


def select_vector(vector: Any, with_vector: Any) -> Any:
    if not with_vector:
        return None
    if with_vector is True:
        return copy.deepcopy(vector)
    if isinstance(with_vector, list):
        if isinstance(vector, dict):
            return {k: copy.deepcopy(v) for k, v in vector.items() if k in with_vector}
        return copy.deepcopy(vector) if "" in with_vector else {}
    raise bad_request(f"Unsupported with_vector selector: {with_vector!r}")


def _payload_values(payload: dict, key: str) -> list:
    values: list = [payload]
    for part in key.split("."):
        array = part.endswith("[]")
        part = part[:-2] if array else part
        nxt: list = []
        for v in values:
            if isinstance(v, dict) and part in v:
                item = v[part]
                if isinstance(item, list):
                    nxt.extend(item)
                else:
                    nxt.append(item)
        values = nxt
    return values


def _condition_matches(point_id: Any, payload: dict, condition: dict) -> bool:
    if "has_id" in condition:
        return point_id in {normalize_point_id(i) for i in condition["has_id"]}
    if "must" in condition or "should" in condition or "must_not" in condition:
        return filter_matches(point_id, payload, condition)
    if "is_empty" in condition:
        return not _payload_values(payload, condition["is_empty"]["key"])
    if "is_null" in condition:
        values = _payload_values(payload, condition["is_null"]["key"])
        return any(v is None for v in values)
    key = condition.get("key")
    if key is None:
        raise bad_request(f"The emulator does not support the filter condition {condition!r}")
    values = _payload_values(payload, key)
    if condition.get("match") is not None:
        match = condition["match"]
        if "value" in match:
            return match["value"] in values
        if "any" in match:
            return any(v in match["any"] for v in values)
        if "except" in match:
            return any(v not in match["except"] for v in values)
        raise bad_request(f"The emulator does not support the match {match!r}")
    if condition.get("range") is not None:
        rng = condition["range"]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]

        def in_range(v: float) -> bool:
            return (
                (rng.get("gt") is None or v > rng["gt"])
                and (rng.get("gte") is None or v >= rng["gte"])
                and (rng.get("lt") is None or v < rng["lt"])
                and (rng.get("lte") is None or v <= rng["lte"])
            )

        return any(in_range(v) for v in numbers)
    raise bad_request(f"The emulator does not support the filter condition {condition!r}")


def filter_matches(point_id: Any, payload: dict | None, flt: dict | None) -> bool:
    """A small subset of Qdrant's filter language: must/should/must_not with match, range, has_id."""
    if not flt:
        return True
    payload = payload or {}

    def as_list(v: Any) -> list:
        if v is None:
            return []
        return v if isinstance(v, list) else [v]

    must = as_list(flt.get("must"))
    should = as_list(flt.get("should"))
    must_not = as_list(flt.get("must_not"))
    if not all(_condition_matches(point_id, payload, c) for c in must):
        return False
    if should and not any(_condition_matches(point_id, payload, c) for c in should):
        return False
    return not any(_condition_matches(point_id, payload, c) for c in must_not)


# ---------------------------------------------------------------------------------------------
# Collections


@dataclass
class Shard:
    """One shard: where its replicas live (node indexes) and its points, shared by the replicas."""

    shard_id: int
    replicas: list[int]
    points: dict[Any, dict] = field(default_factory=dict)


@dataclass
class Collection:
    name: str
    config: dict  # CollectionConfigInternal: params, hnsw_config, optimizer_config, wal_config, ...
    payload_schema: dict
    shards: dict[int, Shard]
    synthetic_size: int | None = None  # snapshots of the local shard are generated, this many bytes

    @property
    def shard_number(self) -> int:
        return int(self.config["params"]["shard_number"])

    def points_count(self) -> int:
        return sum(len(s.points) for s in self.shards.values())

    def rest_config(self) -> dict:
        cfg = {key: copy.deepcopy(self.config.get(key)) for key in (
            "params", "hnsw_config", "optimizer_config", "wal_config", "quantization_config", "strict_mode_config"
        )}
        if self.config.get("metadata") is not None:
            cfg["metadata"] = copy.deepcopy(self.config["metadata"])
        return cfg


def _merge(base: dict, diff: dict | None) -> dict:
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
    """The internal collection config (what a snapshot's config.json holds) from a CreateCollection body."""
    vectors = body.get("vectors")
    if vectors is None:
        vectors = {}
    elif isinstance(vectors, dict) and "size" in vectors:
        vectors = _validate_vector_params(vectors, "vectors")
    elif isinstance(vectors, dict):
        vectors = {name: _validate_vector_params(p, f"vectors.{name}") for name, p in vectors.items()}
    else:
        raise bad_request("Format error in JSON body: vectors must be an object")
    shard_number = body.get("shard_number") or default_shard_number
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
    if body.get("sparse_vectors"):
        params["sparse_vectors"] = strip_nulls(body["sparse_vectors"])
    if body.get("sharding_method") not in (None, "auto"):
        raise bad_request("The emulator supports only automatic sharding")
    return {
        "params": params,
        "hnsw_config": _merge(DEFAULT_HNSW, body.get("hnsw_config")),
        "optimizer_config": _merge(DEFAULT_OPTIMIZER, body.get("optimizers_config")),
        "wal_config": _merge(DEFAULT_WAL, body.get("wal_config")),
        "quantization_config": strip_nulls(body.get("quantization_config")),
        "strict_mode_config": _merge(DEFAULT_STRICT_MODE, body.get("strict_mode_config")),
        "metadata": body.get("metadata"),
        "uuid": str(uuid.uuid4()),
    }


def config_compatible(existing: dict, incoming: dict) -> bool:
    """Recovery into an existing collection needs the same vectors and shard_number."""
    a, b = existing.get("params", {}), incoming.get("params", {})
    return strip_nulls(a.get("vectors") or {}) == strip_nulls(b.get("vectors") or {}) and int(
        a.get("shard_number", 1)
    ) == int(b.get("shard_number", 1))


@dataclass(frozen=True)
class ArchiveData:
    """What a snapshot archive carries, as recovery needs it."""

    kind: str  # "collection" or "shard"
    config: dict | None
    payload_schema: dict
    shard_points: dict[int, list[dict] | None]  # shard id -> points (None: folder without data)


class ClusterState:
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
        return self._add_collection(name, config, {}, synthetic_size=synthetic_size, replicas_on=replicas_on)

    def _add_collection(self, name: str, config: dict, payload_schema: dict, *,
                        synthetic_size: int | None = None, replicas_on: list[int] | None = None) -> Collection:
        with self.lock:
            if name in self.collections:
                raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
            if name in self.aliases:
                raise bad_input(f"Alias with name {name} already exists")
            params = config["params"]
            if replicas_on is not None:
                shards = {sid: Shard(sid, list(replicas_on)) for sid in range(int(params["shard_number"]))}
            else:
                shards = self.place_shards(int(params["shard_number"]), int(params.get("replication_factor", 1)))
            collection = Collection(name, config, payload_schema, shards, synthetic_size)
            self.collections[name] = collection
            self.commit += 1
            return collection

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
            collection = self.resolve(name)
            cfg = collection.config
            if body.get("optimizers_config"):
                cfg["optimizer_config"] = _merge(cfg["optimizer_config"], body["optimizers_config"])
            if body.get("hnsw_config"):
                cfg["hnsw_config"] = _merge(cfg["hnsw_config"], body["hnsw_config"])
            if body.get("params"):
                cfg["params"] = _merge(cfg["params"], {k: v for k, v in body["params"].items()
                                                       if k in ("replication_factor", "write_consistency_factor",
                                                                "on_disk_payload")})
            if body.get("strict_mode_config"):
                cfg["strict_mode_config"] = _merge(cfg["strict_mode_config"], body["strict_mode_config"])
            if body.get("metadata") is not None:
                cfg["metadata"] = {**(cfg.get("metadata") or {}), **body["metadata"]}
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

    # -- points -----------------------------------------------------------------------------
    def _check_vector(self, collection: Collection, vector: Any) -> Any:
        vectors_cfg = collection.config["params"].get("vectors") or {}
        sparse_cfg = collection.config["params"].get("sparse_vectors") or {}
        unnamed = "size" in vectors_cfg
        if isinstance(vector, list):
            if not unnamed:
                raise bad_input("Not existing vector name error: ")
            if len(vector) != vectors_cfg["size"]:
                raise bad_input(f"Vector dimension error: expected dim: {vectors_cfg['size']}, got {len(vector)}")
            return vector
        if isinstance(vector, dict):
            if unnamed and set(vector) == {""}:
                return self._check_vector(collection, vector[""])
            for name, value in vector.items():
                if name in sparse_cfg:
                    continue
                params = vectors_cfg.get(name) if not unnamed else None
                if params is None:
                    raise bad_input(f"Not existing vector name error: {name}")
                if isinstance(value, list) and value and not isinstance(value[0], list) and len(value) != params["size"]:
                    raise bad_input(f"Vector dimension error: expected dim: {params['size']}, got {len(value)}")
            return vector
        raise bad_request(f"Format error in JSON body: unsupported vector {vector!r}")

    def upsert(self, name: str, body: dict) -> dict:
        collection = self.resolve(name)
        if "points" in body:
            raw_points = body["points"]
            if not isinstance(raw_points, list):
                raise bad_request("Format error in JSON body: points must be a list")
            items = [(p.get("id"), p.get("vector"), p.get("payload")) for p in raw_points]
        elif "batch" in body:
            batch = body["batch"]
            ids = batch.get("ids") or []
            vectors = batch.get("vectors")
            payloads = batch.get("payloads") or [None] * len(ids)
            if isinstance(vectors, dict):
                per_point = [{n: vectors[n][i] for n in vectors} for i in range(len(ids))]
            else:
                per_point = list(vectors or [])
            if not (len(per_point) == len(ids) == len(payloads)):
                raise bad_input("Batch ids, vectors and payloads must have the same length")
            items = list(zip(ids, per_point, payloads))
        else:
            raise bad_request("Format error in JSON body: expected `points` or `batch`")
        prepared = []
        for raw_id, vector, payload in items:
            point_id = normalize_point_id(raw_id)
            if vector is None:
                raise bad_request("Format error in JSON body: missing field `vector`")
            vector = self._check_vector(collection, vector)
            if payload is not None and not isinstance(payload, dict):
                raise bad_request("Format error in JSON body: payload must be an object")
            prepared.append((point_id, copy.deepcopy(vector), copy.deepcopy(payload or {})))
        with self.lock:
            for point_id, vector, payload in prepared:
                shard = collection.shards[shard_for_point(point_id, collection.shard_number)]
                shard.points[point_id] = {"vector": vector, "payload": payload}
            self.operation_id += 1
            return {"operation_id": self.operation_id, "status": "completed"}

    def delete_points(self, name: str, body: dict) -> dict:
        collection = self.resolve(name)
        with self.lock:
            if "points" in body:
                ids = {normalize_point_id(i) for i in body["points"] or []}
                for shard in collection.shards.values():
                    for point_id in ids & shard.points.keys():
                        del shard.points[point_id]
            elif "filter" in body:
                for shard in collection.shards.values():
                    for point_id in [p for p, v in shard.points.items()
                                     if filter_matches(p, v["payload"], body["filter"])]:
                        del shard.points[point_id]
            else:
                raise bad_request("Format error in JSON body: expected `points` or `filter`")
            self.operation_id += 1
            return {"operation_id": self.operation_id, "status": "completed"}

    def all_points(self, collection: Collection, flt: dict | None = None) -> list[tuple[Any, dict]]:
        with self.lock:
            points = [(pid, data) for shard in collection.shards.values() for pid, data in shard.points.items()]
        points = [(pid, data) for pid, data in points if filter_matches(pid, data["payload"], flt)]
        points.sort(key=lambda item: point_sort_key(item[0]))
        return points

    @staticmethod
    def record(point_id: Any, data: dict, with_payload: Any, with_vector: Any) -> dict:
        return {
            "id": point_id,
            "payload": select_payload(data["payload"], with_payload),
            "vector": select_vector(data["vector"], with_vector),
        }

    def scroll(self, name: str, body: dict) -> dict:
        collection = self.resolve(name)
        limit = body.get("limit")
        limit = 10 if limit is None else limit
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise validation_error("JSON body", f"limit: value {limit} invalid, must be 1 or larger")
        points = self.all_points(collection, body.get("filter"))
        if body.get("offset") is not None:
            start = point_sort_key(normalize_point_id(body["offset"]))
            points = [p for p in points if point_sort_key(p[0]) >= start]
        page, rest = points[:limit], points[limit:]
        with_payload = body.get("with_payload", True)
        with_vector = body.get("with_vector", False)
        return {
            "points": [self.record(pid, data, with_payload, with_vector) for pid, data in page],
            "next_page_offset": rest[0][0] if rest else None,
        }

    def count(self, name: str, body: dict) -> dict:
        collection = self.resolve(name)
        return {"count": len(self.all_points(collection, body.get("filter")))}

    def retrieve(self, name: str, ids: Iterable[Any], with_payload: Any, with_vector: Any) -> list[dict]:
        collection = self.resolve(name)
        wanted = [normalize_point_id(i) for i in ids]
        out = []
        with self.lock:
            for point_id in wanted:
                shard = collection.shards[shard_for_point(point_id, collection.shard_number)]
                data = shard.points.get(point_id)
                if data is not None:
                    out.append(self.record(point_id, data, with_payload, with_vector))
        return out

    # -- recovery ---------------------------------------------------------------------------
    def recover_collection(self, name: str, node_index: int, archive: ArchiveData, priority: str) -> bool:
        """Apply a collection snapshot on `node_index`: create the collection if missing, then
        replace the data of every shard the archive carries data for and this node holds."""
        if archive.kind != "collection" or archive.config is None:
            raise bad_input("Snapshot is not a collection snapshot: config.json is missing")
        validate_collection_name(name)
        with self.lock:
            collection = self.collections.get(name)
            if collection is None:
                config = copy.deepcopy(archive.config)
                config["params"]["shard_number"] = int(config["params"].get("shard_number", 1))
                collection = self._add_collection(name, config, copy.deepcopy(archive.payload_schema))
            elif not config_compatible(collection.config, archive.config):
                raise bad_input(
                    "Snapshot is not compatible with existing collection: "
                    f"collection has vectors {collection.config['params'].get('vectors')} and "
                    f"shard_number {collection.shard_number}, snapshot has vectors "
                    f"{archive.config['params'].get('vectors')} and shard_number "
                    f"{archive.config['params'].get('shard_number')}"
                )
            for shard_id, points in archive.shard_points.items():
                shard = collection.shards.get(shard_id)
                if points is None or shard is None or node_index not in shard.replicas:
                    continue
                self._replace_shard_data(shard, node_index, points, priority)
            self.commit += 1
            return True

    def recover_shard(self, name: str, shard_id: int, node_index: int, archive: ArchiveData, priority: str) -> bool:
        """Apply a shard snapshot: the node becomes (or stays) a replica holding the archive's data."""
        if archive.kind != "shard":
            raise bad_input("Snapshot is not a shard snapshot: segments/ is missing at its root")
        with self.lock:
            collection = self.resolve(name)
            shard = collection.shards.get(shard_id)
            if shard is None:
                raise ApiError(404, f"Not found: shard {shard_id} not found")
            if node_index not in shard.replicas:
                shard.replicas.append(node_index)
            self._replace_shard_data(shard, node_index, archive.shard_points.get(shard_id) or [], priority)
            self.commit += 1
            return True

    def _replace_shard_data(self, shard: Shard, node_index: int, points: list[dict], priority: str) -> None:
        others = [n for n in shard.replicas if n != node_index]
        if priority == "replica" and others:
            return  # another replica exists: its data wins, the snapshot is discarded
        shard.points = {}
        for point in points:
            point_id = normalize_point_id(point["id"])
            shard.points[point_id] = {"vector": point.get("vector"), "payload": point.get("payload") or {}}

    # -- views ------------------------------------------------------------------------------
    def snapshot_view(self, collection: Collection) -> tuple[dict, dict, dict[int, tuple[list[int], list[dict]]]]:
        """A consistent copy (config, payload schema, shard -> (replicas, sorted points)) for archiving."""
        with self.lock:
            shards = {
                sid: (
                    list(shard.replicas),
                    [
                        {"id": pid, "vector": copy.deepcopy(d["vector"]), "payload": copy.deepcopy(d["payload"])}
                        for pid, d in sorted(shard.points.items(), key=lambda item: point_sort_key(item[0]))
                    ],
                )
                for sid, shard in sorted(collection.shards.items())
            }
            return copy.deepcopy(collection.config), copy.deepcopy(collection.payload_schema), shards

    def collection_info(self, collection: Collection) -> dict:
        with self.lock:
            points = collection.points_count()
            payload_schema = {
                key: {"data_type": value if isinstance(value, str) else value.get("type", "keyword"),
                      "points": points}
                for key, value in collection.payload_schema.items()
            }
            return {
                "status": "green",
                "optimizer_status": "ok",
                "warnings": [],
                "indexed_vectors_count": 0,
                "points_count": points,
                "segments_count": max(1, math.ceil(points / 10000)) * len(collection.shards),
                "config": collection.rest_config(),
                "payload_schema": payload_schema,
                "update_queue": {"length": 0},
            }
