"""verify's checking logic: streamed scans of archives, judgements against set records, rendering."""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from qbr.errors import NotFoundError, QbrError, RepositoryError
from qbr.records import ArchiveRecord, CollectionRecord, SetRecord
from qbr.redact import redact
from qbr.verify import (
    ENGINE_ENV,
    ArchiveScan,
    Finding,
    QdrantEdgeCounter,
    RestoreCheck,
    SetCheck,
    VerifyReport,
    archive_problems,
    check_sets,
    choose_counter,
    load_engine,
    render_verify,
    scan_archive,
    scan_stream,
    uncounted,
)
from qbr.verify import engine as engine_module
from tests.e2e.helpers import tar_bytes
from tests.emulator.archive import collection_members, shard_members, synthetic_shard_archive
from tests.verify_engine import SELECT as EMULATOR_COUNTER
from tests.verify_engine import EmulatorPointCounter

EMULATOR = EmulatorPointCounter()

PEERS = {0: 101}


def points(n: int, start: int = 0) -> list[dict]:
    return [{"id": i, "vector": [0.1, 0.2], "payload": {"n": i}} for i in range(start, start + n)]


def collection_archive(shards: dict[int, int]) -> bytes:
    """An emulator collection snapshot: shard id -> points in it."""
    layout = {s: ([0], points(n, s * 1000)) for s, n in shards.items()}
    return tar_bytes(collection_members({"params": {}}, {}, layout, PEERS, 0))


def shard_archive(n: int) -> bytes:
    return tar_bytes(shard_members("", 0, [0], PEERS, 0, points(n)))


def record_of(data: bytes, kind: str = "collection", shard_ids=(0,), points_count: int | None = None, key: str = "snapshots/c/a") -> ArchiveRecord:
    return ArchiveRecord(key, len(data), hashlib.sha256(data).hexdigest(), kind, tuple(shard_ids), "http://n0:6333", points_count)


def chunked(data: bytes, size: int):
    return (data[i : i + size] for i in range(0, len(data), size))


def deep_problems(data: bytes, record: ArchiveRecord, counter=None, chunk: int = 4096) -> tuple[str, ...]:
    return archive_problems(scan_stream(chunked(data, chunk), record.key, record.kind, deep=True, counter=counter), record)


# ---------------------------------------------------------------- bytes


