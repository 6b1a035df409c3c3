"""Snapshot archives shaped like Qdrant's: real uncompressed tar files.

Collection snapshot: `version.info`, `config.json`, `payload_index.json`, and one `<shard_id>/`
folder per shard with `replica_state.json` and `shard_config.json`; shards local to the node
that made it also carry `newest_clocks.json` and `segments/points.jsonl` (one JSON point a line).
Shard snapshot: the same shard files at the archive root.

Synthetic archives are generated block by block (never held in memory) for size benchmarks.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tests.emulator.errors import bad_input
from tests.emulator.state import ArchiveData, ShardView

COLLECTION_CRATE_VERSION = "0.4.2"
BLOCK = 1 << 20
TAR_BLOCK = 512


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _points_jsonl(points: list[dict]) -> bytes:
    return b"".join(json.dumps(p, separators=(",", ":")).encode() + b"\n" for p in points)


def _replica_state(shard_id: int, replicas: list[int], peer_ids: dict[int, int], node_index: int,
                   states: dict[int, str] | None = None) -> dict:
    return {
        "is_local": node_index in replicas,
        "this_peer_id": peer_ids[node_index],
        "peers": {str(peer_ids[n]): (states or {}).get(n, "Active") for n in replicas},
        "shard_id": shard_id,
    }


def shard_members(prefix: str, shard_id: int, replicas: list[int], peer_ids: dict[int, int], node_index: int,
                  points: list[dict] | None, *, states: dict[int, str] | None = None,
                  indexes: dict | None = None) -> list[tuple[str, bytes | None]]:
    """Tar members for one shard; `None` content means a directory.

    `indexes` are the payload indexes the shard's segments carry (Qdrant keeps them inside each
    segment, so shard snapshots take them along): `segments/payload_index.json`, only when any.
    """
    members: list[tuple[str, bytes | None]] = []
    if prefix:
        members.append((prefix.rstrip("/"), None))
    members.append((f"{prefix}replica_state.json",
                    _json_bytes(_replica_state(shard_id, replicas, peer_ids, node_index, states))))
    members.append((f"{prefix}shard_config.json", _json_bytes({"type": "ReplicaSet"})))
    if points is not None:
        members.append((f"{prefix}newest_clocks.json", _json_bytes({"clocks": []})))
        members.append((f"{prefix}segments", None))
        members.append((f"{prefix}segments/points.jsonl", _points_jsonl(points)))
        if indexes:
            members.append((f"{prefix}segments/payload_index.json", _json_bytes({"indexed_fields": indexes})))
    return members


def collection_members(config: dict, payload_schema: dict, shards: dict[int, ShardView | tuple[list[int], list[dict]]],
                       peer_ids: dict[int, int], node_index: int, *,
                       shard_key_mapping: list[tuple[Any, list[int]]] | None = None) -> list[tuple[str, bytes | None]]:
    """A collection snapshot made on `node_index`: data only for the shards it holds a replica of;
    `shard_key_mapping.json` (`[{"key", "shard_ids"}]`, shard_mapping.rs) for custom sharding."""
    members: list[tuple[str, bytes | None]] = [
        ("version.info", COLLECTION_CRATE_VERSION.encode()),
        ("config.json", _json_bytes(config)),
    ]
    if shard_key_mapping is not None:
        members.append(("shard_key_mapping.json",
                        _json_bytes([{"key": key, "shard_ids": sorted(ids)} for key, ids in shard_key_mapping])))
    members.append(("payload_index.json", _json_bytes({"schema": payload_schema})))
    for shard_id, shard in shards.items():
        view = shard if isinstance(shard, ShardView) else ShardView(shard[0], shard[1])
        local = node_index in view.replicas
        members += shard_members(f"{shard_id}/", shard_id, view.replicas, peer_ids, node_index,
                                 view.points if local else None, states=view.states, indexes=view.indexes)
    return members


def write_archive(path: Path, members: list[tuple[str, bytes | None]], extra_files: list[tuple[str, Path]] = ()) -> None:
    """Write a GNU tar of in-memory members (plus files from disk) to `path`."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))
        for name, file_path in extra_files:
            tar.add(str(file_path), arcname=name, recursive=False)


def _key_mapping(raw: Any) -> list[tuple[Any, list[int]]]:
    """shard_key_mapping.json: `[{"key", "shard_ids"}]`, or the older `{key: [ids]}` form."""
    if isinstance(raw, dict):
        return [(key, sorted(int(i) for i in ids)) for key, ids in raw.items()]
    return [(pair["key"], sorted(int(i) for i in pair["shard_ids"])) for pair in raw or []]


