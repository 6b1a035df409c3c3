"""`qbr verify`: are the stored backups still whole, and do they restore?

Three depths, each a superset of the one before:
- every archive a set names is re-read from the repository, streamed, and its size and sha256
  compared with the set record (each distinct archive is read once, however many sets share it);
- `--deep` also walks the archive as a tar in the same single pass and checks it has the shape of
  a Qdrant snapshot, and counts its points: with Qdrant's own engine (`qdrant-edge-py`, optional)
  when the archive holds real segments, or from the emulator's `segments/points.jsonl`;
- `--restore-test CLUSTER` restores each backup's newest set into temporary collections on a
  cluster, compares exact points counts, and always deletes them again.

Reading (scan_archive / scan_stream) is apart from judging (archive_problems, check_sets: pure) and
from rendering (render_verify), so the checks are tested without a repository.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from qbr.connections import Connections
from qbr.errors import NotFoundError, QbrError
from qbr.manifest import Manifest
from qbr.observe import observe_repositories, version_tuple
from qbr.planner import human_bytes, version_refusal
from qbr.records import ArchiveRecord, SetRecord, parse_set_key, utc_iso

TEMP_PREFIX = "qbr_verify_"
READ_CHUNK = 1 << 20
LINE_CHUNK = 1 << 16
ENGINE_MODULE = "qdrant_edge"  # PyPI qdrant-edge-py: Qdrant's storage engine, in process


# ---------------------------------------------------------------- what was read


@dataclass(frozen=True)
class ShardScan:
    """What one shard folder of an archive held (the archive root, for a shard snapshot)."""

    points_jsonl: int | None = None  # lines of segments/points.jsonl (the emulator's point store)
    real_segments: bool = False  # Qdrant segment data (nested segment tars or folders) under segments/
    engine_points: int | None = None  # points counted by Qdrant's engine
    engine_error: str | None = None


@dataclass(frozen=True)
class ArchiveScan:
    """Facts about one stored archive as read, before any judgement against a set record."""

    key: str
    found: bool = True
    size: int = 0
    sha256: str = ""
    read_error: str | None = None
    deep: bool = False
    tar_error: str | None = None
    entries: frozenset[str] = frozenset()  # member paths up to two levels deep, parents implied
    unsafe: tuple[str, ...] = ()  # member names that would escape a folder when unpacked
    shards: dict[int | None, ShardScan] = field(default_factory=dict)  # None: the archive root
    engine: bool = False  # whether Qdrant's engine was available for this scan


@dataclass(frozen=True)
class Finding:
    """One problem, naming everything needed to find it: backup, set, collection, archive."""

    repository: str
    backup: str
    set_id: str
    collection: str | None
    archive: str | None
    problem: str

    def line(self) -> str:
        where = f"backup {self.backup}, set {self.set_id}"
        if self.collection is not None:
            where += f", collection {self.collection}"
        if self.archive is not None:
            where += f", archive {self.archive}"
        return f"{where}: {self.problem}"


@dataclass(frozen=True)
class SetCheck:
    repository: str
    backup: str
    set_id: str
    archives: int
    findings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class RestoreCheck:
    """One collection of a backup's newest set, restored into a temporary collection and counted."""

    backup: str
    set_id: str
    collection: str
    cluster: str
    temporary: str
    expected: int
    points: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.points == self.expected


