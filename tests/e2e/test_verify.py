"""`qbr verify` end to end: emulator backups in a local folder and in moto's S3, damaged on purpose."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from qbr.records import ArchiveRecord, CollectionRecord, SetRecord, config_digest
from qbr.repository import open_s3_repository
from qbr.repository.local import LocalRepository
from qbr.verify import ENGINE_ENV
from qbr.verify import engine as engine_module
from tests.e2e.helpers import add_tar_members, make_collection, qbr, read_sets, tar_bytes, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient
from tests.verify_engine import SELECT as EMULATOR_COUNTER

T0 = "2026-11-21T08:00:00Z"



def _folder(path: Path) -> LocalRepository:
    """A folder repository written by hand as qbr writes one: owner-only (verify reports anything looser)."""
    return LocalRepository(path, file_mode=0o600, dir_mode=0o700)

def manifest_text(prod_url: str, repo_yaml: str, *, dr_url: str | None = None, extra_backup: bool = False) -> str:
    clusters = f'  prod: {{url: "{prod_url}"}}\n'
    if dr_url:
        clusters += f'  dr: {{url: "{dr_url}"}}\n'
    extra = "  other:\n    cluster: prod\n    repository: main\n    collections: [notes]\n    rpo: 1h\n" if extra_backup else ""
    return f"""
version: 1
clusters:
{clusters}repositories:
  main:
    {repo_yaml}
backups:
  nightly:
    cluster: prod
    repository: main
    collections: [docs, notes]
    rpo: 1h
{extra}"""


def s3_repo_yaml(s3_bucket) -> str:
    endpoint, bucket = s3_bucket
    return f's3: {{bucket: {bucket}, prefix: v, endpoint_url: "{endpoint}", region: us-east-1}}'


class Backed:
    """A folder with a manifest whose backup `nightly` has one set in `repo`."""

    def __init__(self, folder: Path, repo, cluster) -> None:
        self.folder, self.repo, self.cluster = folder, repo, cluster

    @property
    def record(self) -> dict:
        [record] = [r for r in read_sets(self.repo) if r["backup"] == "nightly"]
        return record

    @property
    def set_key(self) -> str:
        return f"sets/nightly/{self.record['set_id']}.json"

    def archive(self, collection: str) -> dict:
        return self.record["collections"][collection]["archives"][0]

    def rewrite_record(self, edit) -> None:
        record = self.record
        edit(record)
        self.repo.put_bytes(f"sets/nightly/{record['set_id']}.json", json.dumps(record).encode())

    def verify(self, *args: str):
        return qbr("verify", *args, cwd=self.folder)


def backed_up(folder: Path, cluster, repo_yaml: str, repo, **manifest) -> Backed:
    write_manifest(folder, manifest_text(cluster.urls[0], repo_yaml, **manifest))
    run = qbr("apply", "--auto-approve", "--now", T0, cwd=folder)
    assert run.exit_code == 0, run.output
    return Backed(folder, repo, cluster)


@pytest.fixture
def emulator_points(monkeypatch) -> None:
    """verify --deep counts the emulator's points with the emulator's counter, as a user names one
    (Qdrant's engine, installed or not, cannot read the emulator's segments)."""
    monkeypatch.setenv(ENGINE_ENV, EMULATOR_COUNTER)


@pytest.fixture
def no_point_counter(monkeypatch) -> None:
    """As where qdrant-edge-py is not installed and QBR_DEEP_ENGINE is unset."""
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    monkeypatch.setattr(engine_module, "ENGINE_MODULE", "qbr_no_such_engine_module")


@pytest.fixture
def folder_backup(emulator, tmp_path, emulator_points) -> Backed:
    """One node: collection archives, docs over 2 shards (60 points) and notes (9 points)."""
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=60, shards=2)
    make_collection(cluster.urls[0], "notes", points=9)
    return backed_up(tmp_path, cluster, "path: ./backups", _folder(tmp_path / "backups"))


@pytest.fixture
def s3_backup(emulator, s3_bucket, tmp_path, emulator_points) -> Backed:
    """Two nodes: shard archives in moto's S3."""
    cluster = emulator(nodes=2)
    make_collection(cluster.urls[0], "docs", points=50, shards=2)
    make_collection(cluster.urls[0], "notes", points=7)
    endpoint, bucket = s3_bucket
    repo = open_s3_repository(bucket, prefix="v", endpoint_url=endpoint)
    return backed_up(tmp_path, cluster, s3_repo_yaml(s3_bucket), repo)


