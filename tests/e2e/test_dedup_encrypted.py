"""Dedup with encryption end to end through the CLI (emulator + a folder, and moto's S3): chunk
names are keyed hashes (never the plain BLAKE3 of a chunk), chunks are compressed then encrypted
(no payload byte in clear anywhere), a second set stores only its new chunks, every set restores
exactly with the identity alone, a backup without the chunk key or with another one is refused
before anything is written, verify checks the stored chunks without the identity and names a
damaged one, and changed recipients are refused in one sentence."""

from __future__ import annotations

import json
import secrets
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import blake3
import pyrage
import pytest

from qbr.records import SetRecord
from qbr.repository import open_local_repository, open_s3_repository
from qbr.repository.chunked import ChunkedRepository
from qbr.repository.chunks import Codec, chunk_key
from tests.e2e.helpers import all_points, make_collection, qbr, sha256_of, upsert, write_manifest
from tests.qdrant_testing import TestingClient as Client
from tests.s3_fixture import s3_client
from tests.verify_engine import SELECT as EMULATOR_COUNTER

MARKER = "qbr-marker-" + secrets.token_hex(8)
SMALL_CHUNKS = {"QBR_TEST_CHUNK_SIZE": "16384"}
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(*args: str, cwd: Path, ok: bool = True, env: dict[str, str] | None = None):
    result = qbr(*args, cwd=cwd, env={**SMALL_CHUNKS, **(env or {})})
    if ok:
        assert result.exit_code == 0, result.output
    return result


def manifest(source, target, repository: str, recipients: list[str], restores: str = "") -> str:
    listed = ", ".join(f'"{r}"' for r in recipients)
    return f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}"}}
  dr: {{url: "{target.urls[0]}"}}
