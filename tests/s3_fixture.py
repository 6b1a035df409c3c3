"""moto's S3 server on 127.0.0.1, for tests that talk to S3 through boto3 over real HTTP.

`s3_server` starts one server per test session and points boto3's credential chain at fake
keys; `s3_bucket` gives each test a fresh bucket on it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server running in a thread; fake credentials in os.environ."""
    from moto.server import ThreadedMotoServer

    saved = {name: os.environ.get(name) for name in (*FAKE_CREDENTIALS, *_UNSET)}
    os.environ.update(FAKE_CREDENTIALS)
    for name in _UNSET:
        os.environ.pop(name, None)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def s3_client(endpoint_url: str):  # -> botocore S3 client
    """A plain boto3 client for the moto server, for tests that arrange or inspect a bucket."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_server: str) -> Iterator[tuple[str, str]]:
    """(endpoint_url, bucket_name) of a fresh, empty bucket on the moto server."""
    bucket = f"qbr-test-{uuid.uuid4().hex[:16]}"
    client = s3_client(s3_server)
    client.create_bucket(Bucket=bucket)
    yield s3_server, bucket
    _drop_bucket(client, bucket)


@pytest.fixture
def lock_bucket(s3_server: str) -> tuple[str, str]:
    """(endpoint_url, bucket_name) of a fresh bucket with Object Lock enabled (moto keeps it:
    locked versions cannot be emptied out)."""
    bucket = f"qbr-lock-{uuid.uuid4().hex[:12]}"
    s3_client(s3_server).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return s3_server, bucket


def _drop_bucket(client, bucket: str) -> None:
    """Empty and delete a test bucket, so moto does not keep every test's bytes in memory."""
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
    except client.exceptions.NoSuchBucket:
        pass  # the test removed it itself
