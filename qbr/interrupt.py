"""Ctrl-C during an apply: the first stops cleanly, the second abandons.

First Ctrl-C (or SIGTERM, as Kubernetes and systemd send before they kill): start nothing more,
let the running actions finish, journal, release the locks, exit 130. Second: stop waiting for
them; the applier journals them as abandoned and writes the state a last time, the locks are
released, and the process exits at once (130). An abandoned action leaves what a killed one
leaves, which the next plan finds and converges from.

The handlers only set flags and say one line; the apply's walk polls the flags.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

EXIT_INTERRUPTED = 130


class Interrupts:
    """The two-stage Ctrl-C of one apply, installed while its actions run."""

    def __init__(self, running: Callable[[], int], say: Callable[[str, int], None]) -> None:
        self.running = running  # how many actions run now
        self.say = say  # (stage "stopping" | "abandoning", running) -> tell the user
        self.stop = threading.Event()
        self.abandon = threading.Event()
        self._saved: dict[int, Any] = {}

    def handle(self, signum: int = signal.SIGINT, frame: Any = None) -> None:
        running = self.running()
        if not self.stop.is_set():
            self.stop.set()
            self.say("stopping", running)
        elif not self.abandon.is_set():
            self.abandon.set()
            self.say("abandoning", running)

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (main thread only; elsewhere this does nothing)."""
        if threading.current_thread() is not threading.main_thread() or self._saved:
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self.handle)

    def uninstall(self) -> None:
        for sig, previous in self._saved.items():
            signal.signal(sig, previous)
        self._saved.clear()


def stopping_message(stage: str, running: int) -> str:
    actions = f"{running} running action{'s' if running != 1 else ''}"
    if stage == "stopping":
        return f"stopping: waiting for {actions} (press Ctrl-C again to abandon them)"
    return f"abandoning {actions}: the state records them as abandoned; the next plan finds what they left"
