"""Crash safety: `qbr apply` SIGKILLed at named instants loses nothing, and the next apply converges.

Each case builds a fresh world (emulator clusters, a moto S3 bucket, a local folder), starts
`qbr apply --auto-approve` as a subprocess that kills itself at the n-th time it reaches a fault
point (qbr/faultpoints.py), checks what must hold at any instant (state parses, no set record
names a missing or damaged archive, the lock's lease runs out), applies again with the same --now
and compares the result with an uninterrupted run (tests/e2e/killing.py has the details).

A sample of points runs here; `python benchmarks/kill_sweep.py` (or `pytest -m slow`) tries every
point at every occurrence.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from qbr import faultpoints
from tests.e2e.helpers import REPO_ROOT
from tests.e2e.killing import SAME_END_AS, SCENARIOS, Baseline, Bed, baseline, run_case

# (scenario, point, n, delay): the instants most likely to break a promise.
SAMPLE = [
    # a 3-node backup to S3 and a folder
    ("backup", "snapshot.created", 3, 0.0),  # Qdrant made it; its name is not in the state yet
    ("backup", "transfer.chunk", 6, 0.0),  # mid download of the 10 MiB archive
    ("backup", "s3.part_uploaded", 1, 0.0),  # mid multipart upload: a pending upload stays behind
    ("backup", "local.chunk_written", 12, 0.0),  # mid write of a local temp file
    ("backup", "set.written", 1, 0.0),  # one backup's set committed, the other's not
    # the same on nodes slow to make snapshots: killed while Qdrant works on a create it was sent
    ("slow-snapshots", "snapshot.before_create", 2, 0.15),
    # retention keep_last 1 deleting three sets and their archives
    ("retention", "set.deleted", 2, 0.0),
    ("retention", "archive.before_delete", 2, 0.0),
    # restores onto a 2-node and a 1-node cluster, if_exists skip and fail, aliases
    ("restore", "restore.before_recover", 1, 0.1),  # while the node works on a recover (0.25 s each)
    ("restore", "restore.upload_chunk", 2, 0.0),  # mid upload of a 3 MiB archive
    ("restore", "restore.collection_created", 1, 0.0),  # a target exists, empty
    ("restore", "aliases.updated", 1, 0.0),
    # a kill while cleaning up after a kill
    ("recovery", "node_snapshot.deleted", 1, 0.0),
    # a logical copy into 3 shards on 3 nodes (two collections, one custom-sharded), in batches
    ("logical-copy", "restore.copy_batch", 4, 0.0),  # some batches journaled, some maybe not yet
    # a dedup repository on S3: chunks stored, indexed and listed; retention then the chunk sweep
    ("dedup", "chunks.stored", 1, 0.0),  # a chunk stored, in no index object yet: its marker says so
    ("dedup", "chunks.indexed", 1, 0.0),  # indexed, no chunk list names it yet
    ("dedup", "chunks.list_written", 1, 0.0),  # an archive exists, its set does not
    ("dedup", "sweep.index_written", 1, 0.0),  # the index no longer lists the doomed chunks, all still stored
    ("dedup", "sweep.chunk_deleted", 1, 0.0),  # some doomed chunks deleted, some not
    # the same with encryption: the next backup reuses indexed chunks by the sha256 the index recorded
    ("dedup-encrypted", "chunks.indexed", 1, 0.0),
]


@pytest.fixture(scope="module")
def bed(s3_server, tmp_path_factory) -> Bed:
    return Bed(s3_server, tmp_path_factory.mktemp("kills"))


@pytest.fixture(scope="module")
def baselines(bed):
    """One uninterrupted run per scenario, made on first use."""
    made: dict[str, Baseline] = {}

    def get(scenario: str) -> Baseline:
        if scenario in SAME_END_AS:
            return replace(get(SAME_END_AS[scenario]), scenario=scenario)
        if scenario not in made:
            made[scenario] = baseline(bed, scenario, count=False)
        return made[scenario]

    return get


@pytest.mark.parametrize(
    "scenario,point,n,delay", SAMPLE, ids=[f"{s}-{p}-{n}" + (f"-after{d}s" if d else "") for s, p, n, d in SAMPLE]
)
def test_a_killed_apply_loses_nothing_and_the_next_apply_converges(bed, baselines, scenario, point, n, delay):
    result = run_case(bed, baselines(scenario), point, n, delay=delay)
    assert result.killed, result.report()
    assert not result.failures, result.report()
    assert "lock left behind, lease expiring" in result.findings, "the kill happened while the lock was held"


def test_the_sample_names_only_known_points_and_covers_every_scenario():
    assert {p for _, p, _, _ in SAMPLE} <= set(faultpoints.POINTS)
    assert {s for s, _, _, _ in SAMPLE} == set(SCENARIOS)


def test_fault_points_are_inert_without_the_variable_and_malformed_specs_are_refused():
    code = (
        "import qbr.faultpoints as f\n"
        "f.reached('action.journaled')\n"
        "assert f._ACTIVE is False\n"
        "print('alive')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (faultpoints.KILL_ENV, faultpoints.LOG_ENV)}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "alive", run.stderr
    killed = subprocess.run(
        [sys.executable, "-c", "import qbr.faultpoints as f\nf.reached('x')\nf.reached('x')\nprint('alive')"],
        cwd=REPO_ROOT, env={**env, faultpoints.KILL_ENV: "x:2"}, capture_output=True, text=True, check=False,
    )
    assert killed.returncode == -9 and killed.stdout == ""
    with pytest.raises(ValueError, match="is not <point>:<n>"):
        faultpoints._parse("x:0")
    assert faultpoints._parse("a:2, b:1:0.5") == {"a": (2, 0.0), "b": (1, 0.5)}


# ---------------------------------------------------------------- what the next plan makes of a kill (pure)

NODE = "http://127.0.0.1:6333"
QDRANT_OLD = "docs-7-2026-11-21-07-00-00.snapshot"  # the user's, there before qbr listed
QDRANT_NEW = "docs-7-2026-11-21-08-00-01.snapshot"  # appeared after qbr listed: qbr's


def _cleanup_plan(on_node: list[str], records: list[dict]):
    from qbr.planner import make_plan
    from qbr.records import set_id_for
    from qbr.state import State
    from qbr.world import NodeSnapshot
    from tests.test_planner import (
        NOW,
        cluster,
        collection,
        manifest,
        observed,
        repository,
        set_record,
    )

    docs = replace(collection("docs"), node_snapshots=tuple(NodeSnapshot(NODE, n) for n in on_node))
    recent = set_record(set_id_for(NOW - timedelta(hours=1)), {"docs": docs})
    result = make_plan(manifest(), observed([cluster("prod", [docs]), cluster("dr", [])], repository([recent])), State(node_snapshots=records), NOW)
    return [a for a in result.actions if a.kind == "delete_node_snapshot"], result


def _making(before: list[str]) -> dict:
    return {"cluster": "prod", "node": NODE, "collection": "docs", "shard_id": None, "name": None, "before": before}


def test_a_snapshot_whose_name_never_reached_the_state_is_found_and_only_it_is_deleted():
    record = _making([QDRANT_OLD, "theirs.snapshot"])
    actions, _ = _cleanup_plan([QDRANT_OLD, "theirs.snapshot", "uploaded-by-someone.snapshot", QDRANT_NEW], [record])
    assert [(a.params["name"], a.params["record"]) for a in actions] == [(QDRANT_NEW, record)]
    assert "before it could record its name" in actions[0].reason


def test_two_new_snapshots_are_ambiguous_so_none_is_deleted_and_the_plan_says_why():
    other = "docs-7-2026-11-21-08-00-02.snapshot"
    actions, result = _cleanup_plan([QDRANT_OLD, QDRANT_NEW, other], [_making([QDRANT_OLD])])
    assert actions == []
    assert any("cannot tell which is its own" in w and QDRANT_NEW in w and other in w for w in result.warnings)


def test_two_killed_runs_each_get_back_their_own_snapshot():
    first, second = _making([QDRANT_OLD]), _making([QDRANT_OLD, QDRANT_NEW])  # the second listed the first's
    later = "docs-7-2026-11-21-09-00-00.snapshot"
    actions, _ = _cleanup_plan([QDRANT_OLD, QDRANT_NEW, later], [first, second])
    assert sorted((a.params["name"], a.params["record"] == first) for a in actions) == [(QDRANT_NEW, True), (later, False)]


def test_records_of_snapshots_that_are_gone_are_forgotten_not_left_in_the_state_forever():
    gone = {"cluster": "prod", "node": NODE, "collection": "docs", "shard_id": None, "name": QDRANT_NEW}
    never_made = _making([QDRANT_OLD])
    actions, _ = _cleanup_plan([QDRANT_OLD], [gone, never_made])
    assert [(a.params["name"], a.params["record"]) for a in actions] == [(None, gone), (None, never_made)]
    assert all(a.title.startswith("record of") and "qbr forgets it" in a.reason for a in actions)
    assert len({a.id for a in actions}) == 2


@pytest.mark.parametrize("if_exists", ["skip", "fail", "replace"])
def test_a_target_a_killed_restore_left_half_made_is_restored_again_whatever_if_exists_says(if_exists):
    from qbr.planner import make_plan
    from qbr.state import State
    from tests.test_planner import NOW, RESTORE, _restore_world, manifest

    world, s = _restore_world(dr_collections=("docs_dr",))
    marks = {"dr-replica": {"docs_dr": {"backup": "nightly", "set_id": s.set_id, "source_collection": "docs", "incomplete": True}}}
    result = make_plan(manifest(RESTORE.replace("if_exists: replace", f"if_exists: {if_exists}")), world, State(restores=marks), NOW)
    restore = result.action("restore.dr-replica.docs_dr")
    assert restore.change == "replace" and "did not finish" in restore.reason
    untouched = make_plan(manifest(RESTORE.replace("if_exists: replace", "if_exists: skip")), world, State(), NOW)
    assert "restore.dr-replica.docs_dr" not in {a.id for a in untouched.actions}, "a collection qbr never touched is skipped"


def test_the_next_apply_discards_what_a_write_killed_before_its_rename_left_beside_the_state(tmp_path, monkeypatch):
    from qbr.manifest import StateLocation
    from qbr.state_store import StateStore

    monkeypatch.setenv("QBR_LOCK_LEASE", "5")
    folder = tmp_path / ".qbr"
    folder.mkdir()
    state_temp = folder / ".qbr-tmp-0123456789abcdef.state.json"
    old_lock_temp = folder / ".qbr-tmp-1111111111111111.state.json.lock"
    fresh_lock_temp = folder / ".qbr-tmp-2222222222222222.state.json.lock"  # maybe another acquirer, mid-write
    other = folder / ".qbr-tmp-3333333333333333.notes.json"
    for path in (state_temp, old_lock_temp, fresh_lock_temp, other):
        path.write_text("{")
    os.utime(old_lock_temp, (time.time() - 60, time.time() - 60))
    location = StateLocation(kind="path", path=folder / "state.json", bucket=None, key=None, endpoint_url=None, region=None)
    StateStore(location).discard_unfinished_writes()
    assert sorted(p.name for p in folder.iterdir()) == sorted([fresh_lock_temp.name, other.name])


@pytest.mark.slow
def test_every_point_at_every_occurrence(bed, request):
    """The full sweep (about 25 minutes): run with `pytest -m slow` or benchmarks/kill_sweep.py."""
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("the full kill sweep runs with -m slow, or as python benchmarks/kill_sweep.py")
    failures = []
    for scenario in SCENARIOS:
        base = baseline(bed, scenario)
        for point, count in sorted(base.occurrences.items()):
            for n in range(1, count + 1):
                result = run_case(bed, base, point, n)
                if result.failures or not result.killed:
                    failures.append(result.report())
    assert not failures, "\n".join(failures)
