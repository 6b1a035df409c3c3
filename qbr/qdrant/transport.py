"""Talking to one Qdrant node over HTTP: requests, retries with backoff, streamed downloads,
and the one-sentence errors (scrubbed of secrets) everything comes back as."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Self
from urllib.parse import urlsplit

import httpx

from qbr import __version__
from qbr.errors import OutcomeUnknown, QdrantError
from qbr.qdrant.shapes import TransferInterrupted, display_url
from qbr.qdrant.streams import SnapshotStream
from qbr.redact import redact

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# A 500 on a read is worth another try; on a write it may already have done its work.
RETRY_STATUSES_READ = RETRY_STATUSES | {500}


# The longest stretch of a server's error text worth showing in a one-line message.
_DETAIL_LIMIT = 300
# Error bodies are read up to this many bytes (a proxy may answer with a large page).
_ERROR_BODY_LIMIT = 64 * 1024

_COLLECTION_MISSING = re.compile(r"[Cc]ollection `([^`]*)` (?:doesn't|does not) exist")



def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _clean_detail(text: str, fallback: str) -> str:
    text = " ".join(text.split())
    if text[:1] == "<" and re.search(r"(?i)<(html|!doctype|body)", text[:200]):
        return f"an HTML page instead of Qdrant's error ({fallback})"
    text = text.rstrip(" .!")
    if len(text) > _DETAIL_LIMIT:
        text = text[: _DETAIL_LIMIT - 3].rstrip() + "..."
    return text or fallback


def _transport_reason(exc: httpx.TransportError) -> str:
    text = str(exc).lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return "the connection timed out"
    if isinstance(exc, httpx.ConnectError):
        if "refused" in text:
            return "connection refused"
        if "certificate" in text:
            return "its TLS certificate could not be verified (a private CA? set tls.ca_bundle for this cluster)"
        if "ssl" in text or "tls" in text:
            return "the TLS handshake failed"
        if "name or service" in text or "nodename" in text or "getaddrinfo" in text or "name resolution" in text:
            return "the host name could not be resolved"
        return "the connection failed"
    if isinstance(exc, httpx.ReadTimeout):
        return "no answer in time"
    if isinstance(exc, httpx.TimeoutException):
        return "the request timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed unexpectedly"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError)):
        return "the connection was reset"
    return f"a transport error ({type(exc).__name__})"


def _retryable_transport(exc: httpx.TransportError) -> bool:
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))



class Transport:
    """One node's HTTP connection: requests with retries, streamed downloads, and errors that
    are one sentence each, scrubbed of every secret."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        cluster: str | None = None,
        timeout: float = 30.0,
        snapshot_timeout: float = 3600.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.node = display_url(self.url)
        self.cluster = cluster
        self.timeout = timeout
        self.snapshot_timeout = snapshot_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._api_key = api_key or None
        self._transport = transport
        self._sleep = sleep
        self._where = f"Qdrant node {self.node}" + (f" (cluster '{cluster}')" if cluster else "")
        if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).hostname:
            raise QdrantError(
                f"The url {self.node!r}{self._cluster_suffix()} is not a Qdrant REST URL; "
                "write it as http://host:6333 or https://host:6333.",
                node=self.node,
            )
        headers = {"User-Agent": f"qbr/{__version__}"}
        if api_key:
            headers["api-key"] = api_key
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"QdrantClient({self.node!r}, cluster={self.cluster!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals: requests

    def _call_dict(self, method: str, path: str, *, what: str) -> dict:
        result = self._call(method, path, what=what)
        if not isinstance(result, dict):
            raise self._malformed(method, path, "the result is not a JSON object")
        return result

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict | None = None,
        json_body: Any = None,
        snapshot: bool = False,
        envelope: bool = True,
        hidden: list[tuple[str, str]] | None = None,
        once: bool = False,
    ) -> Any:
        """One JSON request with retries (see `_send` for `once`); returns the envelope's `result`
        (None when accepted)."""
        content = None
        headers = None
        if json_body is not None:
            content = json.dumps(json_body).encode("utf-8")
            headers = {"Content-Type": "application/json"}
        response = self._send(
            method, path, what=what, params=params, headers=headers,
            body=(lambda stack: content) if content is not None else None,
            snapshot=snapshot, hidden=hidden, once=once,
        )
        return self._result(response, method, path, envelope=envelope)

    def _result(self, response: httpx.Response, method: str, path: str, *, envelope: bool) -> Any:
        if response.status_code == 202:
            return None
        try:
            data = json.loads(response.content)
        except ValueError:
            raise self._malformed(method, path, "not JSON") from None
        if not envelope:
            return data
        if not isinstance(data, dict):
            raise self._malformed(method, path, "not a JSON object")
        if data.get("status") == "accepted":
            return None
        if data.get("status") != "ok" or "result" not in data:
            raise self._malformed(method, path, "no result in the envelope")
        return data["result"]

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict | None = None,
        headers: dict | None = None,
        body: Callable[[ExitStack], Any] | None = None,
        snapshot: bool = False,
        stream: bool = False,
        hidden: list[tuple[str, str]] | None = None,
        once: bool = False,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response (open if `stream`) or raise QdrantError.

        `once`: the request makes Qdrant do work that goes on after the client gives up (its
        handlers run detached), so it is re-sent only when it surely never reached Qdrant (the
        connection was refused, or 429); any other failure raises OutcomeUnknown."""
        attempts = self.retries + 1
        timeout = httpx.Timeout(self.snapshot_timeout if snapshot else self.timeout, connect=CONNECT_TIMEOUT)
        for attempt in range(1, attempts + 1):
            try:
                with ExitStack() as stack:
                    request = self._client.build_request(
                        method, self.url + path, params=params, headers=headers,
                        content=body(stack) if body is not None else None, timeout=timeout,
                    )
                    response = self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if once and not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                    error = self._transport_error(exc, method, path, what, attempt, snapshot, hidden)
                    raise OutcomeUnknown(str(error), status=None, node=self.node) from None
                if attempt < attempts and _retryable_transport(exc):
                    self._pause(attempt, None, f"{method} {path}", _transport_reason(exc))
                    continue
                raise self._transport_error(exc, method, path, what, attempt, snapshot, hidden) from None
            except httpx.HTTPError as exc:
                raise self._error(
                    f"{self._where} could not {what}: {type(exc).__name__}; check the manifest's url.", None, hidden
                ) from None
            status = response.status_code
            if 200 <= status < 300:
                return response
            retryable = RETRY_STATUSES_READ if method == "GET" else RETRY_STATUSES
            if once and status in retryable and status not in (429, 503):  # refused before any work
                response.close()
                raise OutcomeUnknown(
                    self._scrub(f"{self._where} answered {status} to {method} {path}, so whether it went on to "
                                f"{what} is unknown", hidden),
                    status=status, node=self.node,
                )
            if status in retryable and attempt < attempts:
                retry_after = response.headers.get("retry-after")
                response.close()
                self._pause(attempt, retry_after, f"{method} {path}", str(status))
                continue
            try:
                detail = self._error_detail(response, hidden)
            finally:
                response.close()
            raise self._status_error(status, detail, method, path, what, attempt, hidden)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, attempt: int, retry_after: str | None, request: str, reason: str) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)
        wanted = _parse_retry_after(retry_after)
        if wanted is not None:
            delay = max(delay, min(wanted, self.max_backoff))
        log.info("%s: %s got %s; retrying in %.1f s (attempt %d of %d)",
                 self.node, request, reason, delay, attempt + 1, self.retries + 1)
        if delay > 0:
            self._sleep(delay)

    @contextmanager
    def _download(self, path: str, what: str, chunk_size: int) -> Iterator[SnapshotStream]:
        response = self._send(
            "GET", path, what=what, headers={"Accept-Encoding": "identity"}, snapshot=True, stream=True
        )
        try:
            def interrupted(got: int) -> TransferInterrupted:
                total = response.headers.get("content-length")
                of = f" of {total}" if total else ""
                return TransferInterrupted(
                    self._scrub(f"Could not {what} from {self._where}: the transfer was cut short after "
                                f"{got}{of} bytes; retry the transfer."),
                    node=self.node,
                )

            stream = SnapshotStream(response, chunk_size, interrupted)
            yield stream
        finally:
            response.close()

    # ---------------------------------------------------------------- internals: errors

    def _error_detail(self, response: httpx.Response, hidden: list[tuple[str, str]] | None = None) -> str:
        """Qdrant's error text from a JSON (`status.error`) or plain-text body, scrubbed of secrets
        before it is shortened (a secret cut in half would no longer be recognised)."""
        raw = b""
        try:
            if response.is_stream_consumed:
                raw = response.content
            else:
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) >= _ERROR_BODY_LIMIT:
                        break
        except (httpx.HTTPError, httpx.StreamError):
            pass
        text = raw[:_ERROR_BODY_LIMIT].decode("utf-8", errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            status = data.get("status")
            if isinstance(status, dict) and isinstance(status.get("error"), str):
                text = status["error"]
            elif isinstance(status, str):
                text = status
        return _clean_detail(self._scrub(text, hidden), response.reason_phrase or f"HTTP {response.status_code}")

    def _status_error(
        self, status: int, detail: str, method: str, path: str, what: str, attempt: int,
        hidden: list[tuple[str, str]] | None,
    ) -> QdrantError:
        detail = self._scrub(detail, hidden)
        where = self._where
        for_cluster = f" for cluster '{self.cluster}'" if self.cluster else " for this cluster in the manifest"
        lower = detail.lower()
        if status == 401:
            if self._api_key:
                message = f"{where} rejected the API key (401 {detail}); set api_key{for_cluster}."
            else:
                message = f"{where} requires an API key (401 {detail}); set api_key{for_cluster}."
        elif status == 403:
            message = (f"{where} refused to {what} (403 {detail}); "
                       f"use an API key with manage access{for_cluster}.")
        elif status == 404:
            missing = _COLLECTION_MISSING.search(detail)
            if missing:
                message = (f"{where} could not {what}: collection `{missing.group(1)}` does not exist; "
                           "check the collection name.")
            else:
                message = f"{where} could not {what}: not found (404 {detail}); check that it exists."
        elif status == 409:
            message = (f"{where} could not {what}: it already exists (409 {detail}); "
                       "delete it first or choose another name.")
        elif status == 422:
            message = (f"{where} rejected the request to {what} as invalid (422 {detail}); "
                       "check the names and values sent, and that this Qdrant version supports them.")
        elif status == 400 and "checksum" in lower and "mismatch" in lower:
            message = (f"{where} could not {what}: the archive's checksum does not match (400 {detail}); "
                       "the archive is damaged or not the one recorded, verify the repository.")
        elif status == 400 and "not compatible with existing collection" in lower:
            message = (f"{where} could not {what}: the snapshot does not fit the existing collection (400 {detail}); "
                       "delete the collection first or restore under another name.")
        elif status == 400:
            message = f"{where} refused to {what} (400 {detail}); check the request's names and settings."
        elif 300 <= status < 400:
            message = (f"{where} answered {status} to {method} {path} (a redirect); "
                       "check that the manifest's url points at the node itself.")
        else:
            after = f" after {attempt} attempts" if attempt > 1 else ""
            advice = ("wait and retry, or lower qbr's parallelism" if status == 429
                      else "check the node's health and logs, then retry")
            message = f"{where} answered {status} to {method} {path}{after}: {detail}; {advice}."
        return self._error(message, status, hidden)

    def _transport_error(
        self, exc: httpx.TransportError, method: str, path: str, what: str, attempt: int, snapshot: bool,
        hidden: list[tuple[str, str]] | None,
    ) -> QdrantError:
        reason = _transport_reason(exc)
        after = f" after {attempt} attempts" if attempt > 1 else ""
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            message = (f"Cannot reach {self._where}{after}: {reason}; "
                       "check that it is running and that the manifest's url is right.")
        elif isinstance(exc, httpx.ReadTimeout):
            limit = self.snapshot_timeout if snapshot else self.timeout
            message = (f"{self._where} did not answer {method} {path} within {limit:g} s{after}; "
                       "it may still be working on it, so check its logs before retrying, or raise the timeout.")
        else:
            message = (f"{self._where} failed to {what}{after}: {reason}; "
                       "check the node's health and the network, then retry.")
        return self._error(message, None, hidden)

    def _malformed(self, method: str, path: str, why: str) -> QdrantError:
        return self._error(
            f"{self._where} returned a malformed response to {method} {path} ({why}); "
            "check that the url points at Qdrant's REST port (usually 6333).",
            None,
            None,
        )

    def _error(self, message: str, status: int | None, hidden: list[tuple[str, str]] | None) -> QdrantError:
        return QdrantError(self._scrub(message, hidden, min_length=6), status=status, node=self.node)

    def _scrub(self, text: str, hidden: list[tuple[str, str]] | None = None, *, min_length: int = 1) -> str:
        """Remove every secret we know of, then anything that looks like a credential in a URL.

        Server text is scrubbed of secrets of any length; whole messages only of secrets long
        enough not to match qbr's own words (a one-letter test key would eat every "k").
        """
        known = list(hidden or []) + ([(self._api_key, "***")] if self._api_key else [])
        return redact(text, known, min_length=min_length)

    def _cluster_suffix(self) -> str:
        return f" of cluster '{self.cluster}'" if self.cluster else ""
