"""A per-node cap on how fast snapshot downloads are served, like a node behind a slow disk or link.

    node.download_rate = 20 * 2**20   # bytes per second for all of this node's downloads together
    node.download_rate = None         # no cap (the default)

Every download of the node draws from one schedule: each piece of a response books the next
free stretch of the node's time at that rate and waits for its end, so N concurrent downloads
share the rate (each gets about rate/N) and the node never serves faster than the cap in total.
The rate is read at every piece, so it can be changed while downloads run.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

PIECE = 64 * 1024  # responses are paced in pieces of at most this size, so pacing is smooth


class RateSchedule:
    """When each piece may go: a virtual clock that advances by size/rate for each piece booked."""

    def __init__(self, clock=time.monotonic, sleep=time.sleep) -> None:
        self._lock = threading.Lock()
        self._free_at = 0.0
        self._clock = clock
        self._sleep = sleep

    def take(self, size: int, rate: float) -> None:
        """Book `size` bytes at `rate` bytes/s after everything booked before, and wait until then."""
        with self._lock:
            now = self._clock()
            start = max(now, self._free_at)
            self._free_at = start + size / rate
            wait = self._free_at - now
        if wait > 0:
            self._sleep(wait)


_schedules: weakref.WeakKeyDictionary[Any, RateSchedule] = weakref.WeakKeyDictionary()
_schedules_lock = threading.Lock()


def schedule_of(node: Any) -> RateSchedule:
    with _schedules_lock:
        schedule = _schedules.get(node)
        if schedule is None:
            schedule = _schedules[node] = RateSchedule()
        return schedule


def capped(node: Any, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`chunks` as the node serves them: at most `node.download_rate` bytes/s over all its
    downloads, or as fast as they come when the node has no rate set."""
    try:
        if getattr(node, "download_rate", None) is None:
            yield from chunks  # (a rate set mid-download applies to the next download)
            return
        schedule = schedule_of(node)
        for chunk in chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), PIECE):
                piece = view[start:start + PIECE]
                rate = getattr(node, "download_rate", None)
                if rate:
                    schedule.take(len(piece), float(rate))
                yield piece.tobytes() if len(view) > PIECE else chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # the stored snapshot's file handle, when the download ends or is cut
