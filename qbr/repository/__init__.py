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
    "cleanup_gaps",
    "conditional_writes_gap",
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
    addressing_style: str | None = None,
    checksums: str | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_attempts: int | None = None,
) -> Repository:
    """A repository under `prefix` in `bucket`; credentials from boto3's standard chain.

    `name` is the manifest's repository name, used only to point error messages at the right
    setting. The client settings (None: qbr's default for the store, see s3_setup.py) come from
    the manifest's s3 block (`S3Options.client_settings()`). No request is made until the
    repository is used.
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
        addressing_style=addressing_style,
        checksums=checksums,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_attempts=max_attempts,
    )


def open_local_repository(path: Path, *, file_mode: int = 0o666) -> Repository:
    """A repository in the folder `path`, created lazily on the first write."""
    from qbr.repository.local import LocalRepository

    return LocalRepository(Path(path), file_mode=file_mode)


def cleanup_gaps(repo: Repository, pending: list[PendingUpload]) -> tuple[list[PendingUpload], tuple[str, ...]]:
    """Of the unfinished uploads `pending`, those qbr can abort, and one sentence for each
    cleanup the store cannot do (an S3-compatible store without ListMultipartUploads or
    AbortMultipartUpload). A folder can do everything."""
    gaps = getattr(repo, "cleanup_gaps", None)
    return gaps(pending) if gaps is not None else (pending, ())


def conditional_writes_gap(repo: Repository, near: str) -> str | None:
    """None when `repo` honours conditional writes (a folder always does), else what its store
    does instead, e.g. "ignores conditional writes (If-None-Match)". S3 stores are probed once
    per process, beside the key `near`."""
    probe = getattr(repo, "conditional_writes_gap", None)
    return probe(near) if probe is not None else None
