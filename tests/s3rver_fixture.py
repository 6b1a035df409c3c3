"""s3rver on 127.0.0.1: a second, independent S3 implementation, with the gaps real
S3-compatible stores have (see ../shared/reference/s3-test-stores.md): no ListMultipartUploads
(NotImplemented), no AbortMultipartUpload (MethodNotAllowed), and If-None-Match / If-Match
silently ignored. Put, get, head, list, multipart upload, copy and presigned GET work.

It is the npm package pinned in package.json at the repository root (`npm ci` there installs it
into node_modules/; .ci/run does). `s3rver_server` starts one per test session and skips, saying
why, when it is not installed. `s3rver_bucket` gives a test a fresh bucket (named
qbr-s3rver-..., so a test can tell the store apart) and points boto3's credential chain at
s3rver's fixed keys for that test only (moto takes any key, so both can serve one session).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
S3RVER = ROOT / "node_modules" / ".bin" / "s3rver"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1"}
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
BUCKET_PREFIX = "qbr-s3rver-"
START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3rver_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of s3rver, run as a subprocess for the whole session."""
    if not S3RVER.exists():
        pytest.skip("s3rver is not installed: run `npm ci` at the repository root (.ci/run does when npm is there)")
    if shutil.which("node") is None:
        pytest.skip("s3rver needs Node.js, which is not on PATH")
    folder = tmp_path_factory.mktemp("s3rver")
    port = _free_port()
    # s3rver's continuation tokens use DES, which Node >= 17 (OpenSSL 3) loads only from the
    # legacy provider: without it every listing past its first page answers InternalError.
    env = {**os.environ, "NODE_OPTIONS": f"{os.environ.get('NODE_OPTIONS', '')} --openssl-legacy-provider".strip()}
    with open(folder / "s3rver.log", "wb") as log:
        process = subprocess.Popen(
            [str(S3RVER), "-d", str(folder / "data"), "-a", "127.0.0.1", "-p", str(port), "--silent"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = (folder / "s3rver.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"s3rver did not start on port {port} (exit {process.poll()}):\n{output}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def s3rver_client(endpoint_url: str):  # -> botocore S3 client
    """A plain boto3 client for s3rver (its fixed keys), for tests that arrange or inspect a bucket."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"),
    )


@pytest.fixture
def s3rver_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """s3rver's keys in os.environ for this test (qbr reads the standard AWS chain only)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    return dict(CREDENTIALS)


@pytest.fixture
def s3rver_bucket(s3rver_server: str, s3rver_credentials: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(endpoint_url, bucket_name) of a fresh, empty bucket on s3rver."""
    bucket = f"{BUCKET_PREFIX}{uuid.uuid4().hex[:16]}"
    client = s3rver_client(s3rver_server)
    client.create_bucket(Bucket=bucket)
    yield s3rver_server, bucket
    try:  # s3rver cannot abort unfinished uploads: their parts stay in its folder until the session ends
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
    except Exception:  # cleanup only: the session's folder goes anyway
        pass
