"""`node.download_rate`: a node serves snapshot downloads no faster than its cap, all its downloads
together. Time is never measured here: the schedule's clock and sleep are replaced, and the test
checks what it booked (how long the node made each download wait), not how long anything took."""

from __future__ import annotations

import hashlib
import threading

import httpx

from tests.emulator import throttle
from tests.emulator.throttle import RateSchedule

MIB = 1024 * 1024


class FrozenClock:
    """A clock that stands still, and a sleep that only records what it was asked to wait."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.waits.append(seconds)


def frozen_schedule(node) -> FrozenClock:
    clock = FrozenClock()
    with throttle._schedules_lock:
        throttle._schedules[node] = RateSchedule(clock=clock, sleep=clock.sleep)
    return clock


def test_the_schedule_books_pieces_one_after_another_at_the_rate():
    clock = FrozenClock()
    schedule = RateSchedule(clock=clock, sleep=clock.sleep)
    schedule.take(MIB, 2 * MIB)  # half a second
    schedule.take(MIB, 2 * MIB)  # booked after the first: waits until 1 s from now
    assert clock.waits == [0.5, 1.0]
    clock.now += 5  # idle for longer than the backlog: nothing carried over
    schedule.take(MIB // 4, MIB)
    assert clock.waits[-1] == 0.25


def download(url: str, collection: str) -> tuple[bytes, dict]:
    with httpx.Client(timeout=60, trust_env=False) as http:
        desc = http.post(f"{url}/collections/{collection}/snapshots").json()["result"]
        data = http.get(f"{url}/collections/{collection}/snapshots/{desc['name']}").content
    return data, desc


def test_a_capped_node_books_size_over_rate_for_its_downloads_together(emulator):
    cluster = emulator(nodes=3)
    for i in range(3):
        cluster.add_synthetic_collection(f"c{i}", snapshot_size=MIB, node=i)
    capped, free = cluster.nodes[0], cluster.nodes[1]
    capped.download_rate = 4 * MIB  # bytes per second
    clock, untouched = frozen_schedule(capped), frozen_schedule(free)

    results: dict[int, tuple[bytes, dict]] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, download(capped.url, "c0"))) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other, other_desc = download(free.url, "c1")

    for data, desc in results.values():  # the bytes are the snapshot's, unchanged
        assert len(data) == desc["size"] and hashlib.sha256(data).hexdigest() == desc["checksum"]
    assert hashlib.sha256(other).hexdigest() == other_desc["checksum"]
    total = sum(desc["size"] for _, desc in results.values())
    # Both downloads drew from one schedule: the last piece waits for all bytes at 4 MiB/s.
    assert abs(max(clock.waits) - total / (4 * MIB)) < 1e-9
    assert len(clock.waits) >= 2 * (MIB // throttle.PIECE)  # paced in pieces of at most PIECE bytes
    assert untouched.waits == []  # a node without a rate is not paced


def test_a_rate_of_none_serves_at_full_speed_and_metadata_is_never_paced(emulator):
    cluster = emulator()
    cluster.add_synthetic_collection("big", snapshot_size=MIB)
    node = cluster.nodes[0]
    node.download_rate = None
    clock = frozen_schedule(node)
    data, desc = download(node.url, "big")
    assert hashlib.sha256(data).hexdigest() == desc["checksum"] and clock.waits == []
    node.download_rate = MIB
    with httpx.Client(timeout=60, trust_env=False) as http:
        assert http.get(f"{node.url}/collections/big/snapshots").status_code == 200
    assert clock.waits == []  # listing snapshots is not a download
