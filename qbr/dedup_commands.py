"""`qbr export SET COLLECTION -o FILE` (an archive rebuilt, checked, written to a file),
`qbr repair-index [REPOSITORY]` (a dedup repository's chunk index made again from its chunks),
`qbr chunk-key new|get` (an encrypted dedup repository's chunk key, qbr.repository.chunk_crypto)
and the --chunk-key option of apply."""

from __future__ import annotations

import os
from pathlib import Path

import click

from qbr.cli_common import identity_option, load, manifest_option, parallelism_option
from qbr.errors import QbrError


def _find_set(manifest, connections, set_ref: str):
    """(repository, record) of SET: BACKUP/ID, or an ID one backup has."""
    from qbr.errors import NotFoundError
    from qbr.records import SetRecord, set_key

    backup_name, _, set_id = set_ref.rpartition("/")
    names = [backup_name] if backup_name else sorted(manifest.backups)
    if backup_name and backup_name not in manifest.backups:
        raise QbrError(f"backup {backup_name} is not in the manifest (backups: {', '.join(sorted(manifest.backups)) or 'none'})")
    found = []
    for name in names:
        repo = connections.repository(manifest.backups[name].repository)
        key = set_key(name, set_id)
        try:
            found.append((repo, SetRecord.from_json(repo.get_bytes(key), key)))
        except NotFoundError:
            continue
    if not found:
        raise QbrError(f"no backup of the manifest has a set {set_id}; list them with qbr sets")
    if len(found) > 1:
        raise QbrError(f"set {set_id} exists in backups {', '.join(r.backup for _, r in found)}; name one as BACKUP/{set_id}")
    return found[0]


def _write(repo, archive, path: Path) -> None:
    """The archive rebuilt into `path` (a temp file beside it, renamed once its sha256 matched)."""
    from qbr.transfer import Digest, verified

    temp = path.with_name(f".{path.name}.qbr-export")
    try:
        with repo.open_read(archive.key) as chunks, temp.open("wb") as out:
            for piece in verified(chunks, Digest(), what=f"archive {archive.key}", expected_size=archive.size,
                                  expected_sha256=archive.sha256 or None):
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@click.command("export")
@click.argument("set_ref", metavar="SET")
@identity_option
@click.argument("collection")
@click.option("-o", "--output", "output", required=True, metavar="FILE",
              help="Where to write the archive; a collection kept as several archives (shards) goes into the folder FILE.")
@manifest_option
@parallelism_option
def export_command(set_ref, collection, output, manifest_file=None, parallelism=8) -> None:
    """Write COLLECTION of SET (its id, or BACKUP/ID) as the snapshot archive Qdrant made: rebuilt
    from the repository (chunks of a dedup repository each checked) and checked against the sha256
    the set recorded; chunks of an encrypted one decrypted with --identity. Qdrant recovers it as
    any snapshot (upload, or --snapshot at startup)."""
    from qbr.connections import Connections
    from qbr.render.sizes import human_bytes

    manifest = load(manifest_file)
    with Connections(manifest, parallelism) as connections:
        repo, record = _find_set(manifest, connections, set_ref)
        source = record.collections.get(collection)
        if source is None:
            raise QbrError(f"set {record.backup}/{record.set_id} holds no collection {collection} "
                           f"(it holds: {', '.join(sorted(record.collections)) or 'none'})")
        if any(a.encryption is not None and a.encoding is None for a in source.archives):
            raise QbrError(f"collection {collection} of set {record.set_id} is encrypted whole; decrypt it with age -d "
                           "(qbr export rebuilds archives stored as chunks)")
        target = Path(output)
        if len(source.archives) == 1:
            paths = [target]
        else:
            target.mkdir(parents=True, exist_ok=True)
            paths = [target / a.key.rsplit("/", 1)[-1] for a in source.archives]
        for archive, path in zip(source.archives, paths):
            _write(repo, archive, path)
            click.echo(f"{path}: {human_bytes(archive.size)}, sha256 {archive.sha256[:16]}… checked "
                       f"({'rebuilt from chunks' if archive.encoding else 'stored whole'}; shards {list(archive.shard_ids)})")


