"""Secrets never leave the process: not in output, plans, state, set records, locks or errors.

Whole scenarios run with recognisable secrets: Qdrant API keys (the emulator demands them), AWS
credentials in the environment (moto accepts any), and presigned URLs (Qdrant recovers from
them, through a proxy that records what it fetched). Then every byte qbr wrote is searched for
them. State, lock and plan files are also created owner-only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from qbr.repository import open_s3_repository
from tests.e2e.helpers import (
    FAST_RETRIES,
    REPO_ROOT,
    make_collection,
    qbr,
    write_manifest,
)
from tests.e2e.test_faults import S3FaultProxy

PROD_KEY = "qdrant-prod-" + secrets.token_hex(12)
DR_KEY = "qdrant-dr-" + secrets.token_hex(12)
WRONG_KEY = "qdrant-wrong-" + secrets.token_hex(12)
AWS_ID = "AKIAQBRSCAN" + secrets.token_hex(5).upper()
AWS_SECRET = "qbr/scan+" + secrets.token_urlsafe(24)
PRESIGN_MARKERS = ("X-Amz-Signature", "Signature=", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId")
ENV = {"QBR_PROD_KEY": PROD_KEY, "QBR_DR_KEY": DR_KEY, "AWS_ACCESS_KEY_ID": AWS_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}


@pytest.fixture
def proxy(s3_server):
    recorder = S3FaultProxy(s3_server)  # no faults: it only records the requests it forwards
    yield recorder
    recorder.close()


def _manifest(source, target, bucket: str, endpoint: str) -> str:
    return f"""
version: 1
clusters:
  prod: {{url: "{source.urls[0]}", api_key: "${{QBR_PROD_KEY}}"}}
  dr: {{url: "{target.urls[0]}", api_key: "${{QBR_DR_KEY}}"}}
