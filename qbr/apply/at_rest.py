"""Security at rest in apply: archives and set records encrypted to a repository's age
recipients (and opened with the run's identity), Object Lock retention set on what qbr wrote,
deletes that a lock refuses said in one sentence, and `rekey`.

No plaintext touches disk: archives pass through encryption and decryption as streams
(qbr.encryption), and what Qdrant is given back is checked against the record before its last
byte leaves: the stored bytes' BLAKE3 (qbr.transfer.tallied), or for older records the
plaintext's sha256 (qbr.transfer.verified); each holds the last chunk back until it is known.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from qbr import encryption
from qbr.actions import RekeySet, RetainSet
from qbr.apply.context import ActionContext
from qbr.errors import PreconditionError, QbrError
from qbr.records import ArchiveRecord, CollectionRecord, SetRecord, parse_utc, set_key
from qbr.sealed_records import opened, seal_record
from qbr.transfer import Digest, tallied, verified


def config_of(ctx: ActionContext, repository: str) -> Any:
    return ctx.connections.manifest.repositories[repository]


def recipients_of(ctx: ActionContext, repository: str) -> tuple[list[Any], str] | None:
    """(pyrage recipients, fingerprint) of an encrypted repository; None for a plain one."""
    wanted = config_of(ctx, repository).encryption
    if wanted is None:
        return None
    where = f"repositories.{repository}.encryption" + (f" ({wanted.recipients_file})" if wanted.recipients_file else "")
    return encryption.parse_recipients(wanted.recipients, where), wanted.fingerprint


def label(fingerprint: str) -> str:
    """What an archive record says of its encryption: method and the recipients' fingerprint."""
    return f"{encryption.METHOD} {fingerprint}"


# -- archives ------------------------------------------------------------------------------


def read_collection(repo: Any, backup: str, set_id: str, collection: str, purpose: str, doing: str) -> CollectionRecord:
    """The record of `collection` in set `backup`/`set_id`, opened with the run's identity when the
    set is sealed (or one sentence, before any target is touched); one sentence too when the set
    cannot be read or does not hold it. `purpose` ("restore from"), `doing` ("restoring")."""
    key = set_key(backup, set_id)
    try:
        record = SetRecord.from_json(repo.get_bytes(key), key)
    except QbrError as error:
        raise QbrError(f"cannot read set {backup}/{set_id} to {purpose}: {error}") from None
    found = opened(record, f"{doing} encrypted set {backup}/{set_id}").collections.get(collection)
    if found is None:
        raise QbrError(f"set {set_id} holds no collection {collection}; run qbr plan again")
    return found


def encrypts_inline(repo: Any, recipients: Any) -> bool:
    """Whether a backup into `repo` hashes in the thread that reads (see put_encrypted): an
    encrypted whole archive; a dedup repository cuts and seals chunks in threads of its own."""
    return recipients is not None and not getattr(repo, "seals_chunks", False)


def put_encrypted(repo: Any, key: str, plain: Any, recipients: list[Any], size: int | None, what: str) -> Digest:
    """Encrypt the plaintext chunks `plain` into `key`; the stored object's size and digest
    (BLAKE3 for a whole archive, sha256 for a dedup repository's chunk list)."""
    if getattr(repo, "seals_chunks", False):  # a dedup repository encrypts each chunk itself
        stored_size, stored_sha256 = repo.put_sealed(key, plain, size=size)
        return Digest(size=stored_size, sha256=stored_sha256)
    stored = Digest()
    bound = encryption.ciphertext_size(size, len(recipients)) if size is not None else None
    # One thread reads, hashes, encrypts and takes the BLAKE3 (each step releases the GIL): on two
    # cores shared with the node, handing chunks to three more threads cost more than it saved
    # (benchmarks/encryption.py: 2.07-2.42 CPU ms/MiB with them, 1.68 without). Give `plain` as
    # verified(..., inline=True) when encrypts_inline().
    sealed = encryption.encrypt_stream(plain, recipients, inline=True)
    repo.put_stream(key, tallied(sealed, stored, inline=True), size=bound)
    return stored


@contextmanager
def plaintext(repo: Any, archive: ArchiveRecord, what: str) -> Iterator[Iterator[bytes]]:
    """An archive's bytes as Qdrant made them: decrypted on the fly when it is encrypted, and
    checked against the record before the last chunk is handed on: the stored bytes against their
    BLAKE3 when the record has it (age authenticates every chunk, so the plaintext is the one
    encrypted at backup, whose sha256 was Qdrant's; 0.11 CPU ms/MiB instead of 0.52), else the
    plaintext against its size and sha256."""
    with repo.open_read(archive.key) as chunks:
        if archive.encryption is None:
            yield chunks
            return
        identities = encryption.KEYRING.identities(f"restoring encrypted archive {archive.key}")
        digest = Digest()
        if archive.encoding is None and archive.stored_blake3:
            stored = tallied(chunks, digest, what=what, expected_size=archive.object_size, expected_blake3=archive.stored_blake3)
            yield encryption.decrypt_stream(stored, identities, f"archive {archive.key}")
            return
        if archive.encoding is None:
            chunks = encryption.decrypt_stream(chunks, identities, f"archive {archive.key}")
        # (else a dedup repository: each chunk was decrypted as the repository read it)
        yield verified(chunks, digest, what=what, expected_size=archive.size, expected_sha256=archive.sha256 or None)


# -- Object Lock ---------------------------------------------------------------------------


