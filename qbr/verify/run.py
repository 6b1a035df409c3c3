"""The verify run: choose the backups, read their sets and archives, judge, restore-test."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable

from qbr.connections import Connections
from qbr.errors import QbrError
from qbr.manifest import Manifest
from qbr.observe import observe_repositories
from qbr.records import parse_set_key, set_key
from qbr.verify.engine import PointCounter, choose_counter
from qbr.verify.judge import check_sets, uncounted
from qbr.verify.report import ArchiveScan, RestoreCheck, SetCheck, VerifyReport
from qbr.verify.restore_test import restore_test
from qbr.verify.scan import scan_archive
from qbr.verify.sse import chunk_keys, sse_findings


def verify(
    manifest: Manifest,
    connections: Connections,
    *,
    backup: str | None = None,
    deep: bool = False,
    restore_cluster: str | None = None,
    counter: PointCounter | None = None,
    clock: Callable[[], datetime] | None = None,
) -> VerifyReport:
    """Read every set of the chosen backups and every archive they name; optionally restore-test.

    `counter` counts shards' points (deep only); by default the one QBR_DEEP_ENGINE names, or
    Qdrant's engine when installed (see qbr.verify.engine)."""
    backups = _chosen(manifest, backup)
    if restore_cluster is not None and restore_cluster not in manifest.clusters:
        known = ", ".join(sorted(manifest.clusters)) or "none"
        raise QbrError(f"cluster {restore_cluster} is not in the manifest (clusters: {known}); name one of them")
    if deep and counter is None:
        counter = choose_counter()
    scoped = replace(manifest, backups={name: manifest.backups[name] for name in backups})
    repositories = observe_repositories(scoped, connections, cached=False)  # the records as stored
    checks: list[SetCheck] = []
    archives = read = not_counted = 0
    notes: list[str] = []
    unencrypted: list[str] = []
    sse_warnings: list[str] = []
    for repo_name, state in sorted(repositories.items()):
        mine = [b for b in backups if manifest.backups[b].repository == repo_name]
        sets = [s for s in state.sets if s.backup in mine]
        broken = []
        for item in state.broken_sets:
            parsed = parse_set_key(item.key)
            if parsed and parsed[0] in mine:
                broken.append((parsed[0], parsed[1], f"its record {item.key} cannot be used: {item.problem}"))
        kinds: dict[str, str] = {}
        encrypted: set[str] = set()
        for record in sets:
            for collection in record.collections.values():
                for archive in collection.archives:
                    kinds.setdefault(archive.key, archive.kind)
                    if archive.encryption is not None:
                        encrypted.add(archive.key)
        repo = connections.repository(repo_name)
        if deep and encrypted:
            from qbr.encryption import KEYRING

            KEYRING.identities(f"verify --deep of repository {repo_name}'s encrypted archives")  # one sentence, up front
        scans = _scan_all(repo, kinds, deep=deep, counter=counter, parallelism=connections.parallelism, encrypted=encrypted)
        if manifest.repositories[repo_name].sse is not None:  # records, archives and the lock as S3 holds them
            from qbr.locks import REPOSITORY_LOCK_KEY

            keys = sorted({set_key(s.backup, s.set_id) for s in sets} | set(kinds)) + [REPOSITORY_LOCK_KEY]
            keys += chunk_keys(repo, sorted(kinds))
            found = sse_findings(repo, keys, manifest.repositories[repo_name].sse, f"repository {repo_name}", connections.parallelism)
            unencrypted += found[0]
            sse_warnings += found[1]
        checks += check_sets(repo_name, sets, broken, scans)
        archives += len(scans)
        read += sum(s.size for s in scans.values())
        not_counted += sum(1 for s in scans.values() if uncounted(s))
        for name in mine:
            if not state.sets_of(name) and not any(b[0] == name for b in broken):
                notes.append(f"backup {name} has no sets in repository {repo_name} yet")
    restores: list[RestoreCheck] = []
    if restore_cluster is not None:
        for name in backups:
            newest = repositories[manifest.backups[name].repository].sets_of(name)
            if not newest:
                notes.append(f"backup {name} has no set to restore-test")
                continue
            restores += restore_test(manifest, connections, newest[0], restore_cluster, clock=clock)
    exposures, warnings = _exposure(manifest, connections, sorted(repositories))
    if manifest.state.kind == "s3" and manifest.state.sse is not None:
        found = _state_sse(manifest, connections.parallelism)
        unencrypted += found[0]
        sse_warnings += found[1]
    return VerifyReport(
        exposures=exposures + tuple(unencrypted),
        warnings=warnings + tuple(sse_warnings),
        deep=deep,
        sets=tuple(checks),
        archives=archives,
        bytes_read=read,
        uncounted=not_counted,
        restore_cluster=restore_cluster,
        restores=tuple(restores),
        notes=tuple(notes),
    )


def _state_sse(manifest: Manifest, parallelism: int) -> tuple[list[str], list[str]]:
    """The state object and its lock, as S3 holds them, against the state's SSE."""
    from qbr.state_store import StateStore

    store = StateStore(manifest.state)
    return sse_findings(store.repo, [store.key, store.lock_key], manifest.state.sse, "the state", parallelism)


def _chosen(manifest: Manifest, backup: str | None) -> list[str]:
    if backup is None:
        return sorted(manifest.backups)
    if backup not in manifest.backups:
        known = ", ".join(sorted(manifest.backups)) or "none"
        raise QbrError(f"backup {backup} is not in the manifest (backups: {known}); name one of them with --backup")
    return [backup]


def _scan_all(repo: Any, kinds: dict[str, str], *, deep: bool, counter: PointCounter | None, parallelism: int,
              encrypted: set[str] = frozenset()) -> dict[str, ArchiveScan]:  # type: ignore[assignment]
    chunked = getattr(repo, "scan_archives", None)  # dedup: every chunk read once, every archive's sha256 rebuilt
    done = chunked(sorted(kinds), parallelism) if chunked is not None and not deep else {}
    kinds = {key: kind for key, kind in kinds.items() if key not in done}
    if not kinds:
        return done
    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(kinds))), thread_name_prefix="qbr-verify") as pool:
        futures = {key: pool.submit(scan_archive, repo, key, kind, deep=deep, counter=counter, encrypted=key in encrypted)
                   for key, kind in kinds.items()}
        return {**done, **{key: future.result() for key, future in sorted(futures.items())}}


def _exposure(manifest: Manifest, connections: Connections, names: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Folders and files someone opened beyond what qbr gives them (problems), and S3 buckets
    without Block Public Access or with a public-read policy (warnings)."""
    from qbr.repository.protection import bucket_exposure, loosened

    exposures: list[str] = []
    warnings: list[str] = []
    for name in names:
        config = manifest.repositories[name]
        if config.kind == "path" and config.path is not None:
            exposures += [f"repository {name}: {text}" for text in loosened(config.path, config.group)]
        elif config.kind == "s3":
            warnings += [f"repository {name}: {text}" for text in bucket_exposure(connections.repository(name))]
    return tuple(exposures), tuple(warnings)
