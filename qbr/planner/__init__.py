"""make_plan(manifest, observed, state, now) -> Plan. Pure: no I/O, no clock, no randomness.

Nearly all of qbr's decisions live here: which backups are due, which collections are
copied and which carried by reference, which sets retention deletes and which archives
garbage collection sweeps, which restore targets are (re)recovered and from which set.
"""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from datetime import datetime, timedelta

from qbr.errors import PlanError
from qbr.manifest import Manifest
from qbr.plan import Action, Plan
from qbr.planner.adoption import plan_adoptions
from qbr.planner.backups import describe_config_change, plan_backup
from qbr.planner.draft import DEFAULT_GRACE, Draft, PlannedSet
from qbr.planner.garbage import plan_retention
from qbr.planner.node_cleanup import plan_node_snapshot_cleanup
from qbr.planner.rekey import plan_rekeys
from qbr.planner.restores import plan_restore, version_refusal
from qbr.planner.targets import is_targeted, targets_note
from qbr.records import utc_iso
from qbr.state import State
from qbr.world import Observed, version_tuple

__all__ = ["DEFAULT_GRACE", "PlannedSet", "describe_config_change", "make_plan", "version_refusal"]


def make_plan(
    manifest: Manifest,
    observed: Observed,
    state: State,
    now: datetime,
    *,
    grace: timedelta = DEFAULT_GRACE,
    rekey: bool = False,
    targets: tuple[str, ...] = (),
) -> Plan:
    """Diff the manifest against the observed world and the state; return what apply must do.
    With `rekey`: only encrypting sets again for their repository's current recipients. With
    `targets` (--target): only those backups and restores, nothing repository-wide."""
    # The cyclic garbage collector would walk the whole observed world again and again while the
    # plan allocates (superlinear at 10,000 collections); nothing here makes reference cycles.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _make_plan(manifest, observed, state, now, grace=grace, rekey=rekey, targets=targets)
    finally:
        if paused:
            gc.enable()


def _make_plan(
    manifest: Manifest, observed: Observed, state: State, now: datetime, *, grace: timedelta, rekey: bool,
    targets: tuple[str, ...] = (),
) -> Plan:
    draft = Draft()
    if targets:
        draft.warnings.append(targets_note(manifest, targets))
    if rekey:
        plan_rekeys(draft, manifest, observed)  # with targets: the repositories they use
        return _finish(draft, manifest, state, now, targets)
    if not targets:
        plan_adoptions(draft, manifest, observed)  # first: a backup's commit must know the sets adopted beside it
    planned: dict[str, PlannedSet] = {}
    for backup in manifest.backups.values():
        planned_set = plan_backup(draft, manifest, backup, observed, now) if is_targeted(targets, backup.name) else None
        if planned_set is not None:
            planned[backup.name] = planned_set
    selected_by_restores: dict[tuple[str, str], list[str]] = {}
    for restore in manifest.restores.values():
        if is_targeted(targets, restore.name):
            plan_restore(draft, manifest, restore, observed, state, planned, now, selected_by_restores)
    if not targets:  # repository-wide work needs every backup's and restore's view
        for repo_name in sorted({b.repository for b in manifest.backups.values()}):
            plan_retention(draft, manifest, observed.repositories[repo_name], planned, selected_by_restores, now, grace)
        plan_node_snapshot_cleanup(draft, observed, state)
    for cluster in manifest.clusters.values():
        seen = observed.clusters.get(cluster.name)
        if cluster.snapshot_storage is not None and seen is not None and version_tuple(seen.version) < (1, 19, 0):
            draft.warnings.append(
                f"cluster {cluster.name} stores snapshots in S3 and runs Qdrant {seen.version}: before 1.19.0 a crafted "
                "snapshot name could read or delete any object of that bucket (GHSA-p9c2-9vq2-gxh8); upgrade it"
            )
        if not cluster.tls.verify and cluster.name in observed.clusters:
            draft.warnings.append(
                f"cluster {cluster.name}: TLS certificates are NOT verified (tls.verify: false): anyone on the path can "
                "read the API key and the data; give its CA in tls.ca_bundle instead"
            )
    return _finish(draft, manifest, state, now, targets)


def _finish(draft: Draft, manifest: Manifest, state: State, now: datetime, targets: tuple[str, ...] = ()) -> Plan:
    if len(draft.refusals) == 1:
        raise PlanError(draft.refusals[0])  # the CLI says "Error: " before a one-line message
    if draft.refusals:
        raise PlanError("\n".join(f"Error: {r}" for r in draft.refusals))
    return Plan(
        created=utc_iso(now),
        manifest_source=manifest.source,
        manifest_sha256=manifest.sha256,
        state_location=manifest.state.describe(),
        state_lineage=state.lineage,
        state_serial=state.serial,
        actions=tuple(_as_json_data(a) for a in draft.actions),
        unchanged=tuple(draft.unchanged),
        kept=tuple(draft.kept),
        warnings=tuple(draft.warnings),
        targets=tuple(targets),
    )


def _as_json_data(action: Action) -> Action:
    """Actions hold JSON-native data only (lists, not tuples), so a saved plan reads back equal."""
    return replace(
        action,
        precondition=json.loads(json.dumps(action.precondition)),
        params=json.loads(json.dumps(action.params)),
    )
