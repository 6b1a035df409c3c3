"""verify_sample: compare a sample of a restored collection's points, by id, vector and payload,
with where they came from: the live source (a logical copy from it), or the set's archives read
offline with the copy engine (a copy from archives, and a snapshot recovery, whose points Qdrant
loaded itself and qbr never saw).

The sample is the points with the lowest `sample_rank`: uniform, and the same on every run.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from qbr.apply.archive_reader import ArchiveShards, ShardReader
from qbr.apply.copy_streams import sample_rank
from qbr.records import CollectionRecord

PAGE = 256


def archive_sample(reader: ShardReader, repo: Any, record: CollectionRecord, size: int, scratch: Path) -> list[dict]:
    """`size` points of the set's archives of one collection, read shard by shard with `reader`
    (each archive downloaded once, its sha256 checked); at most size + a page held at once."""
    shards = ArchiveShards(repo, record, scratch)
    kept: dict[str, dict] = {}
    for shard_id in shards.shard_ids():
        pages = reader.open(shards.snapshot(shard_id), scratch / f"open-{shard_id}")
        try:
            offset: Any = None
            while True:
                points, offset = pages.scroll(offset, PAGE)
                for point in points:
                    kept[sample_rank(point["id"])] = point
                for rank in sorted(kept)[size:]:
                    del kept[rank]
                if offset is None:
                    break
        finally:
            pages.close()
    return [kept[rank] for rank in sorted(kept)]


def compare_sample(
    theirs: dict[Any, dict], target: Any, collection: str, cluster: str, ids: list[Any], source: str, why: str = "",
) -> tuple[int, str | None]:
    """Compare the sampled source points (`theirs`, by id) with what `target` holds; (how many were
    compared, a problem sentence or None). An id missing from `theirs` (gone from a live source
    since) is not compared."""
    ours = {point["id"]: point for point in target.retrieve_points(collection, ids)} if ids else {}
    compared = [i for i in ids if i in theirs]
    differ = [
        i for i in compared
        if i not in ours or ours[i].get("payload") != theirs[i].get("payload")
        or not same_vector(ours[i].get("vector"), theirs[i].get("vector"))
    ]
    if not differ:
        return len(compared), None
    shown = ", ".join(str(i) for i in differ[:5]) + (" ..." if len(differ) > 5 else "")
    return len(compared), (
        f"{len(differ)} of {len(compared)} sampled points of collection {collection} on cluster {cluster} "
        f"differ from {source} (ids {shown}){why}"
    )


def same_vector(a: Any, b: Any) -> bool:
    """Equal vectors, allowing for float noise (Qdrant may normalise a Cosine vector again)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_vector(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_vector(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    return a == b


def check_recovered_sample(
    reader: ShardReader, repo: Any, record: CollectionRecord, size: int, target: Any, collection: str, cluster: str,
    set_id: str,
) -> tuple[int, str | None]:
    """After a snapshot recovery: `size` points of the set's archives against the target's."""
    with tempfile.TemporaryDirectory(prefix="qbr-sample-") as scratch:
        sampled = archive_sample(reader, repo, record, size, Path(scratch))
    checked, problem = compare_sample(
        {point["id"]: point for point in sampled}, target, collection, cluster, [point["id"] for point in sampled],
        f"set {set_id}'s archives of collection {record.name}",
    )
    if problem is None:
        return checked, None
    return checked, (f"{problem}; the restore is not trusted and qbr will not repeat it by itself "
                     "(run qbr verify; delete the collection to restore it again)")
