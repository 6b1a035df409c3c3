"""Security at rest for a repository: S3 server-side encryption on every write, Object Lock
retention (set, extended, read back, honoured by deletes), and who can read a local folder or
an S3 bucket.

SSE is asked for on every request that creates an object (PutObject, CreateMultipartUpload,
CopyObject), by a botocore hook on the repository's client, so archives, set records, the lock
and conditional-write probes all carry it without each call site knowing.

Object Lock: qbr sets a retain-until date after writing (PutObjectRetention), only ever later
than the one there (COMPLIANCE cannot be shortened; GOVERNANCE only with a bypass qbr never
sends), and reads it back with HeadObject. On a lock bucket (versioned) a plain DeleteObject
only hides an object behind a delete marker; qbr deletes every version of the key instead, so a
locked object is refused out loud rather than hidden.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qbr.errors import RepositoryError

SSE_OPERATIONS = ("PutObject", "CreateMultipartUpload", "CopyObject")


def request_sse(repo: Any, args: Mapping[str, str]) -> None:
    """Ask for server-side encryption `args` (ServerSideEncryption, SSEKMSKeyId) on every object
    the S3 repository `repo` creates."""
    wanted = dict(args)

    def add(params: dict[str, Any], **_: Any) -> None:
        for name, value in wanted.items():
            params.setdefault(name, value)

    for operation in SSE_OPERATIONS:
        repo._client.meta.events.register(f"before-parameter-build.s3.{operation}", add)
    repo.sse = wanted


def _s3(repo: Any) -> tuple[Any, str]:
    client = getattr(repo, "_client", None)
    if client is None:
        raise RepositoryError(f"{repo.describe()} is not an S3 repository; Object Lock needs S3.")
    return client, repo.bucket


def retention(repo: Any, key: str) -> tuple[str, datetime] | None:
    """(mode, retain-until) of an object's current version, or None (no lock, or gone)."""
    import botocore.exceptions

    client, bucket = _s3(repo)
    try:
        head = client.head_object(Bucket=bucket, Key=repo._full(key))
    except botocore.exceptions.ClientError as error:
        if int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0) == 404:
            return None
        raise repo._error(error, "lookup", key) from None
    until = head.get("ObjectLockRetainUntilDate")
    if until is None:
        return None
    return str(head.get("ObjectLockMode") or ""), until.astimezone(UTC)


def retain(repo: Any, key: str, mode: str, until: datetime) -> datetime:
    """Retain `key` until at least `until` in `mode`; an existing later date stays. Returns the
    date in force."""
    import botocore.exceptions

    client, bucket = _s3(repo)
    current = retention(repo, key)
    if current is not None and current[1] >= until:
        return current[1]
    try:
        client.put_object_retention(
            Bucket=bucket, Key=repo._full(key), Retention={"Mode": mode, "RetainUntilDate": until.astimezone(UTC)},
        )
    except botocore.exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("InvalidRequest", "ObjectLockConfigurationNotFoundError", "InvalidBucketState"):
            raise RepositoryError(
                f"S3 refused to lock {repo.describe()}/{key} ({code}): object_lock needs a bucket created with "
                "Object Lock enabled (aws s3api create-bucket --object-lock-enabled-for-bucket)."
            ) from None
        raise repo._error(error, "Object Lock retention", key) from None
    return until


def delete_versions(repo: Any, key: str) -> None:
    """Delete every version of `key` (and its delete markers); a locked version is refused by
    S3, and that refusal is one sentence with the date it is locked until."""
    import botocore.exceptions

    client, bucket = _s3(repo)
    full = repo._full(key)
    try:
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=full)
        versions = [(v["Key"], v["VersionId"]) for page in pages for kind in ("Versions", "DeleteMarkers")
                    for v in page.get(kind, []) if v["Key"] == full]
    except botocore.exceptions.ClientError as error:
        raise repo._error(error, "listing of versions", key) from None
    for name, version in versions:
        try:
            client.delete_object(Bucket=bucket, Key=name, VersionId=version)
        except botocore.exceptions.ClientError as error:
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status == 403:
                held = retention(repo, key)
                until = f" until {held[1]:%Y-%m-%dT%H:%M:%SZ} ({held[0]})" if held else ""
                raise RepositoryError(
                    f"{repo.describe()}/{key} is protected by S3 Object Lock{until}; S3 refused to delete it."
                ) from None
            raise repo._error(error, "delete", key) from None


