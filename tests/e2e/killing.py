"""Crash-safety harness: kill `qbr apply` at a named instant, then prove nothing was lost.

A *scenario* builds a fresh world (emulator clusters, an S3 bucket on moto, a local folder, a
manifest, and whatever earlier applies it needs) and names the `--now` of the apply under test.
`run_case` starts that apply as a real subprocess with QBR_TEST_KILL_AT (qbr/faultpoints.py) so
qbr SIGKILLs itself at the n-th time it reaches a point, and then checks, in order:

1. right after the kill: the state file parses (or is absent); every set record parses and every
   archive it names exists with the recorded size and sha256; the lock is absent or its lease
   runs out (it names the killed process);
2. the next `qbr apply --auto-approve` with the same --now succeeds, taking the lock over with a
   warning, and a second one finds nothing to do;
3. the world they leave equals the world an uninterrupted run leaves (`Baseline`): set records
   (collections, points counts, archive content hashes; not archive names), restore targets point
   by point (ids, vectors, payloads), aliases, restore provenance, no node-local snapshot left on
   any node, none recorded in the state, and no half-written temp file beside the state;
4. every archive or unfinished upload the kill left behind (no set references it) is swept by
   the plan once the garbage grace period has passed.

Used by tests/e2e/test_crash_safety.py (a sample of points) and benchmarks/kill_sweep.py (every
point at every occurrence).
"""

from __future__ import annotations

import hashlib
import json
import signal
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from qbr.faultpoints import KILL_ENV, LOG_ENV
from qbr.planner import DEFAULT_GRACE
from qbr.records import SetRecord, parse_set_key, parse_utc, utc_iso
from qbr.repository import Repository, open_local_repository, open_s3_repository
from qbr.state import State
from qbr.state_store import LockInfo
from tests.e2e.helpers import (
    all_points,
    make_collection,
    qbr,
    qbr_process,
    sha256_of,
    upsert,
    write_manifest,
)
from tests.emulator.cluster import EmulatorCluster
from tests.qdrant_testing import TestingClient as QdrantClient

LEASE = "1"  # seconds: a killed apply's lock expires quickly, so the next apply takes it over
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
MIB = 1 << 20


def iso(moment: datetime) -> str:
    return utc_iso(moment)


# ---------------------------------------------------------------- the bed and its worlds


class Bed:
    """Where worlds are built: a moto S3 endpoint and a scratch folder. Every world is fresh."""

    def __init__(self, s3_endpoint: str, root: Path) -> None:
        self.s3_endpoint = s3_endpoint
        self.root = Path(root)
        self._n = 0

    def folder(self, label: str) -> Path:
        self._n += 1
        path = self.root / f"{self._n:04d}-{label}"
        path.mkdir(parents=True)
        return path

    def bucket(self) -> str:
        from tests.s3_fixture import s3_client

        name = f"qbr-kill-{uuid.uuid4().hex[:16]}"
        s3_client(self.s3_endpoint).create_bucket(Bucket=name)
        return name


@dataclass
class World:
    """One scenario's world, ready for the apply under test at `now`."""

    folder: Path
    now: datetime
    clusters: dict[str, EmulatorCluster]
    repositories: dict[str, Repository]  # manifest name -> the repository, for checks
    targets: dict[str, dict[str, str]] = field(default_factory=dict)  # restore cluster -> {collection: source}
    buckets: list[tuple[str, str]] = field(default_factory=list)  # (endpoint, bucket) to drop at close
    saved_env: dict[str, str | None] = field(default_factory=dict)  # variables the world set, to put back at close

    def close(self) -> None:
        import os

        from tests.s3_fixture import _drop_bucket, s3_client

        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

        for cluster in self.clusters.values():
            cluster.stop()
        for endpoint, bucket in self.buckets:
            _drop_bucket(s3_client(endpoint), bucket)


def start_cluster(bed: Bed, nodes: int) -> EmulatorCluster:
    return EmulatorCluster(nodes=nodes, data_dir=bed.folder("emulator")).start()


