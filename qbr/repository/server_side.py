"""Copies inside S3: archives Qdrant wrote to its own snapshot bucket become repository objects
without a byte passing through qbr (CopyObject up to 5 GiB, UploadPartCopy above, as S3 asks).

Both buckets must be on one S3 endpoint and readable/writable with the same credentials (the
standard AWS chain), which is what a server-side backup declares."""

from __future__ import annotations

import boto3
import botocore.exceptions
from botocore.config import Config

from qbr.errors import NotFoundError, RepositoryError

COPY_LIMIT = 5 * 1024**3  # S3's limit for one CopyObject
MAX_PARTS = 10_000


def copy_part_size(size: int) -> int:
    """The smallest part of at least 512 MiB that keeps a copy within S3's 10,000 parts."""
    part = 512 * 1024**2
    while size > part * MAX_PARTS:
        part *= 2
    return part


class ServerSideCopier:
    def __init__(self, endpoint_url: str | None, region: str | None) -> None:
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, signature_version="s3v4",
                        s3={"addressing_style": "path"} if endpoint_url else {})
        self._client = boto3.session.Session(region_name=region or None).client("s3", endpoint_url=endpoint_url or None, config=config)

    def head(self, bucket: str, key: str) -> tuple[int, str] | None:
        """(size, etag) of an object, or None when it is not there."""
        try:
            answer = self._client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(error, bucket, key) from None
        return int(answer["ContentLength"]), str(answer.get("ETag", "")).strip('"')

    def read_head(self, bucket: str, key: str, limit: int) -> bytes:
        """The first `limit` bytes of an object (a ranged GET): enough to read a tar's first members."""
        try:
            answer = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")
            return answer["Body"].read()
        except botocore.exceptions.ClientError as error:
            raise self._error(error, bucket, key) from None

    def copy(self, source_bucket: str, source_key: str, bucket: str, key: str, size: int, extra: dict[str, str] | None = None) -> str:
        """Copy an object of `size` bytes; return the new object's etag. `extra`: parameters the
        new object is written with (the repository's SSE: ServerSideEncryption, SSEKMSKeyId)."""
        source = {"Bucket": source_bucket, "Key": source_key}
        extra = dict(extra or {})
        try:
            if size <= COPY_LIMIT:
                answer = self._client.copy_object(Bucket=bucket, Key=key, CopySource=source, **extra)
                return str(answer["CopyObjectResult"]["ETag"]).strip('"')
            return self._copy_in_parts(source, bucket, key, size, extra)
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise NotFoundError(f"s3://{source_bucket}/{source_key} is gone; it cannot be copied") from None
            raise self._error(error, source_bucket, source_key) from None

    def _copy_in_parts(self, source: dict[str, str], bucket: str, key: str, size: int, extra: dict[str, str]) -> str:
        upload = self._client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
        try:
            part_size, parts = copy_part_size(size), []
            for number, start in enumerate(range(0, size, part_size), start=1):
                end = min(start + part_size, size) - 1
                answer = self._client.upload_part_copy(
                    Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            done = self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
            return str(done["ETag"]).strip('"')
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
            except botocore.exceptions.ClientError:
                pass  # the lifecycle rule or qbr's own sweep of unfinished uploads removes it
            raise

    @staticmethod
    def _error(error: botocore.exceptions.ClientError, bucket: str, key: str) -> RepositoryError:
        code = error.response.get("Error", {}).get("Code", "error")
        return RepositoryError(
            f"S3 refused a server-side copy of s3://{bucket}/{key} ({code}); the repository and the nodes' "
            "snapshot bucket must be on one endpoint, readable and writable with qbr's credentials."
        )