@click.command("repair-index")
@click.argument("repository", required=False)
@manifest_option
@click.option("--lock-timeout", default="30s", show_default=True, help="How long to wait for another apply's lock.")
def repair_index_command(repository, manifest_file=None, lock_timeout="30s") -> None:
    """Rebuild the chunk index of every dedup repository (or REPOSITORY) from a listing of its
    chunks. The index is a cache that backups read instead of listing; qbr rebuilds it by itself
    when it is missing or unreadable. Takes the repository's lock."""
    from qbr.connections import Connections
    from qbr.durations import parse_duration
    from qbr.locks import LockSet, repository_target
    from qbr.repository.chunk_gc import repair_index

    manifest = load(manifest_file)
    names = [repository] if repository else sorted(n for n, r in manifest.repositories.items() if r.dedup)
    for name in names:
        if name not in manifest.repositories:
            raise QbrError(f"repository {name} is not in the manifest")
        if not manifest.repositories[name].dedup:
            raise QbrError(f"repository {name} does not declare dedup: true; it has no chunk index")
    if not names:
        raise QbrError("no repository of the manifest declares dedup: true")
    with Connections(manifest, 1) as connections:
        for name in names:
            with LockSet([repository_target(manifest.repositories[name])], "repair-index") as lock:
                lock.acquire(parse_duration(lock_timeout).total_seconds())
                click.echo(repair_index(connections.repository(name)))


def chunk_key_option(func):
    """--chunk-key FILE: the chunk key an encrypted dedup repository names chunks with."""

    def remember(ctx, param, value):
        from qbr.repository.chunk_crypto import CHUNK_KEY_FILE

        CHUNK_KEY_FILE.use_file(value)  # None: $QBR_CHUNK_KEY_FILE, read when a backup needs it
        return value

    return click.option("--chunk-key", default=None, metavar="FILE", expose_value=False, callback=remember,
                        help="The chunk key of encrypted dedup repositories (qbr chunk-key new); default $QBR_CHUNK_KEY_FILE.")(func)


def _sealed_repository(manifest, connections, name: str):
    from qbr.repository.chunk_crypto import ChunkSealing

    config = manifest.repositories.get(name)
    if config is None:
        raise QbrError(f"repository {name} is not in the manifest (repositories: {', '.join(sorted(manifest.repositories)) or 'none'})")
    if not (config.dedup and config.encryption is not None):
        raise QbrError(f"repository {name} does not declare both dedup: true and encryption:; only such a repository has a chunk key")
    repo = connections.repository(name)
    sealing = getattr(repo, "sealing", None) or ChunkSealing(name, config.encryption.recipients, config.encryption.fingerprint)
    return repo.inner, sealing


@click.group("chunk-key")
def chunk_key_group() -> None:
    """The chunk key of a repository with dedup and encryption: it names chunks by a keyed hash,
    so names reveal nothing about content. Backup hosts need it (--chunk-key FILE); restores need
    only the identity."""


@chunk_key_group.command("new")
@click.argument("repository")
@click.option("-o", "--output", default=None, metavar="FILE", help="Where to write the new key (created 0600, never overwritten).")
@click.option("--from", "from_file", default=None, metavar="FILE",
              help="Store this key file's key instead of a new one (the repository's keys/chunk-id.json was lost).")
@manifest_option
def chunk_key_new_command(repository, output, from_file, manifest_file=None) -> None:
    """Make REPOSITORY's chunk key, once: written to FILE for the backup hosts, and stored in the
    repository sealed to its recipients (keys/chunk-id.json) with a check value that refuses any
    other key."""
    from qbr.connections import Connections
    from qbr.repository.chunk_crypto import KEY_ENV, KEY_OBJECT, new_key_object, read_key_file, write_key_file

    if (output is None) == (from_file is None):
        raise QbrError("name either -o FILE (a new key) or --from FILE (an existing key stored again)")
    manifest = load(manifest_file)
    with Connections(manifest, 1) as connections:
        repo, sealing = _sealed_repository(manifest, connections, repository)
        if from_file is not None:
            new_key_object(repo, sealing, read_key_file(Path(from_file)))
            click.echo(f"the chunk key in {from_file} is stored sealed in repository {repository} ({KEY_OBJECT})")
            return
        import secrets

        key = secrets.token_bytes(32)
        path = Path(output)
        write_key_file(path, key, repository)  # first: a key stored only sealed would need the identity on every backup host
        try:
            new_key_object(repo, sealing, key)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    click.echo(f"chunk key of repository {repository} written to {path} (mode 600) and stored sealed to its "
               f"{len(sealing.recipient_texts)} recipients ({KEY_OBJECT}); give backups --chunk-key {path} or ${KEY_ENV}")


@chunk_key_group.command("get")
@click.argument("repository")
@click.option("-o", "--output", required=True, metavar="FILE", help="Where to write the key (created 0600, never overwritten).")
@identity_option
@manifest_option
def chunk_key_get_command(repository, output, manifest_file=None) -> None:
    """Write REPOSITORY's chunk key to FILE, unsealed with --identity (a new backup host, or a lost key file)."""
    from qbr.connections import Connections
    from qbr.repository.chunk_crypto import recovered_key, write_key_file

    manifest = load(manifest_file)
    with Connections(manifest, 1) as connections:
        repo, sealing = _sealed_repository(manifest, connections, repository)
        key = recovered_key(repo, sealing)
    write_key_file(Path(output), key, repository)
    click.echo(f"chunk key of repository {repository} written to {output} (mode 600)")