def must(run, what: str) -> None:
    if run.exit_code != 0:
        raise AssertionError(f"{what} failed (exit {run.exit_code}):\n{run.output}")


def backup_world(bed: Bed) -> World:
    """Multi-node backup to S3 and to a local folder: a 3-node cluster with a collection sharded
    over every node, a single-shard one, and a 10 MiB synthetic one (so its S3 upload is multipart
    and its download many chunks)."""
    folder = bed.folder("backup")
    prod = start_cluster(bed, 3)
    make_collection(prod.urls[0], "docs", points=60, shards=3)
    make_collection(prod.urls[0], "notes", points=7)
    prod.add_synthetic_collection("big", snapshot_size=10 * MIB, node=1)
    bucket = bed.bucket()
    write_manifest(folder, f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
repositories:
  s3main:
    s3: {{bucket: {bucket}, prefix: prod, endpoint_url: "{bed.s3_endpoint}", region: us-east-1}}
  folder:
    path: ./backups
backups:
  to-s3: {{cluster: prod, repository: s3main, rpo: 1h, only_changed: true}}
  to-folder: {{cluster: prod, repository: folder, rpo: 1h, only_changed: true}}
""")
    return World(
        folder,
        T0,
        {"prod": prod},
        {
            "s3main": open_s3_repository(bucket, prefix="prod", endpoint_url=bed.s3_endpoint),
            "folder": open_local_repository(folder / "backups"),
        },
        buckets=[(bed.s3_endpoint, bucket)],
    )


def retention_world(bed: Bed) -> World:
    """Three sets exist (docs changed before each, static carried by reference); the apply under
    test makes a fourth with retention keep_last 1, so three sets are deleted and their docs
    archives garbage-collected while static's archive stays referenced."""
    folder = bed.folder("retention")
    prod = start_cluster(bed, 1)
    make_collection(prod.urls[0], "docs", points=20)
    make_collection(prod.urls[0], "static", points=8)
    bucket = bed.bucket()

    def manifest(retention: str) -> str:
        return f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
repositories:
  main:
    s3: {{bucket: {bucket}, prefix: r, endpoint_url: "{bed.s3_endpoint}", region: us-east-1}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h, only_changed: true, retention: {retention}}}
