"""The emulator's edge engine (`--engine edge`): each shard's points live in an EdgeShard of
`qdrant-edge-py`, Qdrant's own storage engine, so snapshots hold real segment files.

The rest of the emulator reads and writes `shard.points` as a mapping {id: {"vector", "payload"}};
`EdgePoints` is that mapping over an EdgeShard (get, set, delete, iterate, count go to the engine),
so the HTTP layer, routing and point operations are shared with the default Python engine.
`EdgeEngine` gives every shard of a collection its own EdgeShard in a folder of the data dir.

Qdrant's optimizer runs before each snapshot (segments past the collection's indexing threshold
become immutable; no HNSW graph is built: m=0). Synthetic collections keep their generated
archives. Not supported in edge mode (the default engine supports them): custom sharding (shard
keys), replicas with data of their own (`set_replica_state(..., points=...)`, `no_sync` recovers:
every replica of a shard shares its one EdgeShard), payload indexes inside the segments (they stay
in the collection's payload_index.json), multivectors and vector storage options (datatype,
on_disk, quantization). Vectors come back as Qdrant returns them: cosine vectors normalised,
values rounded to float32. Archives carry no WAL (edge_archive.py).
"""

from __future__ import annotations

import copy
import shutil
import threading
import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tests.emulator.errors import bad_input

if TYPE_CHECKING:
    from tests.emulator.model import Collection

PAGE = 1000
ENGINES = ("python", "edge")


def load_edge() -> Any:
    """The `qdrant_edge` module, or one sentence saying what to install."""
    try:
        import qdrant_edge
    except ImportError:
        raise RuntimeError("the emulator's --engine edge needs qdrant-edge-py: pip install qdrant-edge-py") from None
    return qdrant_edge