@dataclass(frozen=True)
class VerifyReport:
    deep: bool
    sets: tuple[SetCheck, ...] = ()
    archives: int = 0
    bytes_read: int = 0
    uncounted: int = 0  # archives with real segments whose points were not counted (no engine)
    restore_cluster: str | None = None
    restores: tuple[RestoreCheck, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def problems(self) -> int:
        return sum(len(s.findings) for s in self.sets) + sum(1 for r in self.restores if not r.ok)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0


# ---------------------------------------------------------------- reading archives


class _HashingReader(io.RawIOBase):
    """A read-only file over a chunk iterator that hashes and counts every byte it takes in.

    tarfile's stream mode reads it front to back; whatever tarfile leaves unread (end-of-archive
    padding, trailing garbage) is drained by `finish`, so size and sha256 cover the whole object.
    Holds at most one chunk."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._view = memoryview(b"")
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def _pull(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._hash.update(chunk)
                self.size += len(chunk)
                self._view = memoryview(chunk)
                return True
        return False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [bytes(self._view)]
            self._view = memoryview(b"")
            while self._pull():
                parts.append(bytes(self._view))
            self._view = memoryview(b"")
            return b"".join(parts)
        if not self._view and not self._pull():
            return b""
        piece = bytes(self._view[:size])
        self._view = self._view[size:]
        return piece

    def readinto(self, buffer: Any) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)

    def finish(self) -> str:
        self._view = memoryview(b"")
        while self._pull():
            self._view = memoryview(b"")
        return self._hash.hexdigest()


def load_engine() -> Any | None:
    """Qdrant's engine module (`qdrant_edge`), or None when it is not installed (`pip install 'qbr[deep]'`)."""
    try:
        import importlib

        return importlib.import_module(ENGINE_MODULE)
    except Exception:  # absent, or built for another platform: deep checks fall back to the emulator's store
        return None


def scan_archive(repo: Any, key: str, kind: str, *, deep: bool, engine: Any | None = None) -> ArchiveScan:
    """Read one archive from a repository, streamed, once."""
    try:
        with repo.open_read(key, READ_CHUNK) as chunks:
            return scan_stream(chunks, key, kind, deep=deep, engine=engine)
    except NotFoundError:
        return ArchiveScan(key, found=False, deep=deep)
    except QbrError as error:
        return ArchiveScan(key, read_error=str(error), deep=deep)


def scan_stream(chunks: Iterable[bytes], key: str, kind: str, *, deep: bool, engine: Any | None = None) -> ArchiveScan:
    """Hash (and with `deep`, walk as a tar) one archive's bytes in a single pass, memory flat.

    A NotFoundError or other QbrError from the chunk iterator propagates (scan_archive turns it
    into a finding); a malformed tar is a fact of the scan, not an error."""
    reader = _HashingReader(chunks)
    if not deep:
        sha = reader.finish()
        return ArchiveScan(key, size=reader.size, sha256=sha)
    walk = _TarWalk(kind, engine)
    try:
        walk.run(reader)
        sha = reader.finish()
        return ArchiveScan(
            key,
            size=reader.size,
            sha256=sha,
            deep=True,
            tar_error=walk.tar_error,
            entries=frozenset(walk.entries),
            unsafe=tuple(walk.unsafe),
            shards=walk.shard_scans(),
            engine=engine is not None,
        )
    finally:
        walk.cleanup()


def _member_path(name: str) -> tuple[str, ...] | None:
    """Split a member name into parts; None if it would climb out of (or start above) its folder."""
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/"):
        return None
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if any(p == ".." for p in parts) or "\\" in name:
        return None
    return parts


class _TarWalk:
    """One streamed pass over a snapshot tar: entries, per-shard point counts, engine spools."""

    def __init__(self, kind: str, engine: Any | None) -> None:
        self.kind = kind
        self.engine = engine
        self.entries: set[str] = set()
        self.unsafe: list[str] = []
        self.tar_error: str | None = None
        self.jsonl: dict[int | None, int] = {}
        self.real: set[int | None] = set()
        self.engine_points: dict[int | None, int] = {}
        self.engine_errors: dict[int | None, str] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._spools: dict[int | None, tarfile.TarFile] = {}

    def run(self, reader: _HashingReader) -> None:
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    self._member(tar, member)
        except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeDecodeError) as error:
            self.tar_error = str(error) or error.__class__.__name__
        for spool in self._spools.values():
            spool.close()
        if self.engine is not None and self.tar_error is None:
            for shard in sorted((self.real & set(self._spools)) - set(self.engine_errors), key=lambda s: -1 if s is None else s):
                self._engine_count(shard)

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _member_path(member.name)
        if parts is None:
            self.unsafe.append(member.name)
            return
        if not parts:
            return
        for depth in range(1, min(2, len(parts)) + 1):
            self.entries.add("/".join(parts[:depth]))
        if self.kind == "collection":
            if not parts[0].isdigit():
                return
            shard: int | None = int(parts[0])
            rest = parts[1:]
        else:
            shard, rest = None, parts
        if not rest or rest[0] != "segments":
            self._spool(tar, member, shard, rest)
            return
        if rest == ("segments", "points.jsonl") and member.isfile():
            self.jsonl[shard] = _count_lines(tar.extractfile(member))
            return
        if len(rest) >= 3 or (len(rest) == 2 and (member.isdir() or rest[1].endswith(".tar"))):
            self.real.add(shard)
        self._spool(tar, member, shard, rest)

    def _spool(self, tar: tarfile.TarFile, member: tarfile.TarInfo, shard: int | None, rest: tuple[str, ...]) -> None:
        """With the engine at hand, copy the shard's members into a shard snapshot tar of its own."""
        if self.engine is None or not rest or not (member.isfile() or member.isdir()):
            return
        if shard in self.engine_errors:
            return
        try:
            spool = self._spools.get(shard)
            if spool is None:
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="qbr-verify-")
                path = Path(self._tmp.name) / f"shard-{'root' if shard is None else shard}.tar"
                spool = self._spools[shard] = tarfile.open(path, "w", format=tarfile.GNU_FORMAT)
            info = tarfile.TarInfo("/".join(rest))
            info.mode, info.mtime = member.mode, member.mtime
            if member.isdir():
                info.type = tarfile.DIRTYPE
                spool.addfile(info)
            else:
                info.size = member.size
                spool.addfile(info, tar.extractfile(member))
        except OSError as error:  # the temp folder, not the archive, failed (full disk): say so, keep reading
            self.engine_errors[shard] = f"cannot copy the shard to a temp folder: {error.strerror or error}; set TMPDIR"

    def _engine_count(self, shard: int | None) -> None:
        assert self._tmp is not None
        label = "root" if shard is None else str(shard)
        snapshot = Path(self._tmp.name) / f"shard-{label}.tar"
        target = Path(self._tmp.name) / f"unpacked-{label}"
        try:
            self.engine.EdgeShard.unpack_snapshot(str(snapshot), str(target))
            loaded = self.engine.EdgeShard.load(str(target))
            try:
                self.engine_points[shard] = int(loaded.count(self.engine.CountRequest(exact=True)))
            finally:
                loaded.close()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # the engine's errors; a Rust panic arrives as a BaseException (PanicException)
            self.engine_errors[shard] = (str(error) or error.__class__.__name__).splitlines()[0]

    def shard_scans(self) -> dict[int | None, ShardScan]:
        shards = set(self.jsonl) | self.real | set(self.engine_errors)
        return {
            s: ShardScan(
                points_jsonl=self.jsonl.get(s),
                real_segments=s in self.real,
                engine_points=self.engine_points.get(s),
                engine_error=self.engine_errors.get(s),
            )
            for s in shards
        }

    def cleanup(self) -> None:
        for spool in self._spools.values():
            spool.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _count_lines(handle: Any) -> int:
    """Non-blank lines of a member, read in pieces (the emulator skips blank lines too)."""
    count = 0
    carry = b""
    while True:
        piece = handle.read(LINE_CHUNK)
        if not piece:
            break
        lines = (carry + piece).split(b"\n")
        carry = lines.pop()
        count += sum(1 for line in lines if line.strip())
    return count + (1 if carry.strip() else 0)


