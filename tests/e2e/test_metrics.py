"""`--metrics-file`: apply, status and verify leave a Prometheus text file that says the truth,
however the run ended (a failed apply keeps the last success; a busy lock is its own outcome)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from qbr.locks import LockSet, lock_targets
from qbr.manifest import load_manifest
from qbr.metrics import CATALOGUE
from qbr.state_store import StateStore, state_lock_target
from tests.e2e.helpers import make_collection, qbr, write_manifest


def read_metrics(path) -> dict[tuple[str, tuple], float]:
    """{(name, sorted label items): value} of a metrics file, parsed by prometheus_client."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def one(metrics, name, **labels) -> float:
    found = [v for (n, ls), v in metrics.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@pytest.fixture
def world(emulator, tmp_path):
    prod, dr = emulator(nodes=1), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=40)
    make_collection(prod.urls[0], "notes", points=6)
    write_manifest(tmp_path, f"""
version: 1
clusters: {{prod: {{url: "{prod.urls[0]}"}}, dr: {{url: "{dr.urls[0]}"}}}}
repositories: {{folder: {{path: ./backups}}}}
backups: {{nightly: {{cluster: prod, repository: folder, rpo: 1h}}}}
restores: {{replica: {{from: nightly, to: dr}}}}
""")
    return prod, tmp_path


B = {"backup": "nightly", "repository": "folder", "cluster": "prod"}
R = {"restore": "replica", "backup": "nightly", "cluster": "dr"}


def test_apply_writes_every_gauge_and_a_failed_apply_keeps_the_last_success(world):
    prod, folder = world
    run = qbr("apply", "--auto-approve", "--metrics-file", "qbr.prom", cwd=folder)
    assert run.exit_code == 0, run.output
    first = read_metrics(folder / "qbr.prom")
    assert one(first, "qbr_apply_last_outcome", outcome="complete") == 1
    assert one(first, "qbr_apply_last_outcome", outcome="incomplete") == 0
    assert one(first, "qbr_apply_actions", status="done") == 5
    assert one(first, "qbr_backup_rpo_seconds", **B) == 3600
    assert one(first, "qbr_backup_sets", **B) == 1 and one(first, "qbr_backup_collections", **B) == 2
    stored = sum(p.stat().st_size for p in (folder / "backups" / "snapshots").rglob("*") if p.is_file())
    assert one(first, "qbr_backup_copied_bytes", **B) == one(first, "qbr_backup_stored_bytes", **B) == stored
    assert 0 <= one(first, "qbr_backup_newest_set_age_seconds", **B) < 60
    assert one(first, "qbr_restore_collections", **R) == 2
    assert one(first, "qbr_restore_provenance_age_seconds", collection="docs", **R) < 60
    assert one(first, "qbr_lock_held", lock="state") == 0 and one(first, "qbr_lock_held", lock="repository/folder") == 0
    success = one(first, "qbr_backup_last_success_timestamp_seconds", **B)
    assert success == one(first, "qbr_apply_last_success_timestamp_seconds") > 0

    # The next backup fails: snapshots are refused. QBR_METRICS_FILE names the file this time.
    prod.nodes[0].faults.add(method="POST", path=r"/snapshots$", status=400, times=None)
    failed = qbr("apply", "--auto-approve", "--now", "2099-01-01T00:00:00Z", cwd=folder, env={"QBR_METRICS_FILE": "qbr.prom"})
    assert failed.exit_code == 1, failed.output
    after = read_metrics(folder / "qbr.prom")
    assert one(after, "qbr_apply_last_outcome", outcome="incomplete") == 1
    assert one(after, "qbr_apply_actions", status="failed") >= 1
    assert one(after, "qbr_backup_last_success_timestamp_seconds", **B) == success
    assert one(after, "qbr_apply_last_success_timestamp_seconds") == success
    assert one(after, "qbr_backup_last_attempt_timestamp_seconds", **B) > one(first, "qbr_backup_last_attempt_timestamp_seconds", **B)
    assert one(after, "qbr_apply_last_attempt_timestamp_seconds") > one(first, "qbr_apply_last_attempt_timestamp_seconds")
    assert one(after, "qbr_backup_sets", **B) == 1


