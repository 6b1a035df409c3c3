"""`qbr init --from URL`: a manifest written from a live cluster validates, and its first plan
backs up every collection; an existing file is never overwritten."""

from __future__ import annotations

import json

from tests.e2e.helpers import make_collection, qbr
from tests.qdrant_testing import TestingClient as QdrantClient


def _collections_copied(plan: dict) -> set[str]:
    return {a["params"]["collection"] for a in plan["actions"] if a["kind"] == "copy_archive"}


def test_init_from_a_cluster_writes_a_valid_commented_manifest_whose_first_plan_backs_up_everything(emulator, tmp_path):
    cluster = emulator(nodes=3)
    make_collection(cluster.urls[0], "docs", points=30, shards=3)
    make_collection(cluster.urls[0], "notes", points=5)
    with QdrantClient(cluster.urls[0], backoff=0) as client:
        client.update_aliases([{"create_alias": {"collection_name": "docs", "alias_name": "docs_current"}}])
    made = qbr("init", "--from", cluster.urls[0], "--repository", "./folder", cwd=tmp_path)
    assert made.exit_code == 0, made.output
    assert "Wrote qbr.yaml: 2 collections of a 3-node Qdrant 1.19.0" in made.stdout
    text = (tmp_path / "qbr.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=qbr.schema.json\n")
    assert "docs (30 points)" in text and "notes (5 points)" in text and "docs_current -> docs" in text
    assert "3 nodes: peers are discovered" in text and "api_key: ${QDRANT_API_KEY:-}" in text
    assert json.loads((tmp_path / "qbr.schema.json").read_text())["title"].startswith("qbr manifest")
    assert qbr("validate", cwd=tmp_path).exit_code == 0
    plan = qbr("plan", "--json", cwd=tmp_path)
    assert plan.exit_code == 0, plan.output
    assert _collections_copied(json.loads(plan.stdout)) == {"docs", "notes"}

    again = qbr("init", "--from", cluster.urls[0], cwd=tmp_path)
    assert again.exit_code == 1 and "already exists" in again.stderr and "never overwrites" in again.stderr
    assert (tmp_path / "qbr.yaml").read_text() == text


def test_init_with_an_s3_repository_keeps_the_state_beside_it(emulator, s3_bucket, tmp_path, monkeypatch):
    endpoint, bucket = s3_bucket
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=8)
    made = qbr("init", "--from", cluster.urls[0], "--repository", f"s3://{bucket}/prod", "-f", "cluster.yaml", cwd=tmp_path)
    assert made.exit_code == 0, made.output
    text = (tmp_path / "cluster.yaml").read_text()
    assert 'key: "prod/state.json"' in text and f"bucket: {bucket}" in text
    monkeypatch.setenv("S3_ENDPOINT", endpoint)
    plan = qbr("plan", "-f", "cluster.yaml", "--json", cwd=tmp_path)
    assert plan.exit_code == 0, plan.output
    assert _collections_copied(json.loads(plan.stdout)) == {"docs"}


def test_init_refuses_what_it_cannot_use(tmp_path):
    assert qbr("init", "--from", "localhost:6333", cwd=tmp_path).exit_code == 1
    bad = qbr("init", "--from", "http://127.0.0.1:9", "--repository", "ftp://x/y", cwd=tmp_path)
    assert bad.exit_code == 1 and "expected s3://bucket/prefix or a folder" in bad.stderr
    down = qbr("init", "--from", "http://127.0.0.1:9", cwd=tmp_path)
    assert down.exit_code == 1 and "Traceback" not in down.output and not (tmp_path / "qbr.yaml").exists()
