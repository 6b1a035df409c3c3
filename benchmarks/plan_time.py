"""How planning time grows with the number of collections.

    python benchmarks/plan_time.py [--collections 10 100 1000 5000] [--observe-collections 10 100 500] [--history 30]

1. The pure planner (qbr.planner.make_plan) on synthetic Observed data, no network: one backup of
   every collection with `--history` daily sets behind it (each set copies a tenth of the
   collections and carries the rest by reference), only_changed, a retention policy that
   deletes most of those sets (so garbage collection has archives to sweep), a tenth of the
   collections changed since the newest set, and a DR restore of every collection.
2. observe + plan against a Qdrant emulator (its own process) holding that many collections,
   with a local-folder repository holding `--history` sets of them (what `qbr plan` does,
   minus printing).
Prints milliseconds per collection and how the time grows against the collection count.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emulator_process, median, print_ratio, print_table

from qbr.connections import Connections
from qbr.manifest import Manifest, load_manifest_text
from qbr.observe import observe
from qbr.plan import Plan
from qbr.planner import make_plan
from qbr.records import (
    ArchiveRecord,
    CollectionRecord,
    SetRecord,
    archive_key,
    config_digest,
    set_id_for,
    set_key,
    utc_iso,
)
from qbr.state import State
from qbr.world import (
    ArchiveObject,
    Observed,
    ObservedCluster,
    ObservedCollection,
    ObservedNode,
    ObservedRepository,
)

NOW = datetime(2026, 11, 21, 8, 0, 0, tzinfo=UTC)
PROD = "http://127.0.0.1:6333"
DR = "http://127.0.0.2:6333"
CONFIG = {
    "params": {"vectors": {"size": 768, "distance": "Cosine"}, "shard_number": 1, "replication_factor": 1},
    "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
    "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000, "indexing_threshold": 20000},
    "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
}
MANIFEST = """
version: 1
state: {state}
clusters:
  prod: {{url: "{prod}"}}
  dr: {{url: "{dr}"}}
repositories:
  main: {{path: "{repo}"}}
backups:
  nightly:
    cluster: prod
    repository: main
    collections: ["*"]
    rpo: 24h
    only_changed: true
    aliases: true
    retention: {{keep_last: 3, daily: 7, weekly: 4}}
{restores}
"""
RESTORES = """restores:
  dr-replica:
    from: nightly
    to: dr
    collections: {"*": "*"}
    if_exists: replace
    aliases: true