"""

    write_manifest(folder, manifest("{keep_last: 50}"))
    with QdrantClient(prod.urls[0]) as client:
        for step in range(3):
            if step:
                upsert(client, "docs", [100 + step])
            must(qbr("apply", "--auto-approve", "--now", iso(T0 + timedelta(hours=step)), cwd=folder), "setup apply")
        upsert(client, "docs", [200])
    write_manifest(folder, manifest("{keep_last: 1}"))
    return World(
        folder,
        T0 + timedelta(hours=3),
        {"prod": prod},
        {"main": open_s3_repository(bucket, prefix="r", endpoint_url=bed.s3_endpoint)},
        buckets=[(bed.s3_endpoint, bucket)],
    )


RECOVER_LATENCY = 0.25  # seconds each recover/upload takes on the targets, so a timed kill lands inside one


def restore_world(bed: Bed) -> World:
    """Backups exist in S3 and in a folder; the apply under test restores them onto a 2-node
    cluster (collection created, shard archives recovered from presigned URLs, a rename) and a
    1-node cluster (archives uploaded, streamed, 3 MiB for the synthetic one), with aliases.
    The restores say if_exists skip and fail: a target a killed run left half-made is qbr's own
    work, and the next apply must finish it rather than skip it or refuse."""
    folder = bed.folder("restore")
    prod = start_cluster(bed, 1)
    make_collection(prod.urls[0], "docs", points=50, shards=2)
    make_collection(prod.urls[0], "images", points=20)
    prod.add_synthetic_collection("big", snapshot_size=3 * MIB)
    with QdrantClient(prod.urls[0]) as client:
        client.update_aliases([
            {"create_alias": {"collection_name": "docs", "alias_name": "docs_current"}},
            {"create_alias": {"collection_name": "images", "alias_name": "pics"}},
        ])
    dr, edge = start_cluster(bed, 2), start_cluster(bed, 1)
    bucket = bed.bucket()
    text = f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
  dr: {{url: "{dr.urls[0]}"}}
  edge: {{url: "{edge.urls[0]}"}}
repositories:
  main:
    s3: {{bucket: {bucket}, prefix: p, endpoint_url: "{bed.s3_endpoint}", region: us-east-1}}
  local:
    path: ./backups
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h, collections: ["docs", "images"]}}
  copy: {{cluster: prod, repository: local, rpo: 1h}}
"""
    write_manifest(folder, text)
    must(qbr("apply", "--auto-approve", "--now", iso(T0), cwd=folder), "setup apply")
    # Pinned to the setup's sets: the garbage check plans a day later, when new sets are due, and
    # `at: latest` would then restore again into to-edge's existing collections (if_exists: fail
    # makes that plan an error, as it should), hiding the sweep it checks.
    pinned = iso(T0 + timedelta(minutes=1))
    write_manifest(folder, text + f"""restores:
  to-dr:
    from: nightly
    to: dr
    at: "{pinned}"
    collections: {{"docs": "docs_dr", "images": "*"}}
    if_exists: skip
  to-edge:
    from: copy
    to: edge
    at: "{pinned}"
    collections: {{"*": "*"}}
    if_exists: fail
""")
    for cluster in (dr, edge):
        for node in cluster.nodes:
            node.faults.add(method=None, path=r"/snapshots/(recover|upload)$", latency=RECOVER_LATENCY, times=None)
    return World(
        folder,
        T0 + timedelta(minutes=10),
        {"prod": prod, "dr": dr, "edge": edge},
        {"main": open_s3_repository(bucket, prefix="p", endpoint_url=bed.s3_endpoint), "local": open_local_repository(folder / "backups")},
        targets={"dr": {"docs_dr": "docs", "images": "images"}, "edge": {"docs": "docs", "images": "images", "big": "big"}},
        buckets=[(bed.s3_endpoint, bucket)],
    )


def recovery_world(bed: Bed) -> World:
    """The backup world after a first apply was killed just as Qdrant made its second snapshot
    (whose name never reached the state): the apply under test cleans that up while it makes
    the sets, so a kill lands in the middle of recovering from a kill."""
    world = backup_world(bed)
    proc = apply_process(world, {KILL_ENV: "snapshot.created:2"}, 1)
    out, err = proc.communicate(timeout=120)
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"the first apply of the recovery world was not killed ({proc.returncode}):\n{out}{err}")
    (world.folder / ".qbr" / "state.json.lock").unlink()  # as `qbr force-unlock` would: no lease to wait out
    return world


SNAPSHOT_LATENCY = 0.4  # seconds each snapshot takes on a slow node, so a timed kill lands inside one


def slow_snapshot_world(bed: Bed) -> World:
    """The backup world on nodes that take a while to make each snapshot: a kill lands after the
    create was sent, while Qdrant works on; Qdrant finishes it after qbr is gone."""
    world = backup_world(bed)
    for node in world.clusters["prod"].nodes:
        node.snapshot_latency = SNAPSHOT_LATENCY
    return world


def logical_copy_world(bed: Bed) -> World:
    """A set exists of a 2-node cluster (docs: 2 shards, a payload index and an alias; tenants:
    custom sharding, keys eu and us); the apply under test copies both point by point into a
    3-node cluster with 3 shards (per key) and replication 2, in batches of 10: a kill lands
    between batches, and the next apply continues from the journal."""
    folder = bed.folder("logical-copy")
    prod, big = start_cluster(bed, 2), start_cluster(bed, 3)
    make_collection(prod.urls[0], "docs", points=70, shards=2)
    with QdrantClient(prod.urls[0]) as client:
        client.create_payload_index("docs", "tag", "keyword")
        client.update_aliases([{"create_alias": {"collection_name": "docs", "alias_name": "docs_current"}}])
        client.create_collection("tenants", {"params": {"vectors": {"size": 4, "distance": "Cosine"}, "sharding_method": "custom"}})
        for key, ids in (("eu", range(0, 25)), ("us", range(100, 112))):
            client.create_shard_key("tenants", key, shards_number=1)
            client.upsert_batch("tenants", [{"id": i, "vector": [0.1, 0.2, 0.3, i / 200], "payload": {"key": key}} for i in ids],
                                shard_key=key)
    text = f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
  big: {{url: "{big.urls[0]}"}}
