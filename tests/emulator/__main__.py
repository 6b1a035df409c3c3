"""`python -m tests.emulator --port 6333 [--nodes 3] [--api-key K] [--version V] [--data-dir D]
[--snapshots-s3 http://127.0.0.1:9000/bucket[/prefix] [--s3-part-size N] [--snapshots-s3-broken]]
[--no-url-recovery] [--engine python|edge]`

Prints the node URLs, one per line, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.emulator.cluster import EmulatorCluster
from tests.emulator.edge_store import ENGINES
from tests.emulator.s3storage import DEFAULT_PART_SIZE, S3Settings


def cluster_from_args(argv: list[str] | None = None) -> EmulatorCluster:
    """The (unstarted) cluster the command line describes."""
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description="Serve a Qdrant emulator cluster.")
    parser.add_argument("--port", type=int, default=6333, help="REST port of every node (0: any free port)")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (127.0.0.1, 127.0.0.2, ...)")
    parser.add_argument("--api-key", default=None, help="require this API key")
    parser.add_argument("--read-only-api-key", default=None, help="also accept this read-only key")
    parser.add_argument("--version", default="1.19.0", help="Qdrant version to report")
    parser.add_argument("--data-dir", default=None, help="where snapshots are kept (default: a temp dir)")
    parser.add_argument("--distributed", action=argparse.BooleanOptionalAction, default=None,
                        help="cluster mode (default: on when --nodes > 1)")
    parser.add_argument("--snapshots-s3", default=None, metavar="URL",
                        help="server-side S3 snapshot storage: http://HOST:PORT/BUCKET[/PREFIX] (prefix: snapshots); "
                             "credentials and region from the AWS environment")
    parser.add_argument("--s3-part-size", type=int, default=DEFAULT_PART_SIZE, help="multipart part size in bytes")
    parser.add_argument("--snapshots-s3-broken", action="store_true",
                        help="declared S3 but snapshots stay on local disk (qdrant/qdrant#5026)")
    parser.add_argument("--no-url-recovery", action="store_true",
                        help="service.enable_snapshot_url_recovery: false (http(s) recovery answers 403)")
    parser.add_argument("--engine", choices=ENGINES, default="python",
                        help="edge: shards are EdgeShards of qdrant-edge-py, snapshots hold real Qdrant segments")
    args = parser.parse_args(argv)
    if args.snapshots_s3_broken and not args.snapshots_s3:
        parser.error("--snapshots-s3-broken needs --snapshots-s3")
    try:
        s3 = S3Settings.from_url(args.snapshots_s3, part_size=args.s3_part_size) if args.snapshots_s3 else None
    except ValueError as err:
        parser.error(str(err))
    return EmulatorCluster(nodes=args.nodes, api_key=args.api_key, read_only_api_key=args.read_only_api_key,
                           version=args.version, port=args.port, data_dir=args.data_dir,
                           distributed=args.distributed, snapshots_s3=s3,
                           snapshots_s3_broken=args.snapshots_s3_broken, url_recovery=not args.no_url_recovery,
                           engine=args.engine)


def main(argv: list[str] | None = None) -> int:
    cluster = cluster_from_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
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
