"""A Qdrant emulator for the benchmarks, in its own process.

`python benchmarks/_emulator_server.py [--nodes N] [--synthetic NAME=BYTES[@NODE] ...] [--collections N]
[--data-dir D] [--download-rate BYTES_PER_S] [--snapshot-latency S] [--control]`
prints the nodes' URLs on one line (node 0 first), then serves until SIGTERM or SIGINT. Like
`python -m tests.emulator`, plus what benchmarks need: synthetic collections (snapshots generated
on the fly, each on the node given, default 0), many small ones, and per node a cap on how fast
snapshot downloads are served and how long a snapshot takes to make. With --control it answers
lines on stdin, one JSON line each on stdout: `traffic` (the requests every node served since the
start or the last reset, by method and route) and `reset`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.emulator.cluster import EmulatorCluster

SMALL_CONFIG = {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1}


def _shard_snapshots_take_time(node) -> None:
    """The emulator applies `snapshot_latency` to collection snapshots, and to shard snapshots of
    ordinary collections, but not to shard snapshots of synthetic ones (qbr's kind on a
    distributed cluster): here they take as long as the others."""
    create = node.snapshots.create_shard_snapshot

    def create_shard_snapshot(collection, shard_id):
        if collection.synthetic_size is not None:
            node.activity.after_snapshot_view(node, collection.name, shard_id)
        return create(collection, shard_id)

    node.snapshots.create_shard_snapshot = create_shard_snapshot


def _answer(cluster: EmulatorCluster, stop: threading.Event) -> None:
    """The --control loop: one JSON line on stdout for each command line on stdin."""
    for line in sys.stdin:
        command = line.strip()
        if command == "reset":
            for node in cluster.nodes:
                node.reset_traffic()
            answer: dict = {}
        elif command == "traffic":
            routes: dict[str, int] = {}
            for node in cluster.nodes:
                for (method, route), count in node.route_counts().items():
                    routes[f"{method} {route}"] = routes.get(f"{method} {route}", 0) + count
            answer = {"requests": sum(routes.values()), "routes": dict(sorted(routes.items()))}
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)
    stop.set()  # stdin closed: the parent is gone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--synthetic", action="append", default=[], metavar="NAME=BYTES[@NODE]")
    parser.add_argument("--collections", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--download-rate", type=float, default=None, help="bytes/s per node (all its downloads)")
    parser.add_argument("--snapshot-latency", type=float, default=0.0, help="seconds each snapshot takes to make")
    parser.add_argument("--control", action="store_true", help="answer `traffic` and `reset` lines on stdin")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = EmulatorCluster(nodes=args.nodes, port=0, data_dir=args.data_dir)
    cluster.start()
    try:
        for node in cluster.nodes:
            node.download_rate = args.download_rate
            node.snapshot_latency = args.snapshot_latency
            _shard_snapshots_take_time(node)
        for item in args.synthetic:
            name, _, spec = item.partition("=")
            size, _, on = spec.partition("@")
            cluster.add_synthetic_collection(name, int(size), node=int(on or 0))
        state = cluster.nodes[0].state
        for i in range(args.collections):
            state.create_collection(f"c{i:05d}", SMALL_CONFIG)
        print(" ".join(cluster.urls), flush=True)
        if args.control:
            threading.Thread(target=_answer, args=(cluster, stop), daemon=True).start()
        while not stop.wait(0.2):
            pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