repositories:
  local:
    path: ./backups
backups:
  nightly: {{cluster: prod, repository: local, rpo: 1h}}
"""
    write_manifest(folder, text)
    must(qbr("apply", "--auto-approve", "--now", iso(T0), cwd=folder), "setup apply")
    write_manifest(folder, text + """restores:
  reshard:
    from: nightly
    to: big
    topology: {shard_number: 3, replication_factor: 2}
    batch_size: 10
    verify_sample: 20
""")
    return World(
        folder,
        T0 + timedelta(minutes=10),
        {"prod": prod, "big": big},
        {"local": open_local_repository(folder / "backups")},
        targets={"big": {"docs": "docs", "tenants": "tenants"}},
    )


def dedup_world(bed: Bed, encrypted: bool = False) -> World:
    """A dedup repository on S3 (chunks, chunk lists, the chunk index) with two sets (docs changed
    before each, a 2 MiB synthetic collection deduplicated); the apply under test makes a third
    (new chunks stored, indexed, listed) with retention keep_last 1, so two sets go and the chunk
    sweep deletes the chunks only they named."""
    from qbr.repository.chunked import ChunkedRepository

    folder = bed.folder("dedup")
    saved: dict[str, str | None] = {}
    encryption = ""
    if encrypted:
        public, saved = _encrypted_setup(folder)
        encryption = f'\n    encryption: {{recipients: ["{public}"]}}'

    prod = start_cluster(bed, 1)
    make_collection(prod.urls[0], "docs", points=30)
    prod.add_synthetic_collection("big", snapshot_size=2 * MIB)
    bucket = bed.bucket()

    def manifest(retention: str) -> str:
        return f"""
version: 1
clusters:
  prod: {{url: "{prod.urls[0]}"}}
repositories:
  main:
    s3: {{bucket: {bucket}, prefix: d, endpoint_url: "{bed.s3_endpoint}", region: us-east-1}}
    dedup: true{encryption}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h, retention: {retention}}}