def read_archive(path: Path) -> ArchiveData:
    """Parse a snapshot archive from disk, reading only the small members into memory.

    A shard snapshot's data comes back under shard id -1 (the caller knows the real id).
    """
    try:
        with tarfile.open(path, "r:") as tar:
            config = None
            payload_schema: dict = {}
            mapping = None
            shard_points: dict[int, list[dict] | None] = {}
            indexes: dict[int, dict] = {}
            root_points: list[dict] | None = None
            has_root_segments = False
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                parts = name.strip("/").split("/")
                if name == "config.json":
                    config = json.load(tar.extractfile(member))
                elif name == "payload_index.json":
                    payload_schema = (json.load(tar.extractfile(member)) or {}).get("schema") or {}
                elif name == "shard_key_mapping.json":
                    mapping = _key_mapping(json.load(tar.extractfile(member)))
                elif parts[0] == "segments":
                    has_root_segments = True
                    if parts[1:] == ["points.jsonl"]:
                        root_points = [json.loads(line) for line in tar.extractfile(member) if line.strip()]
                    elif parts[1:] == ["payload_index.json"]:
                        indexes[-1] = json.load(tar.extractfile(member)).get("indexed_fields") or {}
                elif parts[0].isdigit():
                    shard_id = int(parts[0])
                    shard_points.setdefault(shard_id, None)
                    if parts[1:] == ["segments", "points.jsonl"]:
                        shard_points[shard_id] = [json.loads(line) for line in tar.extractfile(member) if line.strip()]
                    elif parts[1:] == ["segments", "payload_index.json"]:
                        indexes[shard_id] = json.load(tar.extractfile(member)).get("indexed_fields") or {}
                        if shard_points[shard_id] is None:
                            shard_points[shard_id] = []
                    elif len(parts) >= 2 and parts[1] == "segments" and shard_points[shard_id] is None:
                        shard_points[shard_id] = []
    except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError, EOFError, KeyError, TypeError,
            ValueError) as err:
        raise bad_input(f"Snapshot archive is not a valid Qdrant snapshot: {err}") from None
    if config is not None:
        return ArchiveData("collection", config, payload_schema, shard_points, mapping, indexes, source=path)
    if has_root_segments:
        return ArchiveData("shard", None, {}, {-1: root_points or []}, None, indexes, source=path)
    raise bad_input("Snapshot archive is not a valid Qdrant snapshot: it holds neither config.json nor segments/")


# ---------------------------------------------------------------------------------------------
# Synthetic archives


def _header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")


def _padded(size: int) -> int:
    return -(-size // TAR_BLOCK) * TAR_BLOCK


_checksum_cache: dict[tuple, str] = {}
_checksum_lock = threading.Lock()


@dataclass(frozen=True)
class SyntheticArchive:
    """A valid tar of about `target_size` bytes: small members plus a filler of pseudo-random bytes.

    Its bytes are a pure function of its fields, so the checksum computed at create time matches
    every later download, and nothing is ever held in memory beyond one block.
    """

    members: tuple[tuple[str, bytes | None], ...]
    filler_name: str
    target_size: int
    seed: str

    @property
    def filler_size(self) -> int:
        fixed = sum(TAR_BLOCK + (_padded(len(c)) if c is not None else 0) for _, c in self.members)
        fixed += TAR_BLOCK + 2 * TAR_BLOCK  # filler header + end-of-archive marker
        return max(0, (self.target_size - fixed) // TAR_BLOCK * TAR_BLOCK)

    @property
    def size(self) -> int:
        fixed = sum(TAR_BLOCK + (_padded(len(c)) if c is not None else 0) for _, c in self.members)
        return fixed + TAR_BLOCK + self.filler_size + 2 * TAR_BLOCK

    def iter_bytes(self) -> Iterator[bytes]:
        for name, content in self.members:
            if content is None:
                yield _header(name, 0, directory=True)
            else:
                yield _header(name, len(content))
                yield content + b"\0" * (_padded(len(content)) - len(content))
        filler = self.filler_size
        yield _header(self.filler_name, filler)
        seed = self.seed.encode()
        block_index = 0
        remaining = filler
        while remaining > 0:
            n = min(BLOCK, remaining)
            yield hashlib.shake_128(seed + block_index.to_bytes(8, "big")).digest(n)
            remaining -= n
            block_index += 1
        yield b"\0" * (2 * TAR_BLOCK)

    def sha256(self) -> str:
        key = (self.members, self.filler_name, self.target_size, self.seed)
        with _checksum_lock:
            cached = _checksum_cache.get(key)
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        for chunk in self.iter_bytes():
            digest.update(chunk)
        value = digest.hexdigest()
        with _checksum_lock:
            _checksum_cache[key] = value
        return value


def synthetic_collection_archive(config: dict, replicas: list[int], peer_ids: dict[int, int], node_index: int,
                                 target_size: int, seed: str) -> SyntheticArchive:
    members = collection_members(config, {}, {0: (replicas, [])}, peer_ids, node_index)
    return SyntheticArchive(tuple(members), "0/segments/filler.bin", target_size, seed)


def synthetic_shard_archive(replicas: list[int], peer_ids: dict[int, int], node_index: int,
                            target_size: int, seed: str) -> SyntheticArchive:
    members = shard_members("", 0, replicas, peer_ids, node_index, [])
    return SyntheticArchive(tuple(members), "segments/filler.bin", target_size, seed)