def test_clean_folder_repository_verifies_shallow_and_deep(folder_backup):
    set_id = folder_backup.record["set_id"]
    for args in ((), ("--deep",)):
        run = folder_backup.verify(*args)
        assert run.exit_code == 0, run.output
        assert f"set nightly/{set_id}: 2 archives OK" in run.stdout
        assert "Verified 1 set, 2 archives" in run.stdout and run.stdout.rstrip().endswith("all OK.")
    assert "deep" in run.stdout


def test_flipped_byte_is_named_with_backup_set_collection_and_archive(folder_backup):
    archive = folder_backup.archive("docs")
    path = folder_backup.folder / "backups" / archive["key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    run = folder_backup.verify()
    assert run.exit_code == 1, run.output
    set_id = folder_backup.record["set_id"]
    assert f"set nightly/{set_id}: 1 problem" in run.stdout
    assert f"backup nightly, set {set_id}, collection docs, archive {archive['key']}: has sha256" in run.stdout
    assert "its bytes changed" in run.stdout and "Traceback" not in run.output
    assert run.stdout.rstrip().endswith("1 problem.")


def test_truncated_archive_and_deleted_archive_are_each_one_line(folder_backup):
    docs, notes = folder_backup.archive("docs"), folder_backup.archive("notes")
    docs_path = folder_backup.folder / "backups" / docs["key"]
    docs_path.write_bytes(docs_path.read_bytes()[:1000])
    (folder_backup.folder / "backups" / notes["key"]).unlink()
    run = folder_backup.verify("--deep")
    assert run.exit_code == 1, run.output
    lines = [line.strip() for line in run.stdout.splitlines()]
    set_id = folder_backup.record["set_id"]
    assert f"backup nightly, set {set_id}, collection docs, archive {docs['key']}: is 1000 bytes, the set recorded {docs['size']} (truncated or altered)" in lines
    assert f"backup nightly, set {set_id}, collection notes, archive {notes['key']}: is missing from the repository" in lines
    assert sum(1 for line in lines if line.startswith("backup nightly")) == 2, "one line per problem, no tar noise"


def test_tampered_set_record_is_reported_and_fails(folder_backup):
    set_id = folder_backup.record["set_id"]
    key = folder_backup.set_key
    folder_backup.repo.put_bytes(key, folder_backup.repo.get_bytes(key).replace(b'"set_id"', b'"set_ld"', 1))
    run = folder_backup.verify()
    assert run.exit_code == 1, run.output
    assert f"set nightly/{set_id}: 1 problem" in run.stdout
    assert f"backup nightly, set {set_id}: its record {key} cannot be used" in run.stdout
    assert "Traceback" not in run.output


def test_edited_checksum_in_a_set_record_fails_on_the_archive(folder_backup):
    key = folder_backup.archive("notes")["key"]
    folder_backup.rewrite_record(lambda r: r["collections"]["notes"]["archives"][0].update(sha256="0" * 64))
    run = folder_backup.verify()
    assert run.exit_code == 1 and f"collection notes, archive {key}: has sha256" in run.stdout, run.output


def test_deep_catches_an_archive_without_config_json_that_shallow_accepts(folder_backup):
    archive = folder_backup.archive("notes")
    original = folder_backup.repo.get_bytes(archive["key"])
    with tarfile.open(fileobj=io.BytesIO(original)) as tar:
        members = [(m.name, None if m.isdir() else tar.extractfile(m).read()) for m in tar if m.name != "config.json"]
    crafted = tar_bytes(members)
    folder_backup.repo.put_bytes(archive["key"], crafted)
    folder_backup.rewrite_record(
        lambda r: r["collections"]["notes"]["archives"][0].update(size=len(crafted), sha256=hashlib.sha256(crafted).hexdigest())
    )
    assert folder_backup.verify().exit_code == 0, "size and sha256 match the (edited) record"
    run = folder_backup.verify("--deep")
    assert run.exit_code == 1, run.output
    assert f"collection notes, archive {archive['key']}: is not a whole Qdrant collection snapshot: it lacks config.json" in run.stdout


def test_deep_catches_a_points_count_the_archive_does_not_hold(folder_backup):
    archive = folder_backup.archive("docs")
    folder_backup.rewrite_record(lambda r: r["collections"]["docs"]["archives"][0].update(points_count=61))
    assert folder_backup.verify().exit_code == 0
    run = folder_backup.verify("--deep")
    assert run.exit_code == 1, run.output
    assert f"archive {archive['key']}: holds 60 points (lines of segments/points.jsonl), the set recorded 61" in run.stdout


def test_without_a_point_counter_deep_says_the_points_were_not_counted(folder_backup, no_point_counter):
    folder_backup.rewrite_record(lambda r: r["collections"]["docs"]["archives"][0].update(points_count=61))
    run = folder_backup.verify("--deep")
    assert run.exit_code == 0, run.output
    assert "holds 60 points" not in run.stdout
    assert ("2 archives hold Qdrant segment data whose points were not counted: "
            "install qdrant-edge-py (pip install 'qbr[deep]') to open them with Qdrant's engine") in run.stdout
    assert run.stdout.rstrip().endswith("all OK.")


def test_a_point_counter_that_cannot_be_loaded_is_a_sentence(folder_backup, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "qbr_no_such_module:Counter")
    assert folder_backup.verify().exit_code == 0, "only the deep check counts points"
    run = folder_backup.verify("--deep")
    assert run.exit_code == 1
    assert run.stderr.startswith("Error: QBR_DEEP_ENGINE=qbr_no_such_module:Counter cannot be loaded (ModuleNotFoundError")
    assert "Traceback" not in run.output


def test_backup_option_limits_the_check_and_unknown_names_are_a_sentence(emulator, tmp_path):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=5)
    make_collection(cluster.urls[0], "notes", points=3)
    backed = backed_up(tmp_path, cluster, "path: ./backups", _folder(tmp_path / "backups"), extra_backup=True)
    other = [r for r in read_sets(backed.repo) if r["backup"] == "other"][0]
    (tmp_path / "backups" / other["collections"]["notes"]["archives"][0]["key"]).unlink()
    assert backed.verify().exit_code == 1
    run = backed.verify("--backup", "nightly")
    assert run.exit_code == 0 and "set other/" not in run.stdout and "Verified 1 set" in run.stdout, run.output
    run = backed.verify("--backup", "weekly")
    assert run.exit_code == 1
    assert run.stderr.strip() == "Error: backup weekly is not in the manifest (backups: nightly, other); name one of them with --backup"


