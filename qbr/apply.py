"""apply: run a plan's actions as a dependency graph, with bounded parallelism.

Each action re-checks its precondition just before it acts, and its outcome is journaled
into the state file as it finishes. An action whose dependency failed is skipped. Set records
are written last, so a crash at any instant leaves archives without a record (garbage that a
later plan sweeps after the grace period), never a set that names a missing archive.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from qbr import __version__, faultpoints
from qbr.connections import Connections
from qbr.errors import ChecksumError, NotFoundError, QbrError, QdrantError
from qbr.plan import Action, Plan, order_actions
from qbr.records import (
    SETS_PREFIX,
    ArchiveRecord,
    CollectionRecord,
    SetRecord,
    archive_key,
    config_digest,
    parse_set_key,
    parse_utc,
    set_key,
    utc_iso,
)
from qbr.repository.base import PendingUpload
from qbr.state import State, StateStore
from qbr.transfer import Digest, Progress, verified

SNAPSHOTS_PER_NODE = 2  # never more than this many snapshot creations on one node at once
COPY_ATTEMPTS = 3  # a transfer cut short is restarted this many times in all


class PreconditionError(QbrError):
    """The world moved since the plan was made; the action did nothing."""


@dataclass
class Outcome:
    action_id: str
    status: str  # done | failed | skipped
    message: str = ""
    seconds: float = 0.0
    output: dict[str, Any] = field(default_factory=dict)


@dataclass
class ApplyReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> bool:
        return all(o.status == "done" for o in self.outcomes)


class Applier:
    """Carries out one plan; holds the run's shared pieces (connections, state, outputs)."""

    def __init__(
        self,
        plan: Plan,
        connections: Connections,
        store: StateStore,
        state: State,
        *,
        parallelism: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        progress: Progress | None = None,
        report: Callable[[Outcome, Action], None] = lambda outcome, action: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.plan = plan
        self.connections = connections
        self.store = store
        self.state = state
        self.parallelism = max(1, parallelism)
        self.clock = clock
        self.progress = progress or Progress(enabled=False)
        self.report = report
        self.should_stop = should_stop
        self.outputs: dict[str, dict[str, Any]] = {}
        self._state_lock = threading.Lock()
        self._node_slots: dict[str, threading.BoundedSemaphore] = {}
        self._snapshot_locks: dict[tuple[str, str, int | None], threading.Lock] = {}
        self._slots_lock = threading.Lock()

    # ------------------------------------------------------------ the walk

    def run(self) -> ApplyReport:
        actions = order_actions(self.plan.actions)
        by_id = {a.id: a for a in actions}
        status: dict[str, str] = {}
        report = ApplyReport()
        self.state.journal = []
        self.state.provenance = {
            "qbr_version": __version__,
            "started": utc_iso(self.clock()),
            "plan_created": self.plan.created,
            "manifest_sha256": self.plan.manifest_sha256,
        }
        pending = list(actions)
        running: dict[Future[Outcome], Action] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="qbr-apply") as pool:
            while pending or running:
                for action in list(pending):
                    deps = [status.get(d) for d in action.depends_on if d in by_id]
                    if any(s in ("failed", "skipped") for s in deps) or (self.should_stop() and action.id not in status):
                        pending.remove(action)
                        failed_dep = next((d for d in action.depends_on if status.get(d) in ("failed", "skipped")), None)
                        why = f"skipped because {failed_dep} did not complete" if failed_dep else "skipped: the run was stopped"
                        outcome = Outcome(action.id, "skipped", why)
                        status[action.id] = "skipped"
                        self._finish(outcome, action, report)
                    elif all(s == "done" for s in deps):
                        pending.remove(action)
                        running[pool.submit(self._run_one, action)] = action
                if not running:
                    continue
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    action = running.pop(future)
                    outcome = future.result()
                    status[action.id] = outcome.status
                    self._finish(outcome, action, report)
        self.state.provenance["finished"] = utc_iso(self.clock())
        self._save()
        return report

    def _run_one(self, action: Action) -> Outcome:
        started = time.monotonic()
        try:
            handler = getattr(self, f"_do_{action.kind}")
            output = handler(action) or {}
            self.outputs[action.id] = output
            return Outcome(action.id, "done", "", time.monotonic() - started, output)
        except QbrError as error:
            return Outcome(action.id, "failed", str(error), time.monotonic() - started)
        except Exception as error:  # a bug or an unexpected library error: still one sentence
            return Outcome(action.id, "failed", f"unexpected error: {error.__class__.__name__}: {error}", time.monotonic() - started)

    def _finish(self, outcome: Outcome, action: Action, report: ApplyReport) -> None:
        report.outcomes.append(outcome)
        entry = {
            "action": action.id,
            "kind": action.kind,
            "status": outcome.status,
            "at": utc_iso(self.clock()),
            "seconds": round(outcome.seconds, 3),
        }
        if outcome.message:
            entry["message"] = outcome.message
        if "journal" in outcome.output:
            entry["detail"] = outcome.output["journal"]
        with self._state_lock:
            self.state.journal.append(entry)
        self._save()
        faultpoints.reached("action.journaled")
        self.report(outcome, action)

    def _save(self) -> None:
        with self._state_lock:
            self.store.write(self.state)

    def _slots_for(self, node: str) -> threading.BoundedSemaphore:
        with self._slots_lock:
            return self._node_slots.setdefault(node, threading.BoundedSemaphore(SNAPSHOTS_PER_NODE))

    def _snapshot_lock_for(self, node: str, collection: str, shard_id: int | None) -> threading.Lock:
        """Qdrant names snapshots to the second, and a second create in the same second overwrites
        the first; so one (node, collection, shard) is snapshotted by one action at a time, from
        create through download to delete."""
        with self._slots_lock:
            return self._snapshot_locks.setdefault((node, collection, shard_id), threading.Lock())

    # ------------------------------------------------------------ node-local snapshots

    def _remember_node_snapshot(self, entry: dict[str, Any], replacing: dict[str, Any] | None = None) -> None:
        with self._state_lock:
            if replacing is not None:
                self.state.node_snapshots = [e for e in self.state.node_snapshots if e != replacing]
            if entry not in self.state.node_snapshots:
                self.state.node_snapshots.append(entry)
        self._save()

    def _forget_node_snapshot(self, entry: dict[str, Any]) -> None:
        with self._state_lock:
            self.state.node_snapshots = [e for e in self.state.node_snapshots if e != entry]

    # ------------------------------------------------------------ backups

    def _do_copy_archive(self, action: Action) -> dict[str, Any]:
        p = action.params
        cluster, node, collection, shard_id = p["cluster"], p["node"], p["collection"], p["shard_id"]
        client = self.connections.client(cluster, node)
        if not client.collection_exists(collection):
            raise PreconditionError(f"collection {collection} no longer exists on cluster {cluster}; run qbr plan again")
        shard_points: int | None = None
        if shard_id is not None:
            view = client.collection_cluster(collection)
            local = {int(s["shard_id"]): s for s in view.get("local_shards") or []}
            if shard_id not in local or local[shard_id].get("state") != "Active":
                raise PreconditionError(
                    f"shard {shard_id} of collection {collection} is no longer active on node {node}; run qbr plan again"
                )
            shard_points = local[shard_id].get("points_count")
        with self._snapshot_lock_for(node, collection, shard_id):
            info = client.collection_info(collection)
            config = dict(info.get("config") or {})
            points = client.count_points(collection, exact=True)
            digest, key = self._snapshot_and_store(action, client)
        archive = ArchiveRecord(
            key=key,
            size=digest.size,
            sha256=digest.sha256 or "",
            kind=p["kind"],
            shard_ids=tuple(p["shard_ids"]),
            node=node,
            points_count=shard_points if shard_id is not None else points,
        )
        return {
            "archive": asdict(archive),
            "points_count": points,
            "config": config,
            "journal": {"archive": key, "size": digest.size, "sha256": digest.sha256},
        }

    def _snapshot_and_store(self, action: Action, client: Any) -> tuple[Digest, str]:
        """Create the snapshot on the node, stream it into the repository with its sha256 checked,
        then delete it from the node so Qdrant's disk does not fill."""
        p = action.params
        cluster, node, collection, shard_id = p["cluster"], p["node"], p["collection"], p["shard_id"]
        with self._slots_for(node):
            # Recorded before it exists: if this run dies while Qdrant makes it, or before its name
            # reaches the state, the next plan finds it as the one that appeared since this listing.
            making = {"cluster": cluster, "node": node, "collection": collection, "shard_id": shard_id, "name": None,
                      "before": sorted(s.name for s in client.list_snapshots(collection, shard_id=shard_id))}
            self._remember_node_snapshot(making)
            faultpoints.reached("snapshot.before_create")
            snapshot = client.create_snapshot(collection, shard_id=shard_id, wait=True)
        if snapshot is None:
            raise QbrError(f"node {node} did not describe the snapshot of collection {collection} it made; try again")
        entry = {"cluster": cluster, "node": node, "collection": collection, "shard_id": shard_id, "name": snapshot.name}
        faultpoints.reached("snapshot.created")
        self._remember_node_snapshot(entry, replacing=making)
        faultpoints.reached("snapshot.recorded")
        key = archive_key(collection, p["backup"], p["set_id"], snapshot.name)
        repo = self.connections.repository(p["repository"])
        what = f"snapshot {snapshot.name} of collection {collection} from node {node}"
        digest = Digest()
        self.progress.expect(snapshot.size)
        for attempt in range(1, COPY_ATTEMPTS + 1):
            try:
                with client.download_snapshot(collection, snapshot.name, shard_id=shard_id) as stream:
                    digest = Digest()
                    repo.put_stream(
                        key,
                        verified(
                            stream,
                            digest,
                            what=what,
                            expected_size=snapshot.size,
                            expected_sha256=snapshot.checksum,
                            progress=self.progress,
                        ),
                    )
                break
            except QbrError as error:
                if attempt == COPY_ATTEMPTS or not _worth_retrying(error):
                    raise
        faultpoints.reached("snapshot.stored")
        try:
            client.delete_snapshot(collection, snapshot.name, shard_id=shard_id)
        except QdrantError as error:
            if error.status != 404:
                raise
        faultpoints.reached("snapshot.deleted")
        self._forget_node_snapshot(entry)
        return digest, key

    def _do_commit_set(self, action: Action) -> dict[str, Any]:
        p = action.params
        repo = self.connections.repository(p["repository"])
        key = set_key(p["backup"], p["set_id"])
        if repo.head(key) is not None:
            raise PreconditionError(f"set {p['backup']}/{p['set_id']} already exists; run qbr plan again")
        newest = _newest_set_id(repo, p["backup"])
        if newest != action.precondition.get("newest_set"):
            raise PreconditionError(
                f"another run made set {newest} of backup {p['backup']} since this plan; run qbr plan again"
            )
        collections: dict[str, CollectionRecord] = {}
        for name, copy_ids in p["copied"].items():
            outputs = [self.outputs[i] for i in copy_ids]
            archives = tuple(
                sorted((_archive_from(o["archive"]) for o in outputs), key=lambda a: a.shard_ids)
            )
            config = outputs[0]["config"]
            params = config.get("params") or {}
            collections[name] = CollectionRecord(
                name=name,
                points_count=int(outputs[0]["points_count"]),
                config=config,
                config_sha256=config_digest(config),
                aliases=tuple(p["aliases"].get(name, ())),
                shard_number=int(params.get("shard_number") or 1),
                qdrant_version=p["qdrant_version"],
                copied_in=p["set_id"],
                archives=archives,
            )
        for name, raw in p["carried"].items():
            carried = SetRecord.from_dict(
                {"backup": p["backup"], "set_id": p["set_id"], "created": p["created"], "cluster": p["cluster"],
                 "qdrant_version": p["qdrant_version"], "collections": {name: raw}}
            ).collections[name]
            for archive in carried.archives:
                head = repo.head(archive.key)
                if head is None or head.size != archive.size:
                    raise PreconditionError(
                        f"archive {archive.key} that set {p['set_id']} would reference is missing; run qbr plan again"
                    )
            collections[name] = CollectionRecord(
                **{**asdict(carried), "aliases": tuple(p["aliases"].get(name, carried.aliases)), "archives": carried.archives}
            )
        record = SetRecord(
            backup=p["backup"],
            set_id=p["set_id"],
            created=p["created"],
            cluster=p["cluster"],
            qdrant_version=p["qdrant_version"],
            collections=dict(sorted(collections.items())),
            completed=utc_iso(self.clock()),
            qbr_version=__version__,
        )
        faultpoints.reached("set.before_write")
        repo.put_bytes(key, record.to_json(), if_none_match=True)
        faultpoints.reached("set.written")
        return {"journal": {"set": key, "collections": len(collections)}}

    # ------------------------------------------------------------ retention and garbage

    def _do_delete_set(self, action: Action) -> dict[str, Any]:
        p = action.params
        repo = self.connections.repository(p["repository"])
        key = set_key(p["backup"], p["set_id"])
        if repo.head(key) is None:
            return {"journal": {"set": key, "already_gone": True}}
        newer = [
            parsed[1]
            for o in repo.list(f"{SETS_PREFIX}{p['backup']}/")
            if (parsed := parse_set_key(o.key)) and parsed[1] > p["set_id"]
        ]
        if not newer:
            raise PreconditionError(
                f"set {p['backup']}/{p['set_id']} is the newest set of its backup now; it is never deleted"
            )
        faultpoints.reached("set.before_delete")
        repo.delete(key)
        faultpoints.reached("set.deleted")
        return {"journal": {"set": key}}

    def _do_delete_archive(self, action: Action) -> dict[str, Any]:
        p = action.params
        repo = self.connections.repository(p["repository"])
        for o in repo.list(SETS_PREFIX):
            if parse_set_key(o.key) is None:
                continue
            try:
                record = SetRecord.from_json(repo.get_bytes(o.key), o.key)
            except NotFoundError:
                continue
            if p["key"] in record.archive_keys():
                raise PreconditionError(
                    f"archive {p['key']} is referenced by set {record.backup}/{record.set_id}; it was kept"
                )
        faultpoints.reached("archive.before_delete")
        repo.delete(p["key"])
        faultpoints.reached("archive.deleted")
        return {"journal": {"archive": p["key"]}}

    def _do_abort_upload(self, action: Action) -> dict[str, Any]:
        p = action.params
        repo = self.connections.repository(p["repository"])
        repo.abort_upload(PendingUpload(p["key"], p["upload_id"], parse_utc(p["initiated"])))
        return {}

    def _do_delete_node_snapshot(self, action: Action) -> dict[str, Any]:
        p = action.params
        client = self.connections.client(p["cluster"], p["node"])
        if p.get("name"):  # None: only the record is left, the snapshot is gone (or was never made)
            with self._snapshot_lock_for(p["node"], p["collection"], p.get("shard_id")):
                try:
                    client.delete_snapshot(p["collection"], p["name"], shard_id=p.get("shard_id"))
                except QdrantError as error:
                    if error.status != 404:
                        raise
        faultpoints.reached("node_snapshot.deleted")
        self._forget_node_snapshot(p["record"] if "record" in p else dict(p))
        return {}

    # ------------------------------------------------------------ restores

    def _do_restore_collection(self, action: Action) -> dict[str, Any]:
        from qbr.restore import forget_incomplete_if_untouched, restore_collection

        try:
            return restore_collection(self, action)
        except QbrError:
            forget_incomplete_if_untouched(self, action)
            raise

    def _do_update_aliases(self, action: Action) -> dict[str, Any]:
        p = action.params
        faultpoints.reached("aliases.before_update")
        self.connections.seed(p["cluster"]).update_aliases(p["actions"])
        faultpoints.reached("aliases.updated")
        return {"journal": {"aliases": len(p["actions"])}}


def _archive_from(raw: dict[str, Any]) -> ArchiveRecord:
    return ArchiveRecord(**{**raw, "shard_ids": tuple(raw["shard_ids"])})


def _newest_set_id(repo: Any, backup: str) -> str | None:
    ids = [parsed[1] for o in repo.list(f"{SETS_PREFIX}{backup}/") if (parsed := parse_set_key(o.key))]
    return max(ids) if ids else None


def _worth_retrying(error: QbrError) -> bool:
    """A transfer cut short or corrupted on the way is restarted; a refusal is not."""
    if isinstance(error, ChecksumError):
        return True
    if isinstance(error, QdrantError):
        return error.status is None or error.status >= 500
    return False
