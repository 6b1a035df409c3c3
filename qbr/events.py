"""Machine-readable events: `qbr apply --json` writes one JSON object per line as things happen.

Every event has a `type` and a `time` (UTC, ISO 8601 with milliseconds); the other fields
depend on the type and are documented, and checked in the tests, by schemas/events.v1.json:

    run_started      command, qbr_version, manifest
    plan             summary (counts by change), actions (id, kind, change, group, title, reason), warnings
    action_started   action, kind, group, title
    action_finished  action, kind, group, title, status, seconds, bytes [, message]
    warning          message
    retry            message, logger [, node, request, reason, delay_seconds, attempt, attempts]
    log              level, logger, message  (what qbr's loggers say, at INFO and above)
    stopping         running, message  (a first Ctrl-C or SIGTERM: the running actions finish)
    abandoning       running, message  (a second one: they are not waited for)
    error            message, exit_code  (a failure that ends the run)
    outcome          outcome, exit_code, seconds, actions (counts by status): always the last line

The same module bridges Python logging (retries and waits are logged at INFO by the Qdrant
transport and others): to stderr with -v, to events with --json.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO, Any, Callable, Iterator

EVENTS_FORMAT = 1
Emit = Callable[[str, dict[str, Any]], None]


def event_time(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLines:
    """Writes events as JSON lines, whole and in order, whichever thread sends them."""

    def __init__(self, stream: IO[str] | Callable[[], IO[str]]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        line = json.dumps({"type": kind, "time": event_time(), **data}, default=str, separators=(",", ":"))
        with self._lock:
            stream = self._stream() if callable(self._stream) else self._stream
            stream.write(line + "\n")
            stream.flush()


def plan_event(plan: Any) -> dict[str, Any]:
    """The `plan` event of a Plan: its summary and its actions, one line each."""
    return {
        "summary": plan.summary(),
        "actions": [
            {"id": a.id, "kind": a.kind, "change": a.change, "group": a.group, "title": a.title, "reason": a.reason}
            for a in plan.actions
        ],
        "warnings": list(plan.warnings),
    }


# The Qdrant transport's retry line: "%s: %s got %s; retrying in %.1f s (attempt %d of %d)".
_RETRY_FIELDS = ("node", "request", "reason", "delay_seconds", "attempt", "attempts")


def log_event(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """A log record as an event: `retry` when it says it retries, else `log`."""
    message = record.getMessage()
    data: dict[str, Any] = {"message": message, "logger": record.name}
    if "retrying" in message:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == len(_RETRY_FIELDS) and str(record.msg).find("retrying in") > 0:
            data.update({name: value if name != "delay_seconds" else round(float(value), 3) for name, value in zip(_RETRY_FIELDS, args)})
            data["request"], data["reason"], data["node"] = str(data["request"]), str(data["reason"]), str(data["node"])
        return "retry", data
    return "log", {"level": record.levelname.lower(), **data}


class _Bridge(logging.Handler):
    def __init__(self, deliver: Callable[[logging.LogRecord], None], level: int) -> None:
        super().__init__(level)
        self.deliver = deliver

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.deliver(record)
        except Exception:  # a log line must never break a run
            self.handleError(record)


@contextmanager
def logs_to(deliver: Callable[[logging.LogRecord], None], level: int) -> Iterator[None]:
    """While in the block, qbr's log records at `level` and above go to `deliver` (and no further)."""
    logger = logging.getLogger("qbr")
    handler = _Bridge(deliver, level)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(min(level, logging.WARNING))
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def echo_log(echo: Callable[[str], None]) -> Callable[[logging.LogRecord], None]:
    """Deliver log records as plain lines ("qbr: ...") through `echo` (stderr)."""

    def deliver(record: logging.LogRecord) -> None:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        echo(f"qbr: {level}{record.getMessage()}")

    return deliver


def event_log(emit: Emit) -> Callable[[logging.LogRecord], None]:
    def deliver(record: logging.LogRecord) -> None:
        emit(*log_event(record))

    return deliver
