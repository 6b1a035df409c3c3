"""The two workflows the CLI offers, wired from the pipeline's pieces: plan and apply.

load -> observe -> plan (pure) -> apply. This module only sequences them and takes the lock;
every decision lives in the planner, every effect in apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from qbr.apply import Applier, ApplyReport, Outcome
from qbr.connections import Connections
from qbr.errors import StalePlanError, UnreachableError
from qbr.locks import LockSet, lock_targets, repository_target
from qbr.manifest import Manifest
from qbr.observe import observe
from qbr.plan import Action, Plan
from qbr.planner import make_plan
from qbr.planner.targets import check_targets, needs, with_repository_hint
from qbr.state import State
from qbr.state_store import StateStore, state_lock_target
from qbr.transfer import Progress


@dataclass
class Clock:
    """The run's idea of now: the real clock, or a fixed moment given with --now (what-if runs)."""

    fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed if self.fixed is not None else datetime.now(timezone.utc)


def plan_once(
    manifest: Manifest, *, parallelism: int, now: datetime, rekey: bool = False, targets: tuple[str, ...] = ()
) -> Plan:
    """Observe the world and plan, without taking the lock or writing anything."""
    targets = check_targets(manifest, targets)
    store = StateStore(manifest.state)
    state = store.read()
    with Connections(manifest, parallelism) as connections:
        observed = observe(manifest, connections, now=now, state=state, targets=targets)
    return make_plan(manifest, observed, state, now, rekey=rekey, targets=targets)


def check_plan_fits(plan: Plan, manifest: Manifest, state: State) -> None:
    """A saved plan applies only to the manifest and state it was made from."""
    if plan.manifest_sha256 != manifest.sha256:
        raise StalePlanError(
            f"the manifest {manifest.source} changed since this plan was made; run qbr plan again"
        )
    if plan.state_location != manifest.state.describe():
        raise StalePlanError(
            f"this plan was made for the state at {plan.state_location}, not {manifest.state.describe()}; run qbr plan again"
        )
    if plan.state_lineage is not None and state.lineage != plan.state_lineage:
        raise StalePlanError(
            "this plan was made from another state lineage (a different or recreated state file); run qbr plan again"
        )
    if state.serial != plan.state_serial or (plan.state_lineage is None and state.lineage is not None):
        raise StalePlanError(
            f"the state changed since this plan was made (serial {plan.state_serial} -> {state.serial}): "
            "another apply ran; run qbr plan again"
        )


def apply_locked(
    manifest: Manifest,
    *,
    saved_plan: Plan | None,
    parallelism: int,
    lock_timeout: float,
    clock: Clock,
    confirm: Callable[[Plan], bool],
    on_plan: Callable[[Plan], None],
    on_outcome: Callable[[Outcome, Action], None],
    warn: Callable[[str], None],
    progress: Progress,
    on_event: Callable[[str, dict[str, Any]], None] = lambda kind, data: None,
    should_stop: Callable[[], bool] = lambda: False,
    should_abandon: Callable[[], bool] = lambda: False,
    rekey: bool = False,
    targets: tuple[str, ...] = (),
) -> ApplyReport | None:
    """Take the locks (the state's, then each written repository's: with --target, those the
    targeted entries use), (re)check or make the plan, confirm, run it; the locks are released
    however it ends. None when nothing ran."""
    # A saved plan brings its own targets (a manifest changed since is refused under the lock below).
    targets = saved_plan.targets if saved_plan is not None else check_targets(manifest, targets)
    store = StateStore(manifest.state)
    if targets:
        known = tuple(t for t in targets if t in manifest.backups or t in manifest.restores)
        used = sorted(needs(manifest, known).repositories)
        locks = [state_lock_target(store), *(repository_target(manifest.repositories[name]) for name in used)]
    else:
        locks = lock_targets(manifest, state_lock_target(store))
    lock = LockSet(locks, "apply", warn=warn)
    try:
        lock.acquire(lock_timeout)
    except UnreachableError as error:  # a repository that does not answer: who needs it, as plan says
        raise with_repository_hint(manifest, error, lock.failed.repository if lock.failed else None, targets) from None
    try:
        store.discard_unfinished_writes()
        state = store.read()
        with Connections(manifest, parallelism) as connections:
            if saved_plan is not None:
                check_plan_fits(saved_plan, manifest, state)
                plan = saved_plan
            else:
                now = clock()
                observed = observe(manifest, connections, now=now, state=state, targets=targets)
                plan = make_plan(manifest, observed, state, now, rekey=rekey, targets=targets)
            on_plan(plan)
            if not plan.has_changes:
                return None
            if not confirm(plan):
                return None
            applier = Applier(
                plan,
                connections,
                store,
                state,
                parallelism=parallelism,
                clock=clock,
                progress=progress,
                report=on_outcome,
                should_stop=lambda: lock.lost.is_set() or should_stop(),
                should_abandon=should_abandon,
                events=on_event,
            )
            try:
                return applier.run()
            finally:
                progress.close()
    finally:
        lock.release()