# ---------------------------------------------------------------- judging (pure)


def archive_problems(scan: ArchiveScan, archive: ArchiveRecord) -> tuple[str, ...]:
    """What is wrong with a stored archive, measured against what a set recorded of it."""
    if not scan.found:
        return ("is missing from the repository",)
    if scan.read_error is not None:
        return (f"could not be read: {scan.read_error}",)
    problems: list[str] = []
    if scan.size != archive.size:
        problems.append(f"is {scan.size} bytes, the set recorded {archive.size} (truncated or altered)")
    elif scan.sha256 != archive.sha256.strip().lower():
        problems.append(
            f"has sha256 {scan.sha256[:16]}…, the set recorded {archive.sha256[:16]}… (its bytes changed)"
        )
    if problems or not scan.deep:
        return tuple(problems)
    if scan.tar_error is not None:
        return (f"is not a readable tar archive ({scan.tar_error})",)
    if scan.unsafe:
        problems.append(f"holds a member that escapes its folder ({scan.unsafe[0]!r})")
    missing = missing_entries(scan.entries, archive)
    if missing:
        problems.append(f"is not a whole Qdrant {archive.kind} snapshot: it lacks {', '.join(missing)}")
    problems.extend(_points_problems(scan, archive))
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


def _points_problems(scan: ArchiveScan, archive: ArchiveRecord) -> list[str]:
    problems: list[str] = []
    wanted: list[int | None] = list(archive.shard_ids) if archive.kind == "collection" else [None]
    total = 0
    ways: set[str] = set()
    countable = True
    for shard in wanted:
        seen = scan.shards.get(shard)
        label = "" if shard is None else f"shard {shard}: "
        if seen is not None and seen.engine_error is not None:
            problems.append(f"{label}Qdrant's engine could not open its segments ({seen.engine_error})")
            countable = False
        elif seen is not None and seen.real_segments and seen.engine_points is not None:
            total += seen.engine_points
            ways.add("counted by Qdrant's engine")
        elif seen is not None and seen.points_jsonl is not None and not seen.real_segments:
            total += seen.points_jsonl
            ways.add("lines of segments/points.jsonl")
        else:
            countable = False
    if countable and archive.points_count is not None and total != archive.points_count:
        problems.append(f"holds {total} points ({' and '.join(sorted(ways))}), the set recorded {archive.points_count}")
    return problems


