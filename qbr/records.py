"""Set records: the commit record of one backup run, stored in the repository.

A set record is written last, after every archive it names is stored and its sha256
checked; a set without its record does not exist. The repository is the truth about
backups: the state file only caches and journals. Layout (design.md):

    snapshots/<collection>/<archive name>     immutable archives
    sets/<backup>/<set id>.json               one record per set
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from qbr.errors import QbrError

SET_FORMAT_VERSION = 1
#: Records whose sensitive parts are encrypted (qbr.encryption): a qbr that cannot read them
#: must refuse them rather than restore a collection without its config.
ENCRYPTED_FORMAT_VERSION = 2
SETS_PREFIX = "sets/"
SNAPSHOTS_PREFIX = "snapshots/"
_SET_KEY = re.compile(r"^sets/([A-Za-z0-9][A-Za-z0-9_.-]{0,62})/([0-9]{8}T[0-9]{6}Z(?:-[0-9]+)?)\.json$")


def utc_iso(moment: datetime) -> str:
    """Render an aware datetime as 2026-11-21T08:00:00Z (whole seconds, UTC)."""
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> datetime:
    """Parse the timestamps qbr writes (and any ISO 8601 with an offset); naive means UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def set_id_for(moment: datetime) -> str:
    """A set id is its creation time, so ids sort by age: 20261121T080000Z."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def set_id_time(set_id: str) -> datetime:
    """The creation time a set id encodes (its '-N' suffix, for ids made in the same second, aside)."""
    return datetime.strptime(set_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def set_key(backup: str, set_id: str) -> str:
    return f"{SETS_PREFIX}{backup}/{set_id}.json"


def parse_set_key(key: str) -> tuple[str, str] | None:
    """Return (backup, set id) for a set record key, or None for anything else."""
    match = _SET_KEY.match(key)
    return (match.group(1), match.group(2)) if match else None


def archive_key(collection: str, backup: str, set_id: str, snapshot_name: str) -> str:
    """Archives are named after the set that copied them, so keys never collide."""
    return f"{SNAPSHOTS_PREFIX}{collection}/{backup}.{set_id}.{snapshot_name}"


def config_digest(config: dict[str, Any]) -> str:
    """A stable hash of a collection config (canonical JSON), to notice config changes."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


#: Fields added with encryption: left out of a record's JSON while unset, so plain records read
#: exactly as before.
_OPTIONAL = frozenset({"encryption", "stored_size", "stored_sha256", "stored_blake3", "sealed", "sealed_aliases", "encoding"})


def _without_unset(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_unset(v) for k, v in value.items() if not (k in _OPTIONAL and v is None)}
    if isinstance(value, (list, tuple)):
        return [_without_unset(v) for v in value]
    return value


@dataclass(frozen=True)
class ArchiveRecord:
    """One stored snapshot file: a whole collection (shard_ids = all) or one shard."""

    key: str
    size: int
    sha256: str
    kind: str  # "collection" | "shard"
    shard_ids: tuple[int, ...]
    node: str  # REST URL of the node that made the snapshot
    points_count: int | None = None
    # sha256 is "" when nobody computed it (an archive copied inside S3): the store's etag then
    # stands for its integrity, and verify computes the hash when it reads the archive.
    etag: str | None = None
    adopted_from: str | None = None  # s3://bucket/key of the snapshot it was adopted from
    # Encrypted to age recipients ("age"): `size` and `sha256` are the snapshot's (what Qdrant
    # made and is given back), `stored_size` and the digest the encrypted object's: BLAKE3 for a
    # whole archive (cheaper on every backup), sha256 for a dedup chunk list and older records.
    encryption: str | None = None
    stored_size: int | None = None
    stored_sha256: str | None = None
    stored_blake3: str | None = None
    # None: the archive is one object, byte for byte what Qdrant made; "chunks": its key holds a
    # chunk list and the bytes are content-defined chunks stored once by hash (qbr.repository.chunked).
    encoding: str | None = None

    @property
    def object_size(self) -> int:
        """The size of the object in the repository."""
        return self.stored_size if self.stored_size is not None else self.size


@dataclass(frozen=True)
class CollectionRecord:
    """What a set holds of one collection, and where its archives were first copied."""

    name: str
    points_count: int
    config: dict[str, Any]
    config_sha256: str
    aliases: tuple[str, ...]
    shard_number: int
    qdrant_version: str
    copied_in: str  # the set id whose run copied these archives (== this set unless carried over)
    archives: tuple[ArchiveRecord, ...]
    # The lowest and highest points count seen while its archives were made: a live collection
    # written to during the backup holds a count in this range, not necessarily points_count.
    points_range: tuple[int, int] | None = None
    payload_schema: dict[str, Any] = field(default_factory=dict)  # field -> {data_type, params}: re-created on restore
    shard_keys: tuple[dict[str, Any], ...] = ()  # custom sharding: ({"key": k, "shard_ids": [...]}, ...)
    # Encrypted sets: config, payload_schema and shard_keys sealed together (they describe the
    # archives, and are carried with them), the aliases sealed apart (each set seals its own).
    # Until unsealed, those fields are empty; config_sha256 and points_count stay readable.
    sealed: str | None = None
    sealed_aliases: str | None = None


