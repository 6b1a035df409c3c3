"""Backing up many collections spread over a cluster's nodes: `qbr apply` against the sequential
script it replaces, in the same run.

    python benchmarks/parallel.py [--nodes 3] [--collections 12] [--size-mib 24] [--rate-mib 20]
                                  [--snapshot-latency 0.5] [--parallelism 1 4 8] [--repeat 3]

A Qdrant emulator cluster (its own process) holds `--collections` single-shard synthetic
collections, collection i on node i % nodes. Each node serves snapshot downloads at no more than
`--rate-mib` MiB/s, all its downloads together (`node.download_rate`, like a node behind a slow
disk or link), and takes `--snapshot-latency` seconds to make a snapshot.

Baseline, the script style qbr replaces: plain httpx calls, one collection at a time, node after
node: create the snapshot (wait=true), download it to a file, delete it from the node.
qbr: `python -m qbr apply --auto-approve --parallelism P` (a real process, start-up, observe and
plan included) backing up every collection into a fresh local folder; the node-side cap on
concurrent snapshot creation (qbr.apply.applier.SNAPSHOTS_PER_NODE) is shown beside P.
Baseline and qbr runs interleave `--repeat` times; the table shows medians.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import MIB, ROOT, child_env, cluster_process, median, print_ratio, print_table

from qbr.apply.applier import SNAPSHOTS_PER_NODE


def placement(collections: int, nodes: int) -> dict[str, int]:
    return {f"c{i:03d}": i % nodes for i in range(collections)}


def sequential_script(urls: list[str], where: dict[str, int], folder: Path) -> int:
    """One collection at a time, node after node: create, download, delete. Returns bytes stored."""
    stored = 0
    folder.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=600, trust_env=False) as http:
        for index, url in enumerate(urls):
            for collection in (c for c, n in where.items() if n == index):
                made = http.post(f"{url}/collections/{collection}/snapshots", params={"wait": "true"})
                made.raise_for_status()
                name = made.json()["result"]["name"]
                with http.stream("GET", f"{url}/collections/{collection}/snapshots/{name}") as response:
                    response.raise_for_status()
                    with open(folder / name, "wb") as out:
                        for chunk in response.iter_bytes(MIB):
                            out.write(chunk)
                            stored += len(chunk)
                http.delete(f"{url}/collections/{collection}/snapshots/{name}").raise_for_status()
    return stored


def qbr_apply(url: str, parallelism: int, work: Path) -> int:
    """`qbr apply` of one backup of every collection into a fresh folder; returns bytes stored."""
    work.mkdir(parents=True)
    (work / "qbr.yaml").write_text(f"""version: 1
clusters:
  bench: {{url: "{url}"}}
repositories:
  folder: {{path: ./repo}}
backups:
  all: {{cluster: bench, repository: folder, collections: ["*"], rpo: 1h}}
""")
    done = subprocess.run(
        [sys.executable, "-m", "qbr", "apply", "--auto-approve", "--parallelism", str(parallelism)],
        cwd=work, env={**child_env(), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"qbr apply failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    archives = list((work / "repo" / "snapshots").rglob("*.snapshot"))
    return sum(a.stat().st_size for a in archives)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qbr's parallel backup vs a sequential script, same run.")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--collections", type=int, default=12)
    parser.add_argument("--size-mib", type=float, default=24, help="snapshot size of each collection (default 24)")
    parser.add_argument("--rate-mib", type=float, default=20, help="MiB/s each node serves downloads at (default 20)")
    parser.add_argument("--snapshot-latency", type=float, default=0.5, help="seconds a node takes per snapshot")
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 4, 8], help="qbr --parallelism values")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    where = placement(args.collections, args.nodes)
    size = int(args.size_mib * MIB)
    print(f"parallel benchmark: {args.collections} collections of {args.size_mib:g} MiB over {args.nodes} nodes, "
          f"each node serving downloads at {args.rate_mib:g} MiB/s and taking {args.snapshot_latency:g} s per "
          f"snapshot; {args.repeat} runs each, median shown; {os.cpu_count()} CPUs", flush=True)
    times: dict[str, list[float]] = {"script": [], **{f"qbr-{p}": [] for p in args.parallelism}}
    stored: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="qbr-bench-parallel-") as tmp:
        work = Path(tmp)
        synthetic = {name: (size, node) for name, node in where.items()}
        with cluster_process(args.nodes, synthetic, data_dir=work / "emulator", download_rate=args.rate_mib * MIB,
                             snapshot_latency=args.snapshot_latency) as urls:
            sequential_script(urls, where, work / "warm-up")  # the node caches each synthetic checksum
            for run in range(args.repeat):
                started = time.perf_counter()
                stored["script"] = sequential_script(urls, where, work / f"script-{run}")
                times["script"].append(time.perf_counter() - started)
                for p in args.parallelism:
                    started = time.perf_counter()
                    stored[f"qbr-{p}"] = qbr_apply(urls[0], p, work / f"qbr-{p}-{run}")
                    times[f"qbr-{p}"].append(time.perf_counter() - started)
                print(f"  run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    total = args.collections * size
    assert all(abs(v - stored["script"]) < args.collections * 4096 for v in stored.values()), stored
    script = median(times["script"])
    rows = [["sequential script (httpx)", "1", "1", f"{script:.1f}", f"{total / MIB / script:.0f}", "1.00"]]
    for p in args.parallelism:
        wall = median(times[f"qbr-{p}"])
        rows.append([f"qbr apply --parallelism {p}", str(p), str(min(p, SNAPSHOTS_PER_NODE)), f"{wall:.1f}",
                     f"{total / MIB / wall:.0f}", f"{script / wall:.2f}"])
    print()
    print("script = one collection at a time, node after node: create snapshot (wait=true), download to a file, delete.")
    print("qbr = `python -m qbr apply` in a process of its own (start-up, observe, plan, state writes included),")
    print("      into a fresh local folder, sha256 of every archive checked; snapshots/node = the cap on concurrent")
    print(f"      snapshot creation per node (SNAPSHOTS_PER_NODE = {SNAPSHOTS_PER_NODE}, bounded by the parallelism).")
    print(f"ceiling: {args.nodes} nodes x {args.rate_mib:g} MiB/s = {args.nodes * args.rate_mib:g} MiB/s of downloads.")
    print()
    print_table(["run", "parallelism", "snapshots/node", "wall s", "MiB/s", "speedup"], rows)
    print()
    for p in args.parallelism:
        print_ratio(f"parallel_speedup_p{p}", script / median(times[f"qbr-{p}"]),
                    f"sequential script wall time / qbr apply --parallelism {p} wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
