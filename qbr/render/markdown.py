"""A plan drawn as GitHub-flavoured Markdown, for a pull-request comment: `qbr show plan.json
--format markdown`.

One heading with the summary, then per backup or restore a ```diff block (GitHub colours + and -)
holding each action and why; groups longer than COLLAPSE_AFTER lines, the unchanged notes and the
kept sets fold into <details>. The whole text stays under GitHub's 65,536-character limit for a
comment: when it would not, the notes go first, then each group keeps its first lines and says how
many more there are (the plan artifact has them all). Pure: a Plan in, a string out.
"""

from __future__ import annotations

from qbr.plan import Action, Note, Plan
from qbr.render.plan import SYMBOLS, summary_line

GITHUB_COMMENT_LIMIT = 65_536
MARKER = "<!-- qbr plan -->"  # lets a workflow find (and update) its own comment
COLLAPSE_AFTER = 12  # lines of a group shown open; longer groups fold into <details>


def _code(text: str) -> str:
    """Text safe inside a fenced block: no fence can be closed from inside it."""
    return text.replace("```", "'''").replace("\r", " ").replace("\n", " ")


def _html(text: str) -> str:
    """Text safe in HTML (a <summary>) and in Markdown prose."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _action_lines(action: Action) -> list[str]:
    return [f"{SYMBOLS[action.change]} {_code(action.title)}", f"#   because {_code(action.reason)}"]


def _note_lines(note: Note, mark: str) -> list[str]:
    return [f"{mark} {_code(note.title)}", f"#   {_code(note.reason)}"]


def _block(title: str, lines: list[str], *, collapse: bool, open_limit: int | None = None) -> list[str]:
    shown = lines if open_limit is None else lines[:open_limit]
    hidden = len(lines) - len(shown)
    body = ["```diff", *shown, "```"]
    if hidden:
        body.append(f"_… and {hidden // 2} more not shown here: `qbr show plan.json` lists them all._")
    if not collapse:
        return [f"#### {_html(title)}", "", *body, ""]
    return ["<details>", f"<summary><b>{_html(title)}</b></summary>", "", *body, "", "</details>", ""]


def _groups(plan: Plan) -> list[str]:
    order: list[str] = []
    for group in [a.group for a in plan.actions] + [n.group for n in plan.unchanged]:
        if group not in order:
            order.append(group)
    return order


def render_markdown(plan: Plan, *, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    """The plan as Markdown of at most `limit` characters."""
    for per_group, notes in ((None, True), (None, False), (200, False), (40, False), (10, False), (0, False)):
        text = _render(plan, per_group=per_group, notes=notes)
        if len(text) <= limit:
            return text
    return text[: limit - 200].rsplit("\n", 1)[0] + "\n\n_(cut to fit a comment: see the plan artifact)_\n"


def _render(plan: Plan, *, per_group: int | None, notes: bool) -> str:
    counts = plan.summary()
    verdict = "no changes" if not plan.has_changes else (
        f"{counts['create']} to create, {counts['replace'] + counts['update']} to replace or update, {counts['delete']} to delete"
    )
    out = [
        MARKER,
        f"### qbr plan: {verdict}",
        "",
        f"{_html(summary_line(plan))}",
        "",
        f"<sub>Made {_html(plan.created)} by qbr {_html(plan.qbr_version)} from `{_code(plan.manifest_source)}`, "
        f"for the state at `{_code(plan.state_location)}` (serial {plan.state_serial}). "
        "Applied exactly as shown by `qbr apply plan.json`, which refuses it if the state moved since.</sub>",
        "",
    ]
    for warning in plan.warnings:
        out += ["> [!WARNING]", f"> {_html(warning)}", ""]
    by_group: dict[str, list[str]] = {}
    for action in plan.actions:
        by_group.setdefault(action.group, []).extend(_action_lines(action))
    notes_of: dict[str, list[str]] = {}
    for note in plan.unchanged if notes else ():
        notes_of.setdefault(note.group, []).extend(_note_lines(note, "="))
    for group in _groups(plan):
        lines, unchanged = by_group.get(group, []), notes_of.get(group, [])
        if not lines:
            continue
        if notes:
            lines += unchanged
        limit = None if per_group is None else per_group * 2
        out += _block(group, lines, collapse=len(lines) > COLLAPSE_AFTER * 2 or per_group is not None, open_limit=limit)
    left_alone = [line for group, lines in notes_of.items() if group not in by_group for line in lines]
    if plan.unchanged and notes and left_alone:
        out += _block(f"{len(left_alone) // 2} unchanged elsewhere", left_alone, collapse=True)
    elif plan.unchanged and not notes:
        out += [f"_{len(plan.unchanged)} unchanged (not listed here)._", ""]
    if plan.kept and notes:
        out += _block(f"{len(plan.kept)} sets kept by retention", [line for n in plan.kept for line in _note_lines(n, " ")], collapse=True)
    return "\n".join(out).rstrip("\n") + "\n"
