"""A one-node Qdrant emulator for the benchmarks, in its own process.

`python benchmarks/_emulator_server.py [--synthetic NAME=BYTES ...] [--collections N] [--data-dir D]`
prints the node URL, then serves until SIGTERM or SIGINT. Like `python -m tests.emulator`, plus
what benchmarks need: synthetic collections (snapshots generated on the fly) and many small ones.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.emulator.cluster import EmulatorCluster

SMALL_CONFIG = {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="append", default=[], metavar="NAME=BYTES")
    parser.add_argument("--collections", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = EmulatorCluster(nodes=1, port=0, data_dir=args.data_dir)
    cluster.start()
    try:
        for item in args.synthetic:
            name, _, size = item.partition("=")
            cluster.add_synthetic_collection(name, int(size))
        state = cluster.nodes[0].state
        for i in range(args.collections):
            state.create_collection(f"c{i:05d}", SMALL_CONFIG)
        print(cluster.urls[0], flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