def uncounted(scan: ArchiveScan) -> bool:
    """An archive with real segment data whose points nobody counted (the engine is not installed)."""
    return scan.deep and not scan.engine and any(s.real_segments for s in scan.shards.values())


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


# ---------------------------------------------------------------- the run


def verify(
    manifest: Manifest,
    connections: Connections,
    *,
    backup: str | None = None,
    deep: bool = False,
    restore_cluster: str | None = None,
    engine: Any | None = None,
    clock: Callable[[], datetime] | None = None,
) -> VerifyReport:
    """Read every set of the chosen backups and every archive they name; optionally restore-test.

    `engine` defaults to Qdrant's engine when installed (deep only)."""
    backups = _chosen(manifest, backup)
    if restore_cluster is not None and restore_cluster not in manifest.clusters:
        known = ", ".join(sorted(manifest.clusters)) or "none"
        raise QbrError(f"cluster {restore_cluster} is not in the manifest (clusters: {known}); name one of them")
    if deep and engine is None:
        engine = load_engine()
    scoped = replace(manifest, backups={name: manifest.backups[name] for name in backups})
    repositories = observe_repositories(scoped, connections)
    checks: list[SetCheck] = []
    archives = read = not_counted = 0
    notes: list[str] = []
    for repo_name, state in sorted(repositories.items()):
        mine = [b for b in backups if manifest.backups[b].repository == repo_name]
        sets = [s for s in state.sets if s.backup in mine]
        broken = []
        for item in state.broken_sets:
            parsed = parse_set_key(item.key)
            if parsed and parsed[0] in mine:
                broken.append((parsed[0], parsed[1], f"its record {item.key} cannot be used: {item.problem}"))
        kinds: dict[str, str] = {}
        for record in sets:
            for collection in record.collections.values():
                for archive in collection.archives:
                    kinds.setdefault(archive.key, archive.kind)
        repo = connections.repository(repo_name)
        scans = _scan_all(repo, kinds, deep=deep, engine=engine, parallelism=connections.parallelism)
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
    return VerifyReport(
        deep=deep,
        sets=tuple(checks),
        archives=archives,
        bytes_read=read,
        uncounted=not_counted,
        restore_cluster=restore_cluster,
        restores=tuple(restores),
        notes=tuple(notes),
    )


