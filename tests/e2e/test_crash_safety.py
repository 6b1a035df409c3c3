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
from dataclasses import replace

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
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "alive", run.stderr
    killed = subprocess.run(
        [sys.executable, "-c", "import qbr.faultpoints as f\nf.reached('x')\nf.reached('x')\nprint('alive')"],
        cwd=REPO_ROOT, env={**env, faultpoints.KILL_ENV: "x:2"}, capture_output=True, text=True,
    )
    assert killed.returncode == -9 and killed.stdout == ""
    with pytest.raises(ValueError, match="is not <point>:<n>"):
        faultpoints._parse("x:0")
    assert faultpoints._parse("a:2, b:1:0.5") == {"a": (2, 0.0), "b": (1, 0.5)}


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
