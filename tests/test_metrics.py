"""qbr.metrics' pure core: what each run measures replaces its metrics whole, the rest is carried
over, and series of backups or restores gone from the manifest are dropped."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from qbr.manifest import load_manifest_text
from qbr.metrics import ActionRun, ApplyRun, build, key, owner, read_previous, write
from qbr.plan import Action

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)
MANIFEST = load_manifest_text(
    """
version: 1
clusters: {prod: {url: "http://q:6333"}}
repositories: {folder: {path: ./b}}
backups: {nightly: {cluster: prod, repository: folder, rpo: 1h}, hourly: {cluster: prod, repository: folder, rpo: 1h}}
""",
    "qbr.yaml",
    Path("/tmp"),
    env={},
)
NIGHTLY = {"backup": "nightly", "repository": "folder", "cluster": "prod"}
HOURLY = {**NIGHTLY, "backup": "hourly"}


def copy(backup: str) -> Action:
    return Action(id=f"copy-{backup}", kind="copy_archive", change="create", group=f"backup {backup} (cluster prod -> repository folder)",
                  title="copy", reason="due", params={"backup": backup})


def test_an_apply_updates_only_the_backups_it_attempted_and_keeps_the_last_success_it_did_not_beat():
    previous = {
        key("qbr_backup_last_success_timestamp_seconds", **NIGHTLY): 100.0,
        key("qbr_backup_last_attempt_timestamp_seconds", **NIGHTLY): 100.0,
        key("qbr_backup_last_attempt_timestamp_seconds", **HOURLY): 50.0,
        key("qbr_apply_last_success_timestamp_seconds"): 100.0,
        key("qbr_backup_last_attempt_timestamp_seconds", backup="gone", repository="folder", cluster="prod"): 1.0,
        key("qbr_verify_problems"): 2.0,
    }
    started = NOW - timedelta(minutes=1)
    run = ApplyRun(started, NOW, "incomplete", [ActionRun(copy("nightly"), "failed", started, NOW, 10)])
    samples = build(MANIFEST, previous, NOW, apply=run)
    assert samples[key("qbr_backup_last_attempt_timestamp_seconds", **NIGHTLY)] == started.timestamp()
    assert samples[key("qbr_backup_last_success_timestamp_seconds", **NIGHTLY)] == 100.0
    assert samples[key("qbr_backup_copied_bytes", **NIGHTLY)] == 10
    assert samples[key("qbr_backup_last_attempt_timestamp_seconds", **HOURLY)] == 50.0  # not attempted: carried over
    assert samples[key("qbr_apply_last_success_timestamp_seconds")] == 100.0
    assert samples[key("qbr_apply_last_outcome", outcome="incomplete")] == 1 and samples[key("qbr_apply_last_outcome", outcome="complete")] == 0
    assert samples[key("qbr_verify_problems")] == 2.0  # another command's metric: carried over
    assert not [k for k in samples if ("backup", "gone") in k[1]]  # no longer in the manifest


def test_a_complete_apply_moves_the_last_success_and_skipped_actions_are_no_attempt():
    run = ApplyRun(NOW - timedelta(seconds=5), NOW, "complete", [ActionRun(copy("hourly"), "skipped", None, NOW)])
    samples = build(MANIFEST, {}, NOW, apply=run)
    assert samples[key("qbr_apply_last_success_timestamp_seconds")] == NOW.timestamp()
    assert key("qbr_backup_last_attempt_timestamp_seconds", **HOURLY) not in samples
    assert owner(copy("hourly")) == ("backup", "hourly")


def test_the_file_round_trips_through_prometheus_text(tmp_path):
    samples = build(MANIFEST, {}, NOW, locks={"state": NOW, "repository/folder": None})
    write(str(tmp_path / "qbr.prom"), samples)
    assert read_previous(str(tmp_path / "qbr.prom")) == samples
    assert read_previous(str(tmp_path / "missing.prom")) == {}
    (tmp_path / "bad.prom").write_text("not { prometheus")
    assert read_previous(str(tmp_path / "bad.prom")) == {}
