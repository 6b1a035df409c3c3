"""`qbr show plan.json --format markdown`: a pull-request comment that shows every kind of action,
folds long sections, and always fits GitHub's 65,536-character limit."""

from __future__ import annotations

from click.testing import CliRunner

from qbr.actions import PARAMS
from qbr.cli import cli
from qbr.plan import Action, Note, Plan
from qbr.render.markdown import COLLAPSE_AFTER, GITHUB_COMMENT_LIMIT, MARKER, render_markdown

CHANGES = ["create", "delete", "replace", "update"]


def plan_of(actions, *, unchanged=(), kept=(), warnings=()) -> Plan:
    return Plan(
        created="2026-11-21T08:00:00Z", manifest_source="qbr.yaml", manifest_sha256="0" * 64,
        state_location="s3://bucket/qbr/state.json", state_lineage="lineage", state_serial=7,
        actions=tuple(actions), unchanged=tuple(unchanged), kept=tuple(kept), warnings=tuple(warnings),
    )


def every_kind() -> Plan:
    actions = [
        Action(id=f"{kind}-1", kind=kind, change=CHANGES[i % 4], group=f"backup b{i % 3} (cluster prod -> repository main)",
               title=f"{kind} title <{i}> | with a pipe", reason=f"reason for {kind}")
        for i, kind in enumerate(sorted(PARAMS))
    ]
    unchanged = [Note("backup b0 (cluster prod -> repository main)", "collection kept_as_is", "unchanged since the last set"),
                 Note("restore dr (backup b0 -> cluster dr)", "collection docs on dr", "restored from the newest set")]
    kept = [Note("backup b0 (cluster prod -> repository main)", f"set 2026112{i}T000000Z", f"daily #{i}") for i in range(3)]
    return plan_of(actions, unchanged=unchanged, kept=kept, warnings=["only_changed cannot see in-place updates"])


def test_a_saved_plan_with_every_action_kind_renders_each_one_through_the_cli(tmp_path):
    plan = every_kind()
    (tmp_path / "plan.json").write_text(plan.to_json())
    result = CliRunner().invoke(cli, ["show", str(tmp_path / "plan.json"), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith(MARKER) and "### qbr plan: " in text
    for action in plan.actions:
        symbol = {"create": "+", "delete": "-", "replace": "~", "update": "~"}[action.change]
        assert f"{symbol} {action.title}" in text and f"because {action.reason}" in text
    assert "> [!WARNING]" in text and "only_changed cannot see in-place updates" in text
    assert "= collection kept_as_is" in text and "1 unchanged elsewhere" in text and "3 sets kept by retention" in text
    assert text.count("```diff") == 3 + 2 and text.count("```") == 2 * text.count("```diff")
    assert text.count("<details>") == text.count("</details>") == 2
    assert "serial 7" in text and "qbr apply plan.json" in text
    assert CliRunner().invoke(cli, ["show", str(tmp_path / "plan.json"), "--format", "json"]).output == plan.to_json()


def test_a_long_group_folds_into_details_and_a_fence_in_a_title_cannot_break_out():
    actions = [Action(id=f"a{i}", kind="delete_archive", change="delete", group="repository main (s3://b/p)",
                      title=f"archive {i} ``` <b>", reason="no set references it") for i in range(COLLAPSE_AFTER + 1)]
    text = render_markdown(plan_of(actions))
    assert "<summary><b>repository main (s3://b/p)</b></summary>" in text
    assert text.count("```") == 2 and "&lt;b&gt;" not in text.split("```diff")[1]  # inside the fence: text as is, fence defused


def test_a_huge_plan_fits_a_github_comment_and_says_what_it_left_out():
    actions = [
        Action(id=f"copy-{g}-{i}", kind="copy_archive", change="create", group=f"backup tier{g} (cluster prod -> repository main)",
               title=f"copy collection {'x' * 60}_{i} from node http://qdrant-{i % 7}:6333 into set 20261121T080000Z",
               reason="it is new to this backup and the reason is long " + "y" * 40)
        for g in range(5) for i in range(600)
    ]
    unchanged = [Note("backup tier0 (cluster prod -> repository main)", f"collection same_{i}", "unchanged") for i in range(2000)]
    text = render_markdown(plan_of(actions, unchanged=unchanged))
    assert len(text) <= GITHUB_COMMENT_LIMIT
    assert "3000 to create" in text and "more not shown here" in text and "2000 unchanged (not listed here)" in text
    assert text.count("```") % 2 == 0 and text.count("<details>") == text.count("</details>") == 5
    small = render_markdown(plan_of(actions[:3]))
    assert "more not shown" not in small and "<details>" not in small


def test_no_changes_says_so():
    text = render_markdown(plan_of([], unchanged=[Note("backup b (cluster c -> repository r)", "collection a", "fresh")]))
    assert "### qbr plan: no changes" in text and "No changes." in text
