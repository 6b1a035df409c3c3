"""Point operations of the cluster state: upserts (in-place too), deletes, payload and vector
updates, scroll, count and retrieve, routed to shards as Qdrant routes them.

Writes need a shard key in a custom-sharded collection (`ShardHolder::split_by_shard`: "Shard key
not specified"); reads without one go to every shard. Writes reach every replica that takes
updates; reads use the asking node's replica when it is readable.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Iterable

from tests.emulator.errors import ApiError, bad_input, bad_request, validation_error
from tests.emulator.points import (
    filter_matches,
    merge_payload,
    normalize_point_id,
    point_sort_key,
    select_payload,
    select_vector,
    shard_for_point,
    shard_key_selector,
)

if TYPE_CHECKING:
    from tests.emulator.model import Collection, Shard

PAYLOAD_BATCH = 32  # PAYLOAD_OP_BATCH_SIZE / VECTOR_OP_BATCH_SIZE: earlier batches stay applied on error


def _same_key(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b)


class PointOps:
    """Mixed into ClusterState (which provides `lock`, `resolve` and `next_operation`)."""

    # -- routing ----------------------------------------------------------------------------
    def _key_shards(self, collection: Collection, key: Any) -> list[Shard]:
        shards = [s for _, s in sorted(collection.shards.items()) if _same_key(s.shard_key, key)]
        if not shards:
            raise bad_input(f"Shard key {key} not found")
        return shards

    def _selected_keys(self, collection: Collection, raw: Any) -> list[Any] | None:
        selector = shard_key_selector(raw)
        if isinstance(selector, tuple):
            target, fallback = selector
            exists = any(_same_key(s.shard_key, target) for s in collection.shards.values())
            return [target if exists else fallback]
        return selector

    def _write_groups(self, collection: Collection, raw_selector: Any) -> list[list[Shard]]:
        """The shard groups a write is split over: one per selected key (the op goes to each)."""
        keys = self._selected_keys(collection, raw_selector)
        if keys is None:
            if collection.custom:
                raise bad_input("Shard key not specified")
            return [[s for _, s in sorted(collection.shards.items())]]
        return [self._key_shards(collection, key) for key in keys]

    def _read_shards(self, collection: Collection, raw_selector: Any) -> list[Shard]:
        keys = self._selected_keys(collection, raw_selector)
        if keys is None:
            return [s for _, s in sorted(collection.shards.items())]
        return [s for key in keys for s in self._key_shards(collection, key)]

    @staticmethod
    def _route(group: list[Shard], point_id: Any) -> Shard:
        by_id = {s.shard_id: s for s in group}
        return by_id[shard_for_point(point_id, list(by_id))]

    # -- writes -----------------------------------------------------------------------------
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
        """Insert or replace whole points (payload and vectors); `update_mode` and `update_filter`
        (1.19) limit what happens to existing ids."""
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
        mode = body.get("update_mode") or "upsert"
        if mode not in ("upsert", "insert_only", "update_only"):
            raise bad_request(f"Json deserialize error: update_mode: unknown variant `{mode}`")
        update_filter = body.get("update_filter")
        prepared = []
        for raw_id, vector, payload in items:
            point_id = normalize_point_id(raw_id)
            if vector is None:
                raise bad_request("Format error in JSON body: missing field `vector`")
            vector = self._check_vector(collection, vector)
            if payload is not None and not isinstance(payload, dict):
                raise bad_request("Format error in JSON body: payload must be an object")
            prepared.append((point_id, vector, payload or {}))
        with self.lock:
            for group in self._write_groups(collection, body.get("shard_key")):
                for point_id, vector, payload in prepared:
                    for store in self._route(group, point_id).update_stores():
                        old = store.get(point_id)
                        if (old is None and mode == "update_only") or (old is not None and mode == "insert_only"):
                            continue
                        if old is not None and update_filter and not filter_matches(point_id, old["payload"],
                                                                                    update_filter):
                            continue
                        store[point_id] = {"vector": copy.deepcopy(vector), "payload": copy.deepcopy(payload)}
            return self.next_operation()

    def delete_points(self, name: str, body: dict) -> dict:
        collection = self.resolve(name)
        with self.lock:
            groups = self._write_groups(collection, body.get("shard_key"))
            if "points" in body:
                ids = [normalize_point_id(i) for i in body["points"] or []]
                for group in groups:
                    for point_id in ids:
                        for store in self._route(group, point_id).update_stores():
                            store.pop(point_id, None)
            elif "filter" in body:
                for shard in (s for group in groups for s in group):
                    for store in shard.update_stores():
                        for point_id in [p for p, v in store.items() if filter_matches(p, v["payload"], body["filter"])]:
                            del store[point_id]
            else:
                raise bad_request("Format error in JSON body: expected `points` or `filter`")
            return self.next_operation()

    def _apply_by_ids(self, groups: list[list[Shard]], ids: list[Any], change) -> None:
        """Apply `change(id, old) -> new` to existing points in batches; a batch with a missing id
        fails the call after its existing points were changed (`check_unprocessed_points`)."""
        for group in groups:
            for start in range(0, len(ids), PAYLOAD_BATCH):
                missing = None
                for point_id in ids[start:start + PAYLOAD_BATCH]:
                    shard = self._route(group, point_id)
                    if point_id not in shard.points and missing is None:
                        missing = point_id
                    for store in shard.update_stores():
                        if point_id in store:
                            store[point_id] = change(point_id, store[point_id])
                if missing is not None:
                    raise ApiError(404, f"Not found: No point with id {missing} found")

    def set_payload(self, name: str, body: dict, *, overwrite: bool = False) -> dict:
        """POST (merge keys, optionally under `key`) or PUT (replace the whole payload)."""
        collection = self.resolve(name)
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise bad_request("Json deserialize error: missing field `payload`")
        key = None if overwrite else body.get("key")

        def change(point_id: Any, old: dict) -> dict:
            new = copy.deepcopy(payload) if overwrite else merge_payload(old["payload"], payload, key)
            return {"vector": old["vector"], "payload": new}

        with self.lock:
            groups = self._write_groups(collection, body.get("shard_key"))
            if body.get("points") is not None:
                self._apply_by_ids(groups, [normalize_point_id(i) for i in body["points"]], change)
            elif body.get("filter") is not None:
                for shard in (s for group in groups for s in group):
                    for store in shard.update_stores():
                        for point_id, old in list(store.items()):
                            if filter_matches(point_id, old["payload"], body["filter"]):
                                store[point_id] = change(point_id, old)
            else:
                raise validation_error("JSON body", "Either list of point ids or filter must be provided")
            return self.next_operation()

    def update_vectors(self, name: str, body: dict) -> dict:
        """PUT /points/vectors: named vectors given replace those names only, the others stay."""
        collection = self.resolve(name)
        points = body.get("points")
        if not isinstance(points, list) or not points:
            raise validation_error("JSON body", "points: must have at least 1 item")
        updates: dict[Any, Any] = {}
        for item in points:
            if not isinstance(item, dict) or "vector" not in item:
                raise bad_request("Json deserialize error: missing field `vector`")
            point_id = normalize_point_id(item.get("id"))
            vector = self._check_vector(collection, item["vector"])
            if isinstance(updates.get(point_id), dict) and isinstance(vector, dict):
                vector = {**updates[point_id], **vector}
            updates[point_id] = vector

        def change(point_id: Any, old: dict) -> dict:
            new = updates[point_id]
            if isinstance(old["vector"], dict) and isinstance(new, dict):
                new = {**old["vector"], **new}
            return {"vector": copy.deepcopy(new), "payload": old["payload"]}

        with self.lock:
            groups = self._write_groups(collection, body.get("shard_key"))
            ids = list(updates)
            if body.get("update_filter"):
                def excluded(point_id: Any) -> bool:
                    old = self._route(groups[0], point_id).points.get(point_id)
                    return old is not None and not filter_matches(point_id, old["payload"], body["update_filter"])
                ids = [i for i in ids if not excluded(i)]
            self._apply_by_ids(groups, ids, change)
            return self.next_operation()

    # -- reads ------------------------------------------------------------------------------
    def all_points(self, collection: Collection, flt: dict | None = None, *, node: int | None = None,
                   shard_key: Any = None) -> list[tuple[Any, dict]]:
        with self.lock:
            points = [(pid, data) for shard in self._read_shards(collection, shard_key)
                      for pid, data in shard.read_points(node).items()]
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

    def scroll(self, name: str, body: dict, node: int | None = None) -> dict:
        collection = self.resolve(name)
        limit = body.get("limit")
        limit = 10 if limit is None else limit
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise validation_error("JSON body", f"limit: value {limit} invalid, must be 1 or larger")
        points = self.all_points(collection, body.get("filter"), node=node, shard_key=body.get("shard_key"))
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

    def count(self, name: str, body: dict, node: int | None = None) -> dict:
        collection = self.resolve(name)
        return {"count": len(self.all_points(collection, body.get("filter"), node=node,
                                             shard_key=body.get("shard_key")))}

    def retrieve(self, name: str, ids: Iterable[Any], with_payload: Any, with_vector: Any,
                 node: int | None = None, shard_key: Any = None) -> list[dict]:
        collection = self.resolve(name)
        wanted = [normalize_point_id(i) for i in ids]
        out = []
        with self.lock:
            shards = self._read_shards(collection, shard_key)
            for point_id in wanted:
                for shard in shards:
                    data = shard.read_points(node).get(point_id)
                    if data is not None:
                        out.append(self.record(point_id, data, with_payload, with_vector))
                        break
        return out
