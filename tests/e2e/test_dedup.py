"""Dedup repositories end to end through the CLI (emulator + a folder, and moto's S3): twelve sets
with small changes each restore exactly, retention and the chunk sweep leave exactly the chunks
the remaining sets name, a damaged chunk is named by verify and stops a restore before the
target is touched, `qbr export` writes the archive back, and status shows what dedup saved."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from qbr.records import SetRecord
from qbr.repository import open_local_repository, open_s3_repository
from qbr.repository.chunked import ChunkedRepository
from qbr.repository.chunks import chunk_key
from tests.e2e.helpers import all_points, make_collection, qbr, sha256_of, upsert, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
SETS = 12
SMALL_CHUNKS = {"QBR_TEST_CHUNK_SIZE": "16384"}  # the emulator's archives are kilobytes: several chunks each


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(step: int) -> datetime:
    return T0 + timedelta(hours=step)


def repo_block(kind: str, s3: tuple[str, str] | None) -> str:
    if kind == "folder":
        return "main: {path: ./backups, dedup: true, compression_level: 3}"
    endpoint, bucket = s3
    return f'main: {{s3: {{bucket: {bucket}, prefix: d, endpoint_url: "{endpoint}", region: us-east-1}}, dedup: true}}'


def manifest(prod, dr, repo: str, retention: str = "{keep_last: 50}", restores: str = "") -> str:
    return f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
  dr: {{url: "{dr.urls[0]}"}}
repositories:
  {repo}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h, retention: {retention}}}
{restores}"""


def chunked(kind: str, folder, s3) -> ChunkedRepository:
    if kind == "folder":
        return ChunkedRepository(open_local_repository(folder / "backups"))
    return ChunkedRepository(open_s3_repository(s3[1], prefix="d", endpoint_url=s3[0]))


def sets_of(repo) -> list[SetRecord]:
    return [SetRecord.from_json(repo.get_bytes(o.key), o.key) for o in repo.list("sets/")]


def referenced_chunks(repo) -> set[str]:
    return {c for o in repo.inner.list("snapshots/") if (listing := repo.read_list(o.key)) for c in listing.ids()}


def stored_chunks(repo) -> set[str]:
    return {o.key.rsplit("/", 1)[1] for o in repo.inner.list("chunks/")}


