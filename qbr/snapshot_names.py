"""How Qdrant names the snapshots it makes, so qbr can tell them from uploaded files. Pure."""

from __future__ import annotations

import re


def named_by_qdrant(name: str, collection: str, shard_id: int | None) -> bool:
    """Qdrant names the snapshots it makes {collection}-{peer id}-{time}.snapshot, or for one
    shard {collection}-shard-{id}-{time}.snapshot; an uploaded file keeps its own name."""
    middle = f"shard-{shard_id}" if shard_id is not None else r"[0-9]+"
    stamp = r"[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}\.snapshot"
    return re.fullmatch(re.escape(collection) + "-" + middle + "-" + stamp, name) is not None
