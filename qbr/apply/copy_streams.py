"""The engine of a logical copy: scroll a live collection page by page and upsert each page into
the target, with bounded memory and parallel writes, journaling how far it got.

A *stream* is one scroll over the source: the whole collection, or (custom sharding) one shard
key's shards, whose points are written under the same key. Pages come in id order; each page is
one batch, upserted with wait=true by one of `writers` threads while the stream reads on (at
most `writers` pages are held at once, whatever the collection's size). A stream's position is
the offset where its copied prefix ends, plus the *islands*: batches past the prefix that
finished out of order. A resumed stream starts at the prefix and skips the islands (cutting a
page at an island's start), so no batch whose completion was journaled is copied twice.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable


def id_key(point_id: Any) -> tuple[int, Any]:
    """Qdrant's order of point ids: integers first, then UUIDs (hyphenated hex sorts as u128)."""
    if isinstance(point_id, int) and not isinstance(point_id, bool):
        return (0, point_id)
    return (1, str(point_id).lower())


def sample_rank(point_id: Any) -> str:
    """A point's place in the sample: the k lowest ranks are a uniform, deterministic sample."""
    return hashlib.sha256(json.dumps(point_id).encode()).hexdigest()


@dataclass
class Batch:
    seq: int
    start: Any  # the offset its page was read from (None: the stream's beginning)
    end: Any  # the next page's offset (None: nothing follows)
    points: list[dict] | None  # None: a range a killed run already copied (an island, skipped)


class Stream:
    """One scroll over the source and its journaled position."""

    def __init__(self, name: str, shard_key: Any, position: dict[str, Any]) -> None:
        self.name = name
        self.shard_key = shard_key
        self.offset = position.get("offset")
        self.done = bool(position.get("done"))
        self.old_islands = [(s, e) for s, e in position.get("islands") or []]
        self._finished: dict[int, Batch] = {}  # done, past the prefix
        self._next = 0  # the lowest seq not yet done

    def position(self) -> dict[str, Any]:
        islands = self.old_islands + [(b.start, b.end) for _, b in sorted(self._finished.items())]
        return {"offset": self.offset, "done": self.done, "islands": [list(i) for i in sorted(islands, key=lambda i: id_key(i[0]))]}

    def next_island(self, offset: Any) -> tuple[Any, Any] | None:
        """The nearest old island at or after `offset` (None: the stream's beginning)."""
        ahead = [i for i in self.old_islands if offset is None or id_key(i[0]) >= id_key(offset)]
        return min(ahead, key=lambda i: id_key(i[0])) if ahead else None

    def take_island(self, island: tuple[Any, Any]) -> None:
        self.old_islands.remove(island)

    def finish(self, batch: Batch) -> None:
        """A batch is copied (or an island skipped): advance the prefix over every batch done in order."""
        self._finished[batch.seq] = batch
        while self._next in self._finished:
            done = self._finished.pop(self._next)
            self._next += 1
            self.offset = done.end
            if done.end is None:  # the stream's last page: the prefix is the whole stream
                self.done = True


class Copier:
    """Runs the streams of one logical copy. `read(stream, offset, limit)` -> (points, next offset);
    `write(points, shard_key, writer_index)` upserts; `journal()` persists the positions (called
    with the copier's lock held, after each batch, so positions reach the state in order)."""

    def __init__(
        self,
        streams: list[Stream],
        read: Callable[[Stream, Any, int], tuple[list[dict], Any]],
        write: Callable[[list[dict], Any, int], None],
        journal: Callable[[], None],
        *,
        batch_size: int,
        writers: int,
        sample_size: int,
        sample: list[Any],
    ) -> None:
        self.streams = streams
        self._read, self._write, self._journal = read, write, journal
        self.batch_size = batch_size
        self.writers = max(1, writers)
        self.sample_size = sample_size
        self.sample = {sample_rank(i): {"id": i} for i in sample}  # rank -> point (a journaled one: its id only)
        self.copied = 0  # points upserted by this run
        self.lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.writers)
        self._error: BaseException | None = None
        self._turn = 0

    def run(self) -> None:
        todo = [s for s in self.streams if not s.done]
        with ThreadPoolExecutor(self.writers, thread_name_prefix="qbr-copy-write") as writes:
            with ThreadPoolExecutor(max(1, min(len(todo), self.writers)), thread_name_prefix="qbr-copy-read") as reads:
                for future in [reads.submit(self._scroll, stream, writes) for stream in todo]:
                    future.result()
        if self._error is not None:
            raise self._error

    def _scroll(self, stream: Stream, writes: ThreadPoolExecutor) -> None:
        offset, seq = stream.offset, 0
        while self._error is None:
            island = stream.next_island(offset)
            if island is not None and offset is not None and id_key(island[0]) == id_key(offset):
                stream.take_island(island)  # a killed run copied this range: skip it
                self._done(stream, Batch(seq, island[0], island[1], None))
                seq += 1
                if island[1] is None:
                    break
                offset = island[1]
                continue
            self._slots.acquire()
            try:
                points, after = self._read(stream, offset, self.batch_size)
            except BaseException as error:
                self._slots.release()
                self._fail(error)
                break
            if island is not None and (after is None or id_key(after) > id_key(island[0])):
                points = [p for p in points if id_key(p["id"]) < id_key(island[0])]
                after = island[0]  # the page stops where the island begins
            batch = Batch(seq, offset, after, points)
            seq += 1
            with self.lock:
                writer = self._turn % self.writers
                self._turn += 1
            writes.submit(self._upsert, stream, batch, writer)
            if after is None:
                break
            offset = after

    def _upsert(self, stream: Stream, batch: Batch, writer: int) -> None:
        try:
            if self._error is None and batch.points:
                self._write(batch.points, stream.shard_key, writer)
            if self._error is None:
                self._done(stream, batch)
        except BaseException as error:
            self._fail(error)
        finally:
            self._slots.release()

    def _done(self, stream: Stream, batch: Batch) -> None:
        with self.lock:
            stream.finish(batch)
            if batch.points is None:
                return  # an island: already in the journal
            self.copied += len(batch.points)
            if self.sample_size:
                for point in batch.points:
                    self.sample[sample_rank(point["id"])] = point
                for rank in sorted(self.sample)[self.sample_size:]:
                    del self.sample[rank]
            self._journal()

    def _fail(self, error: BaseException) -> None:
        with self.lock:
            if self._error is None:
                self._error = error

    def sample_ids(self) -> list[Any]:
        with self.lock:
            return [self.sample[r]["id"] for r in sorted(self.sample)]

    def sample_points(self) -> list[dict]:
        """The sampled points this run read whole (not those a killed run journaled by id)."""
        with self.lock:
            return [self.sample[r] for r in sorted(self.sample) if "vector" in self.sample[r]]
