"""The plan as data: frozen actions that round-trip through JSON unchanged.

A saved plan is applied later, elsewhere, by another process (Terraform's lesson), so nothing
in it depends on memory of the planning run: each action carries its kind, reason,
dependencies, the precondition apply checks, and the typed parameters apply needs
(`qbr.actions`). Reading a saved plan back is `qbr.plan_file`; drawing it is `qbr.render.plan`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from qbr import __version__
from qbr.errors import QbrError

PLAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Action:
    id: str
    kind: str
    change: str  # create | delete | replace | update
    group: str  # "backup nightly", "restore dr", ...
    title: str  # one line for people: what this action does
    reason: str  # why it exists
    depends_on: tuple[str, ...] = ()
    precondition: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    """Something the plan looked at and left alone (=), or keeps (retention), with why."""

    group: str
    title: str
    reason: str


@dataclass(frozen=True)
class Plan:
    created: str
    manifest_source: str
    manifest_sha256: str
    state_location: str
    state_lineage: str | None
    state_serial: int
    actions: tuple[Action, ...] = ()
    unchanged: tuple[Note, ...] = ()
    kept: tuple[Note, ...] = ()
    warnings: tuple[str, ...] = ()
    qbr_version: str = __version__
    format_version: int = PLAN_FORMAT_VERSION
    targets: tuple[str, ...] = ()  # --target: the only backups and restores this plan covers

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "replace": 0, "update": 0, "delete": 0}
        for action in self.actions:
            counts[action.change] += 1
        counts["unchanged"] = len(self.unchanged)
        return counts

    def action(self, action_id: str) -> Action:
        for action in self.actions:
            if action.id == action_id:
                return action
        raise KeyError(action_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "qbr_version": self.qbr_version,
            "created": self.created,
            "manifest": {"source": self.manifest_source, "sha256": self.manifest_sha256},
            "state": {"location": self.state_location, "lineage": self.state_lineage, "serial": self.state_serial},
            "actions": [
                {**asdict(a), "depends_on": list(a.depends_on)} for a in self.actions
            ],
            "unchanged": [asdict(n) for n in self.unchanged],
            "kept": [asdict(n) for n in self.kept],
            "warnings": list(self.warnings),
            **({"targets": list(self.targets)} if self.targets else {}),
            "summary": self.summary(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def order_actions(actions: tuple[Action, ...]) -> list[Action]:
    """Actions in an order where every dependency comes first; a cycle is an error."""
    by_id = {a.id: a for a in actions}
    done: set[str] = set()
    visiting: set[str] = set()
    ordered: list[Action] = []

    def visit(action: Action) -> None:
        if action.id in done:
            return
        if action.id in visiting:
            raise QbrError(f"the plan has a dependency cycle through action {action.id}; run qbr plan again")
        visiting.add(action.id)
        for dep in action.depends_on:
            if dep in by_id:
                visit(by_id[dep])
        visiting.discard(action.id)
        done.add(action.id)
        ordered.append(action)

    for action in actions:
        visit(action)
    return ordered


