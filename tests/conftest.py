"""Shared fixtures: moto's S3 server, s3rver (an S3-compatible store with gaps) and Qdrant emulator
clusters, all over real HTTP."""

import os

import pytest

from tests.emulator.fixtures import emulator  # noqa: F401
from tests.s3_fixture import lock_bucket, s3_bucket, s3_server  # noqa: F401
from tests.s3rver_fixture import s3rver_bucket, s3rver_credentials, s3rver_server  # noqa: F401


@pytest.fixture(autouse=True, scope="session")
def qbr_cache_in_the_session(tmp_path_factory):
    """qbr's local copy of set records (~/.cache/qbr by default) goes into the test session's own
    folder, for every qbr a test runs, in-process or not."""
    os.environ["QBR_CACHE_DIR"] = str(tmp_path_factory.mktemp("qbr-cache"))