"""

    write_manifest(folder, manifest("{keep_last: 50}"))
    if encrypted:
        must(qbr("chunk-key", "new", "main", "-o", "chunk.key", cwd=folder), "chunk-key new")
    with QdrantClient(prod.urls[0]) as client:
        for step in range(2):
            upsert(client, "docs", [100 + step])
            must(qbr("apply", "--auto-approve", "--now", iso(T0 + timedelta(hours=step)), cwd=folder), "setup apply")
        upsert(client, "docs", [200])
    write_manifest(folder, manifest("{keep_last: 1}"))
    return World(
        folder,
        T0 + timedelta(hours=2),
        {"prod": prod},
        {"main": ChunkedRepository(open_s3_repository(bucket, prefix="d", endpoint_url=bed.s3_endpoint))},
        buckets=[(bed.s3_endpoint, bucket)],
        saved_env=saved,
    )


def dedup_encrypted_world(bed: Bed) -> World:
    """The dedup world with encryption: keyed chunk ids and chunks encrypted after compression
    (qbr.repository.chunk_crypto); the identity and the chunk key reach every qbr run (and this
    process's checks, which decrypt) through the environment while the world lives."""
    return dedup_world(bed, encrypted=True)


def _encrypted_setup(folder: Path) -> tuple[str, dict[str, str | None]]:
    """An identity and the environment that names it and the chunk key file (made later)."""
    import os

    import pyrage

    identity = pyrage.x25519.Identity.generate()
    (folder / "age.txt").write_text(f"{identity}\n")
    wanted = {"QBR_AGE_IDENTITY_FILE": str(folder / "age.txt"), "QBR_CHUNK_KEY_FILE": str(folder / "chunk.key")}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    return str(identity.to_public()), saved


SCENARIOS: dict[str, Callable[[Bed], World]] = {
    "backup": backup_world,
    "slow-snapshots": slow_snapshot_world,
    "retention": retention_world,
    "restore": restore_world,
    "recovery": recovery_world,
    "logical-copy": logical_copy_world,
    "dedup": dedup_world,
    "dedup-encrypted": dedup_encrypted_world,
}
#: Scenarios whose uninterrupted run leaves the same world as another's (recovery ends as backup does).
SAME_END_AS = {"recovery": "backup", "slow-snapshots": "backup"}


# ---------------------------------------------------------------- what a world looks like


def node_snapshots_left(world: World) -> list[str]:
    """Every snapshot file sitting on any node of any cluster (collection and shard level)."""
    left = []
    for cluster_name, cluster in world.clusters.items():
        for index, url in enumerate(cluster.urls):
            with QdrantClient(url, backoff=0) as client:
                for collection in client.list_collections():
                    for snap in client.list_snapshots(collection):
                        left.append(f"{cluster_name}/node-{index}/{collection}/{snap.name}")
                    view = client.collection_cluster(collection) if cluster.distributed else {"local_shards": []}
                    for shard in view.get("local_shards") or []:
                        for snap in client.list_snapshots(collection, shard_id=int(shard["shard_id"])):
                            left.append(f"{cluster_name}/node-{index}/{collection}/shard-{shard['shard_id']}/{snap.name}")
    return sorted(left)


def read_state(world: World) -> State | None:
    path = world.folder / ".qbr" / "state.json"
    if not path.exists():
        return None
    return State.from_json(path.read_bytes(), str(path))


def fingerprint(world: World) -> dict[str, Any]:
    """The world an apply leaves, without what legitimately differs between runs (archive names,
    snapshot names, completion times)."""
    repos = {}
    for name, repo in world.repositories.items():
        sets = {}
        for info in repo.list("sets/"):
            record = SetRecord.from_json(repo.get_bytes(info.key), info.key)
            sets[f"{record.backup}/{record.set_id}"] = {
                c.name: {
                    "points_count": c.points_count,
                    "copied_in": c.copied_in,
                    "aliases": sorted(c.aliases),
                    "shard_number": c.shard_number,
                    "config_sha256": c.config_sha256,
                    "archives": sorted(
                        (a.kind, list(a.shard_ids), a.size, archive_content(repo, a.key), a.points_count) for a in c.archives
                    ),
                }
                for c in record.collections.values()
            }
        repos[name] = sets
    targets = {}
    for cluster_name, collections in world.targets.items():
        url = world.clusters[cluster_name].urls[0]
        with QdrantClient(url, backoff=0) as client:
            present = set(client.list_collections())
            aliases = dict(client.list_aliases())
        targets[cluster_name] = {
            "collections": {c: _points(url, c) if c in present else None for c in sorted(collections)},
            "aliases": aliases,
        }
    state = read_state(world)
    provenance = {}
    if state is not None:
        provenance = {
            restore: {t: {k: v for k, v in p.items() if k != "restored_at"} for t, p in targets_.items()}
            for restore, targets_ in state.restores.items()
        }
    return {
        "repositories": repos,
        "targets": targets,
        "restores": provenance,
        "state_node_snapshots": [] if state is None else state.node_snapshots,
        "node_snapshots_left": node_snapshots_left(world),
        "state_folder_temp_files": state_folder_temp_files(world),
    }


def state_folder_temp_files(world: World) -> list[str]:
    """Temp files of unfinished writes beside the state file (a write killed before its rename)."""
    folder = world.folder / ".qbr"
    return sorted(p.name for p in folder.glob(".qbr-tmp-*")) if folder.is_dir() else []


def archive_content(repo: Repository, key: str) -> str:
    """A digest of what an archive holds (every tar member's name and bytes), leaving out what
    is random per emulator cluster, so two fresh worlds' archives of the same data compare
    equal: replica_state.json (it names the peer ids) and the collection uuid in config.json."""
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as spool:
        with repo.open_read(key) as chunks:
            for chunk in chunks:
                spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r:") as tar:
            for member in tar:
                if member.name.endswith("replica_state.json"):
                    continue
                digest.update(member.name.encode() + b"\0")
                if member.name == "config.json":
                    config = json.load(tar.extractfile(member))
                    config.pop("uuid", None)
                    digest.update(json.dumps(config, sort_keys=True).encode())
                elif member.isfile():
                    digest.update(hashlib.file_digest(tar.extractfile(member), "sha256").digest())
    return digest.hexdigest()


def _points(url: str, collection: str) -> dict[str, Any]:
    return {str(pid): value for pid, value in sorted(all_points(url, collection).items(), key=lambda kv: str(kv[0]))}


def diff(expected: Any, got: Any, path: str = "") -> list[str]:
    """Short, readable differences between two fingerprints."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(expected) | set(got), key=str):
            if key not in got:
                out.append(f"{path}/{key}: missing")
            elif key not in expected:
                out.append(f"{path}/{key}: unexpected {str(got[key])[:200]}")
            else:
                out += diff(expected[key], got[key], f"{path}/{key}")
        return out
    if expected != got:
        return [f"{path}: expected {str(expected)[:200]}, got {str(got)[:200]}"]
    return []


def summarised(differences: list[str], limit: int = 8) -> list[str]:
    if len(differences) <= limit:
        return differences
    return differences[:limit] + [f"... and {len(differences) - limit} more differences"]


# ---------------------------------------------------------------- runs


@dataclass
class Baseline:
    """An uninterrupted run of a scenario: the world it leaves and how often each point occurs."""

    scenario: str
    fingerprint: dict[str, Any]
    occurrences: dict[str, int]
    seconds: float


def apply_process(world: World, env: dict[str, str], parallelism: int):
    return qbr_process(
        "apply", "--auto-approve", "--now", iso(world.now), "--parallelism", str(parallelism),
        cwd=world.folder, env={"QBR_LOCK_LEASE": LEASE, **env},
    )


def baseline(bed: Bed, scenario: str, parallelism: int = 4, *, count: bool = True) -> Baseline:
    """Run the scenario's apply uninterrupted: as a subprocess that logs every point it reaches
    (`count`), or in-process (faster; no counts)."""
    world = SCENARIOS[scenario](bed)
    try:
        started = time.monotonic()
        occurrences: dict[str, int] = {}
        if count:
            log = world.folder / "faultpoints.log"
            proc = apply_process(world, {LOG_ENV: str(log)}, parallelism)
            out, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise AssertionError(f"the uninterrupted {scenario} apply failed ({proc.returncode}):\n{out}{err}")
            for line in log.read_text().splitlines():
                occurrences[line] = occurrences.get(line, 0) + 1
        else:
            must(qbr("apply", "--auto-approve", "--now", iso(world.now), "--parallelism", str(parallelism),
                     cwd=world.folder, env={"QBR_LOCK_LEASE": LEASE}), f"the uninterrupted {scenario} apply")
        seconds = time.monotonic() - started
        seen = fingerprint(world)
        left = seen["node_snapshots_left"] + seen["state_node_snapshots"] + seen["state_folder_temp_files"]
        if left:
            raise AssertionError(f"the uninterrupted {scenario} apply left things behind: {left}")
        return Baseline(scenario, seen, occurrences, seconds)
    finally:
        world.close()


@dataclass
class CaseResult:
    scenario: str
    point: str
    n: int
    delay: float
    seconds: float = 0.0
    killed: bool = False
    findings: list[str] = field(default_factory=list)  # what the kill left (fine, and fixed by the next apply)
    failures: list[str] = field(default_factory=list)  # broken promises

    @property
    def label(self) -> str:
        return f"{self.scenario} {self.point}:{self.n}" + (f":{self.delay}" if self.delay else "")

    def report(self) -> str:
        lines = [f"{self.label}: {'FAILED' if self.failures else 'ok'} in {self.seconds:.1f}s"]
        lines += [f"  found: {f}" for f in self.findings]
        lines += [f"  FAIL: {f}" for f in self.failures]
        return "\n".join(lines)


def run_case(bed: Bed, base: Baseline, point: str, n: int, *, delay: float = 0.0, parallelism: int = 4) -> CaseResult:
    """Kill the scenario's apply at the n-th `point` (plus `delay` seconds), then check everything."""
    result = CaseResult(base.scenario, point, n, delay)
    started = time.monotonic()
    world = SCENARIOS[base.scenario](bed)
    try:
        _run_case(world, base, result, parallelism)
    except AssertionError as error:
        result.failures.append(str(error))
    except Exception as error:  # noqa: BLE001 - a check that cannot even run is a broken promise too
        result.failures.append(f"{type(error).__name__}: {error}")
    finally:
        world.close()
        result.seconds = time.monotonic() - started
    return result


def _run_case(world: World, base: Baseline, result: CaseResult, parallelism: int) -> None:
    spec = f"{result.point}:{result.n}" + (f":{result.delay}" if result.delay else "")
    proc = apply_process(world, {KILL_ENV: spec}, parallelism)
    out, err = proc.communicate(timeout=120)
    killed_at = time.monotonic()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"qbr was not killed at {spec} (exit {proc.returncode}); the point was not reached:\n{out}{err}")
    result.killed = True

    # 1. right after the kill
    lock_held = check_after_kill(world, proc.pid, result)

    # 2. the next apply, same --now
    rerun = qbr("apply", "--auto-approve", "--now", iso(world.now), cwd=world.folder, env={"QBR_LOCK_LEASE": LEASE})
    if rerun.exit_code != 0:
        raise AssertionError(f"the next apply failed (exit {rerun.exit_code}):\n{rerun.output}")
    if lock_held and "took over the state lock held by" not in rerun.stderr:
        result.failures.append(f"the next apply did not warn that it took over the dead lock:\n{rerun.stderr}")

    # 3. nothing more to do: a second apply changes nothing (it only discards a lock temp file
    # the kill left, if that was younger than the lease when the first one ran)
    time.sleep(max(0.0, killed_at + float(LEASE) + 0.1 - time.monotonic()))
    again = qbr("apply", "--auto-approve", "--now", iso(world.now), cwd=world.folder, env={"QBR_LOCK_LEASE": LEASE})
    if again.exit_code != 0 or "No changes" not in again.stdout:
        result.failures.append(f"a second apply still had something to do (exit {again.exit_code}):\n{again.output}")

    # 4. the same world as an uninterrupted run; leftovers are garbage the planner sweeps
    got = fingerprint(world)
    for difference in summarised(diff(base.fingerprint, got)):
        result.failures.append(f"differs from an uninterrupted run: {difference}")
    check_garbage_is_swept(world, result)