def test_a_busy_lock_is_its_own_outcome_exit_code_and_gauge(world):
    _, folder = world
    manifest = load_manifest(folder / "qbr.yaml")
    with LockSet(lock_targets(manifest, state_lock_target(StateStore(manifest.state))), "test") as held:
        held.acquire(0)
        busy = qbr("apply", "--auto-approve", "--lock-timeout", "0", "--metrics-file", "qbr.prom", cwd=folder)
        assert busy.exit_code == 4, busy.output
        metrics = read_metrics(folder / "qbr.prom")
        assert one(metrics, "qbr_apply_last_outcome", outcome="lock_busy") == 1
        assert one(metrics, "qbr_lock_held", lock="state") == 1
        assert one(metrics, "qbr_lock_held_since_timestamp_seconds", lock="state") > 0
        assert math.isinf(one(metrics, "qbr_backup_newest_set_age_seconds", **B))
        status = qbr("status", "--metrics-file", "qbr.prom", cwd=folder)
        assert status.exit_code == 3
        assert one(read_metrics(folder / "qbr.prom"), "qbr_apply_last_outcome", outcome="lock_busy") == 1  # carried over
    assert one(read_metrics(folder / "qbr.prom"), "qbr_lock_held", lock="state") == 1  # until a run looks again
    qbr("status", "--metrics-file", "qbr.prom", cwd=folder)
    assert one(read_metrics(folder / "qbr.prom"), "qbr_lock_held", lock="state") == 0


def test_status_and_verify_without_a_previous_file_take_the_last_success_from_the_repository(world):
    _, folder = world
    assert qbr("apply", "--auto-approve", cwd=folder).exit_code == 0
    status = qbr("status", "--metrics-file", "fresh.prom", cwd=folder)
    assert status.exit_code == 0, status.output
    metrics = read_metrics(folder / "fresh.prom")
    newest = one(metrics, "qbr_backup_newest_set_timestamp_seconds", **B)
    assert one(metrics, "qbr_backup_last_success_timestamp_seconds", **B) == newest > 0
    assert one(metrics, "qbr_restore_last_success_timestamp_seconds", **R) > 0
    assert not [n for n, _ in metrics if n.startswith("qbr_apply_")]  # no apply has written here yet
    verify = qbr("verify", "--metrics-file", "fresh.prom", cwd=folder)
    assert verify.exit_code == 0, verify.output
    checked = read_metrics(folder / "fresh.prom")
    assert one(checked, "qbr_verify_problems") == 0 and one(checked, "qbr_verify_read_bytes") > 0
    assert one(checked, "qbr_verify_last_success_timestamp_seconds") == one(checked, "qbr_verify_last_attempt_timestamp_seconds")
    assert one(checked, "qbr_backup_sets", **B) == 1


def test_an_unwritable_metrics_file_is_an_error_not_silence(world):
    _, folder = world
    run = qbr("status", "--metrics-file", str(folder / "missing-dir" / "qbr.prom"), cwd=folder)
    assert run.exit_code == 1 and "could not write the metrics file" in run.stderr


MONITORING = Path(__file__).resolve().parents[2] / "examples" / "monitoring"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); CI installs only the Python test extras")
    return found


def test_the_alert_rules_pass_promtool_check():
    result = subprocess.run([_promtool(), "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_fire_as_their_promtool_unit_tests_say():
    result = subprocess.run([_promtool(), "test", "rules", "alerts.test.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_alert_rules_use_is_one_qbr_writes(world):
    """Always runs (no promtool needed): the rules name only series a real metrics file holds."""
    prod, folder = world
    assert qbr("apply", "--auto-approve", "--metrics-file", "qbr.prom", cwd=folder).exit_code == 0
    assert qbr("verify", "--metrics-file", "qbr.prom", cwd=folder).exit_code == 0
    written = {name for name, _ in read_metrics(folder / "qbr.prom")}
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    used = {name for group in rules["groups"] for rule in group["rules"] for name in re.findall(r"\bqbr_[a-z_]+\b", rule["expr"])}
    assert len(used) >= 8 and used <= written, used - written
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    fed = {re.match(r"[a-z_]+", s["series"]).group(0) for t in tests["tests"] for s in t["input_series"]}
    assert fed <= written, fed - written
    assert {rule["alert"] for group in rules["groups"] for rule in group["rules"]} >= {"QbrBackupLate", "QbrApplyFailed", "QbrLockStuck"}
    readme = (MONITORING / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in CATALOGUE), "examples/monitoring/README.md lists every metric"
