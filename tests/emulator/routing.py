"""Requests, responses, the route table, auth and Qdrant's response envelope.

Handler modules (api.py, api_collections.py, api_points.py, api_snapshots.py) register their
routes with `@route` when imported; api.py imports them all.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import unquote

from tests.emulator.errors import ApiError, bad_request, forbidden
from tests.emulator.httpio import BodyReader, read_all

if TYPE_CHECKING:
    from tests.emulator.cluster import EmulatorNode

AUTH_WHITELIST = re.compile(r"^/(healthz|readyz.*|livez.*)?$")


@dataclass
class Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    length: int | None = 0  # None: chunked transfer
    content_type: str | None = "application/json"
    headers: dict = field(default_factory=dict)

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.body, (bytes, bytearray)):
            if self.body:
                yield bytes(self.body)
        else:
            yield from self.body

    def close(self) -> None:
        """Release a streamed body that will not be sent (an answer lost after the work)."""
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def json_response(status: int, payload: Any, headers: dict | None = None) -> Response:
    data = json.dumps(payload).encode()
    return Response(status, data, len(data), "application/json", dict(headers or {}))


def text_response(status: int, text: str, headers: dict | None = None) -> Response:
    data = text.encode()
    return Response(status, data, len(data), "text/plain; charset=utf-8", dict(headers or {}))


def elapsed(started: float) -> float:
    return round(time.monotonic() - started, 6)


def ok(result: Any, started: float) -> Response:
    return json_response(200, {"result": result, "status": "ok", "time": elapsed(started)})


def accepted(started: float) -> Response:
    return json_response(202, {"status": "accepted", "time": elapsed(started)})


def error_response(err: ApiError, started: float) -> Response:
    if err.plain:
        return text_response(err.status, err.message, err.headers)
    return json_response(err.status, {"status": {"error": err.message}, "time": elapsed(started)}, err.headers)


@dataclass
class Request:
    node: EmulatorNode
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: BodyReader
    started: float
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict:
        raw = read_all(self.body)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise bad_request(f"Json deserialize error: {err}") from None
        if not isinstance(value, dict):
            raise bad_request("Json deserialize error: expected a JSON object")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise bad_request(f"Query deserialize error: invalid value {value!r} for `{name}`, expected a boolean")

    def shard_id(self) -> int:
        raw = self.params["shard_id"]
        if not raw.isdigit():
            raise ApiError(404, f"can not parse \"{raw}\" to a u32")
        return int(raw)

    def run(self, work: Callable[[], Any]) -> Response:
        """Qdrant's `time_or_accept`: answer the result (wait=true) or 202 while it runs in the background.

        With wait=true the work runs in this server thread, which carries on when the client
        disconnects or times out, as Qdrant's spawned task does.
        """
        if self.flag("wait", True):
            return ok(work(), self.started)
        self.node.run_background(work)
        return accepted(self.started)

    def update(self, work: Callable[[], dict]) -> Response:
        """Point and index updates: `wait` defaults to false, answering status `acknowledged`."""
        result = work()
        if not self.flag("wait", False):
            result["status"] = "acknowledged"
        return ok(result, self.started)


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    pattern: re.Pattern
    handler: Callable[..., Response]
    write: bool  # needs read-write (manage) access
    plain_errors: bool = False  # binary endpoints answer plain-text errors
    kind: str | None = None  # "download" or "upload": counted as snapshot bytes


ROUTES: list[Route] = []


def route(method: str, template: str, *, write: bool = False, plain_errors: bool = False, kind: str | None = None):
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "/?$"

    def register(fn: Callable[..., Response]) -> Callable[..., Response]:
        ROUTES.append(Route(method, template, re.compile(regex), fn, write, plain_errors, kind))
        return fn

    return register


def match(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    for candidate in ROUTES:
        if candidate.method != method:
            continue
        m = candidate.pattern.match(path)
        if m:
            return candidate, {k: unquote(v) for k, v in m.groupdict().items()}
    return None, {}


def dispatch(node: EmulatorNode, method: str, path: str, query: dict, headers, body: BodyReader,
             started: float) -> Response:
    matched, params = match(method, path)
    authorize(node, path, headers, matched)
    if matched is None:
        return text_response(404, "")
    request = Request(node, method, path, query, headers, body, started, params)
    try:
        return matched.handler(request)
    except ApiError as err:
        if matched.plain_errors:
            err.plain = True
        raise


def authorize(node: EmulatorNode, path: str, headers, matched: Route | None) -> None:
    """Qdrant's auth middleware: api-key header or bearer token; read-only keys cannot manage."""
    api_key = node.cluster.api_key
    read_only_key = node.cluster.read_only_api_key
    if not api_key and not read_only_key:
        return
    if AUTH_WHITELIST.match(path):
        return
    provided = headers.get("api-key")
    if provided is None:
        authorization = headers.get("Authorization") or ""
        if authorization.lower().startswith("bearer "):
            provided = authorization[7:].strip()
    if not provided:
        raise ApiError(401, "Must provide an API key or an Authorization bearer token", plain=True)
    if api_key and provided == api_key:
        return
    if read_only_key and provided == read_only_key:
        if matched is not None and matched.write:
            raise forbidden("Global manage access is required")
        return
    raise ApiError(401, "Invalid API key or JWT", plain=True)
