"""Shared fixtures: moto's S3 server, s3rver (an S3-compatible store with gaps) and Qdrant emulator
clusters, all over real HTTP."""

from tests.emulator.fixtures import emulator  # noqa: F401
from tests.s3_fixture import lock_bucket, s3_bucket, s3_server  # noqa: F401
from tests.s3rver_fixture import s3rver_bucket, s3rver_credentials, s3rver_server  # noqa: F401
