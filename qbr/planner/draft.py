"""What the planner's parts build together: the draft of a plan, and the sets it will create."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from qbr.plan import Action, Note

DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class PlannedSet:
    """A set this plan will create: what restores in the same plan can rely on."""

    backup: str
    set_id: str
    created: datetime
    commit_action: str
    copied_in: dict[str, str]  # collection -> set id whose archives it will hold
    aliases: dict[str, tuple[str, ...]]
    qdrant_version: str


@dataclass
class Draft:
    actions: list[Action] = field(default_factory=list)
    unchanged: list[Note] = field(default_factory=list)
    kept: list[Note] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    adopted: dict[str, list[str]] = field(default_factory=dict)  # backup -> set ids this plan adopts
