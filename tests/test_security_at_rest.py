"""Security at rest, piece by piece: the Object Lock retain-until rule (pure), streams encrypted
and decrypted with pyrage, set records sealed and opened, the manifest keys, and what the planner
does with encrypted and locked sets."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyrage
import pytest

from qbr import age_format, encryption
from qbr.errors import ChecksumError, ManifestError, QbrError
from qbr.planner import make_plan
from qbr.records import SetRecord, set_id_for, set_key, utc_iso
from qbr.retention import RetentionPolicy, SetSummary, protected_until
from qbr.sealed_records import seal_record, unseal_record
from qbr.state import State
from qbr.transfer import Digest, verified
from tests.test_planner import NOW, cluster, collection, manifest, observed, repository, set_record

UTC = timezone.utc
HOUR = timedelta(hours=1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def chunks(data: bytes, size: int = 1 << 16):
    for start in range(0, len(data), size):
        yield data[start:start + size]


# ---------------------------------------------------------------- the retain-until rule


def test_a_set_superseded_within_its_day_is_protected_only_until_the_next_backup():
    sets = [SetSummary("a", at("2026-01-10T08:00")), SetSummary("b", at("2026-01-10T20:00")), SetSummary("c", at("2026-01-11T00:00"))]
    until = protected_until(sets, RetentionPolicy(daily=7), 4 * HOUR, at("2026-01-11T01:00"))
    assert until == {"c": at("2026-01-11T04:00"), "b": at("2026-01-17T00:00")}  # "a" is not kept: no entry


def test_a_month_end_set_is_locked_until_twelve_newer_months_could_exist():
    until = protected_until([SetSummary("x", at("2026-01-31T02:00"))], RetentionPolicy(monthly=12, daily=7), 24 * HOUR, at("2026-01-31T02:00"))
    assert until == {"x": at("2027-01-01T02:00")}
    mid_month = protected_until([SetSummary("x", at("2026-01-15T02:00"))], RetentionPolicy(monthly=12), 24 * HOUR, at("2026-01-15T02:00"))
    assert mid_month == {"x": at("2026-01-16T02:00")}  # tomorrow's set takes January's slot


def test_keep_last_and_within_count_arrivals_one_rpo_apart():
    sets = [SetSummary("b", at("2026-01-10T20:00")), SetSummary("c", at("2026-01-11T00:00"))]
    assert protected_until(sets, RetentionPolicy(keep_last=2), 4 * HOUR, at("2026-01-11T01:00")) == {
        "c": at("2026-01-11T08:00"), "b": at("2026-01-11T04:00")}
    assert protected_until(sets, RetentionPolicy(within=timedelta(days=2)), 4 * HOUR, at("2026-01-11T01:00")) == {
        "c": at("2026-01-13T04:00"), "b": at("2026-01-13T00:00")}


def test_no_rules_keep_everything_for_ever_so_nothing_is_locked():
    assert protected_until([SetSummary("a", at("2026-01-10T08:00"))], RetentionPolicy(), HOUR, at("2026-01-10T09:00")) == {}


# ---------------------------------------------------------------- streams and records


def test_streams_round_trip_and_a_cut_or_foreign_ciphertext_is_a_sentence():
    identity = pyrage.x25519.Identity.generate()
    data = os.urandom(300_001)
    cipher = b"".join(encryption.encrypt_stream(chunks(data), [identity.to_public()]))
    assert len(cipher) <= encryption.ciphertext_size(len(data), 1)
    assert pyrage.decrypt(cipher, [identity]) == data  # plain age: any age tool opens it
    assert b"".join(encryption.decrypt_stream(chunks(cipher), [identity], "archive a")) == data
    with pytest.raises(QbrError, match="archive a cannot be decrypted: it is damaged or cut short"):
        b"".join(encryption.decrypt_stream(chunks(cipher[:-100]), [identity], "archive a"))
    with pytest.raises(encryption.IdentityError, match="encrypted to other recipients"):
        b"".join(encryption.decrypt_stream(chunks(cipher), [pyrage.x25519.Identity.generate()], "archive a"))


def test_a_checksum_mismatch_in_the_source_comes_out_of_the_encrypting_stream_unchanged():
    identity = pyrage.x25519.Identity.generate()
    source = verified(chunks(b"x" * 200_000), Digest(), what="snapshot s", expected_sha256="0" * 64)
    with pytest.raises(ChecksumError, match="snapshot s: sha256"):
        b"".join(encryption.encrypt_stream(source, [identity.to_public()]))


def test_a_stream_closed_early_stops_its_thread():
    identity = pyrage.x25519.Identity.generate()
    stream = encryption.encrypt_stream(chunks(os.urandom(8 << 20), 1 << 20), [identity.to_public()])
    next(stream)
    stream.close()  # returns: the worker was told to stop and joined


def _age_file_parts(cipher: bytes) -> tuple[bytes, list[bytes]]:
    """(header and payload nonce, the sealed 64 KiB chunks) of an age file."""
    start = cipher.index(b"\n", cipher.index(b"\n--- ") + 1) + 1 + 16
    return cipher[:start], [cipher[i:i + age_format.SEALED] for i in range(start, len(cipher), age_format.SEALED)]


def test_x25519_streams_do_not_go_through_pyrage_which_holds_the_gil(monkeypatch):
    """pyrage's encrypt_io/decrypt_io keep the GIL for the whole file (download, sha256 and
    upload threads stall); archives to age1 keys are written and read by qbr.age_format."""
    identity = pyrage.x25519.Identity.generate()
    data = os.urandom(300_001)

    def refused(*args, **kwargs):
        raise AssertionError("pyrage's streaming interface was used")

    monkeypatch.setattr(pyrage, "encrypt_io", refused)
    monkeypatch.setattr(pyrage, "decrypt_io", refused)
    cipher = b"".join(encryption.encrypt_stream(chunks(data, 10_000), [identity.to_public()]))
    assert b"".join(encryption.decrypt_stream(chunks(cipher, 7_777), [identity], "archive a")) == data


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 131_072, 3 * 65_536 + 5, (1 << 20) + 7])
def test_archives_are_age_files_that_age_tools_open_and_qbr_opens_theirs(size, tmp_path):
    identity, other = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    data = os.urandom(size)
    cipher = b"".join(encryption.encrypt_stream(chunks(data, 10_000), [identity.to_public(), other.to_public()]))
    assert len(cipher) <= encryption.ciphertext_size(size, 2)
    assert pyrage.decrypt(cipher, [identity]) == data and pyrage.decrypt(cipher, [other]) == data
    theirs = pyrage.encrypt(data, [other.to_public()])
    assert b"".join(encryption.decrypt_stream(chunks(theirs, 9_999), [identity, other], "archive a")) == data
    if shutil.which("age"):  # Debian's age (Go), a third implementation
        (tmp_path / "key.txt").write_text(f"{identity}\n")
        (tmp_path / "a.age").write_bytes(cipher)
        opened = subprocess.run(["age", "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "a.age")], capture_output=True, check=True)
        assert opened.stdout == data


def test_an_altered_reordered_cut_or_extended_archive_does_not_open():
    identity = pyrage.x25519.Identity.generate()
    cipher = b"".join(encryption.encrypt_stream(chunks(os.urandom(3 * 65_536 + 100)), [identity.to_public()]))
    head, sealed = _age_file_parts(cipher)
    mac_at = head.index(b"\n--- ") + 6
    flipped = bytearray(cipher)
    flipped[len(head) + 70_000] ^= 1
    broken = {
        "cut at a chunk boundary": head + b"".join(sealed[:2]),
        "cut inside a chunk": cipher[:-1],
        "chunks swapped": head + sealed[1] + sealed[0] + b"".join(sealed[2:]),
        "a byte flipped": bytes(flipped),
        "bytes added": cipher + b"x",
        "header altered": head[:mac_at] + (b"A" if head[mac_at:mac_at + 1] != b"A" else b"B") + cipher[mac_at + 1:],
        "no payload": head[:-10],
        "not age": b"hello" * 100,
    }
    for name, bad in broken.items():
        with pytest.raises(QbrError, match="archive a cannot be decrypted: it is damaged or cut short") as error:
            b"".join(encryption.decrypt_stream(chunks(bad, 50_000), [identity], "archive a"))
        assert not isinstance(error.value, encryption.IdentityError), name


def test_ssh_keys_still_encrypt_and_decrypt_through_pyrage(tmp_path):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed: no ssh key to test with")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    ssh_identity = encryption.load_identities(tmp_path / "id")
    ssh_public = encryption.parse_recipients([(tmp_path / "id.pub").read_text()], "test")
    age_identity = pyrage.x25519.Identity.generate()
    data = os.urandom(200_000)
    mixed = b"".join(encryption.encrypt_stream(chunks(data), ssh_public + [age_identity.to_public()]))
    assert pyrage.decrypt(mixed, ssh_identity) == data and pyrage.decrypt(mixed, [age_identity]) == data
    only_ssh = b"".join(encryption.encrypt_stream(chunks(data), ssh_public))
    stranger = pyrage.x25519.Identity.generate()  # tried natively first, then the ssh key through pyrage
    assert b"".join(encryption.decrypt_stream(chunks(only_ssh), [stranger, *ssh_identity], "archive a")) == data
    with pytest.raises(encryption.IdentityError, match="encrypted to other recipients"):
        b"".join(encryption.decrypt_stream(chunks(only_ssh), [stranger], "archive a"))


def test_bech32_keys_decode_and_a_damaged_one_is_refused():
    identity = pyrage.x25519.Identity.generate()
    public = age_format.recipient_key(str(identity.to_public()))
    assert age_format.identity_key(str(identity)).public_key().public_bytes_raw() == public
    text = str(identity.to_public())
    damaged = text[:-1] + ("q" if text[-1] != "q" else "p")
    with pytest.raises(ValueError):
        age_format.recipient_key(damaged)


def test_a_sealed_record_keeps_ids_times_and_counts_readable_and_opens_with_the_identity():
    identity = pyrage.x25519.Identity.generate()
    docs = collection("docs", aliases=("secret_alias",))
    plain = set_record("20261121T080000Z", {"docs": docs})
    sealed = seal_record(plain, [identity.to_public()], "f" * 16, (str(identity.to_public()),))
    text = sealed.to_json()
    assert b"secret_alias" not in text and b"Cosine" not in text
    back = SetRecord.from_json(text, set_key("nightly", "20261121T080000Z"))
    assert back.sealed and back.set_id == plain.set_id and back.collections["docs"].points_count == docs.points_count
    assert back.collections["docs"].config_sha256 == docs.config_sha256  # only_changed works without the key
    opened = unseal_record(back, [identity])
    assert opened.collections["docs"].config == docs.config and opened.collections["docs"].aliases == ("secret_alias",)
    with pytest.raises(encryption.IdentityError):
        unseal_record(back, [pyrage.x25519.Identity.generate()])


def test_identity_files_of_age_and_ssh_kinds_load_and_a_missing_one_is_a_sentence(tmp_path):
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"# public key: {identity.to_public()}\n{identity}\n")
    assert len(encryption.load_identities(tmp_path / "key.txt")) == 1
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(encryption.IdentityError, match="holds no age identity"):
        encryption.load_identities(tmp_path / "empty.txt")
    keyring = encryption.Keyring()
    with pytest.raises(encryption.IdentityError, match="pass --identity FILE or set QBR_AGE_IDENTITY_FILE"):
        os.environ.pop(encryption.IDENTITY_ENV, None)
        keyring.identities("restoring set x")


# ---------------------------------------------------------------- manifest and planner


def test_the_manifest_refuses_a_private_key_among_recipients_and_sse_on_a_folder():
    key = str(pyrage.x25519.Identity.generate())
    with pytest.raises(ManifestError) as error:
        manifest(repo=f'path: /tmp/x\n    sse: {{mode: AES256}}\n    encryption: {{recipients: ["{key}"]}}')
    assert "this is a private key: list only public keys here" in str(error.value)
    assert "sse applies to an S3 repository" in str(error.value)
    assert key not in str(error.value)


def _encrypted_world(locked: dict[str, str] | None = None):
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    docs = collection("docs")
    old = set_record(set_id_for_hours(30), {"docs": docs})
    sealed = seal_record(old, [identity.to_public()], "x" * 16, (public,))
    fingerprint = encryption.fingerprint([public])
    archives = tuple(replace(a, encryption=f"age {fingerprint}", stored_size=100) for a in sealed.collections["docs"].archives)
    sealed = replace(sealed, collections={"docs": replace(sealed.collections["docs"], archives=archives)},
                     encryption={"method": "age", "fingerprint": fingerprint, "recipients": [public]})
    repo = replace(repository([sealed]), locked_until=locked or {})
    return public, sealed, observed([cluster("prod", [docs]), cluster("dr", [])], repo)


def set_id_for_hours(hours: int) -> str:
    return (NOW - timedelta(hours=hours)).strftime("%Y%m%dT%H%M%SZ")


def test_a_state_in_a_bucket_of_its_own_declares_its_sse_and_a_wrong_one_is_placed():
    from qbr.manifest import load_manifest_text
    from qbr.manifest.model import ServerSideEncryption

    head = 'version: 1\nclusters:\n  prod: {url: "http://q0:6333"}\nrepositories:\n  main: {path: ./backups}\n'
    own = load_manifest_text(head + "state:\n  s3: {bucket: qbr-state, key: q/state.json, sse: {mode: aws:kms, kms_key_id: alias/st}}\n",
                             "m.yaml", Path("/srv"), {})
    assert own.state.sse == ServerSideEncryption("aws:kms", "alias/st")
    with pytest.raises(ManifestError) as error:
        load_manifest_text(head + "state:\n  s3:\n    bucket: qbr-state\n    key: q/state.json\n    sse: {mode: AES256, kms_key_id: k}\n",
                           "m.yaml", Path("/srv"), {})
    assert "m.yaml:10:37:" in str(error.value) and "state.s3.sse.kms_key_id: kms_key_id needs mode aws:kms" in str(error.value)
    with pytest.raises(ManifestError) as error:
        load_manifest_text(head + "state:\n  s3: {bucket: qbr-state, key: q/state.json, sse: {mode: DES}}\n", "m.yaml", Path("/srv"), {})
    assert "m.yaml:7:" in str(error.value) and "state.s3.sse.mode" in str(error.value)


def test_stored_sse_is_judged_by_mode_then_by_kms_key_and_an_alias_against_an_arn_is_left_unjudged():
    from qbr.manifest.model import ServerSideEncryption
    from qbr.verify.sse import judge

    kms = ServerSideEncryption("aws:kms", "alias/qbr")
    arn = "arn:aws:kms:us-east-1:123456789012"
    assert judge("s3://b/k", ("aws:kms", f"{arn}:alias/qbr"), kms) == (None, False)
    assert judge("s3://b/k", ("aws:kms", f"{arn}:key/1234"), kms) == (None, True)  # AWS names the key, not the alias
    problem, _ = judge("s3://b/k", (None, None), kms)
    assert problem == ("s3://b/k is stored without SSE where the manifest declares aws:kms with key alias/qbr; rewrite it with "
                       "that SSE (aws s3 cp s3://b/k s3://b/k --sse aws:kms --sse-kms-key-id alias/qbr)")
    by_id = ServerSideEncryption("aws:kms", "1234")
    assert judge("s3://b/k", ("aws:kms", f"{arn}:key/1234"), by_id) == (None, False)
    assert "is encrypted with KMS key" in (judge("s3://b/k", ("aws:kms", f"{arn}:key/9999"), by_id)[0] or "")
    assert judge("s3://b/k", ("AES256", None), ServerSideEncryption("AES256")) == (None, False)
    assert "stored with SSE aws:kms where the manifest declares AES256" in (judge("s3://b/k", ("aws:kms", "x"), ServerSideEncryption("AES256"))[0] or "")


def test_a_restore_from_an_encrypted_set_is_an_upload_and_without_the_key_a_refusal():
    public, sealed, world = _encrypted_world()
    restores = 'restores:\n  dr: {from: nightly, to: dr, at: "2026-11-21T00:00:00Z"}'
    with pytest.raises(QbrError, match="is encrypted; restoring it needs the private key"):
        make_plan(manifest(restores, repo=f'path: /tmp/x\n    encryption: {{recipients: ["{public}"]}}'), world, State(), NOW)
    opened = replace(world.repositories["main"], sets=(unseal_stub(sealed),))
    p = make_plan(manifest(restores, repo=f'path: /tmp/x\n    encryption: {{recipients: ["{public}"]}}'),
                  replace(world, repositories={"main": opened}), State(), NOW)
    restore = next(a for a in p.actions if a.kind == "restore_collection")
    assert restore.params["via"] == "upload" and "decrypts it and uploads it" in restore.reason
    commit = next(a for a in p.actions if a.kind == "commit_set")  # unchanged, encrypted alike: carried, still sealed
    assert commit.params["carried"]["docs"]["config"] == {} and commit.params["carried"]["docs"]["sealed"]
    other = f"age1{'q' * 58}"  # the recipients changed: copied again, encrypted for them, streamed through qbr
    p = make_plan(manifest(repo=f'path: /tmp/x\n    encryption: {{recipients: ["{other}"]}}'), world, State(), NOW)
    copy = next(a for a in p.actions if a.kind == "copy_archive")
    assert "encrypted for the repository's age recipients" in copy.title and "not encrypted for the repository's current recipients" in copy.reason


def unseal_stub(record: SetRecord) -> SetRecord:
    """As observe leaves a record it could open: the config back, the sealed text kept."""
    docs = record.collections["docs"]
    return replace(record, collections={"docs": replace(docs, config=collection("docs").config)})


def test_retention_keeps_a_locked_set_and_extends_locks_as_it_grows():
    docs = collection("docs")
    old, new = set_record(set_id_for_hours(50), {"docs": docs}), set_record(set_id_for_hours(2), {"docs": docs})
    until = utc_iso(NOW + timedelta(days=1))
    repo = replace(repository([old, new]), locked_until={set_key("nightly", old.set_id): until})
    locked = "path: /tmp/x"  # planner-side only: the lock comes from the observed repository
    p = make_plan(manifest(repo=locked, backup="    cluster: prod\n    repository: main\n    rpo: 24h\n    retention: {keep_last: 1}"),
                  observed([cluster("prod", [docs]), cluster("dr", [])], repo), State(), NOW)
    assert "delete_set" not in [a.kind for a in p.actions]
    assert any(f"protected by S3 Object Lock until {until}" in n.reason for n in p.kept)
    s3 = 's3: {bucket: qbr-bkt}\n    object_lock: {mode: compliance}'
    backup = "    cluster: prod\n    repository: main\n    rpo: 24h\n    retention: {daily: 7}"
    p = make_plan(manifest(repo=s3, backup=backup), observed([cluster("prod", [docs]), cluster("dr", [])], repository([old])), State(), NOW)
    retains = {a.params["set_id"]: a for a in p.actions if a.kind == "retain_set"}
    planned = set_id_for(NOW)
    assert retains[planned].params["mode"] == "COMPLIANCE" and retains[planned].depends_on == (f"backup.nightly.{planned}.commit",)
    # Nov 19 leaves daily 7 when sets (one a day from Nov 22, 08:00) fill 7 newer days: Nov 27, 08:00, rounded up to the day
    assert retains[old.set_id].params["until"] == "2026-11-28T00:00:00Z"


def test_a_decrypted_archive_that_does_not_match_its_record_stops_before_its_last_byte(tmp_path, monkeypatch):
    from qbr.apply.at_rest import plaintext, put_encrypted
    from qbr.records import ArchiveRecord
    from qbr.repository.local import LocalRepository

    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    monkeypatch.setenv(encryption.IDENTITY_ENV, str(tmp_path / "key.txt"))
    encryption.KEYRING.use_file(None)
    data = os.urandom(3 << 20)
    repo = LocalRepository(tmp_path / "repo", file_mode=0o600, dir_mode=0o700)
    stored = put_encrypted(repo, "snapshots/c/a", chunks(data, 1 << 20), [identity.to_public()], len(data), "a")
    assert stored.size == (tmp_path / "repo" / "snapshots" / "c" / "a").stat().st_size
    import hashlib

    good = ArchiveRecord("snapshots/c/a", len(data), hashlib.sha256(data).hexdigest(), "collection", (0,), "n", encryption="age x")
    with plaintext(repo, good, "archive a") as stream:
        assert b"".join(stream) == data
    handed: list[bytes] = []
    with pytest.raises(ChecksumError, match="does not match"), plaintext(repo, replace(good, sha256="0" * 64), "archive a") as stream:
        for piece in stream:
            handed.append(piece)
    assert 0 < sum(map(len, handed)) < len(data)  # the node never got the whole archive


def test_a_stored_archive_swapped_for_another_age_file_stops_before_its_last_byte_without_hashing_the_plaintext(tmp_path, monkeypatch):
    """A record with the stored object's BLAKE3: the ciphertext is checked against it as it is
    read (0.11 CPU ms/MiB) instead of the plaintext's sha256 (0.52); age authenticates every
    chunk, and Qdrant checks the snapshot's sha256 itself (restores pass it)."""
    import hashlib

    from qbr.apply.at_rest import plaintext, put_encrypted
    from qbr.records import ArchiveRecord
    from qbr.repository.local import LocalRepository

    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    monkeypatch.setenv(encryption.IDENTITY_ENV, str(tmp_path / "key.txt"))
    encryption.KEYRING.use_file(None)
    data, other = os.urandom(3 << 20), os.urandom(3 << 20)
    repo = LocalRepository(tmp_path / "repo", file_mode=0o600, dir_mode=0o700)
    stored = put_encrypted(repo, "snapshots/c/a", chunks(data, 1 << 20), [identity.to_public()], len(data), "a")
    record = ArchiveRecord("snapshots/c/a", len(data), hashlib.sha256(data).hexdigest(), "collection", (0,), "n", encryption="age x",
                           stored_size=stored.size, stored_blake3=stored.blake3)
    hashed: list[int] = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: hashed.append(1) or real_sha256(*a))
    with plaintext(repo, record, "archive a") as stream:
        assert b"".join(stream) == data
    assert not hashed  # the plaintext was not hashed again: its ciphertext was checked
    put_encrypted(repo, "snapshots/c/a", chunks(other, 1 << 20), [identity.to_public()], len(other), "a")  # a valid age file
    handed: list[bytes] = []
    with pytest.raises(ChecksumError, match="archive a: BLAKE3 .* does not match"), plaintext(repo, record, "archive a") as stream:
        for piece in stream:
            handed.append(piece)
    assert 0 < sum(map(len, handed)) < len(other)  # the node never got the whole archive


