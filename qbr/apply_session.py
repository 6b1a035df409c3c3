"""One `qbr apply` as its user sees it: the plan and each action's outcome as lines for people,
or as JSON events (--json); progress per transfer on a terminal; the two-stage Ctrl-C; logs
(-v); and the metrics file, written however the run ends.

The work itself is `qbr.workflow.apply_locked`; this module only presents it. `run()` returns
the exit code: 0 complete (or nothing to do, or not confirmed), 1 incomplete, 130 stopped or
abandoned by Ctrl-C. A QbrError passes through (the CLI prints it; a lock error exits 4) after
the metrics and the final event are written.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from qbr.errors import LockError, QbrError
from qbr.events import EVENTS_FORMAT, Emit, echo_log, event_log, logs_to, plan_event
from qbr.interrupt import EXIT_INTERRUPTED, Interrupts, stopping_message
from qbr.render.plan import SYMBOLS
from qbr.render.progress import LiveProgress
from qbr.repository.accounting import describe_requests

MARKS = {"done": "done", "failed": "FAILED", "skipped": "skipped", "abandoned": "ABANDONED"}


@dataclass(frozen=True)
class Presentation:
    as_json: bool = False
    verbose: bool = False
    color: bool = False
    saved_plan: bool = False
    auto_approve: bool = False
    metrics_file: str | None = None
    parallelism: int = 8
    debug: bool = False  # --debug: a failed action's traceback too


class ApplySession:
    def __init__(
        self,
        manifest: Any,
        options: Presentation,
        *,
        echo: Callable[..., None],
        prompt: Callable[[str], str],
        emit: Emit,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        progress: LiveProgress | None = None,
    ) -> None:
        self.manifest = manifest
        self.options = options
        self.echo = echo  # click.echo
        self.prompt = prompt
        self._emit = emit
        self.now = now
        self.progress = progress or LiveProgress()
        self.interrupts = Interrupts(self._running_count, self._announce)
        self._lock = threading.Lock()
        self._started: dict[str, datetime] = {}
        self._runs: list[Any] = []  # qbr.metrics.ActionRun, one per finished action
        self._plan: Any = None
        self._cancelled = False

    # -- output ------------------------------------------------------------------------------

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        if self.options.as_json:
            self._emit(kind, data)

    def say(self, text: str, *, err: bool = False) -> None:
        """A line for people (nothing with --json, where stdout carries events)."""
        if not self.options.as_json:
            self.progress.clear()
            self.echo(text, err=err)

    def warn(self, message: str) -> None:
        self.emit("warning", {"message": message})
        self.say(f"Warning: {message}", err=True)

    def _announce(self, stage: str, running: int) -> None:
        """From the signal handler: said from a thread of its own, so no lock the interrupted
        main thread may hold is taken inside the handler."""

        def tell() -> None:
            message = stopping_message(stage, running)
            self.emit(stage, {"running": running, "message": message})
            self.progress.clear()
            self.echo(message, err=True)

        threading.Thread(target=tell, name="qbr-interrupt", daemon=True).start()

    # -- callbacks of apply_locked -----------------------------------------------------------

    def _running_count(self) -> int:
        with self._lock:
            return len(self._started)

    def on_plan(self, plan: Any) -> None:
        from qbr.render.plan import render_plan

        self._plan = plan
        self.emit("plan", plan_event(plan))
        if not self.options.saved_plan:
            self.say(render_plan(plan, color=self.options.color).rstrip("\n"))

    def confirm(self, plan: Any) -> bool:
        if not (self.options.saved_plan or self.options.auto_approve):
            answer = self.prompt("Apply these actions? Only 'yes' is accepted")
            if answer.strip() != "yes":
                self.say("Apply cancelled.")
                self._cancelled = True
                return False
        self.interrupts.install()
        return True

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "action_started":  # sent from the thread that runs the action
            with self._lock:
                self._started[data["action"]] = self.now()
            self.progress.begin(data["action"], data["title"])
        self.emit(kind, data)

    def on_outcome(self, outcome: Any, action: Any) -> None:
        from qbr.metrics import ActionRun

        moved = self.progress.end(action.id)
        journal = outcome.output.get("journal") if isinstance(outcome.output.get("journal"), dict) else {}
        size = int(journal.get("size") or moved) if outcome.status == "done" else moved
        with self._lock:
            started = self._started.pop(action.id, None)
        self._runs.append(ActionRun(action, outcome.status, started, self.now(), size))
        data = {"action": action.id, "kind": action.kind, "group": action.group, "title": action.title,
                "status": outcome.status, "seconds": round(outcome.seconds, 3), "bytes": size}
        if outcome.message:
            data["message"] = outcome.message
        trace = getattr(outcome, "trace", "") if self.options.debug else ""
        if trace:
            data["traceback"] = trace
        self.emit("action_finished", data)
        self.say(f"{SYMBOLS[action.change]} {action.title}: {MARKS[outcome.status]} ({outcome.seconds:.1f}s)")
        if outcome.message:
            self.say(f"    {outcome.message}", err=outcome.status == "failed")
        if trace:
            self.say(trace.rstrip("\n"), err=True)

    def callbacks(self) -> dict[str, Any]:
        return {
            "confirm": self.confirm,
            "on_plan": self.on_plan,
            "on_outcome": self.on_outcome,
            "warn": self.warn,
            "progress": self.progress,
            "on_event": self.on_event,
            "should_stop": self.interrupts.stop.is_set,
            "should_abandon": self.interrupts.abandon.is_set,
        }

    # -- the run -----------------------------------------------------------------------------

    def run(self, apply: Callable[..., Any]) -> int:
        """Run `apply(**callbacks)` (apply_locked with its other arguments bound); the exit code."""
        from qbr import __version__

        started = self.now()
        self.emit("run_started", {"command": "apply", "qbr_version": __version__, "manifest": self.manifest.source,
                                  "format": EVENTS_FORMAT})
        if self.options.as_json:
            deliver, level = event_log(self._emit), logging.INFO
        else:
            deliver, level = echo_log(lambda line: self.say(line, err=True)), logging.INFO if self.options.verbose else logging.WARNING
        outcome, code, report = "error", 1, None
        try:
            with logs_to(deliver, level):
                report = apply(**self.callbacks())
            outcome, code = self._judge(report)
        except LockError as error:
            outcome, code = "lock_busy", error.exit_code
            self.emit("error", {"message": str(error), "exit_code": code})
            raise
        except QbrError as error:
            code = error.exit_code
            self.emit("error", {"message": str(error), "exit_code": code})
            raise
        except KeyboardInterrupt:
            outcome, code = "stopped", EXIT_INTERRUPTED
            raise
        finally:
            self.interrupts.uninstall()
            self.progress.close()
            code = self._finish(outcome, code, started, report)
        if outcome == "abandoned":
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # the abandoned actions' threads are not waited for
        return code

    def _judge(self, report: Any) -> tuple[str, int]:
        if report is None:
            return ("cancelled" if self._cancelled else "no_changes"), 0
        if report.count("abandoned"):
            return "abandoned", EXIT_INTERRUPTED
        if self.interrupts.stop.is_set():
            return "stopped", EXIT_INTERRUPTED
        return ("complete", 0) if report.ok else ("incomplete", 1)

    def _finish(self, outcome: str, code: int, started: datetime, report: Any) -> int:
        if report is not None:
            counts = {s: report.count(s) for s in MARKS}
            verdict = "complete" if report.ok else "stopped" if outcome in ("stopped", "abandoned") else "incomplete"
            summary = f"Apply {verdict}: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped"
            self.say(summary + (f", {counts['abandoned']} abandoned." if counts["abandoned"] else "."))
            for name, requests in report.s3_requests.items():
                self.say(f"Repository {name}: {describe_requests(requests)}")
        code = self._write_metrics(outcome, code, started)
        counts = {s: sum(1 for r in self._runs if r.status == s) for s in MARKS}
        seconds = round((self.now() - started).total_seconds(), 3)
        data = {"outcome": outcome, "exit_code": code, "seconds": seconds, "actions": counts}
        if report is not None and report.s3_requests:
            data["s3_requests"] = report.s3_requests
        self.emit("outcome", data)
        return code

    def _write_metrics(self, outcome: str, code: int, started: datetime) -> int:
        path = self.options.metrics_file
        if not path:
            return code
        from qbr import metrics

        try:
            run = metrics.ApplyRun(started, self.now(), outcome, list(self._runs))
            metrics.write_apply_metrics(path, self.manifest, run, self.options.parallelism, self.warn)
        except (OSError, QbrError) as error:
            self.warn(f"could not write the metrics file {path}: {error}")
            return code or 1
        return code