@pytest.mark.parametrize("chunk", [1, 511, 512, 10240, 1 << 20])
@pytest.mark.parametrize("deep, counter", [(False, None), (True, None), (True, EMULATOR)])
def test_scan_hashes_every_byte_whatever_the_chunking(chunk, deep, counter):
    data = collection_archive({0: 5}) + b"trailing bytes after the end-of-archive marker"
    scan = scan_stream(chunked(data, chunk), "k", "collection", deep=deep, counter=counter)
    assert (scan.size, scan.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert scan.deep is deep
    if counter is not None:
        assert scan.shards[0].points == 5


def test_size_and_hash_mismatches_are_named_and_deep_findings_wait_for_whole_bytes():
    data = shard_archive(3)
    record = record_of(data, "shard")
    flipped = bytearray(data)
    flipped[700] ^= 1
    [problem] = deep_problems(bytes(flipped), record)
    assert problem.startswith(f"has sha256 {hashlib.sha256(bytes(flipped)).hexdigest()[:16]}…, the set recorded {record.sha256[:16]}…")
    [problem] = deep_problems(data[:1024], record)
    assert problem == f"is 1024 bytes, the set recorded {len(data)} (truncated or altered)"
    assert deep_problems(data, record) == ()


def test_scan_stream_memory_stays_flat_on_a_large_archive():
    archive = synthetic_shard_archive([0], PEERS, 0, 48 << 20, "flat")
    tracemalloc.start()
    try:
        scan = scan_stream(archive.iter_bytes(), "big", "shard", deep=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scan.size == archive.size > 48 << 19
    assert scan.sha256 == archive.sha256()
    assert scan.tar_error is None and "segments" in scan.entries
    assert peak < 6 << 20, f"peak {peak} bytes while reading a {archive.size}-byte archive"


class _Repo:
    def __init__(self, error=None, data=b""):
        self.error, self.data = error, data

    def open_read(self, key, chunk_size):
        if self.error:
            raise self.error
        from contextlib import nullcontext

        return nullcontext(chunked(self.data, chunk_size))


def test_scan_archive_turns_missing_and_unreadable_into_findings():
    record = record_of(b"x")
    missing = scan_archive(_Repo(NotFoundError("'k' does not exist in /r.")), "k", "collection", deep=False)
    assert archive_problems(missing, record) == ("is missing from the repository",)
    broken = scan_archive(_Repo(RepositoryError("cannot reach S3 endpoint http://s3: timed out.")), "k", "collection", deep=True)
    assert archive_problems(broken, record) == ("could not be read: cannot reach S3 endpoint http://s3: timed out.",)
    assert archive_problems(scan_archive(_Repo(data=b"x"), "k", "collection", deep=False), record) == ()


# ---------------------------------------------------------------- structure


def test_a_whole_emulator_collection_snapshot_passes_and_counts_points_per_shard():
    data = collection_archive({0: 4, 1: 6, 2: 0})
    scan = scan_stream(chunked(data, 1000), "k", "collection", deep=True, counter=EMULATOR)
    assert {s: v.points for s, v in scan.shards.items()} == {0: 4, 1: 6, 2: 0}
    assert deep_problems(data, record_of(data, shard_ids=(0, 1, 2), points_count=10), EMULATOR) == ()
    assert deep_problems(data, record_of(data, shard_ids=(0, 1, 2), points_count=11), EMULATOR) == (
        "holds 10 points (lines of segments/points.jsonl), the set recorded 11",
    )
    assert deep_problems(data, record_of(data, shard_ids=(0, 1, 2), points_count=None), EMULATOR) == ()


def test_collection_snapshot_layout_problems_list_what_is_missing():
    members = [m for m in collection_members({}, {}, {0: ([0], points(2)), 1: ([0], points(1))}, PEERS, 0)
               if m[0] not in ("config.json", "1/shard_config.json")]
    data = tar_bytes(members)
    record = record_of(data, shard_ids=(0, 1, 2), points_count=3)
    assert deep_problems(data, record) == (
        "is not a whole Qdrant collection snapshot: it lacks config.json, 1/shard_config.json, 2/",
    )


def test_shard_snapshot_needs_its_config_replica_state_and_segments():
    data = tar_bytes([("replica_state.json", b"{}"), ("wal", None)])
    assert deep_problems(data, record_of(data, "shard")) == (
        "is not a whole Qdrant shard snapshot: it lacks shard_config.json, segments/",
    )
    good = shard_archive(5)
    assert deep_problems(good, record_of(good, "shard", points_count=5), EMULATOR) == ()
    assert deep_problems(good, record_of(good, "shard", points_count=4), EMULATOR) == (
        "holds 5 points (lines of segments/points.jsonl), the set recorded 4",
    )


def test_member_names_with_dot_slash_are_the_same_names():
    data = tar_bytes([("./shard_config.json", b"{}"), ("./replica_state.json", b"{}"), ("./segments/", None),
                      ("./segments/points.jsonl", b'{"id":1}\n\n{"id":2}')])
    assert deep_problems(data, record_of(data, "shard", points_count=2), EMULATOR) == ()
    assert deep_problems(data, record_of(data, "shard", points_count=3), EMULATOR) == (
        "holds 2 points (lines of segments/points.jsonl), the set recorded 3",
    )


def test_not_a_tar_and_a_climbing_member_are_reported():
    junk = b"this is not a tar archive at all" * 40
    [problem] = deep_problems(junk, record_of(junk))
    assert problem.startswith("is not a readable tar archive (")
    data = tar_bytes([("shard_config.json", b"{}"), ("replica_state.json", b"{}"), ("segments", None), ("../evil", b"x")])
    assert deep_problems(data, record_of(data, "shard")) == ("holds a member that escapes its folder ('../evil')",)


# ---------------------------------------------------------------- point counters: Qdrant's engine (faked: the code path runs in CI)


def segment_tar(count: int) -> bytes:
    return tar_bytes([("segment.json", json.dumps({"count": count}).encode())])


def engine_shard(prefix: str, count: int) -> list:
    return [(f"{prefix}replica_state.json", b"{}"), (f"{prefix}shard_config.json", b"{}"), (f"{prefix}segments", None),
            (f"{prefix}segments/0b5e.tar", segment_tar(count))]


class FakeEngine:
    """Stands in for the qdrant_edge module: unpacks the spooled shard tar and sums its nested segments' counts."""

    class CountRequest:
        def __init__(self, exact: bool = True) -> None:
            assert exact

    class EdgeShard:
        seen: list[list[str]] = []

        @staticmethod
        def unpack_snapshot(snapshot_path: str, target_path: str) -> None:
            with tarfile.open(snapshot_path) as tar:
                FakeEngine.EdgeShard.seen.append(sorted(tar.getnames()))
                tar.extractall(target_path, filter="data")

        @staticmethod
        def load(path: str) -> "FakeEngine.Loaded":
            return FakeEngine.Loaded(Path(path))

    class Loaded:
        def __init__(self, path: Path) -> None:
            self.path = path

        def count(self, request) -> int:
            total = 0
            for nested in (self.path / "segments").glob("*.tar"):
                with tarfile.open(nested) as tar:
                    total += json.load(tar.extractfile("segment.json"))["count"]
            return total

        def close(self) -> None:
            pass


def test_real_segments_are_spooled_per_shard_and_counted_by_the_engine():
    FakeEngine.EdgeShard.seen = []
    data = tar_bytes([("version.info", b"0.4.2"), ("config.json", b"{}")] + engine_shard("0/", 7) + engine_shard("1/", 5))
    record = record_of(data, shard_ids=(0, 1), points_count=12)
    assert deep_problems(data, record, QdrantEdgeCounter(FakeEngine)) == ()
    assert FakeEngine.EdgeShard.seen == [["replica_state.json", "segments", "segments/0b5e.tar", "shard_config.json"]] * 2
    assert deep_problems(data, record_of(data, shard_ids=(0, 1), points_count=13), QdrantEdgeCounter(FakeEngine)) == (
        "holds 12 points (counted by Qdrant's engine), the set recorded 13",
    )


def test_without_the_engine_real_segments_are_left_uncounted_and_said_so():
    data = tar_bytes(engine_shard("", 7))
    scan = scan_stream(chunked(data, 999), "k", "shard", deep=True, counter=None)
    assert archive_problems(scan, record_of(data, "shard", points_count=8)) == ()
    assert uncounted(scan)
    text = render_verify(VerifyReport(deep=True, archives=1, uncounted=1))
    assert "install qdrant-edge-py (pip install 'qbr[deep]')" in text


def test_an_engine_failure_is_a_finding_not_a_crash():
    class Panic(BaseException):  # pyo3's PanicException derives from BaseException
        pass

    class Broken(FakeEngine):
        class EdgeShard(FakeEngine.EdgeShard):
            @staticmethod
            def load(path: str):
                raise Panic("segment.json: invalid type\nbacktrace...")

    data = tar_bytes(engine_shard("", 7))
    assert deep_problems(data, record_of(data, "shard", points_count=7), QdrantEdgeCounter(Broken)) == (
        "Qdrant's engine could not open its segments (segment.json: invalid type)",
    )


def test_the_emulator_store_is_counted_even_when_the_engine_is_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "qbr_fake_engine_module", FakeEngine)
    monkeypatch.setattr(engine_module, "ENGINE_MODULE", "qbr_fake_engine_module")
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert isinstance(choose_counter(), QdrantEdgeCounter), "installed, Qdrant's engine counts by default"
    monkeypatch.setenv(ENGINE_ENV, EMULATOR_COUNTER)
    counter = choose_counter()
    assert isinstance(counter, EmulatorPointCounter)
    data = shard_archive(4)
    assert deep_problems(data, record_of(data, "shard", points_count=5), counter) == (
        "holds 4 points (lines of segments/points.jsonl), the set recorded 5",
    )


def test_without_a_counter_the_emulator_store_is_left_uncounted_too():
    data = shard_archive(4)
    scan = scan_stream(chunked(data, 999), "k", "shard", deep=True, counter=None)
    assert archive_problems(scan, record_of(data, "shard", points_count=5)) == ()
    assert uncounted(scan)
    assert not uncounted(scan_stream(chunked(data, 999), "k", "shard", deep=True, counter=EMULATOR))


def test_a_shard_the_counter_cannot_read_is_a_finding_naming_the_counter():
    data = tar_bytes(engine_shard("", 7))
    assert deep_problems(data, record_of(data, "shard", points_count=7), EMULATOR) == (
        "the emulator's point counter could not open its segments (the shard holds no segments/points.jsonl: not an emulator shard)",
    )


def test_load_engine_is_none_when_the_module_is_absent(monkeypatch):
    monkeypatch.setattr(engine_module, "ENGINE_MODULE", "qbr_no_such_engine_module")
    assert load_engine() is None
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert choose_counter() is None


@pytest.mark.parametrize(
    "setting, sentence",
    [
        ("tests.verify_engine", "QBR_DEEP_ENGINE=tests.verify_engine is not module:attribute"),
        ("qbr_no_such_module:Counter", "QBR_DEEP_ENGINE=qbr_no_such_module:Counter cannot be loaded (ModuleNotFoundError"),
        ("tests.verify_engine:SELECT", "QBR_DEEP_ENGINE=tests.verify_engine:SELECT cannot be loaded (TypeError"),
        ("tests.verify_engine:Path", "has no count(shard_snapshot, scratch) method"),
    ],
)
def test_a_counter_named_but_not_loadable_is_a_sentence(setting, sentence):
    with pytest.raises(QbrError) as raised:
        choose_counter(setting)
    assert sentence in str(raised.value)


def test_naming_qdrants_engine_when_it_is_absent_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(engine_module, "ENGINE_MODULE", "qbr_no_such_engine_module")
    with pytest.raises(QbrError, match=r"install qdrant-edge-py \(pip install 'qbr\[deep\]'\)"):
        choose_counter("qbr.verify.engine:QdrantEdgeCounter")


# ---------------------------------------------------------------- sets and rendering


def set_record(set_id: str, archives: dict[str, ArchiveRecord]) -> SetRecord:
    return SetRecord(
        backup="nightly", set_id=set_id, created="2026-11-21T08:00:00Z", cluster="prod", qdrant_version="1.19.0",
        collections={
            name: CollectionRecord(name, 1, {}, "x", (), 1, "1.19.0", set_id, (archive,)) for name, archive in archives.items()
        },
    )


def test_check_sets_judges_a_shared_archive_in_every_set_that_names_it():
    good, bad = record_of(b"g", key="snapshots/a/g"), record_of(b"b", key="snapshots/b/b")
    scans = {good.key: ArchiveScan(good.key, size=1, sha256=good.sha256), bad.key: ArchiveScan(bad.key, found=False)}
    old = set_record("20261120T080000Z", {"a": good, "b": bad})
    new = set_record("20261121T080000Z", {"a": good})
    broken = [("nightly", "20261122T080000Z", "its record sets/nightly/20261122T080000Z.json cannot be used: not JSON")]
    checks = check_sets("main", [new, old], broken, scans)
    assert [(c.set_id, c.archives, c.ok) for c in checks] == [
        ("20261120T080000Z", 2, False), ("20261121T080000Z", 1, True), ("20261122T080000Z", 0, False),
    ]
    assert [f.line() for f in checks[0].findings] == [
        "backup nightly, set 20261120T080000Z, collection b, archive snapshots/b/b: is missing from the repository"
    ]
    assert checks[2].findings[0].line().startswith("backup nightly, set 20261122T080000Z: its record sets/nightly/")


def test_render_lists_sets_restores_and_a_summary_and_sets_the_exit_code():
    bad = Finding("main", "nightly", "S2", "docs", "snapshots/docs/x", "is missing from the repository")
    report = VerifyReport(
        deep=False,
        sets=(SetCheck("main", "nightly", "S1", 3), SetCheck("main", "nightly", "S2", 2, (bad,))),
        archives=4,
        bytes_read=2048,
        restore_cluster="dr",
        restores=(RestoreCheck("nightly", "S2", "docs", "dr", "qbr_verify_ab_docs", 10, points=10),),
    )
    assert render_verify(report).splitlines() == [
        "set nightly/S1: 3 archives OK",
        "set nightly/S2: 1 problem",
        "  backup nightly, set S2, collection docs, archive snapshots/docs/x: is missing from the repository",
        "restore test nightly/S2, collection docs on cluster dr: 10 points OK",
        "Verified 2 sets, 4 archives (2.0 KiB read), 1 restore test on cluster dr: 1 problem.",
    ]
    assert report.exit_code == 1
    clean = VerifyReport(deep=True, sets=(SetCheck("main", "nightly", "S1", 1),), archives=1)
    assert clean.exit_code == 0 and render_verify(clean).endswith("(0 B read, deep): all OK.\n")
    failed = RestoreCheck("nightly", "S2", "docs", "dr", "t", 10, points=9)
    assert not failed.ok and VerifyReport(deep=False, restores=(failed,)).exit_code == 1


def test_presigned_urls_never_reach_the_output():
    url = "http://127.0.0.1:5000/bucket/p/snapshots/x?X-Amz-Algorithm=AWS4&X-Amz-Signature=abc123"
    assert redact(f"node refused {url} (403)") == "node refused http://127.0.0.1:5000/bucket/p/snapshots/x (403)"
    assert redact("http://node:6333/collections/docs failed") == "http://node:6333/collections/docs failed"
    report = VerifyReport(deep=False, restores=(RestoreCheck("n", "S", "docs", "dr", "t", 1, problem=f"recover from {url}"),))
    assert "X-Amz" not in render_verify(report)
    found = Finding("main", "n", "S", "docs", "snapshots/docs/x", f"could not be read: GET {url} failed")
    text = render_verify(VerifyReport(deep=False, sets=(SetCheck("main", "n", "S", 1, (found,)),)))
    assert "X-Amz" not in text and "abc123" not in text
    assert "could not be read: GET http://127.0.0.1:5000/bucket/p/snapshots/x failed" in text
