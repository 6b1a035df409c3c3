"""Backup repositories: an S3 bucket prefix or a local folder, behind one interface."""

from __future__ import annotations

from pathlib import Path

from qbr.errors import NotFoundError, RepositoryError
from qbr.repository.base import (
    ObjectInfo,
    PendingUpload,
    PreconditionFailed,
    Repository,
    validate_key,
)

__all__ = [
    "NotFoundError",
    "ObjectInfo",
    "PendingUpload",
    "PreconditionFailed",
    "Repository",
    "RepositoryError",
    "open_local_repository",
    "open_s3_repository",
    "validate_key",
]


def open_s3_repository(
    bucket: str,
    prefix: str = "",
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    name: str | None = None,
    part_size: int | None = None,
    page_size: int = 1000,
) -> Repository:
    """A repository under `prefix` in `bucket`; credentials from boto3's standard chain.

    `name` is the manifest's repository name, used only to point error messages at the right
    setting. No request is made until the repository is used.
    """
    from qbr.repository.s3 import DEFAULT_PART_SIZE, S3Repository

    return S3Repository(
        bucket,
        prefix,
        endpoint_url,
        region,
        name=name,
        part_size=part_size or DEFAULT_PART_SIZE,
        page_size=page_size,
    )


def open_local_repository(path: Path, *, file_mode: int = 0o666) -> Repository:
    """A repository in the folder `path`, created lazily on the first write."""
    from qbr.repository.local import LocalRepository

    return LocalRepository(Path(path), file_mode=file_mode)