def test_the_stored_digest_is_blake3_and_a_checked_stream_holds_its_last_chunk_until_it_matches():
    import blake3

    from qbr.transfer import tallied

    data = os.urandom(3 << 20)
    digest = Digest()
    assert b"".join(tallied(chunks(data, 1 << 20), digest)) == data
    assert (digest.size, digest.blake3, digest.sha256) == (len(data), blake3.blake3(data).hexdigest(), None)
    for wrong, message in (({"expected_size": len(data) + 1}, "got 3145728 bytes where 3145729"), ({"expected_blake3": "0" * 64}, "BLAKE3")):
        handed: list[bytes] = []
        with pytest.raises(ChecksumError, match=message):
            for piece in tallied(chunks(data, 1 << 20), Digest(), what="archive a", **wrong):
                handed.append(piece)
        assert sum(map(len, handed)) == len(data) - (1 << 20)  # all but the last chunk


def test_encryption_refuses_adoption_which_would_store_archives_in_clear_and_accepts_dedup():
    public = str(pyrage.x25519.Identity.generate().to_public())
    with pytest.raises(ManifestError) as error:
        manifest('adopt:\n  old: {from: {s3: {bucket: old-snapshots}}, into: nightly}',
                 repo=f's3: {{bucket: qbr-bkt}}\n    dedup: true\n    encryption: {{recipients: ["{public}"]}}')
    assert "dedup" not in str(error.value)  # chunks are keyed and encrypted one by one (tests/e2e/test_dedup_encrypted.py)
    assert "adopted snapshots are copied inside S3 as they are, so they would be stored in clear" in str(error.value)


def test_sse_reaches_multipart_uploads_small_puts_and_server_side_copies(s3_bucket):
    from qbr.repository import open_s3_repository
    from qbr.repository.protection import request_sse
    from qbr.repository.server_side import ServerSideCopier
    from tests.s3_fixture import s3_client

    endpoint, bucket = s3_bucket
    repo = open_s3_repository(bucket, prefix="p", endpoint_url=endpoint, region="us-east-1")
    request_sse(repo, {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/qbr"})
    repo.put_stream("big", chunks(os.urandom(12 << 20), 1 << 20), size=12 << 20)  # multipart: 8 MiB parts
    repo.put_bytes("small", b"{}", if_none_match=True)
    ServerSideCopier(endpoint, "us-east-1").copy(bucket, "p/small", bucket, "p/copied", 2, repo.sse)
    client = s3_client(endpoint)
    for key in ("p/big", "p/small", "p/copied"):
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith("alias/qbr"), key
