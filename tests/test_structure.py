"""The shape of the house: the planner imports only pure code, no import cycles inside qbr/,
no module past ~450 lines, and files written by an earlier qbr still load."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qbr.actions import params_of
from qbr.plan_file import load_plan
from qbr.records import SetRecord
from qbr.state import State

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qbr"
WRITTEN_BEFORE = Path(__file__).parent / "fixtures" / "written-by-b4d2d13"
MAX_LINES = 460


def test_importing_the_planner_loads_no_client_no_store_and_no_parser():
    code = (
        "import sys, qbr.planner, qbr.retention, qbr.world, qbr.state, qbr.plan, qbr.actions; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'httpx', 'botocore', 'boto3', 'click', 'yaml', 'jsonschema', 'pyrage', 'pyfastcdc', 'zstandard', 'blake3'} or m in "
        "{'qbr.state_store', 'qbr.qdrant', 'qbr.connections', 'qbr.observe', 'qbr.repository'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the qbr modules it imports at module level (not inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qbr"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("qbr")}
        package = name.rpartition(".")[0]
        graph[name] = {m for m in found if m in modules and m != name and m != package}
    return graph


def test_no_import_cycle_inside_qbr():
    graph = _imports()
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(name):] + (name,)))
        if name in done:
            return
        for child in sorted(graph.get(name, ())):
            visit(child, trail + (name,))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())
    assert len(graph) > 20  # the walk saw the package


def test_no_module_is_past_the_size_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize("name", ["plan-first.json", "plan-later.json"])
def test_plans_written_by_an_earlier_qbr_still_load_with_typed_params(name):
    plan = load_plan(WRITTEN_BEFORE / name)
    raw = json.loads((WRITTEN_BEFORE / name).read_text())
    assert [a.id for a in plan.actions] == [a["id"] for a in raw["actions"]]
    for action, before in zip(plan.actions, raw["actions"], strict=True):
        typed = params_of(action.kind, action.params, action.id)
        assert typed is not None and action.precondition == before["precondition"]
    assert {a.kind for a in plan.actions} >= ({"copy_archive", "commit_set", "restore_collection", "update_aliases"}
                                            if name == "plan-first.json" else {"delete_set", "delete_archive"})


def test_set_records_and_state_written_by_an_earlier_qbr_still_load():
    records = [SetRecord.from_json(p.read_bytes(), p.name) for p in sorted(WRITTEN_BEFORE.glob("set-*.json"))]
    assert [r.set_id for r in records] == ["20261101T000000Z", "20261101T020000Z"]
    assert records[1].collections["docs"].copied_in == "20261101T000000Z" and records[0].collections["docs"].points_count == 10
    state = State.from_json((WRITTEN_BEFORE / "state.json").read_bytes(), "state.json")
    assert state.restores["dr"]["docs"]["set_id"] == "20261101T000000Z" and state.serial > 0
