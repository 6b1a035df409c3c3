"""A repository under a prefix of an S3 bucket (AWS or any S3-compatible store), on boto3.

Large objects go up as a multipart upload with a few parts in flight (see multipart.py: memory
is bounded by parts in flight x part size), aborted on any failure, so an object appears whole
or not at all. Every request sent is counted by kind (`requests`, see accounting.py). Small records use
PutObject, with S3's conditional writes (If-None-Match: *, If-Match) for state and locks.
Credentials come from boto3's standard chain only and never appear in a message.

S3-compatible stores lack some APIs: one that cannot list or abort unfinished multipart uploads
skips that cleanup and says once what to set up instead; whether a store honours conditional
writes is probed once, before a lock is taken there (see store_gaps.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import botocore.exceptions

from qbr import faultpoints
from qbr.errors import NotFoundError, RepositoryError, UnreachableError
from qbr.repository import store_gaps
from qbr.repository.accounting import RequestCounter
from qbr.repository.base import (
    ObjectInfo,
    PendingUpload,
    PreconditionFailed,
    Repository,
    validate_key,
    validate_prefix,
)
from qbr.repository.multipart import DEFAULT_PART_SIZE, MIN_PART_SIZE, part_size_for, read_part, upload_parts
from qbr.repository.s3_setup import DENIED, NETWORK, client_config, network_reason, open_client, unsupported
from qbr.repository.s3_setup import error_code as _code
from qbr.repository.s3_setup import server_time as _server_time

BODY_ATTEMPTS = 3  # a small object whose body is cut short is read this many times in all
_BOTO_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


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
        in_flight: int | None = None,
        page_size: int = 1000,
        max_attempts: int | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        addressing_style: str | None = None,
        checksums: str | None = None,
    ) -> None:
        """None for a client setting: qbr's default for the store (see s3_setup.client_config)."""
        if not bucket:
            raise RepositoryError("an S3 repository needs a bucket name; set repositories.<name>.s3.bucket.")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part size)")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        if in_flight is not None and in_flight < 1:
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
        config = client_config(
            endpoint_url or None, addressing_style=addressing_style, checksums=checksums,
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_attempts=max_attempts,
        )
        self._client = open_client(bucket, endpoint_url, region, config)
        self.endpoint = self._client.meta.endpoint_url
        self.store = (self.endpoint, bucket)  # what store_gaps learns about is kept per store
        self.counter.attach(self._client)

    @property
    def requests(self) -> dict[str, int]:
        """Requests sent so far by kind, and bytes moved (see accounting.FIELDS and describe_requests)."""
        return self.counter.counts()

    # -- keys and errors --------------------------------------------------------------------

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def cache_identity(self) -> str | None:
        return f"{self.endpoint or 'aws'} {self.describe()}"

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def full_key(self, key: str) -> str:
        """The bucket key of a repository key (for copies made inside S3 by another client)."""
        return self._full(key)

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
            if code in DENIED or status == 403:
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
        if isinstance(error, NETWORK):
            return UnreachableError(f"cannot reach S3 endpoint {self.endpoint}: {network_reason(error)}.")
        return RepositoryError(f"S3 {action} of {where} failed: {type(error).__name__}.")

    def _call(self, action: str, key: str | None, method: str, **params: Any) -> dict[str, Any]:
        try:
            return getattr(self._client, method)(Bucket=self.bucket, **params)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise self._error(error, action, key) from None

    # -- writing ----------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], *, size: int | None = None) -> ObjectInfo:
        """`size`: the object's size if known (Qdrant reports a snapshot's); the part size is then
        chosen so that it fits in MAX_PARTS parts, and memory stays `in_flight` parts of it
        (None: multipart.parts_in_flight's choice)."""
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
        """Best effort: a failed abort leaves a pending upload that pending_uploads() will show
        (or, on a store that refuses aborts, that its lifecycle rule removes: said once)."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except _BOTO_ERRORS as error:
            answer = unsupported(error)
            if answer is not None:
                store_gaps.learn(self.store, store_gaps.ABORT_UPLOAD, answer)
                store_gaps.warn_once(store_gaps.cannot_abort(self.describe(), self.bucket, answer))

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
            raise UnreachableError(f"cannot reach S3 endpoint {self.endpoint}: {network_reason(error)}.") from None

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
        """Unfinished multipart uploads under the prefix; none on a store that cannot list them
        (cleanup_gaps() then says so)."""
        learned, gap = store_gaps.known(self.store, store_gaps.LIST_UPLOADS)
        if learned and gap is not None:
            return []
        root = self._root()
        uploads = []
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=root, PaginationConfig={"PageSize": self.page_size}
        )
        try:
            for page in pages:
                for item in page.get("Uploads", []):
                    if item["Key"].startswith(root):
                        initiated = item["Initiated"].astimezone(UTC)
                        uploads.append(PendingUpload(self._relative(item["Key"]), item["UploadId"], initiated))
        except _BOTO_ERRORS as error:
            answer = unsupported(error)
            if answer is None:
                raise self._error(error, "listing") from None
            store_gaps.learn(self.store, store_gaps.LIST_UPLOADS, answer)
            return []
        store_gaps.learn(self.store, store_gaps.LIST_UPLOADS, None)
        uploads.sort(key=lambda upload: (upload.key, upload.upload_id))
        return uploads

    def abort_upload(self, upload: PendingUpload) -> None:
        """Abort an unfinished upload; one already gone is fine, and so is a store that refuses
        aborts (said once: its lifecycle rule has to remove them)."""
        if not upload.key or not upload.upload_id:
            raise RepositoryError("an unfinished upload needs a key and an upload id to be aborted.")
        full = f"{self.prefix}/{upload.key}" if self.prefix else upload.key
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload.upload_id)
        except botocore.exceptions.ClientError as error:
            if _code(error)[0] == "NoSuchUpload":
                return
            answer = unsupported(error)
            if answer is None:
                raise self._error(error, "abort of an unfinished upload", None) from None
            store_gaps.learn(self.store, store_gaps.ABORT_UPLOAD, answer)
            store_gaps.warn_once(store_gaps.cannot_abort(self.describe(), self.bucket, answer))
        except botocore.exceptions.BotoCoreError as error:
            raise self._error(error, "abort of an unfinished upload", None) from None

    # -- what the store lacks ---------------------------------------------------------------

    def cleanup_gaps(self, pending: list[PendingUpload]) -> tuple[list[PendingUpload], tuple[str, ...]]:
        """Of `pending` (what pending_uploads() found), those qbr can abort, and one sentence for
        each cleanup this store cannot do (for a plan's warnings). Aborting is probed (an abort
        of an upload that does not exist) only when there is something to abort."""
        gaps = []
        learned, answer = store_gaps.known(self.store, store_gaps.LIST_UPLOADS)
        if learned and answer is not None:
            gaps.append(store_gaps.cannot_list(self.describe(), self.bucket, answer))
        if pending:
            learned, answer = store_gaps.known(self.store, store_gaps.ABORT_UPLOAD)
            if not learned:
                try:
                    answer = store_gaps.probe_abort(self._client, self.bucket, self._full("locks/abort"))
                except _BOTO_ERRORS as error:
                    raise self._error(error, "abort of an unfinished upload") from None
                store_gaps.learn(self.store, store_gaps.ABORT_UPLOAD, answer)
            if answer is not None:
                gaps.append(store_gaps.cannot_abort(self.describe(), self.bucket, answer, len(pending)))
                pending = []
        return pending, tuple(gaps)

    def conditional_writes_gap(self, near: str) -> str | None:
        """None when this store honours If-None-Match and If-Match (what qbr's locks stand on),
        else what it does instead ("ignores conditional writes (If-None-Match)"). Probed once per
        process and store, with a probe object beside the key `near` (relative), removed after."""
        learned, gap = store_gaps.known(self.store, store_gaps.CONDITIONAL_WRITES)
        if learned:
            return gap
        try:
            gap = store_gaps.probe_conditional_writes(self._client, self.bucket, self._full(near))
        except _BOTO_ERRORS as error:
            raise self._error(error, "conditional-write probe", near) from None
        return store_gaps.learn(self.store, store_gaps.CONDITIONAL_WRITES, gap)
