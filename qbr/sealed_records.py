"""Set records in an encrypted repository: their sensitive parts (collection configs, payload
schemas, shard keys, aliases) sealed for the repository's age recipients, and opened again with
the run's identity. Ids, times, points counts, sizes and config digests stay readable, so plan
and status work without any identity.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qbr import encryption
from qbr.errors import QbrError
from qbr.records import ENCRYPTED_FORMAT_VERSION, SetRecord

SENSITIVE = ("config", "payload_schema", "shard_keys")


def seal_record(record: SetRecord, recipients: list[Any], fingerprint: str, keys: tuple[str, ...]) -> SetRecord:
    """The record as stored in an encrypted repository: configs, payload schemas, shard keys and
    aliases sealed for `recipients`; what plan and status need (ids, times, counts, sizes,
    config digests) left readable. A collection carried still sealed keeps its sealed part."""
    collections = {}
    for name, collection in record.collections.items():
        sealed = collection.sealed
        if collection.config or sealed is None:
            sealed = encryption.seal({k: _plain(getattr(collection, k)) for k in SENSITIVE}, recipients)
        collections[name] = replace(
            collection, config={}, payload_schema={}, shard_keys=(), aliases=(), sealed=sealed,
            sealed_aliases=encryption.seal(list(collection.aliases), recipients),
        )
    return replace(
        record, collections=collections, format_version=ENCRYPTED_FORMAT_VERSION,
        encryption={"method": encryption.METHOD, "fingerprint": fingerprint, "recipients": list(keys)},
    )


def _plain(value: Any) -> Any:
    return [dict(v) for v in value] if isinstance(value, tuple) else value


def unseal_record(record: SetRecord, identities: list[Any]) -> SetRecord:
    """The record with its sealed parts opened (the sealed text kept, so it can be written back)."""
    collections = {}
    for name, collection in record.collections.items():
        if collection.sealed is None or collection.config:
            collections[name] = collection
            continue
        what = f"set {record.backup}/{record.set_id}"
        opened = encryption.unseal(collection.sealed, identities, what)
        aliases = encryption.unseal(collection.sealed_aliases, identities, what) if collection.sealed_aliases else []
        collections[name] = replace(
            collection, config=dict(opened.get("config") or {}), payload_schema=dict(opened.get("payload_schema") or {}),
            shard_keys=tuple(dict(k) for k in opened.get("shard_keys") or ()), aliases=tuple(aliases),
        )
    return replace(record, collections=collections)


def opened(record: SetRecord, needed_for: str) -> SetRecord:
    """An encrypted record opened with the run's identity (a sentence if there is none)."""
    if not record.sealed:
        return record
    return unseal_record(record, encryption.KEYRING.identities(needed_for))


def try_open(record: SetRecord) -> SetRecord:
    """Opened when the run has an identity that fits; as it was otherwise (plan and status
    need none)."""
    if not record.sealed or not encryption.KEYRING.available():
        return record
    try:
        return opened(record, "reading an encrypted set")
    except QbrError:
        return record