def _points_range(raw: Any) -> tuple[int, int] | None:
    if raw is None:
        return None
    low, high = (int(v) for v in raw)
    return (low, high)


@dataclass(frozen=True)
class SetRecord:
    """The commit record of one backup set."""

    backup: str
    set_id: str
    created: str  # UTC ISO; the moment the set stands for: when its first snapshot was taken
    cluster: str
    qdrant_version: str
    collections: dict[str, CollectionRecord] = field(default_factory=dict)
    completed: str | None = None
    qbr_version: str | None = None
    format_version: int = SET_FORMAT_VERSION
    # {"method": "age", "recipients": [...public keys...]}: who can read the sealed parts and archives.
    encryption: dict[str, Any] | None = None

    @property
    def sealed(self) -> bool:
        """Some sensitive part is still encrypted (no identity was at hand to open it)."""
        return any(c.sealed is not None and not c.config for c in self.collections.values())

    @property
    def created_at(self) -> datetime:
        return parse_utc(self.created)

    def archive_keys(self) -> set[str]:
        return {a.key for c in self.collections.values() for a in c.archives}

    def to_json(self) -> bytes:
        return json.dumps(_without_unset(asdict(self)), indent=2, sort_keys=True).encode() + b"\n"

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "SetRecord":
        """Build from parsed JSON; a malformed record is a QbrError naming the set."""
        try:
            version = int(data.get("format_version", 0))
            if version > ENCRYPTED_FORMAT_VERSION:
                raise QbrError(
                    f"set {data.get('set_id')!r} was written by a newer qbr (format {version}); upgrade qbr"
                )
            collections = {}
            for name, raw in dict(data["collections"]).items():
                archives = tuple(
                    ArchiveRecord(
                        key=str(a["key"]),
                        size=int(a["size"]),
                        sha256=str(a["sha256"]),
                        kind=str(a["kind"]),
                        shard_ids=tuple(int(s) for s in a["shard_ids"]),
                        node=str(a["node"]),
                        points_count=None if a.get("points_count") is None else int(a["points_count"]),
                        etag=a.get("etag"),
                        adopted_from=a.get("adopted_from"),
                        encryption=a.get("encryption"),
                        stored_size=None if a.get("stored_size") is None else int(a["stored_size"]),
                        stored_sha256=a.get("stored_sha256"),
                        stored_blake3=a.get("stored_blake3"),
                        encoding=a.get("encoding"),
                    )
                    for a in raw["archives"]
                )
                collections[str(name)] = CollectionRecord(
                    name=str(raw["name"]),
                    points_count=int(raw["points_count"]),
                    config=dict(raw["config"]),
                    config_sha256=str(raw["config_sha256"]),
                    aliases=tuple(str(a) for a in raw.get("aliases", ())),
                    shard_number=int(raw["shard_number"]),
                    qdrant_version=str(raw["qdrant_version"]),
                    copied_in=str(raw["copied_in"]),
                    archives=archives,
                    points_range=_points_range(raw.get("points_range")),
                    payload_schema=dict(raw.get("payload_schema") or {}),
                    shard_keys=tuple(dict(k) for k in raw.get("shard_keys") or ()),
                    sealed=raw.get("sealed"),
                    sealed_aliases=raw.get("sealed_aliases"),
                )
            record = SetRecord(
                backup=str(data["backup"]),
                set_id=str(data["set_id"]),
                created=str(data["created"]),
                cluster=str(data["cluster"]),
                qdrant_version=str(data["qdrant_version"]),
                collections=collections,
                completed=data.get("completed"),
                qbr_version=data.get("qbr_version"),
                format_version=version,
                encryption=dict(data["encryption"]) if data.get("encryption") else None,
            )
            parse_utc(record.created)
            return record
        except QbrError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise QbrError(f"set record {data.get('set_id', '?')!r} is malformed ({error!s}); repair or delete it") from None

    @staticmethod
    def from_json(raw: bytes, key: str) -> "SetRecord":
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise QbrError(f"set record {key} is not valid JSON; repair or delete it") from None
        if not isinstance(data, dict):
            raise QbrError(f"set record {key} is not a JSON object; repair or delete it")
        record = SetRecord.from_dict(data)
        parsed = parse_set_key(key)
        if parsed and parsed != (record.backup, record.set_id):
            raise QbrError(f"set record {key} names set {record.backup}/{record.set_id}; it was moved or edited by hand")
        return record