def test_s3_repository_with_shard_archives_clean_then_a_flipped_byte(s3_backup):
    run = s3_backup.verify("--deep")
    assert run.exit_code == 0, run.output
    set_id = s3_backup.record["set_id"]
    assert f"set nightly/{set_id}: 3 archives OK" in run.stdout
    archive = s3_backup.record["collections"]["docs"]["archives"][1]
    assert archive["kind"] == "shard"
    data = bytearray(s3_backup.repo.get_bytes(archive["key"]))
    data[-700] ^= 0xFF
    s3_backup.repo.put_bytes(archive["key"], bytes(data))
    run = s3_backup.verify()
    assert run.exit_code == 1, run.output
    assert f"backup nightly, set {set_id}, collection docs, archive {archive['key']}: has sha256" in run.stdout


def _collections(url: str) -> list[str]:
    with QdrantClient(url) as client:
        return client.list_collections()


def test_restore_test_passes_and_leaves_only_what_was_there(folder_backup, emulator):
    dr = emulator(nodes=1)
    make_collection(dr.urls[0], "keep", points=4)
    write_manifest(folder_backup.folder, manifest_text(folder_backup.cluster.urls[0], "path: ./backups", dr_url=dr.urls[0]))
    state_before = (folder_backup.folder / ".qbr" / "state.json").read_bytes()
    run = folder_backup.verify("--restore-test", "dr")
    assert run.exit_code == 0, run.output
    set_id = folder_backup.record["set_id"]
    assert f"restore test nightly/{set_id}, collection docs on cluster dr: 60 points OK" in run.stdout
    assert f"restore test nightly/{set_id}, collection notes on cluster dr: 9 points OK" in run.stdout
    assert _collections(dr.urls[0]) == ["keep"]
    assert len(dr.points("keep")) == 4
    created = [r[1] for r in dr.nodes[0].requests if "qbr_verify_" in r[1]]
    assert created, "the restores went to temporary collections"
    assert (folder_backup.folder / ".qbr" / "state.json").read_bytes() == state_before, "no restore provenance written"


def test_restore_test_fails_naming_the_collection_when_the_recorded_count_is_wrong(s3_backup, emulator):
    dr = emulator(nodes=1)
    write_manifest(s3_backup.folder, manifest_text(s3_backup.cluster.urls[0], s3_repo_yaml_from(s3_backup), dr_url=dr.urls[0]))
    s3_backup.rewrite_record(lambda r: r["collections"]["notes"].update(points_count=8))
    run = s3_backup.verify("--restore-test", "dr")
    assert run.exit_code == 1, run.output
    set_id = s3_backup.record["set_id"]
    assert f"restore test nightly/{set_id}, collection docs on cluster dr: 50 points OK" in run.stdout
    [line] = [line for line in run.stdout.splitlines() if "collection notes on cluster dr" in line]
    assert "has 7 points" in line and "recorded 8" in line
    assert _collections(dr.urls[0]) == [], "temporary collections are deleted on failure too"
    assert "X-Amz" not in run.output and "Traceback" not in run.output
    assert any(r[1].endswith("/recover") for r in dr.nodes[0].requests), "S3 restore tests recover from a URL"


