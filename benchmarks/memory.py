"""Peak memory of qbr's process while it streams one snapshot, against the snapshot's size.

    python benchmarks/memory.py [--size-mib 64 256 1024 [4096]] [--kinds local s3 dedup] [--directions backup restore]

Each measurement runs in a fresh child process (so ru_maxrss is that transfer's and nothing
else's): backup = QdrantClient.download_snapshot -> transfer.verified -> Repository.put_stream
(with the snapshot's size, so S3 picks its part size from it);
restore = QdrantClient.upload_snapshot(lambda: repo.open_read(key)). The child reports the
tracemalloc peak (Python allocations) and how much ru_maxrss (the whole process: C buffers,
OpenSSL, botocore...) grew during the transfer. The Qdrant emulator and moto's S3 server run
in processes of their own (moto keeps objects in its memory), so only qbr is measured.
dedup = a folder repository with `dedup: true` (qbr.repository.chunked: FastCDC, zstd, chunks
stored once), starting empty at each size, so every chunk is new.
If memory is flat, the peak at the largest size is about the peak at the smallest. For S3 the
table also shows the part size chosen for the size and the bound on the parts held at once
(parts in flight x part size), which the traced peak should stay under, plus a few MiB of chunks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    child_env,
    drop_bucket,
    emulator_process,
    moto_process,
    print_ratio,
    print_table,
    s3_client,
    use_fake_aws,
)

RESTORE_TARGET = "restored"


# ---------------------------------------------------------------- the measured child


def child(spec: dict) -> dict:
    """One transfer, measured from inside the process that makes it."""
    import resource
    import time
    import tracemalloc

    from qbr.qdrant import QdrantClient
    from qbr.repository import open_local_repository, open_s3_repository
    from qbr.transfer import Digest, Progress, verified

    client = QdrantClient(spec["url"], snapshot_timeout=600, timeout=600)
    if spec["kind"] == "local":
        repo = open_local_repository(Path(spec["path"]))
    elif spec["kind"] == "dedup":  # content-defined chunks, zstd, stored once (issue 15)
        from qbr.repository.chunked import ChunkedRepository

        repo = ChunkedRepository(open_local_repository(Path(spec["path"])))
    else:
        repo = open_s3_repository(spec["bucket"], "memory", endpoint_url=spec["endpoint"], region="us-east-1")
    # Warm up what is set up lazily (connection pools, botocore's endpoint and models), so the
    # measurement is of the transfer.
    client.version()
    repo.head(spec["key"])

    tracemalloc.start()
    # Start the peak over from the current RSS (Linux >= 4.0), so the imports' peak cannot hide
    # the transfer's; ru_maxrss follows the reset.
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        reset = True
    except OSError:
        reset = False
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    started = time.perf_counter()
    if spec["direction"] == "backup":
        digest = Digest()
        with client.download_snapshot(spec["collection"], spec["snapshot"]) as stream:
            repo.put_stream(
                spec["key"],
                verified(
                    stream, digest, what="snapshot", expected_size=spec["size"], expected_sha256=spec["checksum"],
                    progress=Progress(enabled=False),
                ),
                size=spec["size"],
            )
        assert digest.size == spec["size"]
    else:
        client.upload_snapshot(
            RESTORE_TARGET,
            lambda: repo.open_read(spec["key"]),
            filename=spec["snapshot"],
            size=spec["size"],
            priority="snapshot",
            checksum=spec["checksum"],
        )
    seconds = time.perf_counter() - started
    _, traced_peak = tracemalloc.get_traced_memory()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.stop()
    return {"traced_peak": traced_peak, "rss_before": rss_before, "rss_peak": rss_after, "seconds": seconds,
            "peak_reset": reset}


def run_child(spec: dict) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=child_env(), capture_output=True, text=True, timeout=900, check=False,
    )
    if done.returncode != 0:
        what = f"{spec['direction']} {spec['kind']} {spec['size']}"
        raise RuntimeError(f"measuring {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qbr's peak memory against snapshot size.")
    parser.add_argument("--size-mib", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--kinds", nargs="+", choices=["local", "s3", "dedup"], default=["local", "s3", "dedup"])
    parser.add_argument("--directions", nargs="+", choices=["backup", "restore"], default=["backup", "restore"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    use_fake_aws()
    sizes = sorted(set(args.size_mib))
    print(f"memory benchmark: sizes {sizes} MiB, repositories {args.kinds}, {args.directions}; "
          "each measurement in a fresh process", flush=True)
    from qbr.qdrant import QdrantClient

    rows: list[list[object]] = []
    found: dict[tuple[str, str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="qbr-bench-memory-") as tmp:
        work = Path(tmp)
        synthetic = {f"mem{n}": n * MIB for n in sizes}
        with emulator_process(synthetic=synthetic, data_dir=work / "emulator") as url, moto_process() as endpoint:
            s3 = s3_client(endpoint)
            bucket = f"qbr-bench-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket)
            client = QdrantClient(url, snapshot_timeout=600, timeout=600)
            try:
                snapshots = {n: client.create_snapshot(f"mem{n}") for n in sizes}
                for kind in args.kinds:
                    for n in sizes:
                        snapshot = snapshots[n]
                        key = f"snapshots/mem{n}/bench.{snapshot.name}"
                        spec = {
                            "url": url, "kind": kind, "path": str(work / "repo"), "bucket": bucket,
                            "endpoint": endpoint, "collection": f"mem{n}", "snapshot": snapshot.name,
                            "size": snapshot.size, "checksum": snapshot.checksum, "key": key,
                        }
                        # A restore reads the archive the backup stored, so the backup always runs.
                        for direction in ("backup", "restore"):
                            if direction == "restore" and "restore" not in args.directions:
                                continue
                            result = run_child({**spec, "direction": direction})
                            if direction == "restore":
                                client.delete_snapshot(RESTORE_TARGET, snapshot.name)
                            if direction not in args.directions:
                                continue
                            found[(kind, direction, n)] = result
                            rows.append(_row(kind, direction, n, snapshot.size, result))
                            print("  " + "  ".join(str(c) for c in rows[-1]), flush=True)
                        if kind == "local":
                            (work / "repo").joinpath(*key.split("/")).unlink()
                        elif kind == "dedup":  # its chunks too: every size starts from an empty repository
                            shutil.rmtree(work / "repo")
                        else:
                            s3.delete_object(Bucket=bucket, Key=f"memory/{key}")
            finally:
                client.close()
                drop_bucket(s3, bucket)
    print()
    reset = all(r["peak_reset"] for r in found.values())
    print("S3 backups: part MiB = the part size chosen for the snapshot's size (<= 10,000 parts); in flight = the parts")
    print("held at once (multipart.parts_in_flight: as many as fit in 32 MiB, 2 to 4); bound MiB = in flight x part size.")
    print("traced = tracemalloc peak during the transfer; rss before = the process's RSS once imports and warm-up")
    print("are done" + (" (its peak reset there through /proc/self/clear_refs)" if reset else
                        " (ru_maxrss so far: the peak could not be reset here)")
          + "; rss peak = ru_maxrss after the transfer; growth = peak - before.")
    print()
    print_table(
        ["repository", "direction", "size MiB", "traced MiB", "rss before MiB", "rss peak MiB", "growth MiB", "MiB/s",
         "part MiB", "in flight", "bound MiB"],
        rows,
    )
    print()
    small, large = sizes[0], sizes[-1]
    for kind in args.kinds:
        for direction in args.directions:
            a, b = found[(kind, direction, small)], found[(kind, direction, large)]
            name = f"{kind}_{direction}"
            print_ratio(f"{name}_traced_peak_{large}_vs_{small}mib", b["traced_peak"] / max(a["traced_peak"], 1),
                        f"tracemalloc peak at {large} MiB / at {small} MiB; 1.00 = flat")
            print_ratio(f"{name}_rss_peak_{large}_vs_{small}mib", b["rss_peak"] / max(a["rss_peak"], 1),
                        f"process peak RSS at {large} MiB / at {small} MiB; 1.00 = flat")
            growth = max(0, b["rss_peak"] - b["rss_before"])
            print_ratio(f"{name}_rss_growth_per_byte_{large}mib", growth / (large * MIB),
                        f"RSS growth during the transfer / snapshot size at {large} MiB; 0.00 = nothing held", digits=3)
            if (kind, direction) == ("s3", "backup"):
                beyond = max(found[(kind, direction, n)]["traced_peak"] - _bound(n * MIB)[2] for n in sizes)
                print_ratio(f"{name}_traced_mib_beyond_parts_bound", max(0, beyond) / MIB,
                            "largest tracemalloc peak beyond parts in flight x part size, in MiB (0 = within): "
                            "the 1 MiB chunks on their way (download, sha256 queue), whatever the size", digits=1)
    return 0


def _bound(size: int) -> tuple[int, int, int]:
    """(part size, parts in flight, their product) of qbr's S3 upload of a snapshot of `size` bytes."""
    from qbr.repository.multipart import part_size_for, parts_in_flight

    part = part_size_for(size)
    flight = parts_in_flight(part, size_known=True)
    return part, flight, part * flight


def _row(kind: str, direction: str, size_mib: int, size: int, result: dict) -> list[object]:
    growth = max(0, result["rss_peak"] - result["rss_before"])
    part, flight, bound = _bound(size) if (kind, direction) == ("s3", "backup") else (0, 0, 0)
    return [
        kind, direction, size_mib,
        f"{result['traced_peak'] / MIB:.1f}",
        f"{result['rss_before'] / MIB:.1f}",
        f"{result['rss_peak'] / MIB:.1f}",
        f"{growth / MIB:.1f}",
        f"{size / MIB / max(result['seconds'], 1e-9):.0f}",
        f"{part / MIB:.0f}" if part else "-",
        str(flight) if part else "-",
        f"{bound / MIB:.0f}" if part else "-",
    ]


if __name__ == "__main__":
    sys.exit(main())
