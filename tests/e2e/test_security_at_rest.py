"""Security at rest, through the CLI against emulator nodes and moto's S3 over HTTP: backups
encrypted to age recipients (no payload byte in clear anywhere), restored only with an identity,
decryptable without qbr (Debian's age, or pyrage), rekeyed; SSE on every object; Object Lock
that retention follows and S3 enforces; folders private by default and verify noticing one
someone loosened."""

from __future__ import annotations

import grp
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import blake3
import pyrage
import pytest

from qbr.verify import ENGINE_ENV
from tests.e2e.helpers import all_points, make_collection, qbr, qbr_process, sha256_of, upsert, write_manifest
from tests.qdrant_testing import TestingClient as Client
from tests.s3_fixture import s3_client
from tests.verify_engine import SELECT as EMULATOR_COUNTER

MARKER = "qbr-marker-" + secrets.token_hex(8)
ALIAS = "alias_" + secrets.token_hex(6)


def _identity(folder: Path, name: str) -> tuple[Path, str, str]:
    """(identity file, its public key, its secret key) as age-keygen writes them."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    path = folder / name
    path.write_text(f"# created: by the test\n# public key: {public}\n{identity}\n")
    path.chmod(0o600)
    return path, public, str(identity)


def _ssh_public(folder: Path) -> str:
    """An ssh-ed25519 recipient (a second kind of key in the list), from ssh-keygen when there."""
    if shutil.which("ssh-keygen") is None:
        return ""
    key = folder / "ops_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@example", "-f", str(key)], check=True)
    return key.with_suffix(".pub").read_text().strip()


def _source(emulator) -> tuple:
    source = emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=40)
    with Client(source.urls[0], backoff=0) as client:
        upsert(client, "docs", range(40), tag=MARKER)  # the marker in every point's payload
        client.update_aliases([{"create_alias": {"collection_name": "docs", "alias_name": ALIAS}}])
    return source, emulator(nodes=1)


def _manifest(source, target, repository: str, recipients: list[str], restore: bool = True) -> str:
    listed = ", ".join(f'"{r}"' for r in recipients if r)
    text = f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}"}}
  dr: {{url: "{target.urls[0]}"}}
repositories:
  main:
    {repository}
    encryption: {{recipients: [{listed}]}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
"""
    if restore:
        text += "restores:\n  dr: {from: nightly, to: dr, if_exists: replace}\n"
    return text


def _bucket_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(endpoint)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_no_clear_text(found: dict[str, bytes], *needles: str) -> None:
    assert found
    for where, content in found.items():
        for needle in needles:
            assert needle.encode() not in content, f"{needle} is in clear in {where}"


def _archive_keys(objects: dict[str, bytes]) -> list[str]:
    return sorted(k for k in objects if "/snapshots/" in f"/{k}")


def _upload_and_compare(target, plain: bytes, source) -> None:
    """Qdrant gets the decrypted archive through its upload endpoint and holds the same points."""
    with Client(target.urls[0], backoff=0) as client:
        client.upload_snapshot("by_hand", lambda: _single(plain), filename="by_hand.snapshot", size=len(plain),
                               checksum=sha256_of(plain))
    assert all_points(target.urls[0], "by_hand") == all_points(source.urls[0], "docs")


class _single:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self):
        return iter([self.data])

    def __exit__(self, *exc):
        return False