"""


def make_manifest(work: Path, prod: str, *, restore: bool) -> Manifest:
    text = MANIFEST.format(
        state=work / "state.json", prod=prod, dr=DR, repo=work / "repo", restores=RESTORES if restore else ""
    )
    return load_manifest_text(text, "plan_time.yaml", work, env={})


# ---------------------------------------------------------------- synthetic history


def history(
    current: dict[str, ObservedCollection], sets: int, node: str
) -> tuple[list[SetRecord], dict[str, ArchiveObject]]:
    """`sets` daily sets of every collection, oldest first, the newest 30 hours old. Collection i
    is copied in set j when j == 0 or (i + j) % 10 == 0, carried otherwise; the newest record of
    a collection with i % 10 == 0 differs from `current` (it changed since), the others match."""
    names = sorted(current)
    created = [NOW - timedelta(hours=30) - timedelta(days=sets - 1 - j) for j in range(sets)]
    set_ids = [set_id_for(c) for c in created]
    last: dict[str, CollectionRecord] = {}
    records: list[SetRecord] = []
    archives: dict[str, ArchiveObject] = {}
    for j in range(sets):
        collections: dict[str, CollectionRecord] = {}
        for i, name in enumerate(names):
            state = current[name]
            if j == 0 or (i + j) % 10 == 0:
                later = sum(1 for k in range(j + 1, sets) if (i + k) % 10 == 0)
                points = state.points_count - later - (1 if i % 10 == 0 else 0)
                key = archive_key(name, "nightly", set_ids[j], f"{name}-1-{created[j]:%Y-%m-%d-%H-%M-%S}.snapshot")
                size = 1024 + i
                archive = ArchiveRecord(key, size, "0" * 64, "collection", (0,), node, points)
                archives[key] = ArchiveObject(key, size, utc_iso(created[j]))
                last[name] = CollectionRecord(
                    name, points, state.config, state.config_sha256, state.aliases, 1, "1.19.0", set_ids[j], (archive,)
                )
            collections[name] = last[name]
        records.append(
            SetRecord("nightly", set_ids[j], utc_iso(created[j]), "prod", "1.19.0", collections, utc_iso(created[j]))
        )
    return records, archives


def synthetic_world(count: int, sets: int) -> tuple[Manifest, Observed, State]:
    """The world of part 1, built without any I/O."""
    manifest = make_manifest(Path("/tmp/qbr-bench-plan"), PROD, restore=True)
    current = {}
    for i in range(count):
        name = f"c{i:05d}"
        aliases = (f"a{i:05d}",) if i % 10 == 3 else ()
        current[name] = ObservedCollection(name, 1000 + i, CONFIG, config_digest(CONFIG), 1, 1, aliases)
    records, archives = history(current, sets, PROD)
    # Archives an interrupted run left (no set names them), old enough to be swept.
    for i in range(max(1, count // 100)):
        key = archive_key(f"c{i:05d}", "nightly", "20261101T000000Z", f"c{i:05d}-1-interrupted.snapshot")
        archives[key] = ArchiveObject(key, 4096, utc_iso(NOW - timedelta(days=3)))
    prod = ObservedCluster(
        "prod", (ObservedNode(PROD, 1, "1.19.0"),), False, tuple(sorted(current)), current,
        {a: c.name for c in current.values() for a in c.aliases},
    )
    dr = ObservedCluster("dr", (ObservedNode(DR, 2, "1.19.0"),), False, tuple(sorted(current)), {},
                      {a: c.name for c in current.values() for a in c.aliases})
    repo = ObservedRepository("main", "/tmp/qbr-bench-plan/repo", False, tuple(records), dict(sorted(archives.items())))
    newest = records[-1]
    state = State(lineage="bench", serial=7, restores={"dr-replica": {
        name: {
            "backup": "nightly", "set_id": newest.set_id, "copied_in": record.copied_in, "source_collection": name,
            "cluster": "dr", "restored_at": newest.created, "points_count": record.points_count,
        }
        for name, record in newest.collections.items()
    }})
    return manifest, Observed({"prod": prod, "dr": dr}, {"main": repo}), state


def _kinds(result: Plan) -> str:
    counts: dict[str, int] = {}
    for action in result.actions:
        counts[action.kind] = counts.get(action.kind, 0) + 1
    short = {"copy_archive": "copy", "commit_set": "commit", "delete_set": "del-set", "delete_archive": "del-arch",
             "restore_collection": "restore", "update_aliases": "aliases"}
    return " ".join(f"{short.get(k, k)}={v}" for k, v in sorted(counts.items()))


def _repeat(work: Callable[[], object], minimum: int, budget: float) -> list[float]:
    """Wall seconds of at least `minimum` runs, more while they fit in `budget` seconds."""
    times: list[float] = []
    while len(times) < minimum or sum(times) < budget:
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
        if len(times) >= 50:
            break
    return times


def pure_planner(counts: list[int], sets: int) -> list[tuple[int, float]]:
    rows, found = [], []
    for count in counts:
        manifest, observed, state = synthetic_world(count, sets)
        result = make_plan(manifest, observed, state, NOW)  # warm-up, and what the plan holds
        times = _repeat(lambda m=manifest, o=observed, s=state: make_plan(m, o, s, NOW), 3, 1.0)
        ms = median(times) * 1000
        found.append((count, ms))
        archives = len(observed.repositories["main"].archives)
        rows.append([count, sets, archives, len(result.actions), _kinds(result), len(times), f"{ms:.1f}",
                     f"{ms / count:.3f}"])
        print("  " + "  ".join(str(c) for c in rows[-1]), flush=True)
    print()
    print_table(
        ["collections", "sets", "archives", "actions", "action kinds", "runs", "plan ms", "ms/collection"], rows
    )
    return found


# ---------------------------------------------------------------- against the emulator


def write_history(work: Path, current: dict[str, ObservedCollection], sets: int, node: str) -> None:
    """Lay the repository out as qbr does (set records + archive files of the recorded sizes),
    written directly: this is setup, not what is measured."""
    records, archives = history(current, sets, node)
    root = work / "repo"
    for key, archive in archives.items():
        path = root.joinpath(*key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * archive.size)
    for record in records:
        path = root.joinpath(*set_key(record.backup, record.set_id).split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(record.to_json())


def observe_and_plan(counts: list[int], sets: int, repeat: int) -> list[tuple[int, float]]:
    rows, found = [], []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="qbr-bench-plan-") as tmp, \
                emulator_process(collections=count, data_dir=Path(tmp) / "emulator") as url:
            work = Path(tmp)
            manifest = make_manifest(work, url, restore=False)
            with Connections(manifest) as connections:  # untimed: what the history is built from
                seen = observe(manifest, connections).clusters["prod"]
            write_history(work, dict(seen.collections), sets, url)
            observe_times, plan_times = [], []
            result = None
            for _ in range(repeat):
                started = time.perf_counter()
                with Connections(manifest) as connections:
                    observed = observe(manifest, connections)
                middle = time.perf_counter()
                result = make_plan(manifest, observed, State(), NOW)
                observe_times.append(middle - started)
                plan_times.append(time.perf_counter() - middle)
            assert result is not None and len(observed.clusters["prod"].collections) == count
            assert len(observed.repositories["main"].sets) == sets
            obs_ms, plan_ms = median(observe_times) * 1000, median(plan_times) * 1000
            total = obs_ms + plan_ms
            found.append((count, total))
            rows.append([count, sets, len(result.actions), _kinds(result), f"{obs_ms:.0f}", f"{plan_ms:.0f}",
                         f"{total:.0f}", f"{total / count:.2f}"])
            print("  " + "  ".join(str(c) for c in rows[-1]), flush=True)
    print()
    print_table(
        ["collections", "sets", "actions", "action kinds", "observe ms", "plan ms", "total ms", "ms/collection"], rows
    )
    return found


def _growth(name: str, found: list[tuple[int, float]], what: str) -> None:
    (small, t_small), (large, t_large) = found[0], found[-1]
    per_small, per_large = t_small / small, t_large / large
    print_ratio(f"{name}_ms_per_collection_{large}_vs_{small}", per_large / per_small,
                f"ms per collection at {large} / at {small}; 1.00 = linear, above = superlinear")
    print_ratio(f"{name}_time_{large}_vs_{small}", t_large / t_small,
                f"{what} time at {large} collections / at {small}, for {large / small:.0f}x the collections")
    if len(found) > 2:
        (mid, t_mid) = found[-2]
        print_ratio(f"{name}_ms_per_collection_{large}_vs_{mid}", per_large / (t_mid / mid),
                    f"ms per collection at {large} / at {mid} (the two largest; fixed costs matter less)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="planning time against collection count.")
    parser.add_argument("--collections", type=int, nargs="+", default=[10, 100, 1000, 5000])
    parser.add_argument("--observe-collections", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--history", type=int, default=30, help="sets already in the repository (default 30)")
    parser.add_argument("--repeat", type=int, default=3, help="observe+plan runs per size; median shown")
    args = parser.parse_args(argv)
    if args.history < 2:
        parser.error("--history must be at least 2")
    counts, observed_counts = sorted(set(args.collections)), sorted(set(args.observe_collections))
    print(f"1. pure planner, synthetic Observed, {args.history} sets of history:", flush=True)
    pure = pure_planner(counts, args.history)
    print()
    print(f"2. observe + plan against the emulator (its own process), local repository with {args.history} sets:",
          flush=True)
    live = observe_and_plan(observed_counts, args.history, args.repeat)
    print()
    _growth("plan", pure, "plan")
    _growth("observe_plan", live, "observe+plan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
