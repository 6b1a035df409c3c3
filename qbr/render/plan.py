"""A plan drawn for people, Terraform-style: actions grouped by backup or restore, each with
its reason, then what was left alone, warnings and a summary line."""

from __future__ import annotations

import click

from qbr.plan import Plan

# How each kind of change is drawn, Terraform-style.
SYMBOLS = {"create": "+", "delete": "-", "replace": "~", "update": "~"}
COLORS = {"create": "green", "delete": "red", "replace": "yellow", "update": "yellow", "unchanged": None}



def _paint(text: str, change: str, color: bool) -> str:
    if not color or COLORS.get(change) is None:
        return text
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
