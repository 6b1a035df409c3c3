"""Shared fixtures: moto's S3 server and Qdrant emulator clusters, both over real HTTP."""

from tests.emulator.fixtures import emulator  # noqa: F401
from tests.s3_fixture import s3_bucket, s3_server  # noqa: F401
