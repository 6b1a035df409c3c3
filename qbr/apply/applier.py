"""apply: run a plan's actions as a dependency graph, with bounded parallelism.

Each action's precondition (data in the plan) is checked just before it acts, by one check per
kind; its outcome is journaled into the state file as it finishes. An action whose dependency
failed is skipped. Handlers live beside this module, one per kind, in the HANDLERS table; they
receive the applier as their ActionContext and nothing more.
"""

from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from qbr import __version__, faultpoints
from qbr.actions import params_of
from qbr.apply import adopt, aliases, at_rest, backup, cleanup, logical_copy, restore
from qbr.apply.chunk_sweep import sweep_chunks
from qbr.connections import Connections
from qbr.errors import QbrError
from qbr.plan import Action, Plan, order_actions
from qbr.records import utc_iso
from qbr.state import State
from qbr.state_store import StateStore
from qbr.transfer import Progress

SNAPSHOTS_PER_NODE = 2  # never more than this many snapshot creations on one node at once
STOP_POLL_SECONDS = 0.2  # how often the walk looks at should_abandon while actions run


def _no_check(ctx: Any, params: Any, precondition: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class Handler:
    check: Callable[[Any, Any, dict[str, Any]], None]
    run: Callable[[Any, Any, str], dict[str, Any]]


HANDLERS: dict[str, Handler] = {
    "copy_archive": Handler(backup.check_copy_archive, backup.copy_archive),
    "commit_set": Handler(backup.check_commit_set, backup.commit_set),
    "delete_set": Handler(cleanup.check_delete_set, cleanup.delete_set),
    "delete_archive": Handler(cleanup.check_delete_archive, cleanup.delete_archive),
    "abort_upload": Handler(_no_check, cleanup.abort_upload),
    "delete_node_snapshot": Handler(_no_check, cleanup.delete_node_snapshot),
    "restore_collection": Handler(restore.check_restore_collection, restore.restore_collection),
    "copy_collection": Handler(logical_copy.check_copy_collection, logical_copy.copy_collection),
    "update_aliases": Handler(_no_check, aliases.update_aliases),
    "adopt_set": Handler(adopt.check_adopt_set, adopt.adopt_set),
    "sweep_chunks": Handler(_no_check, sweep_chunks),
    "retain_set": Handler(_no_check, at_rest.retain_set),
    "rekey_set": Handler(at_rest.check_rekey_set, at_rest.rekey_set),
}


def run_action(ctx: Any, action: Action) -> dict[str, Any]:
    """Check an action's precondition, then carry it out (the one entry point for every kind)."""
    handler = HANDLERS[action.kind]
    params = params_of(action.kind, action.params, action.id)
    handler.check(ctx, params, action.precondition)
    return handler.run(ctx, params, action.id) or {}


@dataclass
class Outcome:
    action_id: str
    status: str  # done | failed | skipped | abandoned (still running when the run was abandoned)
    message: str = ""
    seconds: float = 0.0
    output: dict[str, Any] = field(default_factory=dict)
    trace: str = ""  # the traceback of a failure, for --debug (never journaled)


@dataclass
class ApplyReport:
    outcomes: list[Outcome] = field(default_factory=list)
    s3_requests: dict[str, dict[str, int]] = field(default_factory=dict)  # repository -> requests by kind, bytes

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> bool:
        return all(o.status == "done" for o in self.outcomes)


class NodeSlots:
    """Per-node bounds on snapshot creation and per-snapshot locks, shared by a run's actions."""

    def __init__(self, per_node: int = SNAPSHOTS_PER_NODE) -> None:
        self.per_node = per_node
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._locks: dict[tuple[str, str, int | None], threading.Lock] = {}
        self._guard = threading.Lock()

    def slot(self, node: str) -> threading.BoundedSemaphore:
        with self._guard:
            return self._slots.setdefault(node, threading.BoundedSemaphore(self.per_node))

    def lock(self, node: str, collection: str, shard_id: int | None) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((node, collection, shard_id), threading.Lock())


class Applier:
    """Carries out one plan, journaling into the state: the ActionContext of a real apply."""

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
        should_abandon: Callable[[], bool] = lambda: False,
        events: Callable[[str, dict[str, Any]], None] = lambda kind, data: None,
    ) -> None:
        self.plan = plan
        self.connections = connections
        self.store = store
        self.state = state
        self.parallelism = max(1, parallelism)
        self.clock = clock
        self.progress = progress or Progress(enabled=False)
        self.report = report
        self.should_stop = should_stop  # start nothing more; wait for the running actions
        self.should_abandon = should_abandon  # stop waiting for them too (see _abandon)
        self.events = events  # "action_started" is sent from the thread that runs the action
        self._abandoned = False
        self.outputs: dict[str, dict[str, Any]] = {}
        self._state_lock = threading.Lock()
        self._nodes = NodeSlots()
        self._references: dict[str, dict[str, str]] = {}
        self._references_lock = threading.Lock()

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
        pool = ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="qbr-apply")
        try:
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
                if self.should_abandon():
                    self._abandon(list(running.values()), pending, report)
                    return report
                finished, _ = wait(list(running), timeout=STOP_POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in finished:
                    action = running.pop(future)
                    outcome = future.result()
                    status[action.id] = outcome.status
                    self._finish(outcome, action, report)
        finally:
            pool.shutdown(wait=not self._abandoned, cancel_futures=self._abandoned)
        self.state.provenance["finished"] = utc_iso(self.clock())
        self._save()
        report.s3_requests = self.connections.s3_requests()
        return report

    def _run_one(self, action: Action) -> Outcome:
        started = time.monotonic()
        self.events("action_started", {"action": action.id, "kind": action.kind, "title": action.title, "group": action.group})
        try:
            output = run_action(self, action)
            self.outputs[action.id] = output
            return Outcome(action.id, "done", str(output.get("note", "")), time.monotonic() - started, output)
        except QbrError as error:
            return Outcome(action.id, "failed", str(error), time.monotonic() - started, trace=traceback.format_exc())
        except Exception as error:  # a bug or an unexpected library error: still one sentence
            return Outcome(action.id, "failed", f"unexpected error: {error.__class__.__name__}: {error}", time.monotonic() - started,
                           trace=traceback.format_exc())

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
            if self._abandoned:
                threading.Event().wait()  # never returns: nothing is recorded after the abandon; the process exits
            self.store.write(self.state)

    def _abandon(self, running: list[Action], pending: list[Action], report: ApplyReport) -> None:
        """Stop waiting for the running actions: journal them as abandoned (and what never started
        as skipped), write the state one last time, and from then on let no thread write it: one
        that tries waits for the process to exit, which the caller must do next (os._exit; the
        pool's threads are not waited for). They leave behind what a killed run leaves, which the
        next plan finds and converges from."""
        outcomes = [(Outcome(a.id, "abandoned", "abandoned while it ran; the next plan finds what it left"), a) for a in running]
        outcomes += [(Outcome(a.id, "skipped", "skipped: the run was abandoned"), a) for a in pending]
        with self._state_lock:
            for outcome, action in outcomes:
                report.outcomes.append(outcome)
                self.state.journal.append({"action": action.id, "kind": action.kind, "status": outcome.status,
                                           "at": utc_iso(self.clock()), "seconds": 0.0, "message": outcome.message})
            self.state.provenance.update(finished=utc_iso(self.clock()), abandoned=True)
            self.store.write(self.state)
            self._abandoned = True
        for outcome, action in outcomes:
            self.report(outcome, action)

    # ------------------------------------------------------------ ActionContext

    def now(self) -> datetime:
        return self.clock()

    def output_of(self, action_id: str) -> dict[str, Any]:
        return self.outputs[action_id]

    def snapshot_slot(self, node: str) -> threading.BoundedSemaphore:
        return self._nodes.slot(node)

    def snapshot_lock(self, node: str, collection: str, shard_id: int | None) -> threading.Lock:
        return self._nodes.lock(node, collection, shard_id)

    def remember_node_snapshot(self, entry: dict[str, Any], replacing: dict[str, Any] | None = None) -> None:
        with self._state_lock:
            if replacing is not None:
                self.state.node_snapshots = [e for e in self.state.node_snapshots if e != replacing]
            if entry not in self.state.node_snapshots:
                self.state.node_snapshots.append(entry)
        self._save()

    def forget_node_snapshot(self, entry: dict[str, Any]) -> None:
        with self._state_lock:
            self.state.node_snapshots = [e for e in self.state.node_snapshots if e != entry]

    def restore_started(self, restore: str, target: str, mark: dict[str, Any]) -> None:
        with self._state_lock:
            self.state.restores.setdefault(restore, {})[target] = mark
        self._save()

    def restore_finished(self, restore: str, target: str, provenance: dict[str, Any] | None) -> None:
        with self._state_lock:
            if provenance is not None:
                self.state.restores.setdefault(restore, {})[target] = provenance
                return
            self.state.restores.get(restore, {}).pop(target, None)
            if restore in self.state.restores and not self.state.restores[restore]:
                self.state.restores.pop(restore)

    def restore_mark(self, restore: str, target: str) -> dict[str, Any] | None:
        with self._state_lock:
            return self.state.restores.get(restore, {}).get(target)

    def archive_references(self, repository: str) -> dict[str, str]:
        with self._references_lock:
            if repository not in self._references:
                self._references[repository] = cleanup.read_archive_references(self.connections.repository(repository))
            return self._references[repository]

    def forget_archive_references(self, repository: str) -> None:
        with self._references_lock:
            self._references.pop(repository, None)
