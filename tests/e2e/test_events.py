"""`qbr apply --json` streams events (schemas/events.v1.json), and what qbr logs about retries
and waits reaches the user: as events with --json, on stderr with -v."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from qbr.locks import Lock, repository_target
from qbr.manifest import load_manifest
from tests.e2e.helpers import make_collection, qbr, write_manifest

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "events.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)


def events_of(stdout: str) -> list[dict]:
    """Every line is one JSON object that the schema accepts."""
    events = []
    for line in stdout.splitlines():
        event = json.loads(line)
        errors = sorted(VALIDATOR.iter_errors(event), key=str)
        assert not errors, f"{line}\n{errors[0]}"
        events.append(event)
    assert events and events[-1]["type"] == "outcome"
    return events


@pytest.fixture
def world(emulator, tmp_path):
    prod, dr = emulator(nodes=1), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=30)
    make_collection(prod.urls[0], "notes", points=4)
    write_manifest(tmp_path, f"""
version: 1
clusters: {{prod: {{url: "{prod.urls[0]}"}}, dr: {{url: "{dr.urls[0]}"}}}}
repositories: {{folder: {{path: ./backups}}}}
backups: {{nightly: {{cluster: prod, repository: folder, rpo: 1h}}}}
restores: {{replica: {{from: nightly, to: dr}}}}
""")
    return prod, tmp_path


def test_apply_json_streams_a_valid_event_per_line_in_order_and_retries_are_events(world):
    prod, folder = world
    prod.nodes[0].faults.add(method="GET", path=r"^/collections$", status=503, times=1)  # retried once
    run = qbr("apply", "--auto-approve", "--json", cwd=folder)
    assert run.exit_code == 0, run.output
    events = events_of(run.stdout)
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types.count("plan") == 1 and types.index("plan") < types.index("action_started")
    [retry] = [e for e in events if e["type"] == "retry"]
    assert retry["request"] == "GET /collections" and retry["reason"] == "503" and retry["attempt"] == 2
    plan = next(e for e in events if e["type"] == "plan")
    planned = {a["id"] for a in plan["actions"]}
    started = [e["action"] for e in events if e["type"] == "action_started"]
    finished = {e["action"]: e for e in events if e["type"] == "action_finished"}
    assert set(started) == set(finished) == planned
    for action in started:  # each action starts before it finishes
        lines = [e["type"] for e in events if e.get("action") == action]
        assert lines == ["action_started", "action_finished"], (action, lines)
    copies = [e for e in finished.values() if e["kind"] == "copy_archive"]
    assert len(copies) == 2 and all(e["status"] == "done" and e["bytes"] > 0 and e["seconds"] >= 0 for e in copies)
    outcome = events[-1]
    assert outcome["outcome"] == "complete" and outcome["exit_code"] == 0 and outcome["actions"]["done"] == len(planned)
    assert "Plan:" not in run.stdout and run.stderr == ""

    again = events_of(qbr("apply", "--auto-approve", "--json", cwd=folder).stdout)
    assert [e["type"] for e in again] == ["run_started", "plan", "outcome"] and again[-1]["outcome"] == "no_changes"


def test_retries_reach_stderr_with_verbose_and_stay_quiet_without(world):
    prod, folder = world
    prod.nodes[0].faults.add(method="GET", path=r"^/collections$", status=503, times=1)
    quiet = qbr("plan", cwd=folder)
    assert quiet.exit_code == 0 and "retrying" not in quiet.output
    prod.nodes[0].faults.add(method="GET", path=r"^/collections$", status=503, times=1)
    assert "GET /collections got 503; retrying" in qbr("plan", "-v", cwd=folder).stderr
    prod.nodes[0].faults.add(method="GET", path=r"^/collections$", status=503, times=1)
    loud = qbr("apply", "--auto-approve", "-v", cwd=folder)
    assert loud.exit_code == 0, loud.output
    [line] = [x for x in loud.stderr.splitlines() if "retrying" in x]
    assert line.startswith("qbr: ") and "GET /collections got 503; retrying in" in line and "attempt 2 of 4" in line
    assert "retrying" not in loud.stdout


def test_a_busy_lock_and_a_taken_over_lock_are_events(world, monkeypatch):
    _, folder = world
    monkeypatch.setenv("QBR_LOCK_LEASE", "1")
    dead = Lock(repository_target(load_manifest(folder / "qbr.yaml").repositories["folder"]), "apply")
    dead.acquire(0)
    dead._stop.set()  # its holder died: nobody renews it
    busy = events_of(qbr("apply", "--auto-approve", "--json", "--lock-timeout", "0", cwd=folder).stdout)
    assert [e["type"] for e in busy] == ["run_started", "error", "outcome"]
    assert busy[1]["exit_code"] == 4 and dead.info.id in busy[1]["message"] and busy[2]["outcome"] == "lock_busy"
    taken = qbr("apply", "--auto-approve", "--json", "--lock-timeout", "10s", cwd=folder)
    assert taken.exit_code == 0, taken.output
    warnings = [e["message"] for e in events_of(taken.stdout) if e["type"] == "warning"]
    assert any("took over the lock of repository folder" in w for w in warnings), warnings


def test_json_without_auto_approve_or_a_saved_plan_is_refused(world):
    _, folder = world
    run = qbr("apply", "--json", cwd=folder)
    assert run.exit_code == 1 and "--json leaves no terminal" in run.stderr and run.stdout == ""