# -- who can read a repository ---------------------------------------------------------------


def folder_modes(group: str | None) -> tuple[int, int, int | None]:
    """(folder mode, file mode, gid) of a local repository: owner-only, or readable by `group`."""
    if group is None:
        return 0o700, 0o600, None
    import grp

    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise RepositoryError(f"group {group!r} does not exist on this host; create it or fix the repository's group.") from None
    return 0o750, 0o640, gid


def loosened(root: Path, group: str | None) -> list[str]:
    """Folders and files under `root` that someone made readable beyond what qbr gives them."""
    folder_mode, file_mode, _ = (0o700, 0o600, None) if group is None else (0o750, 0o640, None)
    found: list[str] = []

    def judge(path: Path, mode: int, allowed: int, what: str) -> None:
        extra = stat.S_IMODE(mode) & ~allowed
        if extra:
            who = "anyone" if extra & 0o007 else "its group"
            found.append(f"{what} {path} is {oct(stat.S_IMODE(mode))[2:]}, open to {who}; qbr makes it "
                         f"{oct(allowed)[2:]} (chmod {oct(allowed)[2:]} {path})")

    if not root.exists():
        return found
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        judge(here, os.lstat(here).st_mode, folder_mode, "folder")
        for name in files:
            path = here / name
            try:
                judge(path, os.lstat(path).st_mode, file_mode, "file")
            except FileNotFoundError:
                continue
    return found


def bucket_exposure(repo: Any) -> list[str]:
    """Warnings about an S3 bucket others may read: no Block Public Access, or a policy that
    lets anyone read. What qbr is not allowed to read is not judged."""
    import botocore.exceptions

    client, bucket = _s3(repo)
    found: list[str] = []
    try:
        block = client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        off = [name for name in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets") if not block.get(name)]
        if off:
            found.append(f"bucket {bucket} does not block public access fully ({', '.join(off)} off); turn on Block Public Access")
    except botocore.exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchPublicAccessBlockConfiguration":
            found.append(f"bucket {bucket} has no Block Public Access configuration; turn it on (aws s3api put-public-access-block)")
    try:
        policy = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
        for statement in policy.get("Statement", []):
            principal = statement.get("Principal")
            public = principal == "*" or (isinstance(principal, dict) and principal.get("AWS") in ("*", ["*"]))
            actions = statement.get("Action")
            actions = [actions] if isinstance(actions, str) else list(actions or [])
            if statement.get("Effect") == "Allow" and public and any(a in ("s3:GetObject", "s3:*", "*") for a in actions):
                found.append(f"bucket {bucket} has a policy that lets anyone read its objects (Principal \"*\"); remove that statement")
                break
    except botocore.exceptions.ClientError:
        pass  # no policy, or qbr may not read it
    except (ValueError, TypeError):
        pass
    return found


def protect(repo: Any, config: Any) -> Any:
    """`repo` (opened from the manifest's RepositoryConfig `config`) with its SSE requested."""
    if config.kind == "s3" and config.sse is not None:
        request_sse(repo, config.sse.put_args())
    return repo


def open_folder(config: Any) -> Any:
    """A manifest's folder repository, private by default: folders 0700 and files 0600, or with
    `group` 0750/0640 and that group."""
    from qbr.repository.local import LocalRepository

    folder_mode, file_mode, gid = folder_modes(config.group)
    return LocalRepository(Path(config.path), file_mode=file_mode, dir_mode=folder_mode, gid=gid)