def plain(value: Any) -> Any:
    """The engine's values as JSON data (sparse vectors as {indices, values}, UUIDs as strings)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "indices") and hasattr(value, "values") and not isinstance(value, dict):
        return {"indices": list(value.indices), "values": [float(v) for v in value.values]}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def edge_config(edge: Any, config: dict) -> Any:
    """An EdgeConfig for a collection's config: vector sizes and distances, sparse vector names,
    and the optimizer's indexing threshold (KB), with HNSW graphs off (m=0): segments past the
    threshold become immutable, as in Qdrant, without a graph build that would take minutes."""
    params = config["params"]
    distances = {"Cosine": edge.Distance.Cosine, "Dot": edge.Distance.Dot, "Euclid": edge.Distance.Euclid,
                 "Manhattan": edge.Distance.Manhattan}

    def dense(cfg: dict) -> Any:
        if cfg.get("multivector_config"):
            raise bad_input("The emulator's edge engine does not support multivectors")
        return edge.EdgeVectorParams(size=int(cfg["size"]), distance=distances[cfg.get("distance", "Cosine")])

    vectors_cfg = params.get("vectors") or {}
    vectors = dense(vectors_cfg) if "size" in vectors_cfg else {name: dense(c) for name, c in vectors_cfg.items()}
    sparse = {name: edge.EdgeSparseVectorParams() for name in (params.get("sparse_vectors") or {})}
    threshold = (config.get("optimizer_config") or {}).get("indexing_threshold")
    optimizers = edge.EdgeOptimizersConfig(indexing_threshold=int(10000 if threshold is None else threshold))
    return edge.EdgeConfig(vectors=vectors or None, sparse_vectors=sparse or None, wal_enabled=False,
                           hnsw_config=edge.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000),
                           optimizers=optimizers)


class EdgePoints(MutableMapping):
    """A shard's points, {id: {"vector", "payload"}}, kept in an EdgeShard at `folder`. Callers hold
    the cluster state's lock, as they do for the Python engine's dicts."""

    def __init__(self, edge: Any, folder: Path, config: Any):
        self.edge, self.folder = edge, folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.shard = edge.EdgeShard.create(str(folder), config)
        self.closed = False

    # -- conversion ----------------------------------------------------------------------------
    def _vector(self, vector: Any) -> Any:
        if isinstance(vector, dict):
            if {"indices", "values"} <= set(vector) and not isinstance(vector.get("indices"), dict):
                return self.edge.SparseVector([int(i) for i in vector["indices"]], [float(v) for v in vector["values"]])
            return {name: self._vector(v) for name, v in vector.items()}
        return [float(v) for v in vector] if vector and not isinstance(vector[0], list) else vector

    def _record(self, record: Any) -> dict:
        return {"vector": plain(record.vector), "payload": plain(record.payload) or {}}

    # -- the mapping ----------------------------------------------------------------------------
    def __getitem__(self, point_id: Any) -> dict:
        found = self.shard.retrieve([point_id], True, True)
        if not found:
            raise KeyError(point_id)
        return self._record(found[0])

    def __setitem__(self, point_id: Any, data: dict) -> None:
        point = self.edge.Point(point_id, self._vector(data["vector"]), copy.deepcopy(data.get("payload") or {}))
        self.shard.update(self.edge.UpdateOperation.upsert_points([point]))

    def __delitem__(self, point_id: Any) -> None:
        if not self.shard.retrieve([point_id], False, False):
            raise KeyError(point_id)
        self.shard.update(self.edge.UpdateOperation.delete_points([point_id]))

    def __contains__(self, point_id: object) -> bool:
        return bool(self.shard.retrieve([point_id], False, False))

    def __len__(self) -> int:
        return int(self.shard.count(self.edge.CountRequest(exact=True)))

    def _pages(self, with_data: bool) -> Iterator[list]:
        offset = None
        while True:
            records, offset = self.shard.scroll(self.edge.ScrollRequest(
                offset=offset, limit=PAGE, with_payload=with_data, with_vector=with_data))
            yield records
            if offset is None:
                return

    def __iter__(self) -> Iterator[Any]:
        for records in self._pages(False):
            yield from (plain(r.id) for r in records)

    def items(self) -> Iterator[tuple[Any, dict]]:  # type: ignore[override]  # one scroll, not a retrieve per id
        for records in self._pages(True):
            yield from ((plain(r.id), self._record(r)) for r in records)

    def values(self) -> Iterator[dict]:  # type: ignore[override]
        return (data for _, data in self.items())

    def __deepcopy__(self, memo: dict) -> dict:
        return dict(self.items())

    # -- whole-shard operations -----------------------------------------------------------------
    def replace(self, points: dict) -> None:
        """Make the shard hold exactly `points` (a recovery from an archive of JSON lines)."""
        ids = list(self)
        for start in range(0, len(ids), PAGE):
            self.shard.update(self.edge.UpdateOperation.delete_points(ids[start:start + PAGE]))
        batch = [self.edge.Point(pid, self._vector(d["vector"]), copy.deepcopy(d.get("payload") or {}))
                 for pid, d in points.items()]
        for start in range(0, len(batch), PAGE):
            self.shard.update(self.edge.UpdateOperation.upsert_points(batch[start:start + PAGE]))

    def restore(self, shard_snapshot: Path, scratch: Path) -> None:
        """Replace the shard's data by a shard snapshot's segments (Qdrant's layout)."""
        scratch.mkdir(parents=True, exist_ok=True)
        self.shard.update_from_snapshot(str(shard_snapshot), str(scratch))

    def segment_dirs(self) -> list[Path]:
        """The shard's segment folders, once the optimizer has caught up (Qdrant's runs in the
        background between writes; here it runs before a snapshot) and everything is on disk."""
        self.shard.optimize()
        self.shard.flush()
        # the engine's own list: folders of segments an optimization replaced are removed later, in the background
        return sorted(self.folder / "segments" / segment_id for segment_id in self.shard.snapshot_manifest())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.shard.flush()
        finally:
            self.shard.close()


def is_edge(store: Any) -> bool:
    return isinstance(store, EdgePoints)


class EdgeEngine:
    """Gives each shard of a collection an EdgeShard in `root/<collection>-<id>/<shard id>`."""

    def __init__(self, root: Path):
        self.edge = load_edge()
        self.root = root
        self.lock = threading.Lock()
        self.folders: dict[int, Path] = {}  # id(collection) -> its folder

    def attach(self, collection: Collection) -> None:
        if collection.custom:
            raise bad_input("The emulator's edge engine does not support custom sharding")
        if collection.synthetic_size is not None:
            return
        config = edge_config(self.edge, collection.config)
        folder = self.root / f"{collection.name}-{uuid.uuid4().hex[:8]}"
        with self.lock:
            self.folders[id(collection)] = folder
        for sid, shard in collection.shards.items():
            shard.points = EdgePoints(self.edge, folder / str(sid), config)

    def detach(self, collection: Collection) -> None:
        """Close the collection's shards and remove their folders (the collection was deleted)."""
        for shard in collection.shards.values():
            if is_edge(shard.points):
                shard.points.close()
        with self.lock:
            folder = self.folders.pop(id(collection), None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self, collections: list[Collection]) -> None:
        """Flush and close every shard (the node stops; the folders stay)."""
        for collection in collections:
            for shard in collection.shards.values():
                if is_edge(shard.points):
                    shard.points.close()
