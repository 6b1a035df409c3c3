"""--target (Terraform's -target): which manifest entries a run plans, and which clusters and
repositories they need, so observe contacts nothing else. In a disaster the source cluster is
gone; a restore from a set needs only its repository and its target cluster, and still plans.
Pure."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

from qbr.errors import NotFoundError, QbrError, RepositoryError
from qbr.manifest import Manifest, RestoreConfig


@dataclass(frozen=True)
class Needs:
    """What a run must reach: clusters by name, repositories by name."""

    clusters: frozenset[str]
    repositories: frozenset[str]


def check_targets(manifest: Manifest, names: Iterable[str]) -> tuple[str, ...]:
    """The --target names, each a backup or restore of the manifest, sorted and once each."""
    chosen = tuple(sorted(set(names)))
    known = sorted(set(manifest.backups) | set(manifest.restores))
    for name in chosen:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            entries = ", ".join(_labels(manifest, known)) or "none"
            raise QbrError(f"--target {name} names no backup or restore of the manifest{hint}; the entries are: {entries}")
    return chosen


def reads_live_source(restore: RestoreConfig) -> bool:
    """A restore that may copy points from its backup's live cluster: a logical copy (another shard
    number, or method logical) that does not read the set's archives. A snapshot never does."""
    if restore.copy_from == "archive" or restore.method == "snapshot":
        return False
    return restore.method == "logical" or restore.topology.shard_number is not None


def needs_of(manifest: Manifest, name: str) -> Needs:
    """A backup needs its cluster and repository; a restore its target cluster and its backup's
    repository, and its backup's cluster only when it may copy from the live source."""
    clusters: set[str] = set()
    repositories: set[str] = set()
    if name in manifest.backups:
        backup = manifest.backups[name]
        clusters.add(backup.cluster)
        repositories.add(backup.repository)
    if name in manifest.restores:
        restore = manifest.restores[name]
        backup = manifest.backups[restore.from_backup]
        clusters.add(restore.to)
        repositories.add(backup.repository)
        if reads_live_source(restore):
            clusters.add(backup.cluster)
    return Needs(frozenset(clusters), frozenset(repositories))


def needs(manifest: Manifest, targets: tuple[str, ...]) -> Needs:
    """What the targeted entries need together."""
    found = [needs_of(manifest, name) for name in targets]
    return Needs(frozenset().union(*(n.clusters for n in found)), frozenset().union(*(n.repositories for n in found)))


def is_targeted(targets: tuple[str, ...], name: str) -> bool:
    return not targets or name in targets


def unreachable_hint(manifest: Manifest, cluster: str, targets: tuple[str, ...], *, repository: bool = False) -> str:
    """What to add to an unreachable cluster's (or repository's) sentence: the entries that need
    it, and (without --target) the others, which can be planned alone."""
    entries = list(targets) if targets else sorted(set(manifest.backups) | set(manifest.restores))
    needing = [n for n in entries
               if cluster in (needs_of(manifest, n).repositories if repository else needs_of(manifest, n).clusters)]
    rest = [n for n in entries if n not in needing]
    if not needing:
        return ""
    hint = f"; {_join(_labels(manifest, needing))} {'needs' if len(_labels(manifest, needing)) == 1 else 'need'} it"
    if rest and not targets:
        them = "it" if len(_labels(manifest, rest)) == 1 else "them"
        hint += (f", and {_join(_labels(manifest, rest))} {'does' if len(_labels(manifest, rest)) == 1 else 'do'} not: "
                 f"plan {them} alone with " + " ".join(f"--target {n}" for n in rest))
    return hint


def with_repository_hint(manifest: Manifest, error: RepositoryError, repository: str | None,
                         targets: tuple[str, ...]) -> RepositoryError:
    """`error`, from a repository that could not be reached, as one sentence that also names the
    entries needing it (unchanged for a missing bucket or when nothing needs it)."""
    hint = unreachable_hint(manifest, repository, targets, repository=True) if repository else ""
    if not hint or isinstance(error, NotFoundError):
        return error
    return RepositoryError(str(error).rstrip(". ") + hint + ".")


def targets_note(manifest: Manifest, targets: tuple[str, ...]) -> str:
    """The warning a targeted plan carries (Terraform warns the same way)."""
    flags = " ".join(f"--target {n}" for n in targets)
    return (f"{flags}: only {_join(_labels(manifest, targets))} {'is' if len(_labels(manifest, targets)) == 1 else 'are'} "
            "planned; other entries, retention, garbage collection, adoption and the cleanup of snapshots left on nodes "
            "wait for a plan without --target")


def _labels(manifest: Manifest, names: Iterable[str]) -> list[str]:
    labels: list[str] = []
    for name in names:
        if name in manifest.backups:
            labels.append(f"backup {name}")
        if name in manifest.restores:
            labels.append(f"restore {name}")
    return labels


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