def run(*args: str, cwd, ok: bool = True):
    result = qbr(*args, cwd=cwd, env=SMALL_CHUNKS)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_twelve_dedup_sets_restore_exactly_retention_sweeps_exactly_and_damage_is_named(emulator, s3_bucket, tmp_path, kind):
    prod, dr = emulator(nodes=1), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=400)
    make_collection(prod.urls[0], "static", points=50)
    repo_text = repo_block(kind, s3_bucket)
    write_manifest(tmp_path, manifest(prod, dr, repo_text))
    expected = []
    with QdrantClient(prod.urls[0]) as client:
        for step in range(SETS):
            if step:
                upsert(client, "docs", [step * 7, 400 + step], tag=f"v{step}")  # one point changed, one added
            run("apply", "--auto-approve", "--now", iso(at(step)), cwd=tmp_path)
            expected.append(all_points(prod.urls[0], "docs"))
    repo = chunked(kind, tmp_path, s3_bucket)
    records = sorted(sets_of(repo), key=lambda r: r.set_id)
    assert len(records) == SETS
    docs = [r.collections["docs"].archives[0] for r in records]
    assert all(a.encoding == "chunks" for a in docs)
    sizes = sum(a.size for a in docs)
    assert sum(o.size for o in repo.inner.list("chunks/")) < sizes / 4, "twelve near-identical archives stored about once"

    restores = "restores:\n" + "".join(
        f"  r{i}: {{from: nightly, to: dr, at: '{iso(at(i))}', collections: {{docs: docs_{i}}}}}\n" for i in range(SETS))
    write_manifest(tmp_path, manifest(prod, dr, repo_text, restores=restores))
    plan = run("plan", "--now", iso(at(SETS)), cwd=tmp_path)
    assert "stored as deduplicated chunks, so qbr rebuilds each" in plan.stdout
    run("apply", "--auto-approve", "--now", iso(at(SETS)), cwd=tmp_path)
    for i in range(SETS):
        assert all_points(dr.urls[0], f"docs_{i}") == expected[i], f"set {i} restores exactly"

    out = tmp_path / "docs.snapshot"
    export = run("export", f"nightly/{records[3].set_id}", "docs", "-o", str(out), cwd=tmp_path)
    assert "rebuilt from chunks" in export.stdout and sha256_of(out.read_bytes()) == docs[3].sha256

    status = run("status", "--json", cwd=tmp_path, ok=False)
    backup = json.loads(status.stdout)["backups"][0]
    assert backup["stored_bytes"] < backup["unique_bytes"] and backup["dedup_ratio"] > 4
    assert "dedup:" in run("status", cwd=tmp_path, ok=False).stdout

    verify = run("verify", cwd=tmp_path)
    assert "all OK" in verify.stdout
    check = chunked(kind, tmp_path, s3_bucket)
    keys = sorted(a.key for r in records for c in r.collections.values() for a in c.archives)
    scans = check.scan_archives(keys)
    assert all(scans[k].read_error is None for k in keys)
    assert check.verify_stats["fetches"] == check.verify_stats["chunks"] == len(referenced_chunks(check))

    write_manifest(tmp_path, manifest(prod, dr, repo_text, retention="{keep_last: 3}"))
    plan = run("plan", "--now", iso(at(SETS + 1)), cwd=tmp_path)
    assert "unreferenced chunks" in plan.stdout
    run("apply", "--auto-approve", "--now", iso(at(SETS + 1)), cwd=tmp_path)
    assert len(sets_of(repo)) == 3
    assert stored_chunks(repo) == referenced_chunks(repo), "the sweep leaves exactly the chunks the remaining sets name"
    assert run("plan", "--detailed-exitcode", "--now", iso(at(SETS + 1)), cwd=tmp_path).exit_code == 0

    for index_object in list(repo.inner.list("index/")):  # the index is a cache: lost, it is made again
        repo.inner.delete(index_object.key)
    rebuilt = run("repair-index", cwd=tmp_path)
    assert f"rebuilt: {len(stored_chunks(repo))} chunks listed" in rebuilt.stdout
    assert run("plan", "--detailed-exitcode", "--now", iso(at(SETS + 1)), cwd=tmp_path).exit_code == 0

    newest = max(sets_of(repo), key=lambda r: r.set_id)
    listing = repo.read_list(newest.collections["docs"].archives[0].key)
    victim = listing.chunks[len(listing.chunks) // 2][0]
    stored = bytearray(repo.inner.get_bytes(chunk_key(victim)))
    stored[len(stored) // 2] ^= 0x01
    if kind == "folder":  # in place: the file keeps the private mode qbr gave it
        (tmp_path / "backups" / chunk_key(victim)).write_bytes(bytes(stored))
    else:
        repo.inner.put_bytes(chunk_key(victim), bytes(stored))
    verify = run("verify", cwd=tmp_path, ok=False)
    assert verify.exit_code == 1
    damaged = [line for line in verify.output.splitlines() if victim in line]
    assert any(f"set {newest.set_id}, collection docs" in line for line in damaged), verify.output
    assert all("backup nightly, set " in line and "collection docs" in line and "damaged" in line for line in damaged)

    write_manifest(tmp_path, manifest(prod, dr, repo_text, retention="{keep_last: 3}",
                                      restores="restores:\n  again: {from: nightly, to: dr, collections: {docs: docs_new}}\n"))
    failed = run("apply", "--auto-approve", "--now", iso(at(SETS + 1)), cwd=tmp_path, ok=False)
    assert failed.exit_code != 0 and victim in failed.output, failed.output
    with QdrantClient(dr.urls[0]) as client:
        assert not client.collection_exists("docs_new"), "nothing was created on the target"


def test_object_lock_protects_every_chunk_a_locked_set_names_and_the_sweep_never_deletes_a_locked_chunk(emulator, lock_bucket, tmp_path):
    from tests.s3_fixture import s3_client

    endpoint, bucket = lock_bucket
    base = datetime.now(timezone.utc).replace(microsecond=0)  # locks are judged by moto in real time
    prod, dr = emulator(nodes=1), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=400)
    repo_text = (f'main: {{s3: {{bucket: {bucket}, prefix: d, endpoint_url: "{endpoint}", region: us-east-1}}, dedup: true, '
                 "object_lock: {mode: governance}}")
    write_manifest(tmp_path, manifest(prod, dr, repo_text, retention="{within: 7d}"))
    run("apply", "--auto-approve", "--now", iso(base), cwd=tmp_path)
    with QdrantClient(prod.urls[0]) as client:
        upsert(client, "docs", [3, 400], tag="v1")
    run("apply", "--auto-approve", "--now", iso(base + timedelta(hours=2)), cwd=tmp_path)

    client = s3_client(endpoint)
    repo = ChunkedRepository(open_s3_repository(bucket, prefix="d", endpoint_url=endpoint))
    records = sorted(sets_of(repo), key=lambda r: r.set_id)
    assert len(records) == 2
    for record in records:
        until = client.head_object(Bucket=bucket, Key=f"d/sets/nightly/{record.set_id}.json")["ObjectLockRetainUntilDate"]
        for archive in record.collections["docs"].archives:
            for chunk in repo.read_list(archive.key).ids():
                head = client.head_object(Bucket=bucket, Key=f"d/{chunk_key(chunk)}")
                assert head.get("ObjectLockMode") == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] >= until, chunk
    chunk = next(iter(repo.read_list(records[0].collections["docs"].archives[0].key).ids()))
    version = client.list_object_versions(Bucket=bucket, Prefix=f"d/{chunk_key(chunk)}")["Versions"][0]["VersionId"]
    with pytest.raises(client.exceptions.ClientError):
        client.delete_object(Bucket=bucket, Key=f"d/{chunk_key(chunk)}", VersionId=version)

    # An operator removes the older set by force (governance bypass): the chunks only it named are
    # unreferenced but still locked, so the sweep keeps them and says so.
    only_old = {c for a in records[0].collections["docs"].archives for c in repo.read_list(a.key).ids()} - referenced_chunks_of(
        repo, records[1])
    assert only_old
    for key in [f"d/sets/nightly/{records[0].set_id}.json", *(f"d/{a.key}" for a in records[0].collections["docs"].archives)]:
        for v in client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
            client.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"], BypassGovernanceRetention=True)
    write_manifest(tmp_path, manifest(prod, dr, repo_text, retention="{within: 7d}").replace("rpo: 1h", "rpo: 1000d"))
    later = iso(base + timedelta(days=2))  # past the grace period: unreferenced, but locked for days yet
    plan = run("plan", "--now", later, cwd=tmp_path)
    assert "unreferenced chunks" not in plan.stdout, plan.output
    run("apply", "--auto-approve", "--now", later, cwd=tmp_path)
    assert only_old <= stored_chunks(repo), "a locked chunk is never deleted"

    # A sweep that meets a lock anyway (planned before the lock was seen) keeps the chunks and indexes them again.
    from qbr.repository.chunk_gc import sweep
    from qbr.repository.chunk_index import read_index_files

    done = sweep(repo, set(only_old), [], relist=False, locked=True)
    assert done["chunks_locked"] == len(only_old) and done["chunks_deleted"] == 0
    assert only_old <= stored_chunks(repo)
    assert only_old <= {c for f in read_index_files(repo.inner)[0] for c in f.chunks}


def referenced_chunks_of(repo, record) -> set[str]:
    return {c for c_ in record.collections.values() for a in c_.archives for c in repo.read_list(a.key).ids()}


def test_only_changed_carries_an_unchanged_collection_in_a_dedup_repository(emulator, tmp_path):
    prod, dr = emulator(nodes=1), emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=100)
    text = manifest(prod, dr, repo_block("folder", None)).replace("rpo: 1h,", "rpo: 1h, only_changed: true,")
    write_manifest(tmp_path, text)
    run("apply", "--auto-approve", "--now", iso(at(0)), cwd=tmp_path)
    second = run("apply", "--auto-approve", "--now", iso(at(2)), cwd=tmp_path)
    assert "0 collections copied, 1 referenced" in second.stdout, second.output
    assert "missing from the repository" not in second.stdout