def _chosen(manifest: Manifest, backup: str | None) -> list[str]:
    if backup is None:
        return sorted(manifest.backups)
    if backup not in manifest.backups:
        known = ", ".join(sorted(manifest.backups)) or "none"
        raise QbrError(f"backup {backup} is not in the manifest (backups: {known}); name one of them with --backup")
    return [backup]


def _scan_all(repo: Any, kinds: dict[str, str], *, deep: bool, engine: Any | None, parallelism: int) -> dict[str, ArchiveScan]:
    if not kinds:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(kinds))), thread_name_prefix="qbr-verify") as pool:
        futures = {key: pool.submit(scan_archive, repo, key, kind, deep=deep, engine=engine) for key, kind in kinds.items()}
        return {key: future.result() for key, future in sorted(futures.items())}


# ---------------------------------------------------------------- restore test


class _NoStateWrites:
    """The state store a restore test hands to its Applier: temporary collections leave no provenance."""

    def write(self, state: Any) -> None:
        return None


def restore_test(
    manifest: Manifest,
    connections: Connections,
    record: SetRecord,
    cluster: str,
    *,
    clock: Callable[[], datetime] | None = None,
) -> list[RestoreCheck]:
    """Restore every collection of `record` into `qbr_verify_<random>_<collection>` on `cluster`,
    compare exact points counts, and delete each temporary collection whatever happened."""
    from qbr.apply import Applier
    from qbr.plan import Action, Plan
    from qbr.restore import restore_collection
    from qbr.state import State
    from qbr.transfer import Progress

    now = clock or (lambda: datetime.now(timezone.utc))
    backup = manifest.backups[record.backup]
    token = secrets.token_hex(4)
    checks: list[RestoreCheck] = []
    nodes = connections.cluster_nodes(cluster)
    versions = [connections.client(cluster, n.url).version() for n in nodes]
    target_version = min(versions, key=version_tuple)
    seed = connections.client(cluster, nodes[0].url)
    via = "url" if connections.can_presign(backup.repository) else "upload"
    for name, collection in sorted(record.collections.items()):
        temporary = f"{TEMP_PREFIX}{token}_{name}"
        check = RestoreCheck(record.backup, record.set_id, name, cluster, temporary, collection.points_count)
        refusal = version_refusal(collection.qdrant_version, target_version)
        if refusal:
            checks.append(replace(check, problem=f"cannot restore-test into cluster {cluster}: {refusal}"))
            continue
        if seed.collection_exists(temporary):  # never touch a collection this run did not make
            checks.append(replace(check, problem=f"a collection named {temporary} already exists on cluster {cluster}; run verify again"))
            continue
        action = Action(
            id=f"verify.{record.backup}.{name}",
            kind="restore_collection",
            change="create",
            group=f"verify {record.backup}",
            title=f"restore-test {name} of set {record.set_id} into {temporary}",
            reason="qbr verify --restore-test",
            target={"cluster": cluster, "collection": temporary},
            precondition={"target_exists": False},
            params={
                "restore": f"{TEMP_PREFIX}test",
                "backup": record.backup,
                "repository": backup.repository,
                "set_id": record.set_id,
                "source_collection": name,
                "copied_in": collection.copied_in,
                "target_cluster": cluster,
                "target_collection": temporary,
                "via": via,
            },
        )
        plan = Plan(
            created=utc_iso(now()),
            manifest_source=manifest.source,
            manifest_sha256=manifest.sha256,
            state_location="none (qbr verify writes no state)",
            state_lineage=None,
            state_serial=0,
            actions=(action,),
        )
        applier = Applier(
            plan, connections, _NoStateWrites(), State(), parallelism=1, clock=now, progress=Progress(enabled=False)  # type: ignore[arg-type]
        )
        try:
            output = restore_collection(applier, action)
            points = int(output["journal"]["points"])
            check = replace(check, points=points)
            if points != collection.points_count:
                check = replace(check, problem=f"holds {points} points after the restore, the set recorded {collection.points_count}")
        except QbrError as error:
            check = replace(check, problem=f"restore into {temporary} on cluster {cluster} failed: {error}")
        except Exception as error:  # a bug must not leave the temporary collection behind, nor a traceback
            check = replace(check, problem=f"restore into {temporary} failed unexpectedly: {error.__class__.__name__}: {error}")
        finally:
            leftover = _drop(seed, temporary, cluster)
        if leftover:
            check = replace(check, problem=f"{check.problem + '; ' if check.problem else ''}{leftover}")
        checks.append(check)
    return checks


