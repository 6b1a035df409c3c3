"""Snapshot archives of the edge engine, in Qdrant's layout (what Qdrant 1.19 writes with
`SnapshotFormat::Regular`, lib/collection/src/collection/snapshots.rs and
lib/segment/src/segment/snapshot.rs):

    version.info, config.json, payload_index.json           collection snapshots only
    <shard>/replica_state.json, <shard>/shard_config.json
    <shard>/newest_clocks.json                              local shards
    <shard>/segments/<segment uuid>.tar                     each a tar of snapshot/files/<segment files>

A shard snapshot has the shard's files at its root. Unlike Qdrant, no `wal/`: the edge shards
run without a WAL and are flushed before the snapshot, so every operation is in the segments (a
restore makes a fresh WAL). The archive is written while the cluster state's lock is held, so
it is a point in time; the segment files stream from disk (memory stays flat).
"""

from __future__ import annotations

import shutil
import tarfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from tests.emulator import archive as archives
from tests.emulator.edge_store import EdgePoints, is_edge, load_edge, plain

if TYPE_CHECKING:
    from tests.emulator.cluster import EmulatorNode
    from tests.emulator.model import Collection

SEGMENT_FILES = "snapshot/files"


def _segment_tar(segment: Path, out: Path) -> Path:
    """One segment packed as Qdrant packs it: `snapshot/files/<path in the segment>`."""
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(segment.rglob("*")):
            if path.is_file():
                tar.add(str(path), arcname=f"{SEGMENT_FILES}/{path.relative_to(segment).as_posix()}", recursive=False)
    return out


def _shard_files(prefix: str, store: EdgePoints, scratch: Path) -> tuple[list, list[tuple[str, Path]]]:
    """(small members, segment tars from disk) of one local shard."""
    members = [(f"{prefix}newest_clocks.json", archives._json_bytes({"clocks": []})), (f"{prefix}segments", None)]
    files = [(f"{prefix}segments/{seg.name}.tar", _segment_tar(seg, scratch / f"{uuid.uuid4().hex}.tar"))
             for seg in store.segment_dirs()]
    return members, files


def _write(tmp: Path, members: list, files: list[tuple[str, Path]]) -> None:
    try:
        archives.write_archive(tmp, members, files)
    finally:
        for _, path in files:
            path.unlink(missing_ok=True)


def write_collection_snapshot(node: EmulatorNode, collection: Collection, tmp: Path) -> None:
    """A collection snapshot made on `node`: segments only for the shards it holds a replica of."""
    state = node.state
    scratch = node.snapshots.temp_path("edge-segments")
    scratch.mkdir(parents=True)
    try:
        with state.lock:
            members = archives.collection_members(collection.config, collection.payload_schema, {}, state.peer_ids,
                                                  node.index)
            files: list[tuple[str, Path]] = []
            for sid, shard in sorted(collection.shards.items()):
                members += archives.shard_members(f"{sid}/", sid, list(shard.replicas), state.peer_ids, node.index,
                                                  None, states={n: shard.state_of(n) for n in shard.replicas})
                if node.index in shard.replicas and is_edge(shard.points):
                    more, segs = _shard_files(f"{sid}/", shard.points, scratch)
                    members += more
                    files += segs
            _write(tmp, members, files)
    finally:
        _rmdir(scratch)


def write_shard_snapshot(node: EmulatorNode, collection: Collection, shard_id: int, tmp: Path) -> None:
    state = node.state
    scratch = node.snapshots.temp_path("edge-segments")
    scratch.mkdir(parents=True)
    try:
        with state.lock:
            shard = collection.shards[shard_id]
            members = archives.shard_members("", shard_id, list(shard.replicas), state.peer_ids, node.index, None,
                                             states={n: shard.state_of(n) for n in shard.replicas})
            more, files = _shard_files("", shard.points, scratch)
            _write(tmp, members + more, files)
    finally:
        _rmdir(scratch)


def _rmdir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def holds_segments(archive: Path, shard_id: int | None) -> bool:
    """Whether the archive holds Qdrant segments for the shard (`segments/<id>.tar` or
    `segments/<id>/...`; not the Python engine's points.jsonl nor a synthetic filler);
    `shard_id` None: a shard snapshot, its files at the root."""
    prefix = "segments/" if shard_id is None else f"{shard_id}/segments/"
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            rest = name[len(prefix):].strip("/") if name.startswith(prefix) else ""
            if rest.endswith(".tar") or "/" in rest:
                return True
    return False


def shard_snapshot(archive: Path, shard_id: int, out: Path) -> Path:
    """The `<shard_id>/` folder of a collection snapshot re-packed as a shard snapshot."""
    prefix = f"{shard_id}/"
    with tarfile.open(archive, "r:") as tar, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as packed:
        for member in tar:
            name = member.name.removeprefix("./")
            if name.startswith(prefix) and name != prefix:
                member.name = name[len(prefix):]
                packed.addfile(member, tar.extractfile(member) if member.isfile() else None)
    return out


def read_points(node: EmulatorNode, archive: Path, shard_id: int | None) -> list[dict]:
    """The points of a shard's segments, read with Qdrant's engine (the Python engine recovering an
    archive of real segments)."""
    edge = load_edge()
    scratch = node.snapshots.temp_path("edge-read")
    scratch.mkdir(parents=True)
    try:
        source = archive if shard_id is None else shard_snapshot(archive, shard_id, scratch / "shard.tar")
        edge.EdgeShard.unpack_snapshot(str(source), str(scratch / "shard"))
        shard = edge.EdgeShard.load(str(scratch / "shard"))
        points, offset = [], None
        try:
            while True:
                records, offset = shard.scroll(edge.ScrollRequest(offset=offset, limit=1000, with_payload=True,
                                                                  with_vector=True))
                points += [{"id": plain(r.id), "vector": plain(r.vector), "payload": plain(r.payload) or {}}
                           for r in records]
                if offset is None:
                    return points
        finally:
            shard.close()
    finally:
        _rmdir(scratch)


def restore_shard(node: EmulatorNode, store: EdgePoints, archive: Path, shard_id: int | None) -> None:
    """Replace the shard's data with its segments in `archive` (`shard_id` None: a shard snapshot)."""
    scratch = node.snapshots.temp_path("edge-restore")
    scratch.mkdir(parents=True)
    try:
        source = archive if shard_id is None else shard_snapshot(archive, shard_id, scratch / "shard.tar")
        store.restore(source, scratch / "unpack")
    finally:
        _rmdir(scratch)
