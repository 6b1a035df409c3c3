"""How qbr's S3 client is set up for one store, and how a failed S3 call is told in one sentence.

AWS S3 and S3-compatible stores (MinIO, Ceph RGW, Garage, Cloudflare R2, Backblaze B2...) differ
in what they accept; the settings a store needs come from the repository's `s3` block:

    addressing_style   path (default with endpoint_url: most self-hosted stores have no
                       bucket-in-hostname DNS), virtual, or auto (botocore's choice; AWS's default)
    checksums          when_required (default with endpoint_url): no CRC32 trailer on every put,
                       which botocore >= 1.36 sends by default and several stores reject;
                       when_supported: botocore's default (AWS)
    connect_timeout, read_timeout (seconds), max_attempts (tries of one request in all, with
                       botocore's standard retry mode and backoff)
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import boto3
import botocore.exceptions
import botocore.loaders
import botocore.session
from botocore.config import Config

from qbr.errors import RepositoryError

ADDRESSING_STYLES = ("path", "virtual", "auto")
CHECKSUM_MODES = ("when_required", "when_supported")
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MAX_ATTEMPTS = 6  # tries of one request in all: the first and 5 retries

DENIED = {
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
NETWORK = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ResponseStreamingError,
)
#: What a store answers for an API it does not have (s3rver: NotImplemented for
#: ListMultipartUploads, MethodNotAllowed for AbortMultipartUpload).
UNSUPPORTED_CODES = {"NotImplemented", "MethodNotAllowed", "XNotImplemented", "NotSupported", "501", "405"}
UNSUPPORTED_STATUSES = {405, 501}


def client_config(
    endpoint_url: str | None,
    *,
    addressing_style: str | None = None,
    checksums: str | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_attempts: int | None = None,
) -> Config:
    """botocore's Config for one store; None for a setting: qbr's default for that kind of store."""
    style = addressing_style or ("path" if endpoint_url else None)
    if style is not None and style not in ADDRESSING_STYLES:
        raise ValueError(f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}")
    mode = checksums or ("when_required" if endpoint_url else None)
    if mode is not None and mode not in CHECKSUM_MODES:
        raise ValueError(f"checksums must be one of {', '.join(CHECKSUM_MODES)}")
    attempts = max_attempts if max_attempts is not None else DEFAULT_MAX_ATTEMPTS
    if attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    extra: dict[str, Any] = {}
    if mode is not None:  # unset: botocore's own default (or AWS_REQUEST_CHECKSUM_CALCULATION)
        extra = {"request_checksum_calculation": mode, "response_checksum_validation": mode}
    return Config(
        retries={"total_max_attempts": attempts, "mode": "standard"},
        connect_timeout=connect_timeout if connect_timeout is not None else DEFAULT_CONNECT_TIMEOUT,
        read_timeout=read_timeout if read_timeout is not None else DEFAULT_READ_TIMEOUT,
        max_pool_connections=32,
        signature_version="s3v4",  # also for presigned URLs (botocore would sign some with SigV2)
        s3={"addressing_style": style} if style else {},
        **extra,
    )


_loader_guard = threading.Lock()
_loader: Any = None


def _shared_loader() -> Any:
    """botocore's loader of service models, shared by every client of the process: a new session
    would parse S3's model again (~0.2 s a client); credentials are still each session's own."""
    global _loader
    with _loader_guard:
        if _loader is None:
            _loader = botocore.loaders.create_loader()
        return _loader


def open_client(bucket: str, endpoint_url: str | None, region: str | None, config: Config) -> Any:
    """A botocore S3 client on the standard AWS credential chain; a bad endpoint is one sentence."""
    try:
        core = botocore.session.get_session()
        core.register_component("data_loader", _shared_loader())
        session = boto3.session.Session(botocore_session=core, region_name=region or None)
        with _loader_guard:  # the loader's caches are filled by one client at a time
            return session.client("s3", endpoint_url=endpoint_url or None, config=config)
    except ValueError as error:
        raise RepositoryError(
            f"S3 endpoint {endpoint_url!r} is not usable ({error}); fix the repository's s3.endpoint_url."
        ) from None
    except botocore.exceptions.BotoCoreError as error:
        raise RepositoryError(f"cannot set up the S3 client for s3://{bucket}: {type(error).__name__}.") from None


def error_code(error: botocore.exceptions.ClientError) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a failed call."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def unsupported(error: BaseException) -> str | None:
    """The store's answer ("NotImplemented", "MethodNotAllowed") when `error` says it lacks the
    API called, else None."""
    if not isinstance(error, botocore.exceptions.ClientError):
        return None
    code, status = error_code(error)
    if code in UNSUPPORTED_CODES or status in UNSUPPORTED_STATUSES:
        return code or str(status)
    return None


def network_reason(error: BaseException) -> str:
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


def server_time(response: dict[str, Any]) -> datetime:
    """The server's clock for a write (S3's Last-Modified follows it); ours if it sent none."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        try:
            return parsedate_to_datetime(date).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)
