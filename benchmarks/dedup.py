"""Dedup: what a second backup of a changed collection costs, in qbr's chunked repository and in restic.

Real Qdrant segment files, made with Qdrant's own engine (qdrant-edge-py, `pip install
'qbr[deep]'`). `--engine emulator` (the default when qdrant-edge-py is installed): the emulator
runs in edge mode in a child process (`python -m tests.emulator --engine edge`), a collection of N
points (dim 384, payloads) is created and filled through its HTTP API and a collection snapshot
made and downloaded (archive 1, in Qdrant's layout); then 1 % (or 10 %) of its points are updated
and 1 % added, and it is snapshotted again (archive 2). `--engine edge` tars an EdgeShard's folder
directly instead. Both archives are stored through qbr's ChunkedRepository in a local folder, in a
child process whose peak RSS is reported; the table says, for archive 2, the bytes qbr stored,
the bytes a full copy stores (its size), and what restic adds for the same file (when `restic` is
installed; otherwise said, and the column left empty), with throughputs. Without
qdrant-edge-py, `--engine synthetic` makes archives of JSON lines (the emulator's default
format), which dedup unlike segments.

`--sweep-avg` also measures, for several average chunk sizes, how much of archive 2 is new
(chunked and compressed): what benchmarks/README.md chose the parameters by.

    python benchmarks/dedup.py --points 200000 --changes 0.01 0.10
    python benchmarks/dedup.py --points 20000 --sweep-avg 262144 524288 1048576 2097152 4194304
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
from _common import MIB, ROOT, child_env

from qbr.repository import open_local_repository
from qbr.repository.chunked import ChunkedRepository
from qbr.repository.chunks import Codec, cut, digest

DIM = 384


def _vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def _payload(i: int, rng: random.Random, version: int) -> dict:
    return {"n": i, "city": rng.choice(["Berlin", "Paris", "Lisbon", "Oslo"]), "version": version,
            "text": f"document {i} v{version} " + " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(12))}


def edge_shard(folder: Path, points: int, seed: int = 7):
    import qdrant_edge as edge

    config = edge.EdgeConfig(vectors={"": edge.EdgeVectorParams(size=DIM, distance=edge.Distance.Cosine)})
    shard = edge.EdgeShard.create(str(folder), config)
    rng = random.Random(seed)
    for start in range(0, points, 1000):
        batch = [edge.Point(i, _vector(rng), _payload(i, rng, 1)) for i in range(start, min(points, start + 1000))]
        shard.update(edge.UpdateOperation.upsert_points(batch))
    shard.flush()
    return edge, shard


def edge_change(edge, shard, points: int, updated: float, added: float, seed: int = 11) -> None:
    rng = random.Random(seed)
    ids = rng.sample(range(points), int(points * updated)) + list(range(points, points + int(points * added)))
    for start in range(0, len(ids), 1000):
        batch = [edge.Point(i, _vector(rng), _payload(i, rng, 2)) for i in ids[start : start + 1000]]
        shard.update(edge.UpdateOperation.upsert_points(batch))
    shard.flush()


def tar_folder(folder: Path, out: Path) -> int:
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return out.stat().st_size


def synthetic(out: Path, points: int, version: dict[int, int]) -> int:
    rng = random.Random(3)
    with out.open("w") as f:
        for i in range(points + sum(1 for k in version if k >= points)):
            vec = [round(rng.uniform(-1, 1), 6) for _ in range(DIM)]
            f.write(json.dumps({"id": i, "vector": vec, "payload": _payload(i, random.Random(i), version.get(i, 1))}) + "\n")
    return out.stat().st_size


class EmulatorCollection:
    """A collection in the edge-mode emulator (a child process), written and snapshotted over HTTP."""

    def __init__(self, work: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.emulator", "--engine", "edge", "--port", "0", "--data-dir", str(work / "emulator")],
            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
        url = self.process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the emulator did not start (exit code {self.process.wait()})")
        self.http = httpx.Client(base_url=url, timeout=3600)
        self.call("PUT", "/collections/c", json={"vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 1})

    def call(self, method: str, path: str, **kw) -> dict:
        answer = self.http.request(method, path, **kw)
        answer.raise_for_status()
        return answer.json()

    def upsert(self, ids: list[int], rng: random.Random, version: int) -> None:
        for start in range(0, len(ids), 500):
            batch = [{"id": i, "vector": _vector(rng), "payload": _payload(i, rng, version)} for i in ids[start:start + 500]]
            self.call("PUT", "/collections/c/points?wait=true", json={"points": batch})

    def snapshot(self, out: Path) -> None:
        """Create a collection snapshot, download it to `out`, delete it from the node."""
        name = self.call("POST", "/collections/c/snapshots?wait=true")["result"]["name"]
        with self.http.stream("GET", f"/collections/c/snapshots/{name}") as answer, out.open("wb") as f:
            answer.raise_for_status()
            for piece in answer.iter_bytes(MIB):
                f.write(piece)
        self.call("DELETE", f"/collections/c/snapshots/{name}?wait=true")

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=60)


def emulator_archives(work: Path, points: int, change: float, one: Path, two: Path) -> None:
    collection = EmulatorCollection(work)
    try:
        collection.upsert(list(range(points)), random.Random(7), 1)
        collection.snapshot(one)
        rng = random.Random(11)
        collection.upsert(rng.sample(range(points), int(points * change)) + list(range(points, points + int(points * 0.01))), rng, 2)
        collection.snapshot(two)
    finally:
        collection.close()
        shutil.rmtree(work / "emulator", ignore_errors=True)


def archives(work: Path, engine: str, points: int, change: float) -> tuple[Path, Path]:
    one, two = work / f"one-{change}.tar", work / f"two-{change}.tar"
    if engine == "emulator":
        emulator_archives(work, points, change, one, two)
    elif engine == "edge":
        folder = work / f"shard-{change}"
        edge, shard = edge_shard(folder, points)
        tar_folder(folder, one)
        edge_change(edge, shard, points, change, 0.01)
        shard.close()
        tar_folder(folder, two)
        shutil.rmtree(folder)
    else:
        rng = random.Random(5)
        changed = {i: 2 for i in rng.sample(range(points), int(points * change))}
        changed.update({points + k: 2 for k in range(int(points * 0.01))})
        synthetic(one, points, {})
        synthetic(two, points, changed)
    return one, two


def read(path: Path):
    with path.open("rb") as f:
        while piece := f.read(MIB):
            yield piece


def new_bytes(one: Path, two: Path, avg: int) -> tuple[int, int, int]:
    """(chunks in archive 2, plain bytes of its new chunks, their stored bytes after zstd)."""
    sizes = dict(avg_size=avg, min_size=min(MIB, max(64, avg // 2)), max_size=min(16 * MIB, avg * 8))
    seen = {digest(c) for c in cut(read(one), **sizes)}
    codec = Codec()
    count = plain = stored = 0
    for c in cut(read(two), **sizes):
        count += 1
        cid = digest(c)
        if cid not in seen:
            seen.add(cid)
            plain += len(c)
            stored += len(codec.encode(c))
    return count, plain, stored


def qbr_store(one: Path, two: Path, repo_dir: Path) -> tuple[int, int, float, float, int]:
    """(stored after 1, stored by 2, seconds for 1, seconds for 2, peak RSS bytes), measured in a
    child process that only stores (so its peak is qbr's, whatever the archive size)."""
    run = subprocess.run([sys.executable, __file__, "--store-child", str(one), str(two), str(repo_dir)],
                         env=child_env(), check=True, capture_output=True, text=True)
    return tuple(json.loads(run.stdout.splitlines()[-1]))


def _store_child(one: Path, two: Path, repo_dir: Path) -> None:
    repo = ChunkedRepository(open_local_repository(repo_dir))

    def stored() -> int:
        return sum(o.size for o in repo.inner.list("chunks/"))

    t0 = time.perf_counter()
    repo.put_stream("snapshots/c/one", read(one))
    t1 = time.perf_counter()
    first = stored()
    repo.put_stream("snapshots/c/two", read(two))
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps([first, stored() - first, t1 - t0, t2 - t1, peak]))


