"""Judging: what is wrong with what was read, measured against the set records. Pure: no I/O."""

from __future__ import annotations

from typing import Iterable

from qbr.records import ArchiveRecord, SetRecord
from qbr.verify.report import ArchiveScan, Finding, SetCheck


def archive_problems(scan: ArchiveScan, archive: ArchiveRecord) -> tuple[str, ...]:
    """What is wrong with a stored archive, measured against what a set recorded of it."""
    if not scan.found:
        return ("is missing from the repository",)
    if scan.read_error is not None:
        return (f"could not be read: {scan.read_error}",)
    problems: list[str] = []
    stored_sha = archive.stored_sha256 if archive.encryption is not None else archive.sha256
    stored_b3 = archive.stored_blake3 if archive.encryption is not None else None
    if scan.size != archive.object_size:
        problems.append(f"is {scan.size} bytes, the set recorded {archive.object_size} (truncated or altered)")
    elif stored_b3 and scan.stored_blake3 and scan.stored_blake3 != stored_b3.strip().lower():
        problems.append(f"has BLAKE3 {scan.stored_blake3[:16]}…, the set recorded {stored_b3[:16]}… (its bytes changed)")
    elif stored_sha and scan.sha256 != stored_sha.strip().lower():  # "" : copied inside S3, never hashed
        problems.append(
            f"has sha256 {scan.sha256[:16]}…, the set recorded {stored_sha[:16]}… (its bytes changed)"
        )
    elif archive.encryption is not None and scan.plain_sha256 is not None and (
            scan.plain_size != archive.size or scan.plain_sha256 != archive.sha256.strip().lower()):
        problems.append(f"decrypts to {scan.plain_size} bytes with sha256 {scan.plain_sha256[:16]}…, not the snapshot the set recorded")
    if problems or not scan.deep:
        return tuple(problems)
    if scan.tar_error is not None:
        return (f"is not a readable tar archive ({scan.tar_error})",)
    if scan.unsafe:
        problems.append(f"holds a member that escapes its folder ({scan.unsafe[0]!r})")
    missing = missing_entries(scan.entries, archive)
    if missing:
        problems.append(f"is not a whole Qdrant {archive.kind} snapshot: it lacks {', '.join(missing)}")
    problems.extend(points_problems(scan, archive))
    return tuple(problems)


def missing_entries(entries: frozenset[str], archive: ArchiveRecord) -> list[str]:
    """The snapshot layout Qdrant writes, minus what the archive holds."""
    if archive.kind == "collection":
        wanted = ["config.json", "version.info"]
        for shard in archive.shard_ids:
            if str(shard) not in entries:
                wanted.append(f"{shard}/")
            else:
                wanted += [f"{shard}/replica_state.json", f"{shard}/shard_config.json"]
    else:
        wanted = ["shard_config.json", "replica_state.json", "segments/"]
    return [name for name in wanted if name.rstrip("/") not in entries]


def points_problems(scan: ArchiveScan, archive: ArchiveRecord) -> list[str]:
    """The points the counter found in the recorded shards, against the set's count; nothing
    when any shard went uncounted (no counter, or no segments to count)."""
    problems: list[str] = []
    wanted: list[int | None] = list(archive.shard_ids) if archive.kind == "collection" else [None]
    total = 0
    countable = True
    for shard in wanted:
        seen = scan.shards.get(shard)
        label = "" if shard is None else f"shard {shard}: "
        if seen is not None and seen.count_error is not None:
            problems.append(f"{label}{scan.counter} could not open its segments ({seen.count_error})")
            countable = False
        elif seen is not None and seen.points is not None:
            total += seen.points
        else:
            countable = False
    if countable and archive.points_count is not None and total != archive.points_count:
        problems.append(f"holds {total} points ({scan.method}), the set recorded {archive.points_count}")
    return problems


def uncounted(scan: ArchiveScan) -> bool:
    """An archive holding segments whose points nobody counted (no point counter: qdrant-edge-py is not installed)."""
    return scan.deep and scan.counter is None and any(s.segments for s in scan.shards.values())


def check_sets(
    repository: str,
    sets: Iterable[SetRecord],
    broken: Iterable[tuple[str, str, str]],
    scans: dict[str, ArchiveScan],
) -> list[SetCheck]:
    """One SetCheck per set (and per unreadable set record), in backup and set order."""
    checks: list[SetCheck] = []
    for record in sets:
        findings: list[Finding] = []
        count = 0
        for name, collection in sorted(record.collections.items()):
            for archive in collection.archives:
                count += 1
                for problem in archive_problems(scans[archive.key], archive):
                    findings.append(Finding(repository, record.backup, record.set_id, name, archive.key, problem))
        checks.append(SetCheck(repository, record.backup, record.set_id, count, tuple(findings)))
    for backup, set_id, problem in broken:
        checks.append(SetCheck(repository, backup, set_id, 0, (Finding(repository, backup, set_id, None, None, problem),)))
    return sorted(checks, key=lambda c: (c.backup, c.set_id))
