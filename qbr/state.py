"""The state file's content: what qbr remembers between runs, and its JSON.

State is small JSON: lineage, serial, restore provenance, node-local snapshots qbr made and
has not yet deleted, and the last apply's journal. Where it is kept, how it is written
atomically and how it is locked live in `qbr.state_store`; this module is plain data, so the
planner can read a State without importing any store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from qbr.errors import StateError

STATE_FORMAT_VERSION = 1
JOURNAL_LIMIT = 2000  # a journal longer than this keeps its newest entries

@dataclass
class State:
    """What qbr remembers between runs. The repository, not this, is the truth about backups."""

    lineage: str | None = None
    serial: int = 0
    restores: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    node_snapshots: list[dict[str, Any]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = STATE_FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @staticmethod
    def from_json(raw: bytes, where: str) -> "State":
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise StateError(
                f"the state file {where} is not valid JSON; restore it from a copy or move it aside "
                "(backups are safe: the repository holds them)"
            ) from None
        if not isinstance(data, dict):
            raise StateError(f"the state file {where} is not a JSON object; restore it from a copy or move it aside")
        version = data.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise StateError(f"the state file {where} has no valid format_version; it is not a qbr state file")
        if version > STATE_FORMAT_VERSION:
            raise StateError(f"the state file {where} was written by a newer qbr (format {version}); upgrade qbr")
        try:
            state = State(
                lineage=data.get("lineage"),
                serial=int(data.get("serial", 0)),
                restores={str(k): dict(v) for k, v in dict(data.get("restores") or {}).items()},
                node_snapshots=[dict(s) for s in data.get("node_snapshots") or []],
                journal=[dict(j) for j in data.get("journal") or []],
                provenance=dict(data.get("provenance") or {}),
                format_version=version,
            )
        except (TypeError, ValueError):
            raise StateError(f"the state file {where} is malformed; restore it from a copy or move it aside") from None
        if state.lineage is not None and not isinstance(state.lineage, str):
            raise StateError(f"the state file {where} has a malformed lineage")
        return state
