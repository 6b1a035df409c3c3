"""A repository under a prefix of an S3 bucket (AWS or any S3-compatible store), on boto3.

Large objects go up as a multipart upload with a few parts in flight (see multipart.py: memory
is bounded by parts in flight x part size), aborted on any failure, so an object appears whole
or not at all. Every request sent is counted by kind (`requests`, see accounting.py). Small records use
PutObject, with S3's conditional writes (If-None-Match: *, If-Match) for state and locks.
Credentials come from boto3's standard chain only and never appear in a message.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from qbr import faultpoints
from qbr.errors import NotFoundError, RepositoryError
from qbr.repository.accounting import RequestCounter
from qbr.repository.base import (
    ObjectInfo,
    PendingUpload,
    PreconditionFailed,
    Repository,
    validate_key,
    validate_prefix,
)
from qbr.repository.multipart import DEFAULT_IN_FLIGHT, DEFAULT_PART_SIZE, MIN_PART_SIZE, part_size_for, read_part, upload_parts

BODY_ATTEMPTS = 3  # a small object whose body is cut short is read this many times in all

_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "403",
}
_NETWORK = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ResponseStreamingError,
)


def _network_reason(error: BaseException) -> str:
    """The innermost OS-level reason ("Connection refused", "timed out"), without URLs."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        kwargs = getattr(current, "kwargs", None)
        if isinstance(kwargs, dict) and isinstance(kwargs.get("error"), BaseException):
            stack.append(kwargs["error"])
        stack.extend([current.__context__, current.__cause__])
    if isinstance(error, (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError)):
        return "timed out"
    return type(error).__name__


