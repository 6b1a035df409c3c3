"""How planning time grows with the number of collections.

    python benchmarks/plan_time.py [--collections 10 100 1000 5000] [--observe-collections 10 100 500] [--history 30]
                                   [--request-collections 10 100 1000] [--request-backups 1 10]
                                   [--request-repositories folder s3] [--parts 1 2 3]

1. The pure planner (qbr.planner.make_plan) on synthetic Observed data, no network: one backup of
   every collection with `--history` daily sets behind it (each set copies a tenth of the
   collections and carries the rest by reference), only_changed, a retention policy that
   deletes most of those sets (so garbage collection has archives to sweep), a tenth of the
   collections changed since the newest set, and a DR restore of every collection.
2. observe + plan against a Qdrant emulator (its own process) holding that many collections,
   with a local-folder repository holding `--history` sets of them (what `qbr plan` does,
   minus printing).
Prints milliseconds per collection and how the time grows against the collection count.
3. What `qbr plan` costs in requests (qbr.workflow.plan_once, exactly what the command runs): to
   Qdrant (counted by the emulator, in its own process, as it serves them) and to the repository
   when it is S3 (moto in its own process; qbr's own count of what it sent, by kind), for a quiet
   tick (every backup's newest set within its rpo) and a tick where every backup is due, with one
   backup of every collection ("*") or `--request-backups` backups sharing them, each with
   `--request-history` sets already stored (written directly as setup). A quiet tick must cost
   requests per backup, not per collection. The first quiet tick reads every set record; the
   next find them in qbr's local copies (qbr.repository.read_cache) and cost the listings alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    drop_bucket,
    emulator_process,
    emulator_with_traffic,
    median,
    moto_process,
    print_ratio,
    print_table,
    s3_client,
    use_fake_aws,
)

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
from qbr.repository import Repository, open_local_repository, open_s3_repository
from qbr.repository.read_cache import CACHE_DIR_ENV
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
    current: dict[str, ObservedCollection], sets: int, node: str, backup: str = "nightly"
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
                key = archive_key(name, backup, set_ids[j], f"{name}-1-{created[j]:%Y-%m-%d-%H-%M-%S}.snapshot")
                size = 1024 + i
                archive = ArchiveRecord(key, size, "0" * 64, "collection", (0,), node, points)
                archives[key] = ArchiveObject(key, size, utc_iso(created[j]))
                last[name] = CollectionRecord(
                    name, points, state.config, state.config_sha256, state.aliases, 1, "1.19.0", set_ids[j], (archive,)
                )
            collections[name] = last[name]
        records.append(
            SetRecord(backup, set_ids[j], utc_iso(created[j]), "prod", "1.19.0", collections, utc_iso(created[j]))
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


# ---------------------------------------------------------------- requests per tick

QUIET = NOW - timedelta(hours=20)  # 10 h after the newest set: every backup within its 24 h rpo
DUE = NOW  # 30 h after it: every backup due
REQUEST_MANIFEST = """
version: 1
state: {state}
clusters:
  prod: {{url: "{prod}"}}
repositories:
  main: {repo}
backups:
{backups}"""
REQUEST_BACKUP = """  {name}:
    cluster: prod
    repository: main
    collections: {patterns}
    rpo: 24h
    only_changed: true
    retention: {{keep_last: {keep}}}