repositories:
  main: {{s3: {{bucket: {bucket}, prefix: scan, endpoint_url: "{endpoint}", region: us-east-1}}}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
restores:
  dr: {{from: nightly, to: dr, collections: {{"*": "*"}}, if_exists: replace, via: url}}
"""


def _written(folder: Path, bucket: str, endpoint: str) -> dict[str, bytes]:
    """Every file qbr left in its folder and every object under the repository prefix."""
    found = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    repo = open_s3_repository(bucket, prefix="scan", endpoint_url=endpoint)
    for info in repo.list(""):
        found[f"s3:{info.key}"] = repo.get_bytes(info.key)
    return found


def _needles(proxy: S3FaultProxy) -> list[str]:
    """The secrets, the presigned-URL markers, and every signature Qdrant was actually handed."""
    needles = [PROD_KEY, DR_KEY, WRONG_KEY, AWS_ID, AWS_SECRET, *PRESIGN_MARKERS]
    for line in proxy.requests:
        query = parse_qs(urlsplit(line.split(" ", 1)[1]).query)
        needles += query.get("X-Amz-Signature", []) + query.get("X-Amz-Credential", [])
    return needles


def _assert_clean(outputs: dict[str, str | bytes], needles: list[str]) -> None:
    for where, content in outputs.items():
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        for needle in needles:
            assert needle not in text, f"{needle[:24]}... leaked into {where}"


def test_backup_and_url_restore_and_failures_leak_no_secret(emulator, s3_bucket, proxy, tmp_path):
    endpoint, bucket = s3_bucket
    source = emulator(nodes=2, api_key=PROD_KEY)
    target = emulator(nodes=1, api_key=DR_KEY)
    make_collection(source.urls[0], "docs", points=30, shards=2, api_key=PROD_KEY)
    make_collection(source.urls[0], "notes", points=4, api_key=PROD_KEY)
    write_manifest(tmp_path, _manifest(source, target, bucket, proxy.url))
    outputs: dict[str, str | bytes] = {}

    # 1. The target's node echoes the whole request (presigned URL and all) in its refusal.
    def echo(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        message = f"Failed to download snapshot from {body['location']} (sent api-key {request.headers.get('api-key')})"
        return httpx.Response(400, json={"status": {"error": message}, "time": 0.0})

    with respx.mock(assert_all_called=False, assert_all_mocked=False) as router:
        recover = router.route(method="PUT", url__regex=rf":{target.nodes[0].port}/collections/[^/]+(/shards/\d+)?/snapshots/recover(\?|$)")
        recover.mock(side_effect=echo)
        router.route().pass_through()
        run = qbr("apply", "--auto-approve", cwd=tmp_path, env=ENV)
    assert recover.called, "qbr asked the target to recover from a URL"
    assert run.exit_code == 1 and "from the archive URL" in run.stderr, run.output
    outputs["apply with an echoing target"] = run.output

    # 2. The same apply, for real: backup done, restore from presigned URLs through the proxy.
    #    The lock exists only while it runs: a slow restore gives a watcher time to copy it.
    target.nodes[0].faults.add(method="PUT", path=r"/snapshots/recover$", latency=0.15, times=None)
    lock = tmp_path / ".qbr" / "state.json.lock"
    held: list[bytes] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            try:
                held.append(lock.read_bytes())
            except FileNotFoundError:
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run = qbr("apply", "--auto-approve", cwd=tmp_path, env=ENV)
    finally:
        stop.set()
        watcher.join()
    target.nodes[0].faults.clear()
    assert run.exit_code == 0, run.output
    assert any(b'"operation": "apply"' in copy for copy in held), "the lock was seen while the apply held it"
    outputs["apply"] = run.output
    outputs["the lock, while held"] = b"\n".join(set(held))
    assert sorted(target.collection_names()) == ["docs", "notes"]
    presigned = [line for line in proxy.requests if "X-Amz-Signature=" in line]
    assert presigned and all(AWS_ID in line for line in presigned), "Qdrant fetched presigned URLs signed with the env's key"

    # 3. A saved plan, status, and a plan as JSON.
    later = "2030-01-01T00:00:00Z"
    for args in (("plan", "-o", "plan.json", "--now", later), ("plan", "--json", "--now", later), ("status",), ("show", "plan.json")):
        run = qbr(*args, cwd=tmp_path, env=ENV)
        assert run.exit_code in (0, 3), run.output
        outputs[" ".join(args)] = run.output

    # 4. A failing run in a real process, with --debug (tracebacks shown): the wrong key for dr.
    process = subprocess.run(
        [sys.executable, "-m", "qbr", "--debug", "apply", "--auto-approve"],
        cwd=tmp_path,
        env={**os.environ, **FAST_RETRIES, **ENV, "QBR_DR_KEY": WRONG_KEY, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 1 and b"rejected the API key" in process.stderr, process.stderr
    outputs["apply --debug with a wrong key: stdout"] = process.stdout
    outputs["apply --debug with a wrong key: stderr"] = process.stderr

    outputs.update(_written(tmp_path, bucket, endpoint))
    assert "plan.json" in outputs and ".qbr/state.json" in outputs and any(k.startswith("s3:sets/") for k in outputs)
    _assert_clean(outputs, _needles(proxy))
    for name in (".qbr/state.json", "plan.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, f"{name} is owner-only"


def test_state_lock_and_plan_files_are_created_owner_only(emulator, tmp_path, monkeypatch):
    """Created 0600 from the first byte (even with umask 0), not made private afterwards."""
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=5)
    write_manifest(tmp_path, f"""
version: 1
clusters: {{prod: {{url: "{cluster.urls[0]}"}}}}
repositories: {{folder: {{path: ./backups}}}}
backups: {{nightly: {{cluster: prod, repository: folder, rpo: 1h}}}}
""")
    created: dict[str, int] = {}
    real_open = os.open

    def watching_open(path, flags, mode=0o777, *args, **kw):
        fd = real_open(path, flags, mode, *args, **kw)
        where = Path(os.fsdecode(path)).absolute()
        if flags & os.O_CREAT and (tmp_path in where.parents and ".qbr" in where.parts or where.name == "plan.json"):
            created[str(where.relative_to(tmp_path))] = stat.S_IMODE(os.fstat(fd).st_mode)
        return fd

    monkeypatch.setattr(os, "open", watching_open)
    old_umask = os.umask(0)
    try:
        plan = qbr("plan", "-o", "plan.json", cwd=tmp_path)
        apply = qbr("apply", "--auto-approve", cwd=tmp_path)
    finally:
        os.umask(old_umask)
    assert plan.exit_code == 0 and apply.exit_code == 0, plan.output + apply.output
    assert any(re.search(r"state\.json$", name) for name in os.listdir(tmp_path / ".qbr"))
    assert "plan.json" in created and any(".qbr/" in name for name in created), created
    loose = {name: oct(mode) for name, mode in created.items() if mode & 0o077}
    assert not loose, f"files created readable by others: {loose}"
    for name in (".qbr/state.json", "plan.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_an_encrypted_repository_leaks_neither_the_identity_nor_the_payload(emulator, s3_bucket, tmp_path):
    """The age identity (given with --identity and QBR_AGE_IDENTITY_FILE) and a marker written
    into every point's payload reach no output, no file qbr wrote, and no object in the bucket."""
    import pyrage

    from tests.e2e.helpers import all_points, upsert
    from tests.qdrant_testing import TestingClient as Client

    endpoint, bucket = s3_bucket
    marker = "qbr-payload-" + secrets.token_hex(10)
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "keys" / "age.txt"
    key_file.parent.mkdir()
    key_file.write_text(f"{identity}\n")
    source = emulator(nodes=1, api_key=PROD_KEY)
    target = emulator(nodes=1, api_key=DR_KEY)
    make_collection(source.urls[0], "docs", points=20, api_key=PROD_KEY)
    with Client(source.urls[0], api_key=PROD_KEY, backoff=0) as client:
        upsert(client, "docs", range(20), tag=marker)
    text = _manifest(source, target, bucket, endpoint).replace("via: url", "via: auto")
    text = text.replace("region: us-east-1}}", f'region: us-east-1}}, encryption: {{recipients: ["{identity.to_public()}"]}}}}')
    write_manifest(tmp_path, text)
    outputs: dict[str, str | bytes] = {}
    for args, env in ((("apply", "--auto-approve"), {}),  # backup; the restore stops without the identity
                      (("apply", "--auto-approve", "--identity", str(key_file)), {}),
                      (("verify", "--deep"), {"QBR_AGE_IDENTITY_FILE": str(key_file), "QBR_DEEP_ENGINE": "tests.verify_engine:EmulatorPointCounter"}),
                      (("plan", "-o", "plan.json", "--now", "2030-01-01T00:00:00Z"), {"QBR_AGE_IDENTITY_FILE": str(key_file)}),
                      (("status",), {}), (("sets", "describe", "nightly/" + "x"), {})):
        run = qbr(*args, cwd=tmp_path, env={**ENV, **env})
        outputs[" ".join(args)] = run.output
    assert "needs the private key" in outputs["apply --auto-approve"]
    assert all_points(target.urls[0], "docs", api_key=DR_KEY) == all_points(source.urls[0], "docs", api_key=PROD_KEY)
    outputs.update({k: v for k, v in _written(tmp_path, bucket, endpoint).items() if not k.startswith("keys/")})
    assert any(k.startswith("s3:snapshots/") for k in outputs)
    _assert_clean(outputs, [str(identity), marker, PROD_KEY, DR_KEY, AWS_SECRET])
