"""Prometheus metrics for unattended runs: what `--metrics-file PATH` (or $QBR_METRICS_FILE) writes.

Every run of qbr is a fresh process, so every metric is a gauge holding a fact (a timestamp, a
size, a count), never a counter. `apply`, `status` and `verify` each write the whole file, in
Prometheus' text format, through prometheus_client's `write_to_textfile` (a temp file renamed
into place: a scraper never reads half a file). What a run does not know is carried over from
the file it replaces: a failed or interrupted apply keeps the last success it did not beat, and
`status` keeps the last apply's outcome. The repository and the state are the truth for what
they hold (sets, sizes, provenance), so those are re-read at each write.

Pure, apart from `read_previous` and `write`: samples are computed from plain data and `now`.
prometheus_client is imported only by those two, so a run without --metrics-file never loads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable

from qbr.manifest import Manifest
from qbr.plan import Action
from qbr.records import parse_utc, set_id_time
from qbr.state import State
from qbr.status import build_status
from qbr.world import ObservedRepository

METRICS_ENV = "QBR_METRICS_FILE"

B = ("backup", "repository", "cluster")
R = ("restore", "backup", "cluster")

#: name -> (help, label names). Units are in the names (_seconds, _bytes, _timestamp_seconds).
CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    "qbr_backup_rpo_seconds": ("The backup's rpo: a new set is due when the newest is older than this.", B),
    "qbr_backup_newest_set_age_seconds": ("Age of the newest complete set when the file was written (+Inf: no set).", B),
    "qbr_backup_newest_set_timestamp_seconds": ("When the newest complete set was taken (0: no set).", B),
    "qbr_backup_last_success_timestamp_seconds": ("When an apply last finished this backup's actions without a failure, or its newest set was taken.", B),
    "qbr_backup_last_attempt_timestamp_seconds": ("When an apply last started actions for this backup.", B),
    "qbr_backup_duration_seconds": ("Wall time of this backup's actions in the apply that last attempted it.", B),
    "qbr_backup_copied_bytes": ("Bytes copied into the repository by the apply that last attempted this backup.", B),
    "qbr_backup_stored_bytes": ("Bytes the backup's sets hold in the repository, each archive counted once.", B),
    "qbr_backup_sets": ("Complete sets of this backup kept in the repository.", B),
    "qbr_backup_collections": ("Collections covered by the newest set.", B),
    "qbr_restore_last_success_timestamp_seconds": ("When this restore last completed (from the state, or an apply without failures).", R),
    "qbr_restore_last_attempt_timestamp_seconds": ("When an apply last started actions for this restore.", R),
    "qbr_restore_duration_seconds": ("Wall time of this restore's actions in the apply that last attempted it.", R),
    "qbr_restore_copied_bytes": ("Bytes qbr sent to Qdrant for this restore in the apply that last attempted it (0 when nodes fetched by URL).", R),
    "qbr_restore_collections": ("Collections of this restore whose provenance the state records.", R),
    "qbr_restore_provenance_age_seconds": ("Age of the set a restored collection came from: how old its data is.", R + ("collection",)),
    "qbr_lock_held": ("1 while a lock is held on the state or a repository, else 0.", ("lock",)),
    "qbr_lock_held_since_timestamp_seconds": ("When the lock now held was taken (0: not held).", ("lock",)),
    "qbr_apply_last_attempt_timestamp_seconds": ("When the last apply started.", ()),
    "qbr_apply_last_success_timestamp_seconds": ("When an apply last ended complete (or with no changes to make).", ()),
    "qbr_apply_duration_seconds": ("How long the last apply ran.", ()),
    "qbr_apply_actions": ("Actions of the last apply by outcome.", ("status",)),
    "qbr_apply_last_outcome": ("1 for the outcome of the last apply, 0 for the others.", ("outcome",)),
    "qbr_verify_last_attempt_timestamp_seconds": ("When qbr verify last ran.", ()),
    "qbr_verify_last_success_timestamp_seconds": ("When qbr verify last found every archive whole.", ()),
    "qbr_verify_problems": ("Problems the last qbr verify found.", ()),
    "qbr_verify_read_bytes": ("Bytes the last qbr verify read.", ()),
    "qbr_metrics_written_timestamp_seconds": ("When qbr last wrote this file.", ()),
}

ACTION_STATUSES = ("done", "failed", "skipped", "abandoned")
#: complete: every action done; no_changes: nothing to do; incomplete: some failed or were skipped;
#: stopped: Ctrl-C (or a lost lock) let the running actions finish; abandoned: a second Ctrl-C did
#: not; cancelled: not confirmed; lock_busy: another run holds a lock; error: it failed before or
#: around its actions.
OUTCOMES = ("complete", "no_changes", "incomplete", "stopped", "abandoned", "cancelled", "lock_busy", "error")
SUCCESSFUL = ("complete", "no_changes")

Key = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[Key, float]


def key(name: str, **labels: Any) -> Key:
    names = CATALOGUE[name][1]
    return name, tuple((label, str(labels[label])) for label in names)


def stamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


@dataclass(frozen=True)
class ActionRun:
    """One action of an apply, as the run saw it: when it started and ended, and the bytes it moved."""

    action: Action
    status: str
    started: datetime | None  # None: it never started (skipped)
    finished: datetime
    bytes: int = 0


@dataclass
class ApplyRun:
    started: datetime
    finished: datetime
    outcome: str
    actions: list[ActionRun] = field(default_factory=list)


def owner(action: Action) -> tuple[str, str] | None:
    """("backup", name) or ("restore", name): whose action this is (repository-wide garbage is nobody's)."""
    if "backup" in action.params and action.kind in ("copy_archive", "commit_set", "delete_set"):
        return "backup", str(action.params["backup"])
    if action.kind == "restore_collection":
        return "restore", str(action.params["restore"])
    kind, _, rest = action.group.partition(" ")
    if kind in ("backup", "restore") and rest:
        return kind, rest.split(" ", 1)[0]
    return None


def _labels(manifest: Manifest, kind: str, name: str) -> dict[str, str]:
    if kind == "backup":
        backup = manifest.backups[name]
        return {"backup": name, "repository": backup.repository, "cluster": backup.cluster}
    restore = manifest.restores[name]
    return {"restore": name, "backup": restore.from_backup, "cluster": restore.to}


def repository_samples(manifest: Manifest, repositories: dict[str, ObservedRepository], state: State, now: datetime, previous: Samples) -> Samples:
    """What the repositories and the state say: sets, sizes, freshness, restore provenance."""
    out: Samples = {}
    status = {b.backup: b for b in build_status(manifest, repositories, state, now).backups}
    for name, backup in manifest.backups.items():
        labels = _labels(manifest, "backup", name)
        sets = repositories[backup.repository].sets_of(name)
        newest = sets[0].created_at if sets else None
        out[key("qbr_backup_rpo_seconds", **labels)] = backup.rpo.total_seconds()
        out[key("qbr_backup_newest_set_age_seconds", **labels)] = (now - newest).total_seconds() if newest else math.inf
        out[key("qbr_backup_newest_set_timestamp_seconds", **labels)] = stamp(newest)
        out[key("qbr_backup_stored_bytes", **labels)] = status[name].unique_bytes
        out[key("qbr_backup_sets", **labels)] = len(sets)
        out[key("qbr_backup_collections", **labels)] = len(status[name].collections)
        success = key("qbr_backup_last_success_timestamp_seconds", **labels)
        out[success] = max(previous.get(success, 0.0), stamp(newest))
    for name, restore in manifest.restores.items():
        labels = _labels(manifest, "restore", name)
        targets = state.restores.get(name, {})
        repo = repositories.get(manifest.backups[restore.from_backup].repository) if restore.from_backup in manifest.backups else None
        created = {s.set_id: s.created_at for s in repo.sets_of(restore.from_backup)} if repo is not None else {}
        trusted = {t: e for t, e in targets.items() if not e.get("incomplete") and not e.get("points_check_failed")}
        out[key("qbr_restore_collections", **labels)] = len(trusted)
        restored = [_time(e.get("restored_at")) for e in trusted.values()]
        success = key("qbr_restore_last_success_timestamp_seconds", **labels)
        out[success] = max([previous.get(success, 0.0)] + [stamp(t) for t in restored if t is not None])
        for target, entry in sorted(trusted.items()):
            set_id = str(entry.get("set_id"))
            taken = created.get(set_id) or _set_time(set_id)
            if taken is not None:
                out[key("qbr_restore_provenance_age_seconds", collection=target, **labels)] = max(0.0, (now - taken).total_seconds())
    return out


def _time(text: Any) -> datetime | None:
    try:
        return parse_utc(str(text)) if text else None
    except ValueError:
        return None


def _set_time(set_id: str) -> datetime | None:
    try:
        return set_id_time(set_id)
    except ValueError:
        return None


def lock_samples(held: dict[str, datetime | None | bool]) -> Samples:
    """`held`: lock name ("state", "repository/NAME") -> when it was taken, True when held since an
    unreadable time, None when free."""
    out: Samples = {}
    for name, since in held.items():
        out[key("qbr_lock_held", lock=name)] = 0.0 if since is None else 1.0
        out[key("qbr_lock_held_since_timestamp_seconds", lock=name)] = stamp(since) if isinstance(since, datetime) else 0.0
    return out


def apply_samples(manifest: Manifest, run: ApplyRun, previous: Samples) -> Samples:
    """The last apply's outcome, and per backup and restore the attempt it made (if any)."""
    out: Samples = {
        key("qbr_apply_last_attempt_timestamp_seconds"): stamp(run.started),
        key("qbr_apply_duration_seconds"): max(0.0, (run.finished - run.started).total_seconds()),
    }
    success = key("qbr_apply_last_success_timestamp_seconds")
    out[success] = stamp(run.finished) if run.outcome in SUCCESSFUL else previous.get(success, 0.0)
    for status in ACTION_STATUSES:
        out[key("qbr_apply_actions", status=status)] = sum(1 for a in run.actions if a.status == status)
    for outcome in OUTCOMES:
        out[key("qbr_apply_last_outcome", outcome=outcome)] = 1.0 if outcome == run.outcome else 0.0
    groups: dict[tuple[str, str], list[ActionRun]] = {}
    for entry in run.actions:
        who = owner(entry.action)
        if who is not None and (who[1] in (manifest.backups if who[0] == "backup" else manifest.restores)):
            groups.setdefault(who, []).append(entry)
    for kind in ("backup", "restore"):
        for name in (manifest.backups if kind == "backup" else manifest.restores):
            labels = _labels(manifest, kind, name)
            names = [f"qbr_{kind}_{m}" for m in ("last_attempt_timestamp_seconds", "duration_seconds", "copied_bytes", "last_success_timestamp_seconds")]
            keys = [key(n, **labels) for n in names]
            entries = [e for e in groups.get((kind, name), []) if e.started is not None]
            if not entries:
                out.update({k: previous[k] for k in keys if k in previous})
                continue
            started = min(e.started for e in entries if e.started is not None)
            out[keys[0]] = stamp(started)
            out[keys[1]] = max(0.0, (max(e.finished for e in entries) - started).total_seconds())
            out[keys[2]] = sum(e.bytes for e in entries)
            ok = all(e.status == "done" for e in groups[(kind, name)])
            out[keys[3]] = max(previous.get(keys[3], 0.0), stamp(run.finished) if ok else 0.0)
    return out


def verify_samples(started: datetime, problems: int, read_bytes: int, previous: Samples) -> Samples:
    success = key("qbr_verify_last_success_timestamp_seconds")
    return {
        key("qbr_verify_last_attempt_timestamp_seconds"): stamp(started),
        success: stamp(started) if problems == 0 else previous.get(success, 0.0),
        key("qbr_verify_problems"): float(problems),
        key("qbr_verify_read_bytes"): float(read_bytes),
    }


def build(
    manifest: Manifest,
    previous: Samples,
    now: datetime,
    *,
    apply: ApplyRun | None = None,
    world: tuple[dict[str, ObservedRepository], State] | None = None,
    locks: dict[str, datetime | None | bool] | None = None,
    verify: Samples | None = None,
) -> Samples:
    """The file to write: the previous file's series (less those of backups and restores no
    longer in the manifest), with every metric this run measured replaced whole. A part this run
    could not measure (None) is carried over as it was."""
    fresh: list[Samples] = []
    known = dict(previous)
    if apply is not None:
        fresh.append(apply_samples(manifest, apply, known))
        known.update(fresh[-1])
    if world is not None:
        fresh.append(repository_samples(manifest, world[0], world[1], now, known))
    if locks is not None:
        fresh.append(lock_samples(locks))
    if verify is not None:
        fresh.append(verify)
    merged = {k: v for k, v in previous.items() if k[0] in CATALOGUE and _still_named(manifest, dict(k[1]))}
    names = {k[0] for samples in fresh for k in samples}
    merged = {k: v for k, v in merged.items() if k[0] not in names}
    for samples in fresh:
        merged.update(samples)
    merged[key("qbr_metrics_written_timestamp_seconds")] = stamp(now)
    return merged


def _still_named(manifest: Manifest, labels: dict[str, str]) -> bool:
    if "restore" in labels:
        return labels["restore"] in manifest.restores
    if "backup" in labels:
        return labels["backup"] in manifest.backups
    return True


def read_previous(path: str) -> Samples:
    """The series of the file a run replaces; nothing when it is missing or unreadable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return {}
    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in CATALOGUE:
                    names = CATALOGUE[sample.name][1]
                    samples[sample.name, tuple((n, sample.labels.get(n, "")) for n in names)] = float(sample.value)
    except (ValueError, TypeError, IndexError):
        return {}
    return samples


def read_world(manifest: Manifest, parallelism: int, warn: Callable[[str], None]) -> tuple[dict[str, ObservedRepository], State] | None:
    """The repositories' sets and the state, for the metrics; None (carried over) when unreadable."""
    from qbr.connections import Connections
    from qbr.errors import QbrError
    from qbr.observe import observe_repositories
    from qbr.state_store import StateStore

    try:
        state = StateStore(manifest.state).read()
        with Connections(manifest, parallelism) as connections:
            return observe_repositories(manifest, connections), state
    except QbrError as error:
        warn(f"metrics: the repositories or the state could not be read ({error}); their metrics are carried over")
        return None


def read_locks(manifest: Manifest, warn: Callable[[str], None]) -> dict[str, datetime | None | bool] | None:
    """Which locks are held ("state", "repository/NAME" -> since when); None (carried over) when unreadable."""
    from qbr.errors import QbrError
    from qbr.locks import repository_target
    from qbr.state_store import StateStore, state_lock_target

    held: dict[str, datetime | None | bool] = {}
    try:
        targets = {"state": state_lock_target(StateStore(manifest.state))}
        targets.update({f"repository/{name}": repository_target(config) for name, config in manifest.repositories.items()})
        for name, target in targets.items():
            current = target.read()
            info = current[0] if current is not None else None
            held[name] = None if current is None else ((_time(info.created) if info is not None else None) or True)
    except QbrError as error:
        warn(f"metrics: the locks could not be read ({error}); their metrics are carried over")
        return None
    return held


def write(path: str, samples: Samples) -> None:
    """Write the samples in Prometheus' text format, atomically (a temp file renamed into place)."""
    from prometheus_client import CollectorRegistry, write_to_textfile
    from prometheus_client.core import GaugeMetricFamily

    class _Snapshot:
        def collect(self) -> Iterable[GaugeMetricFamily]:
            for name, (help_text, labels) in CATALOGUE.items():
                rows = sorted((k[1], v) for k, v in samples.items() if k[0] == name)
                if not rows:
                    continue
                family = GaugeMetricFamily(name, help_text, labels=list(labels))
                for label_values, value in rows:
                    family.add_metric([v for _, v in label_values], value)
                yield family

    from qbr.errors import QbrError

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())  # type: ignore[arg-type]
    try:
        write_to_textfile(path, registry)
    except OSError as error:
        raise QbrError(f"could not write the metrics file {path}: {error.strerror or error}") from None


