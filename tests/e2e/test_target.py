"""A disaster: the source cluster is gone. `qbr plan/apply --target NAME` (Terraform's -target)
plans and applies only the named entries and contacts only what they need, so a restore that
reads the repository still runs; without it, the unreachable cluster's sentence says who needs
it and suggests --target."""

from __future__ import annotations

import json
from pathlib import Path

from tests.copy_engine import SELECT as COPY_ENGINE
from tests.e2e.helpers import all_points, make_collection, qbr, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

T0 = "2026-11-21T08:00:00Z"
T1 = "2026-11-21T10:00:00Z"  # the backup is due again (rpo 1h): it would need the dead source


def manifest(folder: Path, prod, dr, restores: str = "") -> None:
    write_manifest(folder, f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
  dr: {{url: "{dr.urls[0]}"}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
{restores}""")


def backed_up_then_lost(emulator, tmp_path: Path, restores: str, *, shards: int = 1) -> tuple[object, object, dict]:
    """A set of prod's docs exists; then prod goes down for good. Returns (prod, dr, points backed up)."""
    prod, dr = emulator(nodes=1), emulator(nodes=2)
    make_collection(prod.urls[0], "docs", points=60, shards=shards)
    manifest(tmp_path, prod, dr)
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path).exit_code == 0
    points = all_points(prod.urls[0], "docs")
    manifest(tmp_path, prod, dr, restores)
    prod.stop()
    return prod, dr, points


def test_without_target_the_dead_cluster_is_named_with_who_needs_it_and_target_is_suggested(emulator, tmp_path):
    backed_up_then_lost(emulator, tmp_path, "restores:\n  recover: {from: nightly, to: dr}\n")
    plan = qbr("plan", "--now", T1, cwd=tmp_path)
    assert plan.exit_code == 1 and "Traceback" not in plan.output
    message = plan.stderr.strip()
    assert message.startswith("Error: Cannot reach Qdrant node") and message.count("\n") == 0, message
    assert "(cluster 'prod')" in message
    assert "backup nightly needs it" in message
    assert "restore recover does not: plan it alone with --target recover" in message


def test_apply_target_restores_from_the_repository_while_the_source_cluster_is_down(emulator, tmp_path):
    _, dr, points = backed_up_then_lost(emulator, tmp_path, "restores:\n  recover: {from: nightly, to: dr}\n")
    plan = qbr("plan", "--target", "recover", "--now", T1, "-o", "plan.json", cwd=tmp_path)
    assert plan.exit_code == 0, plan.output
    assert "--target recover: only restore recover is planned" in plan.stdout
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["targets"] == ["recover"]
    assert {a["group"] for a in saved["actions"]} == {"restore recover (backup nightly -> cluster dr)"}, \
        "the due backup is not planned"
    shown = qbr("show", "plan.json", cwd=tmp_path)
    assert "--target recover: only restore recover is planned" in shown.stdout

    refused = qbr("apply", "plan.json", "--target", "recover", "--now", T1, cwd=tmp_path)
    assert refused.exit_code == 1
    assert ("--target cannot be used with a saved plan, which carries its own targets (recover); "
            "apply plan.json without --target") in refused.stderr

    run = qbr("apply", "plan.json", "--now", T1, cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert all_points(dr.urls[0], "docs") == points and len(points) == 60
    again = qbr("apply", "--auto-approve", "--target", "recover", "--now", T1, cwd=tmp_path)
    assert again.exit_code == 0 and "No changes" in again.stdout, again.output


def test_target_copy_from_archive_reshards_without_the_source_and_live_copy_says_it_needs_it(emulator, tmp_path):
    _, dr, points = backed_up_then_lost(emulator, tmp_path, """restores:
  offline: {from: nightly, to: dr, topology: {shard_number: 2}, copy_from: archive}
  live: {from: nightly, to: dr, collections: {docs: docs_live}, topology: {shard_number: 2}}
""")
    env = {"QBR_COPY_ENGINE": COPY_ENGINE}
    needs_source = qbr("plan", "--target", "live", "--now", T1, cwd=tmp_path, env=env)
    assert needs_source.exit_code == 1 and "Traceback" not in needs_source.output
    assert "(cluster 'prod')" in needs_source.stderr and "restore live needs it" in needs_source.stderr

    run = qbr("apply", "--auto-approve", "--target", "offline", "--now", T1, cwd=tmp_path, env=env)
    assert run.exit_code == 0, run.output
    assert all_points(dr.urls[0], "docs") == points
    with QdrantClient(dr.urls[0]) as client:
        assert client.collection_info("docs")["config"]["params"]["shard_number"] == 2
        assert "docs_live" not in client.list_collections()


def test_an_unknown_target_is_one_sentence_with_the_names_it_could_be(emulator, tmp_path):
    backed_up_then_lost(emulator, tmp_path, "restores:\n  recover: {from: nightly, to: dr}\n")
    run = qbr("plan", "--target", "recovr", "--now", T1, cwd=tmp_path)
    assert run.exit_code == 1
    assert run.stderr.strip() == ("Error: --target recovr names no backup or restore of the manifest (did you mean "
                                  "recover?); the entries are: backup nightly, restore recover")


def test_a_saved_targeted_plan_whose_manifest_changed_is_refused_as_stale(emulator, tmp_path):
    prod, dr, _ = backed_up_then_lost(emulator, tmp_path, "restores:\n  recover: {from: nightly, to: dr}\n")
    assert qbr("plan", "--target", "recover", "--now", T1, "-o", "plan.json", cwd=tmp_path).exit_code == 0
    manifest(tmp_path, prod, dr, "restores:\n  renamed: {from: nightly, to: dr}\n")
    run = qbr("apply", "plan.json", "--now", T1, cwd=tmp_path)
    assert run.exit_code == 1 and "changed since this plan was made; run qbr plan again" in run.stderr, run.output
    with QdrantClient(dr.urls[0]) as client:
        assert client.list_collections() == []


def test_an_unreachable_repository_names_who_needs_it_and_target_plans_the_rest(emulator, tmp_path):
    prod, dr = emulator(nodes=1), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=10)
    write_manifest(tmp_path, f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
  dr: {{url: "{dr.urls[0]}"}}
repositories:
  main: {{path: ./repo}}
  far: {{s3: {{bucket: gone, endpoint_url: "http://127.0.0.1:9", region: us-east-1, max_attempts: 1, connect_timeout: 1s}}}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
  offsite: {{cluster: prod, repository: far, rpo: 1h}}
restores:
  recover: {{from: nightly, to: dr}}
""")
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    plan = qbr("plan", "--now", T0, cwd=tmp_path, env=env)
    assert plan.exit_code == 1 and "Traceback" not in plan.output
    assert plan.stderr.count("\n") == 1, plan.stderr
    assert plan.stderr.strip().endswith("; backup offsite needs it, and backup nightly and restore recover do not: "
                                        "plan them alone with --target nightly --target recover."), plan.stderr
    applied = qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path, env=env)  # it locks first: same sentence
    assert applied.exit_code == 1 and "Traceback" not in applied.output, applied.output
    assert applied.stderr.strip().endswith("plan them alone with --target nightly --target recover."), applied.stderr
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("sets/*")), "nothing was applied"
    targeted = qbr("plan", "--now", T0, "--target", "nightly", "--target", "recover", cwd=tmp_path, env=env)
    assert targeted.exit_code == 0, targeted.output
    assert "--target nightly --target recover: only backup nightly and restore recover are planned" in targeted.stdout
