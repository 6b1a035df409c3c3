"""Points as Qdrant sees them: ids, routing to shards, payload and vector selection, the filter
subset the emulator understands, payload merges, shard key selectors and payload index schemas."""

from __future__ import annotations

import copy
import uuid
import zlib
from typing import Any

from tests.emulator.config import strip_nulls
from tests.emulator.errors import bad_request

PAYLOAD_SCHEMA_TYPES = ("keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid")


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


def shard_for_point(point_id: int | str, shard_ids: int | list[int]) -> int:
    """Stable routing of a point to one of `shard_ids` (an int n means 0..n-1).

    Not Qdrant's hash ring, but stable across runs, which is all the tests need.
    """
    ids = list(range(shard_ids)) if isinstance(shard_ids, int) else sorted(shard_ids)
    return ids[zlib.crc32(str(point_id).encode()) % len(ids)]


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


def payload_values(payload: dict, key: str) -> list:
    """The values at a JSON path such as `a.b` or `tags[]` (arrays are flattened)."""
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


def merge_payload(old: dict, payload: dict, key: str | None) -> dict:
    """Set payload: merge the keys into the point's payload, or into the object at `key`."""
    out = copy.deepcopy(old or {})
    if not key:
        out.update(copy.deepcopy(payload))
        return out
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node.get(last), dict):
        node[last].update(copy.deepcopy(payload))
    else:
        node[last] = copy.deepcopy(payload)
    return out


def _condition_matches(point_id: Any, payload: dict, condition: dict) -> bool:
    if "has_id" in condition:
        return point_id in {normalize_point_id(i) for i in condition["has_id"]}
    if "must" in condition or "should" in condition or "must_not" in condition:
        return filter_matches(point_id, payload, condition)
    if "is_empty" in condition:
        return not payload_values(payload, condition["is_empty"]["key"])
    if "is_null" in condition:
        values = payload_values(payload, condition["is_null"]["key"])
        return any(v is None for v in values)
    key = condition.get("key")
    if key is None:
        raise bad_request(f"The emulator does not support the filter condition {condition!r}")
    values = payload_values(payload, key)
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
# Shard keys and payload index schemas


def shard_key(raw: Any) -> str | int:
    """A ShardKey: a string or an unsigned integer (1 and "1" are different keys)."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)) or (isinstance(raw, int) and raw < 0):
        raise bad_request(f"Json deserialize error: invalid shard key {raw!r}: expected a string or an unsigned integer")
    return raw


def shard_key_selector(raw: Any) -> list[str | int] | tuple[str | int, str | int] | None:
    """A ShardKeySelector: None, a list of keys, or (target, fallback) for ShardKeyWithFallback."""
    if raw is None:
        return None
    if isinstance(raw, list):
        return [shard_key(k) for k in raw]
    if isinstance(raw, dict):
        if "target" not in raw or "fallback" not in raw:
            raise bad_request("Json deserialize error: shard_key: expected `target` and `fallback`")
        return (shard_key(raw["target"]), shard_key(raw["fallback"]))
    return [shard_key(raw)]


def field_schema(raw: Any) -> str | dict:
    """A PayloadFieldSchema: a type name or a params object with `type`."""
    if isinstance(raw, str):
        if raw not in PAYLOAD_SCHEMA_TYPES:
            raise bad_request(f"Json deserialize error: field_schema: unknown variant `{raw}`")
        return raw
    if isinstance(raw, dict) and raw.get("type") in PAYLOAD_SCHEMA_TYPES:
        return strip_nulls(copy.deepcopy(raw))
    raise bad_request(f"Json deserialize error: field_schema: data did not match any variant: {raw!r}")


def index_info(schema: str | dict, points: int) -> dict:
    """PayloadIndexInfo: data_type, params only for a params schema, and the indexed point count."""
    if isinstance(schema, str):
        return {"data_type": schema, "points": points}
    return {"data_type": schema.get("type", "keyword"), "params": copy.deepcopy(schema), "points": points}


def indexed_points(points: dict, field: str) -> int:
    """How many points have a value at `field` (what a payload index counts)."""
    return sum(1 for data in points.values()
               if any(v is not None for v in payload_values(data.get("payload") or {}, field)))
