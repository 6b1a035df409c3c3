"""What an S3 repository cost: requests sent, by the kind S3 bills them as, and bytes moved.

`RequestCounter.attach(client)` hooks botocore's `before-send` event, which fires once for every
HTTP request actually sent, retries included (a request answered by a botocore Stubber is not
sent, so not counted). Bytes up are the request bodies sent; bytes down are the object bytes
read from GET bodies (the repository reports them as it reads). Thread-safe: parts upload in
threads of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from qbr.render.sizes import human_bytes

#: botocore operation name -> the kind it is counted as.
KINDS: dict[str, str] = {
    "GetObject": "GET",
    "PutObject": "PUT",
    "CopyObject": "PUT",
    "ListObjectsV2": "LIST",
    "ListObjects": "LIST",
    "ListMultipartUploads": "LIST",
    "ListParts": "LIST",
    "DeleteObject": "DELETE",
    "DeleteObjects": "DELETE",
    "HeadObject": "HEAD",
    "HeadBucket": "HEAD",
    "CreateMultipartUpload": "multipart_create",
    "UploadPart": "multipart_upload_part",
    "CompleteMultipartUpload": "multipart_complete",
    "AbortMultipartUpload": "multipart_abort",
}
#: Every key of `RequestCounter.counts()`, always present (zero when nothing happened).
FIELDS = (
    "GET", "PUT", "LIST", "DELETE", "HEAD",
    "multipart_create", "multipart_upload_part", "multipart_complete", "multipart_abort",
    "other", "requests", "bytes_up", "bytes_down",
)


class RequestCounter:
    """Counts of S3 requests by kind, and bytes up and down; `counts()` reads them all at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(FIELDS, 0)

    def attach(self, client: Any) -> None:
        """Count every request `client` (a botocore S3 client) sends from now on."""
        client.meta.events.register("before-send.s3", self._sent)

    def _sent(self, request: Any = None, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        length = 0
        if request is not None:
            header = request.headers.get("Content-Length")
            if header is not None and str(header).isdigit():
                length = int(header)
            elif isinstance(request.body, (bytes, bytearray, memoryview)):
                length = len(request.body)
        self.count(KINDS.get(operation, "other"), up=length)

    def count(self, kind: str, *, up: int = 0) -> None:
        """One request of `kind` (a key of FIELDS) with a body of `up` bytes."""
        if kind not in FIELDS or kind in ("requests", "bytes_up", "bytes_down"):
            kind = "other"
        with self._lock:
            self._counts[kind] += 1
            self._counts["requests"] += 1
            self._counts["bytes_up"] += up

    def received(self, size: int) -> None:
        """`size` bytes of an object's body were read."""
        with self._lock:
            self._counts["bytes_down"] += size

    def counts(self) -> dict[str, int]:
        """A copy of every count (all FIELDS), consistent at one instant: safe to print or serialise."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> dict[str, int]:
        """Start again from zero; returns the counts up to now."""
        with self._lock:
            before, self._counts = self._counts, dict.fromkeys(FIELDS, 0)
        return before


def since(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """The counts of what happened between two `counts()` readings (e.g. during one apply)."""
    return {name: int(after.get(name, 0)) - int(before.get(name, 0)) for name in FIELDS}


def describe_requests(counts: Mapping[str, int]) -> str:
    """One line, e.g. "S3: 19 requests: 12 GET, 3 PUT, 2 LIST, 0 DELETE, 1 HEAD, 1 multipart upload
    (5 parts); 48.0 MiB up, 1.2 MiB down"."""
    c = {name: int(counts.get(name, 0)) for name in FIELDS}
    uploads = c["multipart_create"]
    detail = [f"{c['multipart_upload_part']} part{'s' if c['multipart_upload_part'] != 1 else ''}"]
    if c["multipart_complete"] != uploads:
        detail.append(f"{c['multipart_complete']} completed")
    if c["multipart_abort"]:
        detail.append(f"{c['multipart_abort']} aborted")
    kinds = [f"{c[k]} {k}" for k in ("GET", "PUT", "LIST", "DELETE", "HEAD")]
    parts = f" ({', '.join(detail)})" if uploads or c["multipart_upload_part"] else ""
    kinds.append(f"{uploads} multipart upload{'s' if uploads != 1 else ''}{parts}")
    if c["other"]:
        kinds.append(f"{c['other']} other")
    total = f"{c['requests']} request{'s' if c['requests'] != 1 else ''}"
    return (f"S3: {total}: {', '.join(kinds)}; "
            f"{human_bytes(c['bytes_up'])} up, {human_bytes(c['bytes_down'])} down")
