"""Server-side S3 snapshot storage (`storage.snapshots_config.snapshots_storage: s3`), as Qdrant 1.19 has it.

Read from v1.19.0's lib/collection/src/common/snapshots_manager.rs (`SnapshotStorageCloud`) and
lib/collection/src/operations/snapshot_storage_ops.rs:

- keys are the local paths without their "./": `<prefix>/<collection>/<name>`,
  `<prefix>/<collection>/shards/<id>/<name>`, `<prefix>/<full snapshot name>`;
- create (`multipart_upload`): the archive is built locally, multipart-uploaded (50 MiB parts),
  the local file removed; no checksum object is written and the answer (`get_snapshot_description`,
  a HEAD) has no checksum; a failed upload is never aborted, its parts stay in the bucket;
- list (`list_snapshot_descriptions`): recursive under `<dir>/`, nothing filtered, name = the
  last path segment, creation_time = LastModified in the server's local time zone (naive);
- download: a GET streamed through the node; delete: HEAD (404 when missing), then DELETE.

Every node has its own `S3Store` (its own counters and faults) over the cluster's one client.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

from tests.emulator.errors import ApiError

DEFAULT_PART_SIZE = 50 * 1024 * 1024  # DEFAULT_CHUNK_SIZE in get_appropriate_chunk_size
MAX_PARTS = 10_000
READ_BLOCK = 1 << 20
MISSING = ("404", "NoSuchKey", "NotFound")


@dataclass(frozen=True)
class S3Settings:
    """`storage.snapshots_config.s3_config` plus the key prefix (Qdrant's `snapshots_path`, default
    ./snapshots) and `part_size` (50 MiB in Qdrant; smaller for tests, but S3 and moto refuse to
    complete an upload whose parts, the last excepted, are under 5 MiB)."""

    bucket: str
    endpoint_url: str | None = None
    prefix: str = "snapshots"
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    part_size: int = DEFAULT_PART_SIZE

    @classmethod
    def from_config(cls, config: dict | S3Settings) -> S3Settings:
        if isinstance(config, S3Settings):
            return config
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown or not config.get("bucket"):
            raise ValueError(f"snapshots_s3 needs a bucket and takes only {sorted(known)}; got {sorted(config)}")
        settings = cls(**config)
        if settings.part_size < 1:
            raise ValueError("part_size must be positive")
        return settings

    @classmethod
    def from_url(cls, url: str, **extra: Any) -> S3Settings:
        """`http://127.0.0.1:9000/bucket[/prefix]` (the CLI's --snapshots-s3)."""
        parts = urlsplit(url)
        bucket, _, prefix = parts.path.strip("/").partition("/")
        if parts.scheme not in ("http", "https") or not parts.netloc or not bucket:
            raise ValueError(f"expected http(s)://HOST:PORT/BUCKET[/PREFIX], got {url!r}")
        return cls(bucket=bucket, endpoint_url=f"{parts.scheme}://{parts.netloc}", prefix=prefix or "snapshots",
                   **extra)

    def key(self, *parts: str) -> str:
        """The object key of a path below `snapshots_path` (`trim_dot_slash`)."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/") not in ("", "."))


def make_client(settings: S3Settings):
    """A boto3 client as object_store's `AmazonS3Builder::from_env()` makes it: credentials and
    region from the config, else from the AWS environment; path-style requests."""
    import boto3
    from botocore.config import Config

    region = settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"}, request_checksum_calculation="when_required",
                    response_checksum_validation="when_required")
    return boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=region, config=config,
                        aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key)


def chrono_naive(moment: datetime) -> str:
    """A timestamp in the local time zone, naive, as chrono prints a NaiveDateTime (fraction only when set)."""
    local = moment.astimezone().replace(tzinfo=None)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    micros = local.microsecond
    if micros:
        text += f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"
    return text


def _missing(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in MISSING


def _internal(message: str) -> ApiError:
    return ApiError(500, f"Service internal error: {message}")


def _split_parts(chunks: Iterable[bytes], part_size: int) -> Iterator[bytes]:
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= part_size:
            yield bytes(pending[:part_size])
            del pending[:part_size]
    if pending:
        yield bytes(pending)


@dataclass
class UploadFault:
    after_parts: int
    times: int | None


class S3Store:
    """One node's view of the shared bucket: what Qdrant's `SnapshotStorageCloud` does, plus counters.

    Test knobs: `fail_uploads(after_parts, times)`; counters `uploaded_bytes`, `downloaded_bytes`
    (bytes the node moved to and from S3) and `calls` ({S3 operation: count}).
    """

    def __init__(self, settings: S3Settings, client):
        self.settings = settings
        self.client = client
        self.uploaded_bytes = 0
        self.downloaded_bytes = 0
        self.calls: Counter = Counter()
        self._faults: list[UploadFault] = []
        self._lock = threading.Lock()

    def fail_uploads(self, after_parts: int = 1, times: int | None = 1) -> None:
        """The next `times` uploads from this node fail once `after_parts` parts are in (before the
        completion when there are no more): the create answers 500 and the unfinished multipart
        upload stays in the bucket, as Qdrant never aborts one."""
        with self._lock:
            self._faults.append(UploadFault(int(after_parts), times))

    def _take_fault(self) -> UploadFault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.pop(0)
            return fault

    def _call(self, operation: str, method: str, **params: Any) -> dict:
        with self._lock:
            self.calls[operation] += 1
        return getattr(self.client, method)(Bucket=self.settings.bucket, **params)

    def _count(self, attribute: str, n: int) -> None:
        with self._lock:
            setattr(self, attribute, getattr(self, attribute) + n)

    # -- operations ---------------------------------------------------------------------------
    def describe(self, key: str) -> dict:
        """`get_snapshot_description`: a HEAD; the answer has no checksum."""
        try:
            head = self._call("HeadObject", "head_object", Key=key)
        except Exception as err:  # noqa: BLE001 - any S3 failure is a service error
            raise _internal(f"Failed to get head: {err}") from None
        return {"name": key.rsplit("/", 1)[-1], "creation_time": chrono_naive(head["LastModified"]),
                "size": head["ContentLength"]}

    def size(self, key: str) -> int:
        return self.describe(key)["size"]

    def list(self, prefix: str) -> list[dict]:
        """Every object under `prefix/`, recursively, whatever its name."""
        found = []
        token: dict = {}
        try:
            while True:
                page = self._call("ListObjectsV2", "list_objects_v2", Prefix=f"{prefix}/" if prefix else "", **token)
                for item in page.get("Contents", []):
                    found.append({"name": item["Key"].rsplit("/", 1)[-1],
                                  "creation_time": chrono_naive(item["LastModified"]), "size": item["Size"]})
                if not page.get("IsTruncated"):
                    return found
                token = {"ContinuationToken": page["NextContinuationToken"]}
        except Exception as err:  # noqa: BLE001
            raise _internal(f"Failed to list snapshots: {err}") from None

    def open(self, key: str) -> tuple[Iterator[bytes], int]:
        """`get_snapshot_stream`: the object's bytes, read as they are sent (plain-text 404 when missing)."""
        try:
            response = self._call("GetObject", "get_object", Key=key)
        except Exception as err:  # noqa: BLE001
            if _missing(err):
                raise ApiError(404, f"Not found: Snapshot {key} does not exist: Server returned non-2xx status "
                                    "code: 404 Not Found", plain=True) from None
            raise _internal(f"Failed to get {key}: {err}") from None
        body = response["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                for block in body.iter_chunks(READ_BLOCK):
                    self._count("downloaded_bytes", len(block))
                    yield block
            finally:
                body.close()

        return chunks(), int(response["ContentLength"])

    def download_to(self, key: str, target: Path) -> None:
        """`download_snapshot` (recover a shard by name): the object to a local temp file."""
        try:
            chunks, _ = self.open(key)
        except ApiError as err:
            if err.status == 404:
                raise ApiError(404, f'Not found: Snapshot Path {{ raw: "{key}" }}') from None
            raise
        with open(target, "wb") as fh:
            for block in chunks:
                fh.write(block)

    def store(self, chunks: Iterable[bytes], key: str) -> dict:
        """`multipart_upload` then `get_snapshot_description`; a later upload to the same key wins."""
        try:
            upload_id = self._call("CreateMultipartUpload", "create_multipart_upload", Key=key)["UploadId"]
        except Exception as err:  # noqa: BLE001
            raise _internal(f"Failed to put multipart: {err}") from None
        fault = self._take_fault()
        parts: list[dict] = []
        try:
            for body in _split_parts(chunks, self.settings.part_size):
                if fault is not None and len(parts) >= fault.after_parts:
                    raise ConnectionError(f"connection reset while sending part {len(parts) + 1} (injected)")
                if len(parts) >= MAX_PARTS:
                    raise ValueError(f"more than {MAX_PARTS} parts: raise part_size")
                number = len(parts) + 1
                etag = self._call("UploadPart", "upload_part", Key=key, UploadId=upload_id, PartNumber=number,
                                  Body=body)["ETag"]
                self._count("uploaded_bytes", len(body))
                parts.append({"ETag": etag, "PartNumber": number})
            if fault is not None:
                raise ConnectionError(f"connection reset after {len(parts)} part(s) (injected)")
            self._call("CompleteMultipartUpload", "complete_multipart_upload", Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
        except Exception as err:  # noqa: BLE001 - never aborted: the parts stay billed
            raise _internal(f"Failed to finish upload: {err}") from None
        return self.describe(key)

    def delete(self, key: str) -> bool:
        """`delete_snapshot`: HEAD (404 when missing), then DELETE."""
        try:
            self._call("HeadObject", "head_object", Key=key)
        except Exception as err:  # noqa: BLE001
            if _missing(err):
                raise ApiError(404, f'Not found: Snapshot Path {{ raw: "{key}" }}') from None
            raise _internal(f"Failed to delete snapshot: {err}") from None
        try:
            self._call("DeleteObject", "delete_object", Key=key)
        except Exception as err:  # noqa: BLE001
            raise _internal(f"Failed to delete snapshot: {err}") from None
        return True


# -- views over the bucket for tests ----------------------------------------------------------
def bucket_objects(client, settings: S3Settings) -> dict[str, int]:
    """{key: size} of every object under the settings' prefix."""
    found: dict[str, int] = {}
    prefix = settings.key()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket,
                                                                Prefix=f"{prefix}/" if prefix else ""):
        found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    return found


def unfinished_uploads(client, settings: S3Settings) -> list[str]:
    """Keys of multipart uploads started under the prefix and never completed nor aborted."""
    keys: list[str] = []
    prefix = settings.key()
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=settings.bucket,
                                                                       Prefix=f"{prefix}/" if prefix else ""):
        keys += [upload["Key"] for upload in page.get("Uploads", [])]
    return sorted(keys)