def s3_repo_yaml_from(backed: Backed) -> str:
    repo = backed.repo
    return f's3: {{bucket: {repo.bucket}, prefix: v, endpoint_url: "{repo.endpoint}", region: us-east-1}}'


def test_restore_test_into_an_unknown_cluster_is_a_sentence(folder_backup):
    run = folder_backup.verify("--restore-test", "nowhere")
    assert run.exit_code == 1
    assert run.stderr.strip() == "Error: cluster nowhere is not in the manifest (clusters: prod); name one of them"


# ---------------------------------------------------------------- Qdrant's engine (optional)


@pytest.fixture(scope="module")
def edge_shard_dir(tmp_path_factory) -> Path:
    """A real shard made by Qdrant's engine: 37 points, flushed."""
    edge = pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is optional (pip install 'qbr[deep]'); CI installs .[test] only")
    folder = tmp_path_factory.mktemp("edge") / "shard"
    config = edge.EdgeConfig(vectors=edge.EdgeVectorParams(size=4, distance=edge.Distance.Cosine), wal_enabled=False)
    shard = edge.EdgeShard.create(str(folder), config)
    shard.update(edge.UpdateOperation.upsert_points(
        [edge.Point(id=i, vector=[0.1 * i, 0.2, 0.3, 0.4], payload={"n": i}) for i in range(1, 38)]
    ))
    shard.flush()
    assert shard.count(edge.CountRequest(exact=True)) == 37
    shard.close()
    return folder


def _shard_members(shard_dir: Path, prefix: str, scratch: Path) -> list[tuple[str, Path | bytes | None]]:
    """Qdrant's shard snapshot layout: replica state, shard config, segments as nested tars."""
    members: list[tuple[str, Path | bytes | None]] = [
        (f"{prefix}replica_state.json", b'{"is_local": true}'),
        (f"{prefix}shard_config.json", b'{"type": "ReplicaSet"}'),
        (f"{prefix}segments", None),
    ]
    for segment in sorted((shard_dir / "segments").iterdir()):
        nested = scratch / f"{segment.name}.tar"
        if not nested.exists():
            with tarfile.open(nested, "w", format=tarfile.GNU_FORMAT) as tar:
                tar.add(segment, arcname=".")
        members.append((f"{prefix}segments/{segment.name}.tar", nested))
    return members


def _write_tar(path: Path, members) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        add_tar_members(tar, members)


def test_deep_counts_a_real_shard_with_qdrants_engine(edge_shard_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)  # installed, Qdrant's engine counts by default
    set_id = "20261121T080000Z"
    repo = _folder(tmp_path / "backups")
    shard_tar, collection_tar = tmp_path / "shard.snapshot", tmp_path / "collection.snapshot"
    _write_tar(shard_tar, _shard_members(edge_shard_dir, "", tmp_path))
    _write_tar(collection_tar, [("version.info", b"0.4.2"), ("config.json", b"{}"), ("0", None)]
               + _shard_members(edge_shard_dir, "0/", tmp_path))
    archives = {}
    for collection, kind, path in (("sharded", "shard", shard_tar), ("whole", "collection", collection_tar)):
        key = f"snapshots/{collection}/nightly.{set_id}.{path.name}"
        with path.open("rb") as handle:
            repo.put_stream(key, iter(lambda: handle.read(1 << 20), b""))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        archives[collection] = ArchiveRecord(key, os.path.getsize(path), digest, kind, (0,), "http://127.0.0.1:6333", 37)

    def store(points_count: int) -> None:
        record = SetRecord(
            backup="nightly", set_id=set_id, created=T0, cluster="prod", qdrant_version="1.19.0",
            collections={
                name: CollectionRecord(name, points_count, {}, config_digest({}), (), 1, "1.19.0", set_id,
                                       (ArchiveRecord(**{**a.__dict__, "points_count": points_count}),))
                for name, a in archives.items()
            },
        )
        repo.put_bytes(f"sets/nightly/{set_id}.json", record.to_json())

    write_manifest(tmp_path, manifest_text("http://127.0.0.1:9", "path: ./backups"))
    store(37)
    run = qbr("verify", "--deep", cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert f"set nightly/{set_id}: 2 archives OK" in run.stdout
    assert "not counted" not in run.stdout

    store(36)
    assert qbr("verify", cwd=tmp_path).exit_code == 0, "only the deep check opens the shard"
    run = qbr("verify", "--deep", cwd=tmp_path)
    assert run.exit_code == 1, run.output
    for name in ("sharded", "whole"):
        assert (f"collection {name}, archive {archives[name].key}: holds 37 points (counted by Qdrant's engine), "
                "the set recorded 36") in run.stdout
