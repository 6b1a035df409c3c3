"""Applying snapshot archives to a node, as Qdrant's recover.rs and common/snapshots.rs do.

Collection recover: create the collection if missing (config.json, payload_index.json), put
this node's replicas in ManualRecovery (Partial before 1.16.4), wait `recover_latency`, then
restore every shard the archive has data for and activate it; shards without data go back to
their previous state. Two overlapping collection recovers both run: the last to finish wins.

Shard recover: the replica keeps its state; from 1.19.0 recoveries of one shard queue behind
each other (`take_snapshot_recovery_lock`), before they overlap and the last to finish wins.

Custom sharding: Qdrant (to 1.19.0 at least) creates a missing collection from config.json
alone, without its shard keys, so the recover restores nothing (qdrant/qdrant#10135). The
cluster flag `recover_recreates_shard_keys` models the proposed fix (PR #10536) instead.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from tests.emulator import edge_archive
from tests.emulator.config import config_compatible, validate_collection_name
from tests.emulator.edge_store import is_edge
from tests.emulator.errors import ApiError, bad_input, collection_not_found
from tests.emulator.points import normalize_point_id
from tests.emulator.state import ArchiveData, Collection, Shard

if TYPE_CHECKING:
    from tests.emulator.cluster import EmulatorNode

ACTIVE_FOR_RECOVERY = ("Active", "ReshardingScaleDown")  # "other active replicas" in recover.rs


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("-")[0].split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)


def recovering_state(version: str) -> str:
    """MANUAL_RECOVERY_SHARD_STATE_VERSION is 1.16.4-dev; older clusters use Partial."""
    return "ManualRecovery" if version_tuple(version) >= (1, 16, 4) else "Partial"


@contextmanager
def shard_recovery_slot(node: EmulatorNode, collection: str, shard_id: int) -> Iterator[None]:
    """From 1.19.0 a shard recovery waits for one of the same shard already running on the node."""
    if version_tuple(node.cluster.version) < (1, 19, 0):
        yield
        return
    with node.shard_recovery_lock(collection, shard_id):
        yield


def _points(raw: list[dict]) -> dict[Any, dict]:
    return {normalize_point_id(p["id"]): {"vector": p.get("vector"), "payload": p.get("payload") or {}}
            for p in raw}


def _load_edge(node: EmulatorNode, shard: Shard, archive: ArchiveData, sid: int | None, raw_points: list[dict]) -> None:
    """Edge mode: the archive's segments (or, from an archive of the Python engine, its points)
    become the shard's data; every replica shares the shard's one EdgeShard."""
    if archive.source is not None and edge_archive.holds_segments(archive.source, sid):
        edge_archive.restore_shard(node, shard.points, archive.source, sid)
    else:
        shard.points.replace(_points(raw_points))


def _readable(node: EmulatorNode, shard: Shard, archive: ArchiveData, sid: int | None, raw: list[dict]) -> list[dict]:
    """The Python engine reads an archive of real segments (Qdrant's, or an edge-mode emulator's)
    with qdrant-edge-py; its own archives carry their points as JSON lines."""
    if is_edge(shard.points) or archive.source is None or not edge_archive.holds_segments(archive.source, sid):
        return raw
    try:
        return edge_archive.read_points(node, archive.source, sid)
    except RuntimeError:  # qdrant-edge-py is not installed
        raise bad_input("Snapshot holds Qdrant segments, which the emulator reads with qdrant-edge-py: "
                        "pip install qdrant-edge-py") from None


def apply_shard_data(collection: Collection, shard: Shard, node: int, raw_points: list[dict],
                     indexes: dict, priority: str, edge_load=None) -> None:
    """Restore one replica from an archive and activate it.

    With other active replicas, `snapshot` makes the snapshot the truth for every replica (Qdrant
    marks the others Dead and re-syncs them; the emulator settles that at once), `replica` keeps
    the others' data, `no_sync` leaves this replica diverged from them.
    """
    data = _points(raw_points)
    # the segments keep their own indexes; loading adds the collection's (update_all_field_indices)
    merged_indexes = {**copy.deepcopy(indexes), **copy.deepcopy(collection.payload_schema)}
    others = [n for n in shard.replicas if n != node and shard.state_of(n) in ACTIVE_FOR_RECOVERY]
    if is_edge(shard.points):
        edge_load()
        shard.indexes = merged_indexes
    elif not others or priority == "snapshot":
        shard.points = data
        shard.indexes = merged_indexes
        for replica in [node, *others]:
            shard.own.pop(replica, None)
    elif priority == "no_sync":
        shard.own[node] = data
        shard.indexes.update(merged_indexes)
    else:
        shard.own.pop(node, None)
    shard.states[node] = "Active"


def _recreate_shard_keys(node: EmulatorNode, collection: Collection, archive: ArchiveData) -> None:
    """PR #10536's fix: create the keys in the order of their shard ids, so the ids come out the
    same, and fail loudly when they cannot."""
    state = node.state
    for key, ids in sorted(archive.shard_key_mapping or [], key=lambda item: min(item[1], default=0)):
        state.create_shard_key(collection.name, {"shard_key": key, "shards_number": max(1, len(ids))})
        made = sorted(sid for sid, s in collection.shards.items()
                      if s.shard_key == key and type(s.shard_key) is type(key))
        if made != sorted(ids):
            raise bad_input(f"Snapshot shard key {key} had shards {sorted(ids)}, recreating it gave {made}")


def recover_collection(node: EmulatorNode, name: str, archive: ArchiveData, priority: str) -> bool:
    if archive.kind != "collection" or archive.config is None:
        raise bad_input("Snapshot is not a collection snapshot: config.json is missing")
    validate_collection_name(name)
    state = node.state
    recovering = recovering_state(node.cluster.version)
    with state.lock:
        collection = state.collections.get(name)
        if collection is None:
            config = copy.deepcopy(archive.config)
            config["params"]["shard_number"] = int(config["params"].get("shard_number", 1))
            collection = state.add_collection(name, config, copy.deepcopy(archive.payload_schema))
            if collection.custom and node.cluster.recover_recreates_shard_keys:
                _recreate_shard_keys(node, collection, archive)
        elif not config_compatible(collection.config, archive.config):
            raise bad_input(
                "Snapshot is not compatible with existing collection: "
                f"collection has vectors {collection.config['params'].get('vectors')} and "
                f"shard_number {collection.shard_number}, snapshot has vectors "
                f"{archive.config['params'].get('vectors')} and shard_number "
                f"{archive.config['params'].get('shard_number')}"
            )
        previous = {}
        for sid, shard in collection.shards.items():
            if node.index in shard.replicas:
                previous[sid] = shard.state_of(node.index)
                shard.states[node.index] = recovering
        state.commit += 1
    node.activity.while_recovering(node, name, None)
    with state.lock:
        if state.collections.get(name) is not collection:
            raise collection_not_found(name)
        for sid, before in previous.items():
            shard = collection.shards.get(sid)
            if shard is None:
                continue
            points = archive.shard_points.get(sid)
            if points is None:
                if shard.state_of(node.index) == recovering and before != recovering:
                    shard.states[node.index] = before
                continue
            points = _readable(node, shard, archive, sid, points)
            apply_shard_data(collection, shard, node.index, points, archive.shard_indexes.get(sid, {}), priority,
                             lambda: _load_edge(node, shard, archive, sid, points))
        state.commit += 1
    return True


def recover_shard(node: EmulatorNode, name: str, shard_id: int, archive: ArchiveData, priority: str) -> bool:
    """Apply a shard snapshot: the node becomes (or stays) a replica holding the archive's data."""
    if archive.kind != "shard":
        raise bad_input("Snapshot is not a shard snapshot: segments/ is missing at its root")
    state = node.state
    with state.lock:
        collection = state.resolve(name)
        shard = collection.shards.get(shard_id)
        if shard is None:
            raise ApiError(404, f"Not found: shard {shard_id} not found")
        if node.index not in shard.replicas:
            shard.replicas.append(node.index)
    with node.activity.recovering(name):
        node.activity.while_recovering(node, collection.name, shard_id)
        with state.lock:
            if collection.shards.get(shard_id) is not shard:
                raise ApiError(404, f"Not found: shard {shard_id} not found")
            raw = _readable(node, shard, archive, None, archive.shard_points.get(shard_id) or [])
            apply_shard_data(collection, shard, node.index, raw, archive.shard_indexes.get(shard_id, {}), priority,
                             lambda: _load_edge(node, shard, archive, None, raw))
            state.commit += 1
    return True