def restic_store(one: Path, two: Path, work: Path) -> tuple[int, int, float, float] | None:
    """(added by 1, added by 2, seconds, seconds) as restic's summary reports, or None without restic."""
    restic = shutil.which("restic")
    if restic is None:
        return None
    env = {"RESTIC_PASSWORD": "benchmark", "RESTIC_REPOSITORY": str(work / "restic"), "PATH": "/usr/bin:/bin",
           "RESTIC_CACHE_DIR": str(work / "restic-cache")}
    subprocess.run([restic, "init"], env=env, check=True, capture_output=True)
    results = []
    for path in (one, two):
        staged = work / "restic-src" / "shard.tar"  # the same path both times, as a nightly job would
        staged.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, staged)
        t0 = time.perf_counter()
        run = subprocess.run([restic, "backup", "--json", str(staged)], env=env, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        summary = [json.loads(line) for line in run.stdout.splitlines() if '"summary"' in line][-1]
        results.append((int(summary.get("data_added_packed", summary["data_added"])), seconds))
    return results[0][0], results[1][0], results[0][1], results[1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--changes", type=float, nargs="+", default=[0.01, 0.10], help="fractions of points updated")
    parser.add_argument("--engine", choices=["emulator", "edge", "synthetic"], default=None,
                        help="default: emulator (in edge mode) when qdrant-edge-py is installed")
    parser.add_argument("--sweep-avg", type=int, nargs="*", default=[], help="average chunk sizes to measure new bytes at")
    parser.add_argument("--store-child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store_child:
        return _store_child(*args.store_child)
    engine = args.engine
    if engine is None:
        try:
            import qdrant_edge  # noqa: F401

            engine = "emulator"
        except ImportError:
            engine = "synthetic"
            print("qdrant-edge-py is not installed: synthetic JSON-lines archives (dedup unlike real segments)")
    if not shutil.which("restic"):
        print("restic is not installed (Debian package restic): its columns are left empty")
    work = Path(tempfile.mkdtemp(prefix="qbr-dedup-bench-"))
    try:
        what = "a collection snapshot of the emulator in edge mode, over HTTP" if engine == "emulator" else "a tar of the shard"
        print(f"engine {engine}, {args.points} points, dim {DIM}; archives: {what}; archive 2: the given fraction updated and 1 % added")
        print(f"{'change':>7} {'archive 1':>10} {'archive 2':>10} {'full copy':>10} {'qbr adds':>10} {'restic adds':>11} "
              f"{'qbr MB/s':>9} {'restic MB/s':>11} {'qbr peak RSS':>12}")
        for change in args.changes:
            one, two = archives(work, engine, args.points, change)
            size1, size2 = one.stat().st_size, two.stat().st_size
            first, added, s1, s2, peak = qbr_store(one, two, work / f"qbr-{change}")
            restic = restic_store(one, two, work / f"r-{change}") if shutil.which("restic") else None
            r_added = f"{restic[1] / MIB:9.1f}Mi" if restic else "        -  "
            r_rate = f"{size2 / restic[3] / 1e6:11.0f}" if restic else "          -"
            print(f"{change:7.0%} {size1 / MIB:8.1f}Mi {size2 / MIB:8.1f}Mi {size2 / MIB:8.1f}Mi {added / MIB:8.1f}Mi {r_added} "
                  f"{size2 / s2 / 1e6:9.0f} {r_rate} {peak / MIB:10.0f}Mi")
            print(f"ratio: qbr_peak_rss_mib_{int(change * 100)}pct = {peak / MIB:.1f} (the storing process, archive 2 of {size2 / MIB:.0f} MiB)")
            print(f"ratio: qbr_added_over_full_{int(change * 100)}pct = {added / size2:.4f} (bytes qbr stored for archive 2 / its size)")
            print(f"ratio: qbr_first_stored_over_size_{int(change * 100)}pct = {first / size1:.4f} (archive 1, chunked and compressed)")
            if restic:
                print(f"ratio: qbr_added_over_restic_{int(change * 100)}pct = {added / max(1, restic[1]):.4f} "
                      f"(restic added {restic[1]} bytes, first {restic[0]})")
                print(f"ratio: qbr_speed_over_restic_{int(change * 100)}pct = {restic[3] / s2:.4f} (throughput on archive 2)")
            for avg in args.sweep_avg:
                count, plain, stored = new_bytes(one, two, avg)
                print(f"  avg {avg // 1024:>5} KiB: archive 2 in {count} chunks, new {plain / MIB:.1f} MiB plain, "
                      f"{stored / MIB:.1f} MiB stored ({plain / size2:.1%} of it new)")
            for path in (one, two):
                path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
