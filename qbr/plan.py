"""The plan as data: frozen actions that round-trip through JSON unchanged, and their rendering.

A saved plan is applied later, elsewhere, by another process (Terraform's lesson), so nothing
in it depends on memory of the planning run: each action carries its kind, target, reason,
dependencies, the precondition apply re-checks, and the parameters apply needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from qbr import __version__
from qbr.errors import QbrError

PLAN_FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schemas" / "plan.v1.json"

# How each kind of change is drawn, Terraform-style.
SYMBOLS = {"create": "+", "delete": "-", "replace": "~", "update": "~"}
COLORS = {"create": "green", "delete": "red", "replace": "yellow", "update": "yellow", "unchanged": None}


@dataclass(frozen=True)
class Action:
    id: str
    kind: str
    change: str  # create | delete | replace | update
    group: str  # "backup nightly", "restore dr", ...
    title: str  # one line for people: what this action does
    reason: str  # why it exists
    target: dict[str, Any] = field(default_factory=dict)
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
            "summary": self.summary(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @staticmethod
    def from_dict(data: Any, where: str = "the plan") -> "Plan":
        """Parse and validate a saved plan; any defect is one sentence naming the file."""
        if not isinstance(data, dict):
            raise QbrError(f"{where} is not a qbr plan (expected a JSON object)")
        version = data.get("format_version")
        if isinstance(version, int) and version > PLAN_FORMAT_VERSION:
            raise QbrError(f"{where} was made by a newer qbr (plan format {version}); upgrade qbr or plan again")
        validator = jsonschema.Draft202012Validator(plan_schema())
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            location = "/".join(str(p) for p in error.absolute_path) or "top level"
            raise QbrError(f"{where} is not a valid qbr plan ({location}: {error.message}); run qbr plan again")
        actions = tuple(
            Action(**{**a, "depends_on": tuple(a.get("depends_on", ()))}) for a in data["actions"]
        )
        ids = [a.id for a in actions]
        if len(set(ids)) != len(ids):
            raise QbrError(f"{where} has duplicate action ids; run qbr plan again")
        for action in actions:
            missing = [d for d in action.depends_on if d not in ids]
            if missing:
                raise QbrError(f"{where}: action {action.id} depends on unknown {missing[0]}; run qbr plan again")
        plan = Plan(
            created=data["created"],
            manifest_source=data["manifest"]["source"],
            manifest_sha256=data["manifest"]["sha256"],
            state_location=data["state"]["location"],
            state_lineage=data["state"]["lineage"],
            state_serial=data["state"]["serial"],
            actions=actions,
            unchanged=tuple(Note(**n) for n in data.get("unchanged", ())),
            kept=tuple(Note(**n) for n in data.get("kept", ())),
            warnings=tuple(data.get("warnings", ())),
            qbr_version=data["qbr_version"],
            format_version=data["format_version"],
        )
        order_actions(plan.actions)  # rejects cycles
        return plan

    @staticmethod
    def load(path: str | Path) -> "Plan":
        where = str(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as error:
            raise QbrError(f"cannot read plan file {where}: {error.strerror or error}") from None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise QbrError(f"{where} is not valid JSON (truncated or edited?); run qbr plan -o {where} again") from None
        return Plan.from_dict(data, where)


def plan_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


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


# ---------------------------------------------------------------- rendering


def _paint(text: str, change: str, color: bool) -> str:
    if not color or COLORS.get(change) is None:
        return text
    import click

    return click.style(text, fg=COLORS[change])


def render_plan(plan: Plan, *, color: bool = False, verbose: bool = False) -> str:
    """Human output: actions grouped by backup/restore, then a summary line."""
    lines: list[str] = []
    groups: list[str] = []
    for group in [a.group for a in plan.actions] + [n.group for n in plan.unchanged] + (
        [n.group for n in plan.kept] if verbose else []
    ):
        if group not in groups:
            groups.append(group)
    for group in groups:
        lines.append(group)
        for action in plan.actions:
            if action.group == group:
                symbol = SYMBOLS[action.change]
                lines.append(_paint(f"  {symbol} {action.title}", action.change, color))
                lines.append(f"      because {action.reason}")
        for note in plan.unchanged:
            if note.group == group:
                lines.append(_paint(f"  = {note.title}", "unchanged", color))
                lines.append(f"      {note.reason}")
        if verbose:
            for note in plan.kept:
                if note.group == group:
                    lines.append(f"  . keep {note.title}: {note.reason}")
        lines.append("")
    for warning in plan.warnings:
        lines.append(f"Warning: {warning}")
    if plan.warnings:
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


def summary_line(plan: Plan) -> str:
    if not plan.has_changes:
        return f"No changes. The world matches the manifest ({len(plan.unchanged)} unchanged)."
    counts = plan.summary()
    return (
        f"Plan: {counts['create']} to create, {counts['replace'] + counts['update']} to replace or update, "
        f"{counts['delete']} to delete, {counts['unchanged']} unchanged."
    )