def retain_set(ctx: ActionContext, p: RetainSet, action_id: str) -> dict[str, Any]:
    """Lock the record, then every archive it names, until `until` (only ever later)."""
    from qbr.repository.protection import retain

    repo = ctx.connections.repository(p.repository)
    key = set_key(p.backup, p.set_id)
    try:
        record = SetRecord.from_json(repo.get_bytes(key), key)
    except QbrError as error:
        raise QbrError(f"cannot read set {p.backup}/{p.set_id} to lock it: {error}") from None
    until = parse_utc(p.until)
    keys = [key, *sorted(record.archive_keys())]
    for name in keys:
        retain(repo, name, p.mode, until)
    journal = {"set": key, "until": p.until, "mode": p.mode, "objects": len(keys)}
    chunks = getattr(repo, "retain_chunks", None)  # dedup: the chunks the archives name, or the lock is hollow
    if chunks is not None:
        journal["chunks"] = chunks(sorted(record.archive_keys()), p.mode, until, ctx.connections.parallelism)
    return {"journal": journal}


def delete_object(ctx: ActionContext, repository: str, key: str) -> None:
    """Delete `key`: every version of it on an Object Lock bucket (so a lock refuses out loud)."""
    repo = ctx.connections.repository(repository)
    if config_of(ctx, repository).object_lock is None:
        repo.delete(key)
        return
    from qbr.repository.protection import delete_versions

    delete_versions(repo, key)


# -- rekey ---------------------------------------------------------------------------------


def rekeyed_key(key: str, fingerprint: str) -> str:
    """Where an archive encrypted again for other recipients is stored (beside the old one)."""
    base = key.rsplit(".age-", 1)[0]
    return f"{base}.age-{fingerprint}"


def check_rekey_set(ctx: ActionContext, p: RekeySet, pre: dict[str, Any]) -> None:
    wanted = config_of(ctx, p.repository).encryption
    if wanted is None or wanted.fingerprint != p.fingerprint:
        raise PreconditionError(f"repository {p.repository}'s recipients changed since this plan; run qbr rekey again")
    encryption.KEYRING.identities(f"rekeying set {p.backup}/{p.set_id}")


def rekey_set(ctx: ActionContext, p: RekeySet, action_id: str) -> dict[str, Any]:
    """Every archive streamed old ciphertext -> plaintext (checked) -> new ciphertext into a new
    key, then the record rewritten (compare-and-swap) to name them, sealed anew."""
    repo = ctx.connections.repository(p.repository)
    key = set_key(p.backup, p.set_id)
    raw, info = repo.get_with_info(key)
    record = opened(SetRecord.from_json(raw, key), f"rekeying set {p.backup}/{p.set_id}")
    if (record.encryption or {}).get("fingerprint") == p.fingerprint:
        return {"journal": {"set": key, "already": True}}
    recipients, fingerprint = recipients_of(ctx, p.repository) or ([], "")
    done = _rekeyed_archives(repo, label(fingerprint))  # shared with a set rekeyed before (only_changed)
    moved: dict[str, ArchiveRecord] = {}
    for collection in record.collections.values():
        for archive in collection.archives:
            if archive.key in moved:
                continue
            new_key = rekeyed_key(archive.key, fingerprint)
            if new_key in done:
                moved[archive.key] = done[new_key]
                continue
            what = f"archive {archive.key} of set {p.set_id}"
            with plaintext(repo, archive, what) as chunks:
                stored = put_encrypted(repo, new_key, chunks, recipients, archive.size, what)
            moved[archive.key] = replace(archive, key=new_key, encryption=label(fingerprint),
                                         stored_size=stored.size, stored_sha256=stored.sha256, stored_blake3=stored.blake3)
    collections: dict[str, CollectionRecord] = {}
    for name, collection in record.collections.items():
        archives = tuple(moved[a.key] for a in collection.archives)
        collections[name] = replace(collection, archives=archives, sealed=None)
    fresh = seal_record(replace(record, collections=collections), recipients, fingerprint,
                        config_of(ctx, p.repository).encryption.recipients)
    lock = config_of(ctx, p.repository).object_lock
    held = None
    if lock is not None:
        from qbr.repository.protection import retain, retention

        held = retention(repo, key)
        for archive in moved.values():  # the new objects are as protected as the old ones
            if held is not None:
                retain(repo, archive.key, held[0] or lock, held[1])
        chunks = getattr(repo, "retain_chunks", None)  # dedup: and so are the chunks they name
        if held is not None and chunks is not None:
            chunks(sorted(a.key for a in moved.values()), held[0] or lock, held[1], ctx.connections.parallelism)
    repo.put_bytes(key, fresh.to_json(), if_match=info.etag)
    if held is not None:
        retain(repo, key, held[0] or lock, held[1])
    return {"journal": {"set": key, "archives": len(moved), "old_archives": sorted(moved)}}


def _rekeyed_archives(repo: Any, wanted: str) -> dict[str, ArchiveRecord]:
    """Archives that set records already name encrypted as `wanted` (rekey actions run one
    after another, so none is being written while this reads)."""
    from qbr.records import SETS_PREFIX, parse_set_key

    found: dict[str, ArchiveRecord] = {}
    for info in repo.list(SETS_PREFIX):
        if parse_set_key(info.key) is None:
            continue
        try:
            other = SetRecord.from_json(repo.get_bytes(info.key), info.key)
        except QbrError:
            continue
        for collection in other.collections.values():
            found.update({a.key: a for a in collection.archives if a.encryption == wanted})
    return found
