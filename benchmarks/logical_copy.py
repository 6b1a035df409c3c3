"""Logical copy throughput: qbr's copy_collection against a plain scroll-and-upsert loop.

    python benchmarks/logical_copy.py                          # 10000 points of 128 floats, 3 -> 6 shards
    python benchmarks/logical_copy.py --upsert-latency 0 0.05  # as if each upsert took 50 ms more
    python benchmarks/logical_copy.py --points 300 --dim 8     # a smoke run

Two emulator clusters (a source with 3 nodes and 3 shards, a target with --target-nodes) serve
from this process; each copy runs in a child process of its own, so neither shares the servers'
interpreter. For each --upsert-latency (seconds every target node adds to an upsert, a stand-in
for the work Qdrant does before it answers wait=true: WAL, fsync, indexing), in the same run:

- the baseline: a loop written with httpx as a person would write it (scroll a page with vectors
  and payloads, upsert it with wait=true, next page), into a collection of the target shape;
- qbr: `qbr apply` of a restore whose topology changes the shard number, so the plan holds one
  copy_collection action; its time is the action's own, from the state's journal (plan, observe
  and the backup before it are not counted), journaling every batch's position included.

Prints points/s of both and `ratio: logical_copy_vs_plain_loop_<ms>ms` (qbr's over the loop's;
above 1: qbr is faster). Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import ROOT, child_env, print_ratio, print_table

UPSERT_PATH = r"/collections/[^/]+/points$"


def fill(url: str, points: int, dim: int, shards: int) -> None:
    with httpx.Client(base_url=url, timeout=120) as http:
        http.put("/collections/docs", json={"vectors": {"size": dim, "distance": "Dot"}, "shard_number": shards}).raise_for_status()
        for start in range(0, points, 500):
            batch = [
                {"id": i, "vector": [((i * 31 + k) % 97) / 97 for k in range(dim)], "payload": {"n": i, "tag": f"t{i % 10}"}}
                for i in range(start, min(points, start + 500))
            ]
            http.put("/collections/docs/points?wait=true", json={"points": batch}).raise_for_status()


def plain_loop(source: str, target: str, collection: str, batch: int, dim: int, shards: int) -> float:
    """The loop a person writes: scroll a page, upsert it, repeat. Returns seconds."""
    with httpx.Client(base_url=source, timeout=120) as src, httpx.Client(base_url=target, timeout=120) as dst:
        dst.put(f"/collections/{collection}", json={"vectors": {"size": dim, "distance": "Dot"}, "shard_number": shards}
                ).raise_for_status()
        started = time.monotonic()
        offset = None
        while True:
            body = {"limit": batch, "with_payload": True, "with_vector": True}
            if offset is not None:
                body["offset"] = offset
            result = src.post("/collections/docs/points/scroll", json=body).json()["result"]
            points = [{"id": p["id"], "vector": p["vector"], "payload": p["payload"]} for p in result["points"]]
            if points:
                dst.put(f"/collections/{collection}/points?wait=true", json={"points": points}).raise_for_status()
            offset = result.get("next_page_offset")
            if offset is None:
                return time.monotonic() - started


def run_plain_loop(source: str, target: str, collection: str, batch: int, dim: int, shards: int) -> float:
    """The loop in a child process (as qbr runs in one): its seconds."""
    run = subprocess.run(
        [sys.executable, str(Path(__file__)), "--plain-loop", source, target, collection, str(batch), str(dim), str(shards)],
        env=child_env(), capture_output=True, text=True, check=True,
    )
    return float(run.stdout.strip().splitlines()[-1])


def qbr_copy(folder: Path, source: str, target: str, batch: int, shards: int, parallelism: int) -> tuple[float, int]:
    """qbr apply of a reshard restore; (the copy action's seconds, the points it left)."""
    def manifest(restore: str) -> None:
        (folder / "qbr.yaml").write_text(f"""
version: 1
clusters:
  prod: {{url: "{source}"}}
  big: {{url: "{target}"}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
{restore}""")

    def apply() -> None:
        run = subprocess.run([sys.executable, "-m", "qbr", "apply", "--auto-approve", "--parallelism", str(parallelism)],
                             cwd=folder, env=child_env(), capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"qbr apply failed:\n{run.stdout}{run.stderr}")

    manifest("")
    apply()  # the set a restore needs (not timed)
    manifest(f"restores:\n  reshard:\n    from: nightly\n    to: big\n    topology: {{shard_number: {shards}}}\n"
             f"    batch_size: {batch}\n")
    apply()
    state = json.loads((folder / ".qbr" / "state.json").read_text())
    (entry,) = [e for e in state["journal"] if e["kind"] == "copy_collection"]
    return float(entry["seconds"]), int(state["restores"]["reshard"]["docs"]["points_count"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--target-nodes", type=int, default=6)
    parser.add_argument("--shards", type=int, default=6, help="the target's shard number (the source has 3)")
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--upsert-latency", type=float, nargs="+", default=[0.0, 0.02],
                        help="seconds each target node adds to every upsert (one measurement per value)")
    parser.add_argument("--plain-loop", nargs=6, metavar=("SOURCE", "TARGET", "COLLECTION", "BATCH", "DIM", "SHARDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        source, target, collection, batch, dim, shards = args.plain_loop
        print(plain_loop(source, target, collection, int(batch), int(dim), int(shards)))
        return 0

    sys.path.insert(0, str(ROOT))
    from tests.emulator.cluster import EmulatorCluster

    rows, ratios = [], []
    with tempfile.TemporaryDirectory(prefix="qbr-bench-copy-") as scratch:
        root = Path(scratch)
        for latency in args.upsert_latency:
            source = EmulatorCluster(nodes=3, data_dir=root / f"source-{latency}").start()
            target = EmulatorCluster(nodes=args.target_nodes, data_dir=root / f"target-{latency}").start()
            try:
                fill(source.urls[0], args.points, args.dim, 3)
                for node in target.nodes:
                    if latency:
                        node.faults.add(method="PUT", path=UPSERT_PATH, latency=latency, times=None)
                plain = run_plain_loop(source.urls[0], target.urls[0], "plain", args.batch, args.dim, args.shards)
                folder = root / f"qbr-{latency}"
                folder.mkdir()
                seconds, copied = qbr_copy(folder, source.urls[0], target.urls[0], args.batch, args.shards, args.parallelism)
            finally:
                source.stop()
                target.stop()
            if copied != args.points:
                raise RuntimeError(f"qbr copied {copied} points of {args.points}")
            ms = round(latency * 1000)
            rows.append((f"{ms} ms", "plain scroll+upsert loop (httpx)", f"{plain:.2f}", f"{args.points / plain:.0f}"))
            rows.append((f"{ms} ms", f"qbr copy_collection --parallelism {args.parallelism}", f"{seconds:.2f}",
                         f"{copied / seconds:.0f}"))
            ratios.append((ms, (copied / seconds) / (args.points / plain)))
    print(f"logical copy: {args.points} points of {args.dim} floats, batches of {args.batch}, "
          f"3 nodes/3 shards -> {args.target_nodes} nodes/{args.shards} shards")
    print_table(["upsert latency", "copy", "seconds", "points/s"], rows)
    for ms, ratio in ratios:
        print_ratio(f"logical_copy_vs_plain_loop_{ms}ms", ratio,
                    f"qbr's points/s over the plain loop's, each upsert {ms} ms slower; journaling every batch included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