repositories:
  main:
    {repository}
    dedup: true
    encryption: {{recipients: [{listed}]}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
{restores}"""


def opened(kind: str, folder: Path, s3) -> ChunkedRepository:
    inner = open_local_repository(folder / "backups") if kind == "folder" else open_s3_repository(s3[1], prefix="enc", endpoint_url=s3[0])
    return ChunkedRepository(inner)


def everything(kind: str, folder: Path, s3) -> dict[str, bytes]:
    """Every file and object qbr wrote (the repository, the state), by name."""
    found = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".key"}
    if kind == "s3":
        client = s3_client(s3[0])
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3[1]) for o in page.get("Contents", [])]
        found.update({key: client.get_object(Bucket=s3[1], Key=key)["Body"].read() for key in keys})
    return found


def chunk_names(repo: ChunkedRepository) -> set[str]:
    return {o.key.rsplit("/", 1)[1] for o in repo.inner.list("chunks/")}


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_encrypted_dedup_names_chunks_by_keyed_hash_stores_only_new_ones_and_restores_with_the_identity_alone(
        emulator, s3_bucket, tmp_path, kind):
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=1500)
    with Client(source.urls[0], backoff=0) as client:
        upsert(client, "docs", range(1500), tag=MARKER)  # the marker in every point's payload
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age.txt"
    key_file.write_text(f"{identity}\n")
    key_file.chmod(0o600)
    public = str(identity.to_public())
    repository = ("path: ./backups" if kind == "folder" else
                  f's3: {{bucket: {s3_bucket[1]}, prefix: enc, endpoint_url: "{s3_bucket[0]}", region: us-east-1}}')
    write_manifest(tmp_path, manifest(source, target, repository, [public]))
    repo = opened(kind, tmp_path, s3_bucket)

    # No chunk key yet, then another repository's key: refused in one sentence, nothing written.
    refused = run("apply", "--auto-approve", "--now", iso(T0), cwd=tmp_path, ok=False)
    assert refused.exit_code == 1 and "has no chunk key yet: run qbr chunk-key new main -o FILE" in refused.output, refused.output
    made = run("chunk-key", "new", "main", "-o", "chunk.key", cwd=tmp_path)
    assert "stored sealed to its 1 recipients" in made.stdout
    assert stat.S_IMODE((tmp_path / "chunk.key").stat().st_mode) == 0o600
    (tmp_path / "other.key").write_text(f"QBR-CHUNK-KEY-1-{secrets.token_hex(32)}\n")
    refused = run("apply", "--auto-approve", "--chunk-key", "other.key", "--now", iso(T0), cwd=tmp_path, ok=False)
    assert refused.exit_code == 1 and "other.key is not repository main's chunk key" in refused.output, refused.output
    assert not list(repo.inner.list("snapshots/")) and not list(repo.inner.list("chunks/")) and not list(repo.inner.list("sets/"))

    # Two sets: the second stores only the chunks that changed (the key from the environment).
    run("apply", "--auto-approve", "--chunk-key", "chunk.key", "--now", iso(T0), cwd=tmp_path)
    first = chunk_names(repo)
    with Client(source.urls[0], backoff=0) as client:
        upsert(client, "docs", [7, 1500], tag=MARKER + "-v2")
    run("apply", "--auto-approve", "--now", iso(T0 + timedelta(hours=2)), cwd=tmp_path,
        env={"QBR_CHUNK_KEY_FILE": str(tmp_path / "chunk.key")})
    expected = [None, all_points(source.urls[0], "docs")]
    records = sorted((SetRecord.from_json(repo.get_bytes(o.key), o.key) for o in repo.list("sets/")), key=lambda r: r.set_id)
    archives = [r.collections["docs"].archives[0] for r in records]
    assert len(records) == 2 and all(a.encoding == "chunks" and a.encryption is not None for a in archives)
    second = repo.read_list(archives[1].key)
    added = chunk_names(repo) - first
    assert second.keyed and 0 < len(added) <= len(second.ids()) // 2, "the second set stored only its new chunks"

    # Nothing in clear: no marker in any object or file, no chunk named by the plain BLAKE3 of its bytes.
    key = bytes.fromhex((tmp_path / "chunk.key").read_text().split("QBR-CHUNK-KEY-1-")[1].strip())
    for where, content in everything(kind, tmp_path, s3_bucket).items():
        assert MARKER.encode() not in content, f"the payload marker is in clear in {where}"
        assert key.hex().encode() not in content and key not in content, f"the chunk key is in {where}"
    status = run("status", cwd=tmp_path, ok=False)
    assert status.exit_code in (0, 3) and "dedup:" in status.stdout, status.output
    codec = Codec()
    for name in chunk_names(repo):
        stored = repo.inner.get_bytes(chunk_key(name))
        assert stored.startswith(b"age-encryption.org/v1\n"), name
        plain = codec.decode(pyrage.decrypt(stored, [identity]), name, ids=None)
        assert blake3.blake3(plain).hexdigest() != name and blake3.blake3(plain, key=key).hexdigest() == name

    # verify without the identity checks every stored chunk; with it, --deep rebuilds every archive.
    assert "all OK" in run("verify", cwd=tmp_path).stdout
    deep = run("verify", "--deep", "--identity", str(key_file), cwd=tmp_path, env={"QBR_DEEP_ENGINE": EMULATOR_COUNTER})
    assert "all OK" in deep.stdout  # the emulator's archives are JSON lines: its counter counts them

    # Restores: refused without the identity before the target is touched; with it alone (no chunk key), exact.
    restores = "restores:\n" + "".join(
        f"  r{i}: {{from: nightly, to: dr, at: '{iso(T0 + timedelta(hours=2 * i))}', collections: {{docs: docs_{i}}}}}\n"
        for i in range(2))
    write_manifest(tmp_path, manifest(source, target, repository, [public], restores=restores).replace("rpo: 1h", "rpo: 1000d"))
    refused = run("apply", "--auto-approve", "--now", iso(T0 + timedelta(hours=3)), cwd=tmp_path, ok=False)
    assert refused.exit_code == 1 and "needs the private key" in refused.output, refused.output
    assert Client(target.urls[0], backoff=0).list_collections() == []
    run("apply", "--auto-approve", "--identity", str(key_file), "--now", iso(T0 + timedelta(hours=3)), cwd=tmp_path)
    assert all_points(target.urls[0], "docs_1") == expected[1]
    assert len(all_points(target.urls[0], "docs_0")) == 1500

    # The key object lost: the identity still restores (export), and qbr chunk-key new --from stores it again.
    got = run("chunk-key", "get", "main", "-o", "got.key", "--identity", str(key_file), cwd=tmp_path)
    assert "written to got.key" in got.stdout and (tmp_path / "got.key").read_text() == (tmp_path / "chunk.key").read_text()
    repo.inner.delete("keys/chunk-id.json")
    out = tmp_path / "docs.snapshot"
    run("export", f"nightly/{records[1].set_id}", "docs", "-o", str(out), "--identity", str(key_file), cwd=tmp_path)
    assert sha256_of(out.read_bytes()) == archives[1].sha256
    run("chunk-key", "new", "main", "--from", "chunk.key", cwd=tmp_path)

    # A flipped byte in an encrypted chunk: verify names it without the identity.
    victim = second.chunks[len(second.chunks) // 2][0]
    stored = bytearray(repo.inner.get_bytes(chunk_key(victim)))
    stored[len(stored) // 2] ^= 0x01
    if kind == "folder":
        (tmp_path / "backups" / chunk_key(victim)).write_bytes(bytes(stored))
    else:
        repo.inner.put_bytes(chunk_key(victim), bytes(stored))
    verify = run("verify", cwd=tmp_path, ok=False)
    assert verify.exit_code == 1 and any(victim in line and "damaged" in line for line in verify.output.splitlines()), verify.output

    # Other recipients: chunks are never encrypted again, so the backup is refused in one sentence.
    other = str(pyrage.x25519.Identity.generate().to_public())
    write_manifest(tmp_path, manifest(source, target, repository, [public, other]))
    refused = run("apply", "--auto-approve", "--chunk-key", "chunk.key", "--now", iso(T0 + timedelta(hours=9)), cwd=tmp_path, ok=False)
    assert refused.exit_code == 1 and "chunks are encrypted to other recipients than the manifest lists" in refused.output, refused.output
    rekey = run("plan", "--rekey", cwd=tmp_path)
    assert "2 sets are encrypted for other recipients, and a dedup repository's chunks are shared" in rekey.output, rekey.output
    assert "encrypt again" not in rekey.output
    assert json.loads(repo.inner.get_bytes("keys/chunk-id.json"))["check"]


def test_a_plain_dedup_repository_that_declares_encryption_is_rekeyed_into_keyed_encrypted_chunks(emulator, tmp_path):
    base = datetime.now(timezone.utc).replace(microsecond=0)  # garbage is judged by the objects' real times
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=600)
    with Client(source.urls[0], backoff=0) as client:
        upsert(client, "docs", range(600), tag=MARKER)
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age.txt"
    key_file.write_text(f"{identity}\n")
    plain = manifest(source, target, "path: ./backups", [str(identity.to_public())])
    write_manifest(tmp_path, plain.replace("    encryption: {recipients: [", "    # encryption: {recipients: ["))
    run("apply", "--auto-approve", "--now", iso(base), cwd=tmp_path)
    repo = opened("folder", tmp_path, None)
    (record,) = [SetRecord.from_json(repo.get_bytes(o.key), o.key) for o in repo.list("sets/")]
    assert not repo.read_list(record.collections["docs"].archives[0].key).keyed

    write_manifest(tmp_path, plain.replace("rpo: 1h", "rpo: 1000d"))
    run("chunk-key", "new", "main", "-o", "chunk.key", cwd=tmp_path)
    run("rekey", "--auto-approve", "--identity", str(key_file), cwd=tmp_path)
    run("apply", "--auto-approve", "--now", iso(base + timedelta(days=3)), cwd=tmp_path)  # the plain archives and chunks are swept
    assert not any(MARKER.encode() in content for content in everything("folder", tmp_path, None).values())
    (record,) = [SetRecord.from_json(repo.get_bytes(o.key), o.key) for o in repo.list("sets/")]
    assert repo.read_list(record.collections["docs"].archives[0].key).keyed
    assert all(repo.inner.get_bytes(chunk_key(c)).startswith(b"age-encryption.org/v1\n") for c in chunk_names(repo))
    restore = "restores:\n  dr: {from: nightly, to: dr}\n"
    write_manifest(tmp_path, plain.replace("rpo: 1h", "rpo: 1000d") + restore)
    run("apply", "--auto-approve", "--identity", str(key_file), "--now", iso(base + timedelta(days=3)), cwd=tmp_path)
    assert all_points(target.urls[0], "docs") == all_points(source.urls[0], "docs")


def test_rekeying_a_locked_dedup_repository_locks_the_new_encrypted_chunks_as_long_as_the_set(emulator, lock_bucket, tmp_path):
    endpoint, bucket = lock_bucket
    base = datetime.now(timezone.utc).replace(microsecond=0)  # locks are judged by moto in real time
    source, target = emulator(nodes=1), emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=600)
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "age.txt").write_text(f"{identity}\n")
    repository = (f's3: {{bucket: {bucket}, prefix: enc, endpoint_url: "{endpoint}", region: us-east-1}}\n'
                  "    object_lock: {mode: governance}")
    text = manifest(source, target, repository, [str(identity.to_public())]).replace("rpo: 1h}", "rpo: 1h, retention: {within: 7d}}")
    write_manifest(tmp_path, text.replace("    encryption: {recipients: [", "    # encryption: {recipients: ["))
    run("apply", "--auto-approve", "--now", iso(base), cwd=tmp_path)
    write_manifest(tmp_path, text.replace("rpo: 1h", "rpo: 1000d"))
    run("chunk-key", "new", "main", "-o", "chunk.key", cwd=tmp_path)
    run("rekey", "--auto-approve", "--identity", str(tmp_path / "age.txt"), cwd=tmp_path)

    client = s3_client(endpoint)
    repo = ChunkedRepository(open_s3_repository(bucket, prefix="enc", endpoint_url=endpoint))
    (record,) = [SetRecord.from_json(repo.get_bytes(o.key), o.key) for o in repo.list("sets/")]
    until = client.head_object(Bucket=bucket, Key=f"enc/sets/nightly/{record.set_id}.json")["ObjectLockRetainUntilDate"]
    listing = repo.read_list(record.collections["docs"].archives[0].key)
    assert listing.keyed
    for chunk in listing.ids():
        head = client.head_object(Bucket=bucket, Key=f"enc/{chunk_key(chunk)}")
        assert head.get("ObjectLockMode") == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] >= until, chunk