def test_encrypted_s3_backup_is_opaque_restores_only_with_the_identity_and_opens_without_qbr(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    source, target = _source(emulator)
    key_file, public, secret = _identity(tmp_path, "key.txt")
    repository = (f's3: {{bucket: {bucket}, prefix: enc, endpoint_url: "{endpoint}", region: us-east-1}}\n'
                  '    sse: {mode: "aws:kms", kms_key_id: alias/qbr}')
    write_manifest(tmp_path, _manifest(source, target, repository, [public, _ssh_public(tmp_path)]))

    plan = qbr("plan", cwd=tmp_path)
    assert plan.exit_code == 0, plan.output
    assert "streamed through qbr and encrypted for the repository's age recipients" in plan.stdout
    assert "qbr streams each out of the repository, decrypts it and uploads it" in plan.stdout

    # Without the identity: the backup is made (public keys suffice), the restore stops in one
    # sentence before the target is touched.
    run = qbr("apply", "--auto-approve", cwd=tmp_path)
    assert run.exit_code == 1, run.output
    assert "needs the private key its recipients were given: pass --identity FILE or set QBR_AGE_IDENTITY_FILE" in run.output
    assert "docs" not in Client(target.urls[0], backoff=0).list_collections()
    plan = qbr("plan", cwd=tmp_path)  # plan (and status) read the encrypted sets without it; a restore refuses
    assert plan.exit_code == 1 and "is encrypted; restoring it needs the private key" in plan.output, plan.output
    assert qbr("status", cwd=tmp_path).exit_code == 0

    objects = _bucket_objects(endpoint, bucket)
    _assert_no_clear_text({**objects, **_folder_files(tmp_path / ".qbr")}, MARKER, ALIAS, '"distance"')
    head = s3_client(endpoint).head_object
    for key in objects:  # SSE on every object qbr wrote
        answer = head(Bucket=bucket, Key=key)
        assert answer.get("ServerSideEncryption") == "aws:kms" and "alias/qbr" in answer.get("SSEKMSKeyId", ""), key

    # With it: restored through the upload endpoint, point for point.
    run = qbr("apply", "--auto-approve", "--identity", str(key_file), cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert all_points(target.urls[0], "docs") == all_points(source.urls[0], "docs")
    assert ALIAS in Client(target.urls[0], backoff=0).collection_aliases("docs")

    # Without qbr: pyrage always, Debian's age when installed.
    archive = objects[_archive_keys(objects)[0]]
    plain = pyrage.decrypt(archive, [pyrage.x25519.Identity.from_str(secret)])
    assert MARKER.encode() in plain  # the scan above was looking at the right bytes
    _upload_and_compare(target, plain, source)
    _assert_no_clear_text(_folder_files(tmp_path / ".qbr"), secret, MARKER)


@pytest.mark.skipif(shutil.which("age") is None, reason="Debian's age is not installed (apt-get install age); the pyrage round trip covers the format")
def test_debians_age_decrypts_an_archive_from_the_bucket_and_qdrant_restores_it(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    source, target = _source(emulator)
    key_file, public, _ = _identity(tmp_path, "key.txt")
    repository = f's3: {{bucket: {bucket}, prefix: enc, endpoint_url: "{endpoint}", region: us-east-1}}'
    write_manifest(tmp_path, _manifest(source, target, repository, [public], restore=False))
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    objects = _bucket_objects(endpoint, bucket)
    encrypted = tmp_path / "archive.age"
    encrypted.write_bytes(objects[_archive_keys(objects)[0]])
    plain = subprocess.run(["age", "-d", "-i", str(key_file), str(encrypted)], capture_output=True, check=True).stdout
    assert MARKER.encode() in plain
    _upload_and_compare(target, plain, source)


def test_rekey_leaves_every_set_restorable_with_the_new_identity_and_none_with_the_old(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, EMULATOR_COUNTER)  # verify --deep counts the emulator's points
    source, target = _source(emulator)
    old_file, old_public, _ = _identity(tmp_path, "old.txt")
    new_file, new_public, _ = _identity(tmp_path, "new.txt")
    write_manifest(tmp_path, _manifest(source, target, "path: ./backups", [old_public], restore=False))
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert qbr("apply", "--auto-approve", "--now", later, cwd=tmp_path).exit_code == 0  # a second set
    (tmp_path / "recipients.txt").write_text(f"# the new key\n{new_public}\n")
    text = _manifest(source, target, "path: ./backups", [old_public], restore=False)
    write_manifest(tmp_path, text.replace(f'recipients: ["{old_public}"]', "recipients_file: ./recipients.txt"))

    plan = qbr("plan", "--rekey", cwd=tmp_path)
    assert plan.exit_code == 0 and plan.stdout.count("encrypt again for 1 recipients") == 2, plan.output
    assert qbr("rekey", "--auto-approve", cwd=tmp_path).exit_code == 1  # it needs the old identity to read them
    run = qbr("rekey", "--auto-approve", "--identity", str(old_file), cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert qbr("plan", "--rekey", "--detailed-exitcode", cwd=tmp_path).exit_code == 0  # every set rekeyed
    assert qbr("apply", "--auto-approve", "--now", later, cwd=tmp_path).exit_code == 0  # the old archives are swept

    assert qbr("verify", "--deep", "--identity", str(new_file), cwd=tmp_path).exit_code == 0
    old = qbr("verify", "--deep", "--identity", str(old_file), cwd=tmp_path)
    assert old.exit_code == 1 and "encrypted to other recipients" in old.output, old.output
    listed = qbr("sets", "--json", cwd=tmp_path)
    assert listed.exit_code == 0, listed.output
    # `at:` is the moment a set stands for (its first snapshot), which can be a second after its id.
    taken = sorted(s["created"] for s in json.loads(listed.stdout))
    assert len(taken) == 2
    for created in taken:
        manifest = _manifest(source, target, "path: ./backups", [new_public], restore=False).replace(
            "rpo: 1h}", "rpo: 1000d}") + f"restores:\n  dr: {{from: nightly, to: dr, if_exists: replace, at: {created}}}\n"
        write_manifest(tmp_path, manifest)
        refused = qbr("apply", "--auto-approve", "--identity", str(old_file), cwd=tmp_path)
        assert refused.exit_code == 1 and "is encrypted" in refused.output, refused.output
        run = qbr("apply", "--auto-approve", "--identity", str(new_file), cwd=tmp_path)
        assert run.exit_code == 0, run.output
        assert all_points(target.urls[0], "docs") == all_points(source.urls[0], "docs")
        Client(target.urls[0], backoff=0).delete_collection("docs")


@pytest.fixture
def lock_bucket(s3_server):
    client = s3_client(s3_server)
    bucket = f"qbr-lock-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return s3_server, bucket  # moto keeps it: locked versions cannot be emptied out


def test_object_lock_follows_retention_and_s3_refuses_a_forced_delete(emulator, lock_bucket, tmp_path):
    endpoint, bucket = lock_bucket
    source = emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=10)
    write_manifest(tmp_path, f"""
version: 1
clusters: {{prod: {{url: "{source.urls[0]}"}}}}
repositories:
  main:
    s3: {{bucket: {bucket}, prefix: locked, endpoint_url: "{endpoint}", region: us-east-1}}
    sse: {{mode: AES256}}
    object_lock: {{mode: governance}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1s, retention: {{keep_last: 1}}}}
""")
    run = qbr("apply", "--auto-approve", cwd=tmp_path)
    assert run.exit_code == 0 and "S3 Object Lock (GOVERNANCE) until" in run.output, run.output
    client = s3_client(endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="locked/")["Contents"]]
    first_set = next(k for k in keys if "/sets/" in k)
    for key in keys:
        if "/locks/" in key:
            continue
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] > datetime.now(timezone.utc), key
        assert head["ServerSideEncryption"] == "AES256", key

    # A newer set: keep_last 1 no longer keeps the first, but its lock holds, so no delete is planned.
    time.sleep(1.1)  # past the rpo of 1s
    run = qbr("apply", "--auto-approve", cwd=tmp_path)
    assert run.exit_code == 0, run.output
    plan = qbr("plan", "-v", cwd=tmp_path)
    # (a plan made more than the rpo after that apply also plans the next set: only deletes matter)
    assert "but protected by S3 Object Lock until" in plan.stdout, plan.stdout
    assert not re.search(r"^\s*- ", plan.stdout, re.M) and not re.search(r"[1-9]\d* to delete", plan.stdout), plan.stdout
    status = qbr("status", cwd=tmp_path)
    assert "protected by S3 Object Lock until" in status.stdout, status.output

    # A plan made as if the lock had ended: S3 refuses the delete, in one sentence.
    later = (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    forced = qbr("apply", "--auto-approve", "--now", later, cwd=tmp_path)
    assert forced.exit_code == 1 and "is protected by S3 Object Lock until" in forced.output, forced.output
    assert client.head_object(Bucket=bucket, Key=first_set)["ContentLength"] > 0
    version = client.list_object_versions(Bucket=bucket, Prefix=first_set)["Versions"][0]["VersionId"]
    with pytest.raises(client.exceptions.ClientError):
        client.delete_object(Bucket=bucket, Key=first_set, VersionId=version)


def test_folder_repositories_are_private_and_verify_reports_one_someone_loosened(emulator, tmp_path):
    source = emulator(nodes=1)
    make_collection(source.urls[0], "docs", points=5)
    group = grp.getgrgid(os.getgid()).gr_name
    write_manifest(tmp_path, f"""
version: 1
clusters: {{prod: {{url: "{source.urls[0]}"}}}}
repositories:
  mine: {{path: ./private}}
  shared: {{path: ./shared, group: {group}}}
backups:
  a: {{cluster: prod, repository: mine}}
  b: {{cluster: prod, repository: shared}}
""")
    old = os.umask(0o022)
    try:
        assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    finally:
        os.umask(old)
    for folder, (dir_mode, file_mode) in (("private", (0o700, 0o600)), ("shared", (0o750, 0o640))):
        for path in [tmp_path / folder, *(tmp_path / folder).rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (dir_mode if path.is_dir() else file_mode), f"{path} is {oct(mode)}"
            assert path.stat().st_gid == os.getgid()
    assert qbr("verify", cwd=tmp_path).exit_code == 0
    (tmp_path / "private" / "sets").chmod(0o755)
    run = qbr("verify", cwd=tmp_path)
    assert run.exit_code == 1 and "private/sets is 755, open to anyone" in run.stdout, run.output


# ---------------------------------------------------------------- SSE as S3 holds it


def _backed_up_and_verified_clean(tmp_path: Path, manifest: str) -> None:
    """Apply `manifest`, then verify finds nothing, SSE included: the ground the SSE tests change."""
    write_manifest(tmp_path, manifest)
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    clean = qbr("verify", cwd=tmp_path)
    assert clean.exit_code == 0 and "SSE" not in clean.output, clean.output


def _plain_manifest(source, repository: str, state: str) -> str:
    return f"""
version: 1
state: {state}
clusters:
  prod: {{url: "{source.urls[0]}"}}
repositories:
  main:
    {repository}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
"""


def test_verify_names_each_object_s3_holds_without_the_declared_sse(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    source, _ = _source(emulator)
    repository = (f's3: {{bucket: {bucket}, prefix: p, endpoint_url: "{endpoint}", region: us-east-1}}\n'
                  '    sse: {mode: "aws:kms", kms_key_id: alias/qbr}')
    state = f'{{s3: {{bucket: {bucket}, key: qbr/state.json, endpoint_url: "{endpoint}", region: us-east-1}}}}'  # shares the SSE
    _backed_up_and_verified_clean(tmp_path, _plain_manifest(source, repository, state))

    # Behind qbr's back: the record rewritten without SSE, the archive with SSE-S3, the state
    # with another KMS key; the other objects stay as qbr wrote them.
    client = s3_client(endpoint)
    objects = _bucket_objects(endpoint, bucket)
    record = next(k for k in objects if k.startswith("p/sets/"))
    archive = _archive_keys(objects)[0]
    client.put_object(Bucket=bucket, Key=record, Body=objects[record])
    client.put_object(Bucket=bucket, Key=archive, Body=objects[archive], ServerSideEncryption="AES256")
    client.put_object(Bucket=bucket, Key="qbr/state.json", Body=objects["qbr/state.json"],
                      ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/other")
    run = qbr("verify", cwd=tmp_path)
    assert run.exit_code == 1, run.output
    wanted = "where the manifest declares aws:kms with key alias/qbr; rewrite it with that SSE"
    assert f"repository main: s3://{bucket}/{record} is stored without SSE {wanted}" in run.output
    assert f"repository main: s3://{bucket}/{archive} is stored with SSE AES256 {wanted}" in run.output
    assert f"the state: s3://{bucket}/qbr/state.json is encrypted with KMS key" in run.output
    assert "alias/other where the manifest declares alias/qbr" in run.output
    assert sum("SSE" in line or "KMS key" in line for line in run.output.splitlines()) == 3, run.output


def test_a_state_in_a_bucket_of_its_own_is_written_with_its_own_sse_and_so_is_its_lock(emulator, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    source, _ = _source(emulator)
    state = (f'{{s3: {{bucket: {bucket}, key: qbr/state.json, endpoint_url: "{endpoint}", region: us-east-1, '
             'sse: {mode: "aws:kms", kms_key_id: alias/state}}}')
    write_manifest(tmp_path, _plain_manifest(source, "path: ./backups", state))
    # Killed once the first action is journaled: the state and its lock are both in the bucket.
    env = {k: v for k, v in os.environ.items() if k != "QBR_TEST_FAULTPOINTS_LOG"}
    killed = qbr_process("apply", "--auto-approve", cwd=tmp_path, env={**env, "QBR_TEST_KILL_AT": "action.journaled:1"})
    killed.communicate(timeout=120)
    assert killed.returncode != 0
    head = s3_client(endpoint).head_object
    for key in ("qbr/state.json", "qbr/state.json.lock"):
        answer = head(Bucket=bucket, Key=key)
        assert answer.get("ServerSideEncryption") == "aws:kms" and answer.get("SSEKMSKeyId", "").endswith("alias/state"), key

    s3_client(endpoint).put_object(Bucket=bucket, Key="qbr/state.json", Body=b"{}")  # rewritten without SSE
    run = qbr("verify", cwd=tmp_path)
    assert run.exit_code == 1, run.output
    assert f"the state: s3://{bucket}/qbr/state.json is stored without SSE where the manifest declares aws:kms with key alias/state" in run.output
    assert "state.json.lock" not in run.output


def test_verify_without_the_identity_finds_an_encrypted_archive_whose_stored_bytes_changed(emulator, tmp_path):
    """The stored object's digest is BLAKE3 (0.11 CPU ms/MiB here against sha256's 0.52: it is
    taken on every encrypted backup); records written with sha256 before still verify."""
    import json

    source, target = _source(emulator)
    _, public, _ = _identity(tmp_path, "key.txt")
    write_manifest(tmp_path, _manifest(source, target, "path: ./backups", [public], restore=False))
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    record_file = next((tmp_path / "backups" / "sets" / "nightly").iterdir())
    record = json.loads(record_file.read_text())
    archive = record["collections"]["docs"]["archives"][0]
    stored = (tmp_path / "backups" / archive["key"]).read_bytes()
    assert archive["stored_blake3"] == blake3.blake3(stored).hexdigest() and "stored_sha256" not in archive
    assert archive["stored_size"] == len(stored)
    clean = qbr("verify", cwd=tmp_path)  # no identity needed
    assert clean.exit_code == 0, clean.output

    path = tmp_path / "backups" / archive["key"]
    path.chmod(0o600)
    path.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))
    run = qbr("verify", cwd=tmp_path)
    assert run.exit_code == 1 and "has BLAKE3" in run.output and "(its bytes changed)" in run.output, run.output

    # A record from before (stored_sha256) is still judged by it.
    del archive["stored_blake3"]
    archive["stored_sha256"] = sha256_of(stored)
    record_file.chmod(0o600)
    record_file.write_text(json.dumps(record))
    path.write_bytes(stored)
    assert qbr("verify", cwd=tmp_path).exit_code == 0
    path.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))
    run = qbr("verify", cwd=tmp_path)
    assert run.exit_code == 1 and "has sha256" in run.output and "(its bytes changed)" in run.output, run.output


def test_an_encrypted_backup_hashes_and_encrypts_in_the_thread_that_reads(emulator, tmp_path, monkeypatch):
    """On two cores shared with the node, handing every chunk from the reader to a sha256
    thread, an age thread and a BLAKE3 thread cost more CPU than the overlap saved
    (benchmarks/encryption.py, 256 MiB: 2.07-2.42 qbr CPU ms/MiB with them, 1.68 without; age
    backup 0.77-0.78 of the plain one, 1.02 without): to age1 keys the reader hashes, encrypts
    and takes the stored BLAKE3 itself (OpenSSL and hashlib release the GIL), and the archive is
    the same age file, verified and restorable."""
    import threading

    source, target = emulator(nodes=1), emulator(nodes=1)
    source.add_synthetic_collection("docs", 3 << 20)  # past transfer.THREAD_AFTER (1 MiB)
    key, public, _ = _identity(tmp_path, "key.txt")
    write_manifest(tmp_path, _manifest(source, target, "path: ./backups", [public], restore=False))
    started: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    run = qbr("apply", "--auto-approve", cwd=tmp_path)
    monkeypatch.setattr(threading.Thread, "start", real_start)
    assert run.exit_code == 0, run.output
    assert not {"qbr-sha256", "qbr-age-encrypt", "qbr-blake3"} & set(started), started
    archive = next((tmp_path / "backups" / "snapshots" / "docs").rglob("*.snapshot"))
    stored = archive.read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n") and len(stored) > 3 << 20
    assert qbr("verify", cwd=tmp_path).exit_code == 0
    assert qbr("verify", "--deep", "--identity", str(key), cwd=tmp_path, env={ENGINE_ENV: EMULATOR_COUNTER}).exit_code == 0


def test_verify_asks_s3_how_each_chunk_of_a_dedup_repository_is_held(emulator, s3_bucket, tmp_path):
    """In a dedup repository the archive's bytes live in its chunks, so an SSE check of the chunk
    lists alone would miss the data itself."""
    endpoint, bucket = s3_bucket
    source, _ = _source(emulator)
    repository = (f's3: {{bucket: {bucket}, prefix: d, endpoint_url: "{endpoint}", region: us-east-1}}\n'
                  '    dedup: true\n    sse: {mode: AES256}')
    _backed_up_and_verified_clean(tmp_path, _plain_manifest(source, repository, "{path: ./state.json}"))

    client = s3_client(endpoint)
    objects = _bucket_objects(endpoint, bucket)
    chunks = sorted(k for k in objects if k.startswith("d/chunks/"))
    assert chunks, sorted(objects)
    client.put_object(Bucket=bucket, Key=chunks[0], Body=objects[chunks[0]])  # rewritten without SSE
    run = qbr("verify", cwd=tmp_path)
    assert run.exit_code == 1, run.output
    assert f"repository main: s3://{bucket}/{chunks[0]} is stored without SSE where the manifest declares AES256" in run.output
    assert sum("SSE" in line for line in run.output.splitlines()) == 1, run.output


def test_verify_warns_about_a_bucket_open_to_the_public_and_not_about_one_that_blocks_it(emulator, s3_bucket, tmp_path):
    import json

    endpoint, bucket = s3_bucket
    source, _ = _source(emulator)
    repository = f's3: {{bucket: {bucket}, prefix: p, endpoint_url: "{endpoint}", region: us-east-1}}'
    write_manifest(tmp_path, _plain_manifest(source, repository, "{path: ./state.json}"))
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    client = s3_client(endpoint)
    names = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")

    run = qbr("verify", cwd=tmp_path)  # a new bucket, as moto makes it: no configuration at all
    assert run.exit_code == 0 and f"bucket {bucket} has no Block Public Access configuration" in run.output, run.output

    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        **dict.fromkeys(names, True), "BlockPublicPolicy": False, "RestrictPublicBuckets": False})
    run = qbr("verify", cwd=tmp_path)
    assert run.exit_code == 0, run.output  # warnings, not problems: the backups themselves are fine
    assert "does not block public access fully (BlockPublicPolicy, RestrictPublicBuckets off)" in run.output, run.output
    assert f"bucket {bucket} has a policy that lets anyone read its objects" in run.output, run.output

    client.delete_bucket_policy(Bucket=bucket)
    client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=dict.fromkeys(names, True))
    run = qbr("verify", cwd=tmp_path)
    assert run.exit_code == 0 and "public" not in run.output.lower(), run.output
