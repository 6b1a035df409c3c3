"""`python -m tests.emulator --port 6333 [--nodes 3] [--api-key K] [--version V] [--data-dir D]`

Prints the node URLs, one per line, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.emulator.cluster import EmulatorCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description="Serve a Qdrant emulator cluster.")
    parser.add_argument("--port", type=int, default=6333, help="REST port of every node (0: any free port)")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (127.0.0.1, 127.0.0.2, ...)")
    parser.add_argument("--api-key", default=None, help="require this API key")
    parser.add_argument("--read-only-api-key", default=None, help="also accept this read-only key")
    parser.add_argument("--version", default="1.19.0", help="Qdrant version to report")
    parser.add_argument("--data-dir", default=None, help="where snapshots are kept (default: a temp dir)")
    parser.add_argument("--distributed", action=argparse.BooleanOptionalAction, default=None,
                        help="cluster mode (default: on when --nodes > 1)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = EmulatorCluster(nodes=args.nodes, api_key=args.api_key, read_only_api_key=args.read_only_api_key,
                              version=args.version, port=args.port, data_dir=args.data_dir,
                              distributed=args.distributed)
    cluster.start()
    try:
        for url in cluster.urls:
            print(url, flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
