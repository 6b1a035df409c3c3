"""The sweep_chunks action: a dedup repository's unreferenced chunks deleted (qbr.repository.chunk_gc)."""

from __future__ import annotations

from typing import Any

from qbr.actions import SweepChunks
from qbr.apply.context import ActionContext
from qbr.errors import QbrError


def sweep_chunks(ctx: ActionContext, p: SweepChunks, action_id: str) -> dict[str, Any]:
    from qbr.repository.chunk_gc import sweep

    repo = ctx.connections.repository(p.repository)
    if not hasattr(repo, "read_list"):
        raise QbrError(f"repository {p.repository} does not declare dedup: true any more; its chunks are left as they are")
    locked = ctx.connections.manifest.repositories[p.repository].object_lock is not None
    done = sweep(repo, set(p.chunks), list(p.markers), relist=p.relist, parallelism=ctx.connections.parallelism, locked=locked)
    if done.get("chunks_locked"):
        return {"journal": done, "note": f"{done['chunks_locked']} chunks kept: S3 Object Lock still holds them"}
    return {"journal": done}
