"""What an S3-compatible store lacks, learned once per process, and what to set up instead.

Three S3 APIs are optional for qbr: ListMultipartUploads and AbortMultipartUpload (cleaning up
what an interrupted upload leaves) and conditional writes (If-None-Match / If-Match on PutObject,
which qbr's locks stand on). A store without the first two degrades: qbr skips that cleanup and
says once what to set up instead (an AbortIncompleteMultipartUpload lifecycle rule). Conditional
writes are probed once per store (create a probe object twice with If-None-Match: *, expect 412
the second time; replace it with a wrong If-Match, expect 412; delete it): a store that ignores
them cannot hold a lock, and `qbr.locks` refuses to take one there.

What is learned is kept for the life of the process, per (endpoint, bucket).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import botocore.exceptions

from qbr.repository.s3_setup import error_code, unsupported

log = logging.getLogger("qbr.repository")

LIST_UPLOADS = "ListMultipartUploads"
ABORT_UPLOAD = "AbortMultipartUpload"
CONDITIONAL_WRITES = "conditional writes"
LIFECYCLE_RULE = "AbortIncompleteMultipartUpload"

_guard = threading.Lock()
_facts: dict[tuple[str, str, str], str | None] = {}
_warned: set[str] = set()


def known(store: tuple[str, str], what: str) -> tuple[bool, str | None]:
    """(whether `what` was learned about `store`, what was learned: None = it works, else the
    store's answer or the gap in a few words)."""
    with _guard:
        key = (*store, what)
        return key in _facts, _facts.get(key)


def learn(store: tuple[str, str], what: str, gap: str | None) -> str | None:
    with _guard:
        _facts[(*store, what)] = gap
    return gap


def warn_once(message: str) -> None:
    """Log `message` as a warning (qbr's CLI prints it), once per process."""
    with _guard:
        if message in _warned:
            return
        _warned.add(message)
    log.warning(message)


def forget() -> None:
    """Forget everything learned (tests start stores afresh)."""
    with _guard:
        _facts.clear()
        _warned.clear()


def cannot_list(where: str, bucket: str, answer: str) -> str:
    return (
        f"{where} does not list unfinished multipart uploads ({LIST_UPLOADS} answered {answer}), so qbr cannot "
        f"clean up what an interrupted upload leaves; add an {LIFECYCLE_RULE} lifecycle rule to bucket {bucket} "
        "(e.g. after 1 day) so the store removes them itself"
    )


def cannot_abort(where: str, bucket: str, answer: str, count: int | None = None) -> str:
    held = f"holds {count} unfinished multipart upload{'s' if count != 1 else ''} and " if count else ""
    return (
        f"{where} {held}refuses to abort unfinished multipart uploads ({ABORT_UPLOAD} answered {answer}), so qbr "
        f"leaves them; add an {LIFECYCLE_RULE} lifecycle rule to bucket {bucket} (e.g. after 1 day) so the store "
        "removes them itself"
    )


def _lost(error: botocore.exceptions.ClientError) -> bool:
    code, status = error_code(error)
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def probe_conditional_writes(client: Any, bucket: str, near: str) -> str | None:
    """Put a probe object beside `near` (a full key) as a lock would; None when the store honours
    If-None-Match and If-Match, else what it does instead in a few words. Botocore errors other
    than "not supported" propagate; the probe object is removed in every case."""
    key = f"{near}.probe-{uuid.uuid4().hex[:12]}"

    def put(**condition: str) -> str | None:
        """None if the store refused the write (the condition held), else the gap."""
        header = "If-None-Match" if "IfNoneMatch" in condition else "If-Match"
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"qbr conditional-write probe\n", **condition)
        except botocore.exceptions.ClientError as error:
            if _lost(error):
                return None
            answer = unsupported(error)
            if answer is not None:
                return f"does not support conditional writes ({header} answered {answer})"
            raise
        return f"ignores conditional writes ({header})"

    created = put(IfNoneMatch="*")
    if created is not None and created.startswith("does not"):
        return created  # the first create was refused: nothing was written
    try:
        if created is None:  # a random key already there: someone else's probe? it cannot be
            return "answered 412 to creating a new object with If-None-Match"
        gap = put(IfNoneMatch="*")
        return gap if gap is not None else put(IfMatch='"qbr-probe-never-matches"')
    finally:
        try:
            client.delete_object(Bucket=bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            pass


def probe_abort(client: Any, bucket: str, near: str) -> str | None:
    """Abort an upload that does not exist (no side effect): None when the store has the API
    (AWS answers NoSuchUpload), else its answer (s3rver: MethodNotAllowed)."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=f"{near}.probe", UploadId=f"qbr-probe-{uuid.uuid4().hex}")
    except botocore.exceptions.ClientError as error:
        return unsupported(error)
    return None
