"""Who counts the points of a shard for `qbr verify --deep`: a PointCounter.

qbr reads Qdrant's archive layout itself (sizes, sha256, which files a snapshot holds) but never
Qdrant's segment files: only Qdrant's own engine can say how many points they hold. That engine
is `qdrant-edge-py` (module `qdrant_edge`, the optional extra: `pip install 'qbr[deep]'`).

Choosing the counter, from the environment variable QBR_DEEP_ENGINE:
- unset or empty: Qdrant's engine when `qdrant_edge` is installed; otherwise none, and verify
  says which archives' points were left uncounted;
- `module:attribute`: a class (or other callable taking no arguments) that returns a
  PointCounter, e.g. `qbr.verify.engine:QdrantEdgeCounter` (Qdrant's engine, and an error if it
  is not installed). The test suite names its emulator's counter this way.
`verify(..., counter=...)` takes a PointCounter directly.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Protocol

from qbr.errors import QbrError
from qbr.plugins import load_plugin

ENGINE_MODULE = "qdrant_edge"  # PyPI qdrant-edge-py: Qdrant's storage engine, in process
ENGINE_ENV = "QBR_DEEP_ENGINE"


class PointCounter(Protocol):
    """Counts the points of one shard of a snapshot archive.

    As an archive streams past, verify copies each shard that holds `segments/` into a shard
    snapshot of its own: an uncompressed tar in Qdrant's shard snapshot layout (`segments/`,
    `replica_state.json`, `shard_config.json`, ... at its root; for a collection snapshot, the
    contents of one `<shard_id>/` folder). `count` gets that tar's path and `scratch`, a path
    not yet created inside verify's temporary folder that it may use (verify removes it).

    `count` returns the exact number of points, or raises: any exception, a BaseException from a
    Rust panic included, becomes a finding of the first line of its message. It may be called
    from several threads at once."""

    name: str  # who counts, as a sentence's subject: "Qdrant's engine"
    method: str  # how a count was made, as a finding says it: "counted by Qdrant's engine"

    def count(self, shard_snapshot: Path, scratch: Path) -> int: ...


class QdrantEdgeCounter:
    """Qdrant's engine: unpack the shard snapshot, load the shard, count its points exactly."""

    name = "Qdrant's engine"
    method = "counted by Qdrant's engine"

    def __init__(self, edge: Any | None = None) -> None:
        """`edge`: the `qdrant_edge` module (imported here when not given) or a stand-in for it."""
        self.edge = edge if edge is not None else importlib.import_module(ENGINE_MODULE)

    def count(self, shard_snapshot: Path, scratch: Path) -> int:
        self.edge.EdgeShard.unpack_snapshot(str(shard_snapshot), str(scratch))
        shard = self.edge.EdgeShard.load(str(scratch))
        try:
            return int(shard.count(self.edge.CountRequest(exact=True)))
        finally:
            shard.close()


def load_engine() -> Any | None:
    """Qdrant's engine module (`qdrant_edge`), or None when it is not installed (`pip install 'qbr[deep]'`)."""
    try:
        return importlib.import_module(ENGINE_MODULE)
    except Exception:  # absent, or built for another platform: points are left uncounted, and verify says so
        return None


def choose_counter(setting: str | None = None) -> PointCounter | None:
    """The PointCounter QBR_DEEP_ENGINE names (`setting` overrides the environment), or by
    default Qdrant's engine when installed, else None. A counter named but not loadable is an
    error: who asked for one wants to know it is not counting."""
    if setting is None:
        setting = os.environ.get(ENGINE_ENV, "")
    setting = setting.strip()
    if not setting:
        edge = load_engine()
        return None if edge is None else QdrantEdgeCounter(edge)
    if ":" not in setting or setting.startswith(":") or setting.endswith(":"):  # says how to name Qdrant's engine
        raise QbrError(f"{ENGINE_ENV}={setting} is not module:attribute (for Qdrant's engine: qbr.verify.engine:QdrantEdgeCounter)")
    return load_plugin(ENGINE_ENV, setting, "count", "shard_snapshot, scratch")