def write_apply_metrics(path: str, manifest: Manifest, run: ApplyRun, parallelism: int, warn: Callable[[str], None]) -> None:
    """`qbr apply --metrics-file`: the run's outcome, the repositories, state and locks as it left them, the rest carried over."""
    previous = read_previous(path)
    world, locks = read_world(manifest, parallelism, warn), read_locks(manifest, warn)
    write(path, build(manifest, previous, run.finished, apply=run, world=world, locks=locks))


def write_status_metrics(path: str, manifest: Manifest, world: tuple[dict[str, ObservedRepository], State], now: datetime,
                         warn: Callable[[str], None]) -> None:
    """`qbr status --metrics-file`: the repositories and state it read, the locks, the rest carried over."""
    write(path, build(manifest, read_previous(path), now, world=world, locks=read_locks(manifest, warn)))


def write_verify_metrics(path: str, manifest: Manifest, started: datetime, report: Any, parallelism: int,
                         warn: Callable[[str], None]) -> None:
    """`qbr verify --metrics-file`: what verify found, the repositories, state and locks, the rest carried over."""
    previous = read_previous(path)
    checked = verify_samples(started, report.problems, report.bytes_read, previous)
    world, locks = read_world(manifest, parallelism, warn), read_locks(manifest, warn)
    write(path, build(manifest, previous, datetime.now(started.tzinfo), world=world, locks=locks, verify=checked))