def check_after_kill(world: World, pid: int, result: CaseResult) -> bool:
    """The promises that hold at any instant; returns whether the dead apply's lock is still there."""
    try:
        state = read_state(world)
    except Exception as error:  # noqa: BLE001 - any failure to parse is the finding
        result.failures.append(f"the state file does not parse after the kill: {error}")
        state = None
    if state is not None and state.node_snapshots:
        result.findings.append(f"state lists {len(state.node_snapshots)} node snapshot(s) to clean up")
    if state_folder_temp_files(world):
        result.findings.append("a half-written state or lock temp file beside the state")
    for name, repo in world.repositories.items():
        for info in repo.list("sets/"):
            if parse_set_key(info.key) is None:
                result.failures.append(f"{name}: {info.key} is not a set record key")
                continue
            try:
                record = SetRecord.from_json(repo.get_bytes(info.key), info.key)
            except Exception as error:  # noqa: BLE001
                result.failures.append(f"{name}: set record {info.key} does not parse: {error}")
                continue
            for archive in (a for c in record.collections.values() for a in c.archives):
                head = repo.head(archive.key)
                if head is None:
                    result.failures.append(f"{name}: set {record.set_id} names missing archive {archive.key}")
                elif head.size != archive.object_size:
                    result.failures.append(f"{name}: archive {archive.key} is {head.size} bytes, set says {archive.object_size}")
                elif sha256_of(repo.get_bytes(archive.key)) != archive.sha256:
                    result.failures.append(f"{name}: archive {archive.key} does not match its sha256")
        pending = repo.pending_uploads()
        if pending:
            result.findings.append(f"{name}: {len(pending)} unfinished upload(s) left")
    lock_path = world.folder / ".qbr" / "state.json.lock"
    if not lock_path.exists():
        return False
    info = LockInfo.from_json(lock_path.read_bytes())
    if info is None:
        result.failures.append("the lock left by the killed apply does not parse")
        return True
    if info.pid != pid:
        result.failures.append(f"the lock names pid {info.pid}, not the killed apply's {pid}")
    if parse_utc(info.expires) > datetime.now(UTC) + timedelta(seconds=float(LEASE) + 1):
        result.failures.append(f"the dead apply's lock lease runs until {info.expires}, longer than {LEASE}s")
    result.findings.append("lock left behind, lease expiring")
    return True


