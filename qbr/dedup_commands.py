"""`qbr export SET COLLECTION -o FILE` (an archive rebuilt, checked, written to a file) and
`qbr repair-index [REPOSITORY]` (a dedup repository's chunk index made again from its chunks)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from qbr.cli_common import load, manifest_option, parallelism_option
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
@click.argument("collection")
@click.option("-o", "--output", "output", required=True, metavar="FILE",
              help="Where to write the archive; a collection kept as several archives (shards) goes into the folder FILE.")
@manifest_option
@parallelism_option
def export_command(set_ref, collection, output, manifest_file=None, parallelism=8) -> None:
    """Write COLLECTION of SET (its id, or BACKUP/ID) as the snapshot archive Qdrant made: rebuilt
    from the repository (chunks of a dedup repository each checked) and checked against the sha256
    the set recorded. Qdrant recovers it as any snapshot (upload, or --snapshot at startup)."""
    from qbr.connections import Connections
    from qbr.render.sizes import human_bytes

    manifest = load(manifest_file)
    with Connections(manifest, parallelism) as connections:
        repo, record = _find_set(manifest, connections, set_ref)
        source = record.collections.get(collection)
        if source is None:
            raise QbrError(f"set {record.backup}/{record.set_id} holds no collection {collection} "
                           f"(it holds: {', '.join(sorted(record.collections)) or 'none'})")
        if any(getattr(a, "encryption", None) is not None for a in source.archives):
            raise QbrError(f"collection {collection} of set {record.set_id} is encrypted; qbr export writes plain archives only")
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