"""


def backup_patterns(backups: int) -> dict[str, list[str]]:
    """One backup of every collection, or `backups` (2..10) sharing them by their last digit."""
    if backups == 1:
        return {"nightly": ["*"]}
    return {f"part{k}": [f"c*{d}" for d in range(10) if d % backups == k] for k in range(backups)}


class _Counted(Connections):
    """Connections that remember themselves, so the S3 requests of a plan_once can be read after."""

    opened: list[Connections] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _Counted.opened.append(self)


def counted_plan(manifest: Manifest, now: datetime, traffic) -> tuple[Plan, dict, dict[str, int]]:
    """`qbr plan --now NOW`, as the command runs it: (the plan, Qdrant requests the emulator served,
    S3 requests qbr sent by kind)."""
    import qbr.workflow as workflow

    traffic.reset()
    _Counted.opened.clear()
    workflow.Connections = _Counted
    try:
        result = workflow.plan_once(manifest, parallelism=8, now=now)
    finally:
        workflow.Connections = Connections
    s3: dict[str, int] = {}
    for connections in _Counted.opened:
        for counts in connections.s3_requests().values():
            for kind, n in counts.items():
                s3[kind] = s3.get(kind, 0) + n
    return result, traffic.counts(), s3


def store_history(repo: Repository, current: dict[str, ObservedCollection], backups: dict[str, list[str]],
                  sets: int, node: str) -> None:
    """Each backup's sets and archives, written through the repository's own API (setup, untimed)."""
    from fnmatch import fnmatchcase

    writes: list[tuple[str, bytes]] = []
    for name, patterns in backups.items():
        mine = {c: v for c, v in current.items() if any(fnmatchcase(c, p) for p in patterns)}
        records, archives = history(mine, sets, node, backup=name)
        writes += [(key, b"\0" * archive.size) for key, archive in archives.items()]
        writes += [(set_key(r.backup, r.set_id), r.to_json()) for r in records]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: repo.put_bytes(*item), writes))


def request_counts(counts: list[int], backup_counts: list[int], kinds: list[str], sets: int) -> list[dict]:
    found: list[dict] = []
    rows: list[list[object]] = []
    use_fake_aws()
    with tempfile.TemporaryDirectory(prefix="qbr-bench-requests-") as tmp, \
            (moto_process() if "s3" in kinds else nullcontext()) as endpoint:
        work = Path(tmp)
        os.environ[CACHE_DIR_ENV] = str(work / "cache")  # qbr's copies of set records, cold at first
        s3 = s3_client(endpoint) if endpoint else None
        bucket = f"qbr-bench-{uuid.uuid4().hex[:12]}"
        if s3 is not None:
            s3.create_bucket(Bucket=bucket)
        try:
            for count in counts:
                with emulator_with_traffic(collections=count, data_dir=work / f"emulator-{count}") as (url, traffic):
                    probe = make_manifest(work, url, restore=False)
                    with Connections(probe) as connections:  # untimed: what the history is built from
                        current = dict(observe(probe, connections).clusters["prod"].collections)
                    for kind in kinds:
                        for backups in backup_counts:
                            where = f"c{count}-b{backups}-{kind}"
                            if kind == "s3":
                                repo_yaml = (f'{{s3: {{bucket: {bucket}, prefix: {where}, endpoint_url: "{endpoint}", '
                                             'region: us-east-1}}')
                                repo = open_s3_repository(bucket, where, endpoint, "us-east-1")
                            else:
                                repo_yaml = f'{{path: "{work / where}"}}'
                                repo = open_local_repository(work / where)
                            patterns = backup_patterns(backups)
                            store_history(repo, current, patterns, sets, url)
                            text = REQUEST_MANIFEST.format(
                                state=work / f"{where}.state.json", prod=url, repo=repo_yaml,
                                backups="".join(REQUEST_BACKUP.format(name=n, patterns=p, keep=sets)
                                                for n, p in patterns.items()))
                            manifest = load_manifest_text(text, "requests.yaml", work, env={})
                            # The first tick reads every set record; the next find them in qbr's cache.
                            for tick, now in (("1st-quiet", QUIET), ("quiet", QUIET), ("due", DUE)):
                                result, qdrant, s3_counts = counted_plan(manifest, now, traffic)
                                row = {"repository": kind, "collections": count, "backups": backups,
                                       "sets": sets * backups, "tick": tick, "actions": len(result.actions),
                                       "kinds": _kinds(result), "qdrant": qdrant["requests"],
                                       "routes": qdrant["routes"], "s3": s3_counts}
                                found.append(row)
                                rows.append(_request_row(row))
                                print("  " + "  ".join(str(c) for c in rows[-1]), flush=True)
        finally:
            if s3 is not None:
                drop_bucket(s3, bucket)
    print()
    print_table(["repository", "collections", "backups", "sets", "tick", "actions", "Qdrant", "S3", "S3 by kind",
                 "Qdrant/backup", "S3/backup"], rows)
    return found


def _request_row(row: dict) -> list[object]:
    s3 = row["s3"]
    by_kind = " ".join(f"{k}={s3[k]}" for k in ("GET", "LIST", "HEAD", "PUT", "DELETE", "other") if s3.get(k))
    total = s3.get("requests", 0) if row["repository"] == "s3" else "-"
    per_backup = f"{total / row['backups']:.1f}" if row["repository"] == "s3" else "-"
    return [row["repository"], row["collections"], row["backups"], row["sets"], row["tick"], row["actions"],
            row["qdrant"], total, by_kind or "-", f"{row['qdrant'] / row['backups']:.1f}", per_backup]


def _request_ratios(found: list[dict]) -> None:
    """Quiet-tick requests at the most collections over those at the fewest: 1.00 = flat."""
    for kind in sorted({r["repository"] for r in found}):
        for backups in sorted({r["backups"] for r in found}):
            quiet = sorted((r for r in found if r["repository"] == kind and r["backups"] == backups
                            and r["tick"] == "quiet"), key=lambda r: r["collections"])
            if len(quiet) < 2:
                continue
            small, large = quiet[0], quiet[-1]
            what = f"{large['collections']}_vs_{small['collections']}_{kind}_{backups}b"
            print_ratio(f"quiet_qdrant_requests_{what}", large["qdrant"] / max(small["qdrant"], 1),
                        f"Qdrant requests of a quiet tick at {large['collections']} / at {small['collections']} "
                        f"collections, {backups} backup(s); 1.00 = flat")
            if kind == "s3":
                print_ratio(f"quiet_s3_requests_{what}", large["s3"]["requests"] / max(small["s3"]["requests"], 1),
                            f"S3 requests of a quiet tick at {large['collections']} / at {small['collections']} "
                            f"collections, {backups} backup(s); 1.00 = flat")


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
    parser.add_argument("--request-collections", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--request-backups", type=int, nargs="+", default=[1, 10],
                        help="backups sharing the collections (1 = one backup of '*'; at most 10)")
    parser.add_argument("--request-repositories", nargs="+", choices=["folder", "s3"], default=["folder", "s3"])
    parser.add_argument("--request-history", type=int, default=3, help="sets each backup already has (default 3)")
    parser.add_argument("--parts", type=int, nargs="+", choices=[1, 2, 3], default=[1, 2, 3])
    args = parser.parse_args(argv)
    if args.history < 2 or args.request_history < 1:
        parser.error("--history must be at least 2, --request-history at least 1")
    if not all(1 <= b <= 10 for b in args.request_backups):
        parser.error("--request-backups must be between 1 and 10")
    counts, observed_counts = sorted(set(args.collections)), sorted(set(args.observe_collections))
    pure = live = None
    if 1 in args.parts:
        print(f"1. pure planner, synthetic Observed, {args.history} sets of history:", flush=True)
        pure = pure_planner(counts, args.history)
        print()
    if 2 in args.parts:
        print(f"2. observe + plan against the emulator (its own process), local repository with {args.history} sets:",
              flush=True)
        live = observe_and_plan(observed_counts, args.history, args.repeat)
        print()
    if 3 in args.parts:
        print(f"3. requests of `qbr plan`, a quiet tick and a due one, {args.request_history} sets per backup "
              "(Qdrant: served by the emulator; S3: sent by qbr, moto in its own process):", flush=True)
        found = request_counts(sorted(set(args.request_collections)), sorted(set(args.request_backups)),
                               args.request_repositories, args.request_history)
        print()
        _request_ratios(found)
    if pure:
        _growth("plan", pure, "plan")
    if live:
        _growth("observe_plan", live, "observe+plan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