def _server_time(response: dict[str, Any]) -> datetime:
    """The server's clock for a write (S3's Last-Modified follows it); ours if it sent none."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        try:
            return parsedate_to_datetime(date).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


def _code(error: botocore.exceptions.ClientError) -> tuple[str, int]:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


class S3Repository(Repository):
    """A bucket prefix holding the repository layout."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        name: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        in_flight: int = DEFAULT_IN_FLIGHT,
        page_size: int = 1000,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        if not bucket:
            raise RepositoryError("an S3 repository needs a bucket name; set repositories.<name>.s3.bucket.")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part size)")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.name = name
        self.part_size = part_size
        self.in_flight = in_flight
        self.page_size = page_size
        self.counter = RequestCounter()
        endpoint_url = endpoint_url or None
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=32,
            signature_version="s3v4",  # also for presigned URLs (botocore would sign some with SigV2)
            # S3-compatible stores behind a custom endpoint (MinIO, Ceph...) rarely have
            # bucket-in-hostname DNS; path-style works everywhere there.
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        try:
            session = boto3.session.Session(region_name=region or None)
            self._client = session.client("s3", endpoint_url=endpoint_url, config=config)
        except ValueError as error:
            raise RepositoryError(
                f"S3 endpoint {endpoint_url!r} is not usable ({error}); fix the repository's s3.endpoint_url."
            ) from None
        except botocore.exceptions.BotoCoreError as error:
            raise RepositoryError(f"cannot set up the S3 client for s3://{bucket}: {type(error).__name__}.") from None
        self.endpoint = self._client.meta.endpoint_url
        self.counter.attach(self._client)

    @property
    def requests(self) -> dict[str, int]:
        """Requests sent so far by kind, and bytes moved (see accounting.FIELDS and describe_requests)."""
        return self.counter.counts()

    # -- keys and errors --------------------------------------------------------------------

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _root(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _setting(self, field: str) -> str:
        return f"repositories.{self.name}.s3.{field}" if self.name else f"the repository's s3.{field} in the manifest"

    def _error(self, error: Exception, action: str, key: str | None = None) -> RepositoryError:
        """One plain sentence for a failed S3 call; never credentials, never a presigned URL."""
        where = f"s3://{self.bucket}/{self._full(key)}" if key else self.describe()
        if isinstance(error, botocore.exceptions.ClientError):
            code, status = _code(error)
            if code == "NoSuchBucket":
                return RepositoryError(
                    f"S3 bucket {self.bucket!r} does not exist (endpoint {self.endpoint}); "
                    f"create it or fix {self._setting('bucket')}."
                )
            if code in _DENIED or status == 403:
                return RepositoryError(
                    f"access to {self.describe()} was denied ({code or status}); "
                    "check the AWS credentials qbr runs with."
                )
            if code == "InvalidBucketName":
                return RepositoryError(f"S3 bucket name {self.bucket!r} is not valid; fix {self._setting('bucket')}.")
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
                region = error.response.get("Error", {}).get("Region")
                hint = f" (it is in {region})" if region else ""
                return RepositoryError(
                    f"S3 bucket {self.bucket!r} is in another region{hint}; set {self._setting('region')}."
                )
            message = str(error.response.get("Error", {}).get("Message", ""))[:200]
            detail = f": {message}" if message else ""
            return RepositoryError(f"S3 {action} of {where} failed with {code or status}{detail}.")
        if isinstance(error, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
            return RepositoryError(
                f"no usable AWS credentials for {self.describe()}; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role."
            )
        if isinstance(error, _NETWORK):
            return RepositoryError(f"cannot reach S3 endpoint {self.endpoint}: {_network_reason(error)}.")
        return RepositoryError(f"S3 {action} of {where} failed: {type(error).__name__}.")

    def _call(self, action: str, key: str | None, method: str, **params: Any) -> dict[str, Any]:
        try:
            return getattr(self._client, method)(Bucket=self.bucket, **params)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise self._error(error, action, key) from None

    # -- writing ----------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], *, size: int | None = None) -> ObjectInfo:
        """`size`: the object's size if known (Qdrant reports a snapshot's); the part size is then
        chosen so that it fits in MAX_PARTS parts, and memory stays `in_flight` parts of it."""
        full = self._full(key)
        try:
            part_size = part_size_for(size, self.part_size)
        except ValueError as error:
            raise RepositoryError(f"{full} cannot be stored in S3: {error}.") from None
        source = iter(chunks)
        part = read_part(source, part_size)
        if len(part) < part_size:  # it all fits in one part: one PutObject, nothing to clean up
            response = self._call("upload", key, "put_object", Key=full, Body=part)
            return ObjectInfo(key=key, size=len(part), modified=_server_time(response), etag=response.get("ETag"))
        checksum = self._client.meta.config.request_checksum_calculation == "when_supported"
        extra = {"ChecksumAlgorithm": "CRC32"} if checksum else {}
        upload_id = self._call("upload", key, "create_multipart_upload", Key=full, **extra)["UploadId"]

        def upload(number: int, body: bytearray) -> dict[str, Any]:
            response = self._call(
                "upload", key, "upload_part", Key=full, UploadId=upload_id, PartNumber=number, Body=body, **extra
            )
            entry = {"ETag": response["ETag"], "PartNumber": number}
            if "ChecksumCRC32" in response:
                entry["ChecksumCRC32"] = response["ChecksumCRC32"]
            faultpoints.reached("s3.part_uploaded")
            return entry

        pending = [part]
        del part  # upload_parts takes the first part out of `pending`: no reference stays here
        try:
            parts, stored = upload_parts(pending, source, upload, what=full, part_size=part_size,
                                         size_known=size is not None, in_flight=self.in_flight)
            response = self._call(
                "upload", key, "complete_multipart_upload", Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._abort(full, upload_id)
            raise
        return ObjectInfo(key=key, size=stored, modified=_server_time(response), etag=response.get("ETag"))

    def _abort(self, full: str, upload_id: str) -> None:
        """Best effort: a failed abort leaves a pending upload that pending_uploads() will show."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            pass

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        if if_none_match and if_match is not None:
            raise ValueError("put_bytes takes if_none_match or if_match, not both")
        full = self._full(key)
        params: dict[str, Any] = {"Key": full, "Body": data}
        if if_none_match:
            params["IfNoneMatch"] = "*"
        if if_match is not None:
            params["IfMatch"] = if_match
        try:
            response = self._client.put_object(Bucket=self.bucket, **params)
        except botocore.exceptions.ClientError as error:
            code, status = _code(error)
            conflict = code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)
            if if_none_match and conflict:
                raise PreconditionFailed(
                    f"{key!r} already exists in {self.describe()}; another writer created it first."
                ) from None
            if if_match is not None and conflict:
                raise PreconditionFailed(
                    f"{key!r} in {self.describe()} changed since it was read (etag moved); read it again and retry."
                ) from None
            if if_match is not None and (code == "NoSuchKey" or status == 404):
                raise PreconditionFailed(
                    f"{key!r} in {self.describe()} is gone; it was deleted since it was read."
                ) from None
            raise self._error(error, "upload", key) from None
        except botocore.exceptions.BotoCoreError as error:
            raise self._error(error, "upload", key) from None
        return ObjectInfo(key=key, size=len(data), modified=_server_time(response), etag=response.get("ETag"))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        condition = {"IfMatch": if_match} if if_match is not None else {}
        try:  # S3 answers a failed If-Match with 412, or 404 if the object is gone, 409 if racing
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key), **condition)
        except botocore.exceptions.ClientError as error:
            code, status = _code(error)
            if if_match is not None and (code in ("PreconditionFailed", "NoSuchKey") or status in (404, 409, 412)):
                raise PreconditionFailed(f"{key!r} in {self.describe()} changed or is gone since it was read; not deleting it.") from None
            raise self._error(error, "delete", key) from None
        except botocore.exceptions.BotoCoreError as error:
            raise self._error(error, "delete", key) from None

    # -- reading ----------------------------------------------------------------------------

    def _get(self, key: str) -> dict[str, Any]:
        full = self._full(key)
        try:
            return self._client.get_object(Bucket=self.bucket, Key=full)
        except botocore.exceptions.ClientError as error:
            if _code(error)[0] == "NoSuchKey":
                raise NotFoundError(f"{key!r} does not exist in {self.describe()}.") from None
            raise self._error(error, "download", key) from None
        except botocore.exceptions.BotoCoreError as error:
            raise self._error(error, "download", key) from None

    @contextmanager
    def open_read(self, key: str, chunk_size: int = 1 << 20) -> Iterator[Iterator[bytes]]:
        body = self._get(key)["Body"]
        try:
            yield self._chunks(body, key, chunk_size)
        finally:
            body.close()

    def _chunks(self, body: Any, key: str, chunk_size: int) -> Iterator[bytes]:
        try:
            for chunk in body.iter_chunks(chunk_size):
                self.counter.received(len(chunk))
                yield chunk
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise self._error(error, "download", key) from None
        except OSError as error:  # urllib3 protocol errors mid-body
            raise RepositoryError(f"cannot reach S3 endpoint {self.endpoint}: {_network_reason(error)}.") from None

    def get_bytes(self, key: str) -> bytes:
        return self.get_with_info(key)[0]

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        # botocore retries a request, not a body cut short while it is read: a small object is
        # read again whole (a set record read once by observe must not look damaged).
        for attempt in range(1, BODY_ATTEMPTS + 1):
            response = self._get(key)
            body = response["Body"]
            try:
                data = b"".join(self._chunks(body, key, 1 << 20))
                break
            except RepositoryError:
                if attempt == BODY_ATTEMPTS:
                    raise
            finally:
                body.close()
        modified = response["LastModified"].astimezone(UTC)
        return data, ObjectInfo(key=key, size=len(data), modified=modified, etag=response.get("ETag"))

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=full)
        except botocore.exceptions.ClientError as error:
            code, status = _code(error)
            if status == 404 and code != "NoSuchBucket":
                return None
            raise self._error(error, "lookup", key) from None
        except botocore.exceptions.BotoCoreError as error:
            raise self._error(error, "lookup", key) from None
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            modified=response["LastModified"].astimezone(UTC),
            etag=response.get("ETag"),
        )

    def _pages(self, operation: str, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator(operation)
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
        )
        try:
            yield from pages
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise self._error(error, "listing") from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under `prefix`, sorted by key (S3 lists in UTF-8 byte order, as str sorts)."""
        validate_prefix(prefix)
        root = self._root()
        for page in self._pages("list_objects_v2", root + prefix):
            for item in page.get("Contents", []):
                full = item["Key"]
                if not full.startswith(root) or full.endswith("/"):
                    continue  # outside us, or a console "folder" marker
                yield ObjectInfo(
                    key=self._relative(full),
                    size=int(item["Size"]),
                    modified=item["LastModified"].astimezone(UTC),
                    etag=item.get("ETag"),
                )

    # -- the rest ---------------------------------------------------------------------------

    def presigned_get(self, key: str, expires_s: int = 900) -> str | None:
        full = self._full(key)
        try:
            return self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=int(expires_s)
            )
        except botocore.exceptions.BotoCoreError as error:
            raise self._error(error, "presigning", key) from None

    def pending_uploads(self) -> list[PendingUpload]:
        root = self._root()
        uploads = []
        for page in self._pages("list_multipart_uploads", root):
            for item in page.get("Uploads", []):
                if not item["Key"].startswith(root):
                    continue
                uploads.append(
                    PendingUpload(
                        key=self._relative(item["Key"]),
                        upload_id=item["UploadId"],
                        initiated=item["Initiated"].astimezone(UTC),
                    )
                )
        uploads.sort(key=lambda upload: (upload.key, upload.upload_id))
        return uploads

    def abort_upload(self, upload: PendingUpload) -> None:
        if not upload.key or not upload.upload_id:
            raise RepositoryError("an unfinished upload needs a key and an upload id to be aborted.")
        full = f"{self.prefix}/{upload.key}" if self.prefix else upload.key
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload.upload_id)
        except botocore.exceptions.ClientError as error:
            if _code(error)[0] == "NoSuchUpload":
                return
            raise self._error(error, "abort of an unfinished upload", None) from None
        except botocore.exceptions.BotoCoreError as error:
            raise self._error(error, "abort of an unfinished upload", None) from None
