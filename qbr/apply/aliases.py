"""Point a restore's aliases at the collections it restored, in one atomic alias update."""

from __future__ import annotations

from typing import Any

from qbr import faultpoints
from qbr.actions import UpdateAliases
from qbr.apply.context import ActionContext


def update_aliases(ctx: ActionContext, p: UpdateAliases, action_id: str) -> dict[str, Any]:
    faultpoints.reached("aliases.before_update")
    ctx.connections.seed(p.cluster).update_aliases(p.actions)
    faultpoints.reached("aliases.updated")
    return {"journal": {"aliases": len(p.actions)}}