def check_garbage_is_swept(world: World, result: CaseResult) -> None:
    """Archives no set references and unfinished uploads are garbage: a plan past the grace
    period deletes every one of them (nothing leaks forever)."""
    leftovers: set[tuple[str, str]] = set()
    for name, repo in world.repositories.items():
        referenced = set()
        for info in repo.list("sets/"):
            referenced |= SetRecord.from_json(repo.get_bytes(info.key), info.key).archive_keys()
        leftovers |= {(name, o.key) for o in repo.list("snapshots/") if o.key not in referenced}
        leftovers |= {(name, f"upload:{p.key}") for p in repo.pending_uploads()}
        if hasattr(repo, "read_list"):  # a dedup repository: chunks no chunk list names are garbage too
            named = {c for o in repo.list("snapshots/") if (listing := repo.read_list(o.key)) for c in listing.ids()}
            leftovers |= {(name, f"chunk:{o.key.rsplit('/', 1)[1]}") for o in repo.list("chunks/")
                          if o.key.rsplit("/", 1)[1] not in named}
    if not leftovers:
        return
    result.findings.append(f"{len(leftovers)} unreferenced archive(s)/upload(s) left for the garbage sweep")
    later = max(world.now, datetime.now(UTC)) + DEFAULT_GRACE + timedelta(hours=1)
    plan = qbr("plan", "--json", "--now", iso(later), cwd=world.folder)
    if plan.exit_code != 0:
        result.failures.append(f"the garbage plan failed: {plan.output}")
        return
    swept = set()
    for action in json.loads(plan.stdout)["actions"]:
        p = action["params"]
        if action["kind"] == "delete_archive":
            swept.add((p["repository"], p["key"]))
        elif action["kind"] == "abort_upload":
            swept.add((p["repository"], f"upload:{p['key']}"))
        elif action["kind"] == "sweep_chunks":
            swept |= {(p["repository"], f"chunk:{c}") for c in p["chunks"]}
    for repo_name, key in sorted(leftovers - swept):
        result.failures.append(f"{repo_name}: {key} is left behind and no plan ever deletes it")


# ---------------------------------------------------------------- a bed outside pytest


@contextmanager
def standalone_bed() -> Iterator[Bed]:
    """moto's S3 server and a scratch folder, for benchmarks/kill_sweep.py (pytest has fixtures)."""
    import logging
    import os
    import shutil

    from moto.server import ThreadedMotoServer

    from tests.s3_fixture import FAKE_CREDENTIALS, _free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    os.environ.update(FAKE_CREDENTIALS)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    root = Path(tempfile.mkdtemp(prefix="qbr-kill-sweep-"))
    try:
        yield Bed(f"http://127.0.0.1:{port}", root)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
