"""Progress of an apply's transfers: one line per transfer in flight (bytes, rate, ETA), redrawn
in place on a terminal, and nothing at all elsewhere (CI, pipes, files, cron mail).

`LiveProgress` keeps `qbr.transfer.Progress`'s interface (expect, advance, close), which the
handlers call, and adds what the apply's presentation needs: `begin(action_id, label)` from the
thread that runs an action (the applier sends `action_started` from there), so the bytes that
thread moves are that action's; `end(action_id)` when it finished, which says how many bytes it
moved; `clear()` before other output is printed, so lines never interleave. Bytes are counted
whether or not anything is drawn (the events and the metrics report them).
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Callable

from qbr.render.sizes import human_bytes
from qbr.transfer import Progress

UNATTRIBUTED = ""  # bytes moved by a thread that runs no action (none today)


@dataclass
class Transfer:
    label: str
    total: int = 0
    done: int = 0
    expected: int = 0  # every size announced, added up (an upload's bytes are announced, not counted)
    started: float = field(default_factory=time.monotonic)

    def line(self, now: float, width: int) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        total = max(self.total, self.done)
        if total and rate > 0:
            eta = f"ETA {max(0.0, (total - self.done) / rate):.0f}s"
        else:
            eta = "ETA --"
        numbers = f"  {human_bytes(self.done)} / {human_bytes(total, unknown='?')}  {human_bytes(rate)}/s  {eta}"
        room = max(10, width - 3 - len(numbers))  # the line stays under the width: no wrap breaks the redraw
        label = self.label if len(self.label) <= room else self.label[: room - 1] + "…"
        return f"  {label}{numbers}"[: max(20, width - 1)]


class LiveProgress(Progress):
    """Per-transfer progress lines on a terminal (see the module docstring)."""

    def __init__(
        self,
        enabled: bool | None = None,
        stream: IO[str] | None = None,
        interval: float = 0.25,
        width: Callable[[], int] = lambda: shutil.get_terminal_size((100, 24)).columns,
    ) -> None:
        super().__init__(enabled=enabled, stream=stream, interval=interval)
        self._width = width
        self._local = threading.local()
        self._transfers: dict[str, Transfer] = {}
        self._drawn = 0  # lines on screen now
        self._last_draw = 0.0

    # -- what the applier's presentation calls -----------------------------------------------

    def begin(self, action_id: str, label: str) -> None:
        """The calling thread now runs `action_id`: what it moves is counted (and drawn) as that."""
        self._local.action = action_id
        with self._lock:
            self._transfers[action_id] = Transfer(label)

    def end(self, action_id: str) -> int:
        """The action finished: drop its line; the bytes it moved (counted, or announced if more)."""
        with self._lock:
            transfer = self._transfers.pop(action_id, None)
            if self.enabled and self._drawn:
                self._draw(time.monotonic())
        return max(transfer.done, transfer.expected) if transfer else 0

    def clear(self) -> None:
        """Erase the lines before something else is printed (they come back on the next chunk)."""
        with self._lock:
            self._erase()

    # -- qbr.transfer.Progress ---------------------------------------------------------------

    def expect(self, size: int | None) -> None:
        super().expect(size)
        with self._lock:
            transfer = self._current()
            transfer.total += size or 0
            transfer.expected += size or 0

    def advance(self, size: int) -> None:
        with self._lock:
            self.done += size
            self._current().done += size
            now = time.monotonic()
            if self.enabled and now - self._last_draw >= self.interval:
                self._draw(now)

    def close(self) -> None:
        with self._lock:
            self._erase()
            self._transfers.clear()

    # -- drawing -----------------------------------------------------------------------------

    def _current(self) -> Transfer:
        action = getattr(self._local, "action", UNATTRIBUTED)
        transfer = self._transfers.get(action)
        if transfer is None:
            transfer = self._transfers[action] = Transfer("other transfers")
        return transfer

    def _draw(self, now: float) -> None:
        self._last_draw = now
        width = self._width()
        lines = [t.line(now, width) for t in self._transfers.values() if t.total or t.done]
        if not lines and not self._drawn:
            return
        text = "\r\x1b[J" + "".join(line + "\n" for line in lines)
        self.stream.write(text + (f"\x1b[{len(lines)}A" if lines else ""))
        self.stream.flush()
        self._drawn = len(lines)
        self._shown = bool(lines)

    def _erase(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[J")
            self.stream.flush()
            self._drawn = 0
            self._shown = False