def _drop(seed: Any, collection: str, cluster: str) -> str | None:
    """Delete a temporary collection; a sentence when that failed (the user must delete it)."""
    try:
        if seed.collection_exists(collection):
            seed.delete_collection(collection)
        return None
    except QbrError as error:
        return f"the temporary collection {collection} could not be deleted from cluster {cluster} ({error}); delete it by hand"


# ---------------------------------------------------------------- rendering

_URL_WITH_QUERY = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s?]+\?\S*", re.IGNORECASE)


def scrub(text: str) -> str:
    """Belt and braces: no URL with a query string (a presigned URL is a secret) reaches the output."""
    return _URL_WITH_QUERY.sub("<URL hidden>", text)


def render_verify(report: VerifyReport) -> str:
    lines: list[str] = []
    for check in report.sets:
        label = f"set {check.backup}/{check.set_id}"
        if check.ok:
            lines.append(f"{label}: {check.archives} archive{'s' if check.archives != 1 else ''} OK")
        else:
            count = len(check.findings)
            lines.append(f"{label}: {count} problem{'s' if count != 1 else ''}")
            lines += [f"  {scrub(f.line())}" for f in check.findings]
    for note in report.notes:
        lines.append(note)
    for restore in report.restores:
        label = f"restore test {restore.backup}/{restore.set_id}, collection {restore.collection} on cluster {restore.cluster}"
        if restore.ok:
            lines.append(f"{label}: {restore.points} points OK")
        else:
            lines.append(f"{label}: {scrub(restore.problem or 'points count differs')}")
    if report.uncounted:
        lines.append(
            f"{report.uncounted} archive{'s' if report.uncounted != 1 else ''} hold Qdrant segment data whose points were "
            "not counted: install qdrant-edge-py (pip install 'qbr[deep]') to open them with Qdrant's engine"
        )
    sets = len(report.sets)
    summary = (
        f"Verified {sets} set{'s' if sets != 1 else ''}, {report.archives} archive{'s' if report.archives != 1 else ''} "
        f"({human_bytes(report.bytes_read)} read{', deep' if report.deep else ''})"
    )
    if report.restore_cluster is not None:
        summary += f", {len(report.restores)} restore test{'s' if len(report.restores) != 1 else ''} on cluster {report.restore_cluster}"
    problems = report.problems
    summary += ": all OK." if not problems else f": {problems} problem{'s' if problems != 1 else ''}."
    lines.append(summary)
    return "\n".join(lines) + "\n"
