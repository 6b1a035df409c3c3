"""The logical copy's engine and checks on their own: parallel writers finishing out of order, a
run stopped midway and resumed from its journal, and the points and sample checks at the end."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from qbr.actions import CopyCollection
from qbr.apply.copy_streams import Copier, Stream, id_key
from qbr.apply.logical_copy import _compare_sample, _live_count_check

IDS = list(range(0, 300, 3)) + ["0a1b2c3d-0000-4000-8000-000000000001", "ffffffff-0000-4000-8000-000000000002"]


class Source:
    """A collection scrolled in Qdrant's id order."""

    def __init__(self, ids: list[Any]) -> None:
        self.ids = sorted(ids, key=id_key)

    def read(self, stream: Stream, offset: Any, limit: int) -> tuple[list[dict], Any]:
        start = 0 if offset is None else next((i for i, p in enumerate(self.ids) if id_key(p) >= id_key(offset)), len(self.ids))
        page = self.ids[start:start + limit]
        after = self.ids[start + limit] if start + limit < len(self.ids) else None
        return [{"id": p, "vector": [0.5], "payload": {"p": str(p)}} for p in page], after


class Stop(Exception):
    pass


def run(source: Source, position: dict, *, stop_at: int | None = None, writers: int = 4, slow_first: bool = False):
    """Copy with random write delays (so batches finish out of order); with `stop_at`, the run
    dies at that journal write, as a kill would: what the state holds is the position journaled then."""
    stream = Stream("*", None, position)
    written: list[Any] = []
    journaled: list[dict] = []
    guard = threading.Lock()
    rng = random.Random(7)

    def write(points: list[dict], shard_key: Any, writer: int) -> None:
        time.sleep(0.2 if slow_first and points[0]["id"] == source.ids[0] else rng.random() / 500)
        with guard:
            written.extend(p["id"] for p in points)

    def journal() -> None:
        journaled.append(stream.position())
        if stop_at is not None and len(journaled) == stop_at:
            raise Stop()

    copier = Copier([stream], source.read, write, journal, batch_size=7, writers=writers, sample_size=5, sample=[])
    if stop_at is None:
        copier.run()
    else:
        with pytest.raises(Stop):
            copier.run()
    return written, journaled, copier


def covered(source: Source, position: dict) -> set[Any]:
    """The ids a journaled position says are copied: the prefix and the islands."""
    done = set()
    for point_id in source.ids:
        key = id_key(point_id)
        if position["done"] or (position["offset"] is not None and key < id_key(position["offset"])):
            done.add(point_id)
        for start, end in position["islands"]:
            if key >= id_key(start) and (end is None or key < id_key(end)):
                done.add(point_id)
    return done


def test_a_copy_writes_every_point_once_and_its_sample_is_the_lowest_ranks():
    source = Source(IDS)
    written, journaled, copier = run(source, {})
    assert sorted(written, key=id_key) == source.ids
    assert journaled[-1] == {"offset": None, "done": True, "islands": []}
    again, _, _ = run(source, {})  # the sample does not depend on the order batches finished in
    assert copier.sample_ids() == run(source, {})[2].sample_ids() and len(copier.sample_ids()) == 5
    assert sorted(again, key=id_key) == source.ids


@pytest.mark.parametrize("stop_at", [1, 3, 8, 14])
def test_a_run_stopped_midway_resumes_without_writing_any_journaled_point_again(stop_at):
    source = Source(IDS)
    first, journaled, _ = run(source, {}, stop_at=stop_at)
    state = journaled[-1]
    safe = covered(source, state)
    assert safe <= set(first)
    second, _, _ = run(source, state)
    assert not safe & set(second), "a journaled batch was copied again"
    assert set(first) | set(second) == set(source.ids)
    assert len(second) == len(set(second))


def test_batches_finished_past_a_slow_one_are_islands_the_resumed_run_skips():
    source = Source(IDS)
    first, journaled, _ = run(source, {}, stop_at=2, slow_first=True)
    state = journaled[-1]
    assert state["offset"] is None and len(state["islands"]) == 2, "the first batch is still being written"
    second, _, _ = run(source, state)
    assert not covered(source, state) & set(second)
    assert set(second) | covered(source, state) == set(source.ids)


def test_a_finished_stream_is_not_read_again():
    source = Source(IDS)
    written, journaled, _ = run(source, {"offset": None, "done": True, "islands": []})
    assert written == [] and journaled == []


# ---------------------------------------------------------------- the checks at the end


class Node:
    def __init__(self, counts: list[int], points: dict | None = None) -> None:
        self.counts = counts
        self.points = points or {}

    def count_points(self, collection: str, exact: bool = True) -> int:
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]

    def retrieve_points(self, collection: str, ids: list[Any]) -> list[dict]:
        return [{"id": i, **self.points[i]} for i in ids if i in self.points]


class Live:
    def __init__(self, counts: list[int]) -> None:
        self.client = Node(counts)

    def count(self) -> int:
        return self.client.count_points("docs")


PARAMS = CopyCollection(
    restore="r", backup="b", set_id="s", copied_in="s", source_cluster="prod", source_collection="docs",
    target_cluster="big", target_collection="docs", shard_number=6, replication_factor=2, write_consistency_factor=1,
    storage={}, shape={"topology": {"shard_number": 6}}, verify_sample=2,
)


def test_a_source_written_to_during_the_copy_is_said_so_and_judged_by_its_range():
    problem, note, extra = _live_count_check(PARAMS, Live([110]), 104, 100)
    assert problem is None and extra == {"source_points_at_end": 110}
    assert "was written to during the copy (100 points when it began, 110 at its end); collection docs holds 104, within" in note
    problem, note, _ = _live_count_check(PARAMS, Live([110]), 100, 100)
    assert problem is None and "written to during the copy" in note


def test_a_count_outside_what_the_source_held_is_refused():
    problem, _, _ = _live_count_check(PARAMS, Live([100]), 97, 100)
    assert problem is not None and "has 97 points, but the source collection docs on cluster prod had 100 when the copy began" in problem
    assert _live_count_check(PARAMS, Live([100]), 100, 100) == (None, None, {})


def test_a_sampled_point_that_differs_fails_the_copy_and_names_it():
    same, other = {"vector": [0.1], "payload": {"a": 1}}, {"vector": [0.1], "payload": {"a": 2}}
    close = {"vector": [0.1 + 1e-9], "payload": {"a": 1}}
    theirs = {5: {"id": 5, **same}, 6: {"id": 6, **same}, 7: {"id": 7, **same}}
    checked, problem = _compare_sample(PARAMS, theirs, Node([3], {5: same, 6: close, 7: other}), [5, 6, 7, 8], False)
    assert checked == 3 and problem is not None and "1 of 3 sampled points" in problem and "(ids 7)" in problem
    assert _compare_sample(PARAMS, theirs, Node([3], {5: same, 6: close, 7: same}), [5, 6, 7], False) == (3, None)
