"""Reading a saved plan back: JSON, checked against schemas/plan.v1.json, into `qbr.plan.Plan`.

Any defect in a plan file (edited, truncated, made by a newer qbr) is one sentence naming the
file. Plans written by earlier versions of format 1 still load.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema

from qbr.durations import format_duration
from qbr.errors import QbrError, StalePlanError
from qbr.plan import PLAN_FORMAT_VERSION, Action, Note, Plan, order_actions
from qbr.records import parse_utc

SCHEMA_PATH = Path(__file__).parent / "schemas" / "plan.v1.json"


def plan_from_dict(data: Any, where: str = "the plan") -> Plan:
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
        # `target` repeated params in plans written before qbr 0.2; apply never read it.
        Action(**{**{k: v for k, v in a.items() if k != "target"}, "depends_on": tuple(a.get("depends_on", ()))})
        for a in data["actions"]
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
        targets=tuple(data.get("targets", ())),
    )
    order_actions(plan.actions)  # rejects cycles
    return plan

def load_plan(path: str | Path) -> Plan:
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise QbrError(f"cannot read plan file {where}: {error.strerror or error}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise QbrError(f"{where} is not valid JSON (truncated or edited?); run qbr plan -o {where} again") from None
    return plan_from_dict(data, where)


def plan_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


DEFAULT_MAX_PLAN_AGE = timedelta(hours=6)


def check_plan_age(plan: Plan, now: datetime, max_age: timedelta, where: str) -> None:
    """A saved plan describes the world when it was made; applied much later it would act on a
    world that moved (and used to stamp its sets with the planning time), so it has a shelf life."""
    age = now - parse_utc(plan.created)
    if age > max_age:
        raise StalePlanError(
            f"{where} was made {format_duration(age)} ago, longer than the {format_duration(max_age)} a saved plan "
            "is trusted for (the world has moved since); run qbr plan again, or pass --max-plan-age"
        )
