"""Throughput of qbr's streamed transfers against a plain copy of the same bytes, in the same run.

    python benchmarks/transfer.py [--size-mib 256 [1024 ...]] [--repeat 5] [--moto process|in-process]
                                  [--in-flight N] [--compare-in-flight N ...] [--without-sha256]
                                  [--checksums when_required|when_supported] [--s3-backup-only] [--breakdown]

Backup: one synthetic snapshot of a Qdrant emulator node (its own process) goes through qbr's
real path (QdrantClient.download_snapshot -> qbr.transfer.verified (sha256 + size) ->
Repository.put_stream with the snapshot's size) into (a) a local-folder repository and (b) S3
(moto's server in a process of its own, as a real S3 endpoint is another process or machine;
`--moto in-process` runs moto's ThreadedMotoServer in this process, as the test suite does, where
its ~6 CPU ms/MiB share this interpreter with both clients). `--without-sha256` adds qbr's S3 path
without the check of Qdrant's sha256 (what that check costs; boto3 checks nothing), and qbr's
upload alone (S3Repository.put_stream fed by the baseline's own http.client GET).
Baselines: the same HTTP download copied to a new file with shutil.copyfileobj (no hashing;
fsynced, as the local repository fsyncs); the same copy hashing every chunk with sha256 on the way (the
least a verified copy can do, in one thread); and the same download handed to a plain boto3
upload_fileobj (its defaults: 8 MiB parts, 10 threads, and the client's own defaults; checked and
printed at the start).
Restore: QdrantClient.upload_snapshot streaming the archive from the repository into the
node's upload endpoint, against a plain httpx multipart upload of the file to the same endpoint
with the same query (so the node does the same work).
Each pair runs interleaved `--repeat` times; the table shows the median.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import (
    MIB,
    drop_bucket,
    emulator_process,
    median,
    mib_per_s,
    moto_in_process,
    moto_process,
    print_ratio,
    print_table,
    s3_client,
    use_fake_aws,
)

from qbr.qdrant import QdrantClient, SnapshotInfo
from qbr.repository import Repository, open_local_repository
from qbr.repository.accounting import describe_requests, since
from qbr.repository.s3 import S3Repository
from qbr.transfer import Digest, Progress, verified

RESTORE_TARGET = "restored"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one run."""
    started, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - started, time.process_time() - cpu


def _raw_get(url: str, path: str) -> http.client.HTTPResponse:
    """A plain http.client GET: the least a download can do."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    conn.request("GET", path, headers={"Accept-Encoding": "identity"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}")
    return response


# ---------------------------------------------------------------- backup direction


def baseline_to_file(url: str, path: str, target: Path) -> None:
    response = _raw_get(url, path)
    with open(target, "wb") as out:
        shutil.copyfileobj(response, out, MIB)
        out.flush()
        os.fsync(out.fileno())
    response.close()


def baseline_to_file_sha256(url: str, path: str, target: Path, expected: str) -> None:
    """copyfileobj's loop with every chunk hashed on the way, checked at the end: a verified copy."""
    import hashlib

    response = _raw_get(url, path)
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        while chunk := response.read(MIB):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    response.close()
    if digest.hexdigest() != expected:
        raise RuntimeError("the plain copy's sha256 does not match the node's checksum")


def baseline_to_s3(url: str, path: str, s3, bucket: str, key: str) -> None:
    response = _raw_get(url, path)
    s3.upload_fileobj(response, bucket, key)  # no Config: boto3's TransferConfig defaults
    response.close()


def baseline_settings(s3) -> str:
    """What the boto3 baseline runs with, checked to be boto3's defaults (8 MiB parts, 10 threads)."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig()
    assert (config.multipart_chunksize, config.multipart_threshold, config.max_request_concurrency) == (
        8 * MIB, 8 * MIB, 10), "boto3's TransferConfig defaults changed"
    client = s3.meta.config
    return (f"boto3 upload_fileobj: {config.multipart_chunksize // MIB} MiB parts (threshold "
            f"{config.multipart_threshold // MIB} MiB), {config.max_request_concurrency} threads, "
            f"{client.max_pool_connections} connections, request checksums {client.request_checksum_calculation} "
            f"(CRC32 on each part)")


def qbr_settings(remote: S3Repository, size: int) -> str:
    from qbr.repository.multipart import part_size_for, parts_in_flight

    part = part_size_for(size, remote.part_size)
    client = remote._client.meta.config
    return (f"qbr S3Repository.put_stream: {part // MIB} MiB parts, "
            f"{parts_in_flight(part, True, remote.in_flight)} in flight, {client.max_pool_connections} "
            f"connections, request checksums {client.request_checksum_calculation} "
            + ("(CRC32 on each part)" if client.request_checksum_calculation == "when_supported" else "(no CRC32)"))


def qbr_backup(client: QdrantClient, collection: str, snapshot: SnapshotInfo, repo: Repository, key: str,
               *, check: bool = True) -> None:
    """What Applier._snapshot_and_store does for one archive, minus creating and deleting the snapshot
    (`check=False`: without the sha256 check, to show what it costs)."""
    digest = Digest()
    with client.download_snapshot(collection, snapshot.name) as stream:
        if not check:
            repo.put_stream(key, stream, size=snapshot.size)
            return
        repo.put_stream(
            key,
            verified(
                stream,
                digest,
                what=f"snapshot {snapshot.name}",
                expected_size=snapshot.size,
                expected_sha256=snapshot.checksum,
                progress=Progress(enabled=False),
            ),
            size=snapshot.size,
        )
    assert digest.size == snapshot.size and digest.sha256 == snapshot.checksum


# ---------------------------------------------------------------- restore direction


def baseline_upload(http: httpx.Client, url: str, snapshot: SnapshotInfo, file: Path) -> None:
    with open(file, "rb") as handle:
        response = http.post(
            f"{url}/collections/{RESTORE_TARGET}/snapshots/upload",
            params={"wait": "true", "priority": "snapshot", "checksum": snapshot.checksum},
            files={"snapshot": (snapshot.name, handle, "application/octet-stream")},
        )
    if response.status_code != 200:
        raise RuntimeError(f"plain upload answered {response.status_code}: {response.text[:200]}")


def qbr_restore(client: QdrantClient, snapshot: SnapshotInfo, repo: Repository, key: str) -> None:
    """What restore._recover does when the node cannot fetch from the repository."""
    client.upload_snapshot(
        RESTORE_TARGET,
        lambda: repo.open_read(key),
        filename=snapshot.name,
        size=snapshot.size,
        priority="snapshot",
        checksum=snapshot.checksum,
    )


def _forget_upload(client: QdrantClient, snapshot: SnapshotInfo) -> None:
    client.delete_snapshot(RESTORE_TARGET, snapshot.name)


# ---------------------------------------------------------------- where the time goes


def breakdown(size_mib: int, repeat: int, url: str, work: Path) -> None:
    """The backup path to a local folder built up step by step, so each step's cost shows."""
    import hashlib

    from qbr.qdrant.streams import _exact_chunks

    collection = f"bench{size_mib}"
    client = QdrantClient(url, snapshot_timeout=600, timeout=600)
    snapshot = client.create_snapshot(collection)
    assert snapshot is not None
    path = f"/collections/{collection}/snapshots/{snapshot.name}"
    repo = open_local_repository(work / "breakdown")
    target = work / "breakdown.file"

    def raw(sink: Callable[[bytes], None]) -> None:
        response = _raw_get(url, path)
        while chunk := response.read(MIB):
            sink(chunk)
        response.close()

    def raw_sha256() -> None:
        digest = hashlib.sha256()
        raw(digest.update)

    http = httpx.Client(timeout=600, trust_env=False)

    def httpx_read(how: str) -> Callable[[], None]:
        def run() -> None:
            with http.stream("GET", url + path) as response:
                pieces = {"chunker": lambda: response.iter_bytes(MIB), "raw": response.iter_raw,
                          "exact": lambda: _exact_chunks(response.iter_raw(), MIB)}[how]()
                for _ in pieces:
                    pass
        return run

    def qbr_read(hashing: str) -> Callable[[], None]:
        def run() -> None:
            with client.download_snapshot(collection, snapshot.name) as stream:
                if hashing == "inline":
                    digest = hashlib.sha256()
                    for chunk in stream:
                        digest.update(chunk)
                    assert digest.hexdigest() == snapshot.checksum
                    return
                chunks = verified(stream, Digest(), what="x", expected_size=snapshot.size,
                                  expected_sha256=snapshot.checksum) if hashing == "thread" else stream
                for _ in chunks:
                    pass
        return run

    def qbr_store() -> None:
        with client.download_snapshot(collection, snapshot.name) as stream:
            repo.put_stream("k", stream, size=snapshot.size)

    def same_file() -> None:  # the old baseline: the same file truncated and written again
        baseline_to_file(url, path, work / "breakdown.same")

    steps = [
        ("http.client GET, 1 MiB reads, discarded", lambda: raw(lambda chunk: None)),
        ("  + sha256", raw_sha256),
        ("  + written to a new file + fsync (baseline 1)", lambda: baseline_to_file(url, path, target)),
        ("  + written over the same file + fsync (the old baseline 1)", same_file),
        ("  + sha256 + written to a new file + fsync (baseline 2)",
         lambda: baseline_to_file_sha256(url, path, target, snapshot.checksum)),
        ("httpx stream, iter_bytes(1 MiB) (qbr before), discarded", httpx_read("chunker")),
        ("httpx stream, iter_raw() (64 KiB pieces), discarded", httpx_read("raw")),
        ("  + cut into exact 1 MiB chunks (qbr now), discarded", httpx_read("exact")),
        ("QdrantClient.download_snapshot, discarded", qbr_read("none")),
        ("  + sha256 inline (qbr before)", qbr_read("inline")),
        ("  + transfer.verified, sha256 in its thread (qbr now)", qbr_read("thread")),
        ("QdrantClient.download_snapshot -> LocalRepository.put_stream", qbr_store),
        ("  the whole qbr path (+ verified)", lambda: qbr_backup(client, collection, snapshot, repo, "k")),
    ]
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in steps}
    for n in range(repeat):  # interleaved and turning round, like the main table
        for label, run in steps[n % len(steps):] + steps[:n % len(steps)]:
            runs[label].append(_timed(run))
            target.unlink(missing_ok=True)  # every backup writes a new file, as in the main table
            repo.delete("k")
    rows = []
    for label, _ in steps:
        wall, cpu = median([w for w, _ in runs[label]]), median([c for _, c in runs[label]])
        rows.append([label, f"{mib_per_s(snapshot.size, wall):.0f}", f"{cpu * 1000 / size_mib:.2f}"])
    http.close()
    client.delete_snapshot(collection, snapshot.name)
    client.close()
    print()
    print(f"where the time goes, backup of {size_mib} MiB to a local folder (median of {repeat}, interleaved):")
    print_table(["step", "MiB/s", "cpu ms/MiB"], rows)


# ---------------------------------------------------------------- the run


def run_size(
    size_mib: int, repeat: int, url: str, endpoint: str, bucket: str, work: Path, in_flight: int | None,
    compare: tuple[int, ...] = (), without_sha256: bool = False, show_settings: bool = False, s3_only: bool = False,
    checksums: str | None = None,
) -> tuple[list[list[object]], dict[str, float], str]:
    collection = f"bench{size_mib}"
    client = QdrantClient(url, snapshot_timeout=600, timeout=600)
    started = time.perf_counter()
    snapshot = client.create_snapshot(collection)
    assert snapshot is not None and snapshot.checksum
    created = time.perf_counter() - started
    size = snapshot.size
    path = f"/collections/{collection}/snapshots/{snapshot.name}"
    s3 = s3_client(endpoint)
    local = open_local_repository(work / f"repo-{size_mib}")
    remote = S3Repository(bucket, f"bench-{size_mib}", endpoint, "us-east-1", in_flight=in_flight, checksums=checksums)
    key = f"snapshots/{collection}/bench.{snapshot.name}"
    plain_file = work / f"plain-{size_mib}.snapshot"
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in (
        "plain-file", "plain-file-sha256", "qbr-local", "plain-s3", "qbr-s3", "plain-upload", "qbr-upload-local",
        "qbr-upload-s3", *(f"qbr-s3-{n}" for n in compare), *(["qbr-s3-nosha", "qbr-s3-rawdl"] if without_sha256 else []))}
    others = {n: S3Repository(bucket, f"bench-{size_mib}-{n}", endpoint, "us-east-1", in_flight=n, checksums=checksums)
              for n in compare}

    requests = ""
    if show_settings:
        print("  " + baseline_settings(s3) + "\n  " + qbr_settings(remote, size), flush=True)

    def plain_local(sha256: bool) -> Callable[[], None]:
        def run() -> None:
            name = "plain-file-sha256" if sha256 else "plain-file"
            work_ = (lambda: baseline_to_file_sha256(url, path, plain_file, snapshot.checksum)) if sha256 else (
                lambda: baseline_to_file(url, path, plain_file))
            times[name].append(_timed(work_))
            assert plain_file.stat().st_size == size
            plain_file.unlink()
        return run

    def qbr_local() -> None:
        times["qbr-local"].append(_timed(lambda: qbr_backup(client, collection, snapshot, local, key)))
        assert local.head(key).size == size
        local.delete(key)

    def plain_s3() -> None:
        plain_key = f"plain-{size_mib}/{uuid.uuid4().hex}"
        times["plain-s3"].append(_timed(lambda: baseline_to_s3(url, path, s3, bucket, plain_key)))
        s3.delete_object(Bucket=bucket, Key=plain_key)

    def qbr_s3() -> None:
        nonlocal requests
        before = remote.requests
        times["qbr-s3"].append(_timed(lambda: qbr_backup(client, collection, snapshot, remote, key)))
        requests = describe_requests(since(remote.requests, before))
        assert remote.head(key).size == size
        remote.delete(key)

    # Every backup writes a new file, and the previous run's file is deleted before the next run
    # starts (untimed), for the baselines as for qbr: a file rewritten in place reuses the pages it
    # just freed, a new one may need fresh ones (slower on this VM; see the README). The order of
    # the runs turns round from one repetition to the next, so none is always first or last.
    def qbr_s3_with(n: int) -> Callable[[], None]:
        def run() -> None:
            times[f"qbr-s3-{n}"].append(_timed(lambda: qbr_backup(client, collection, snapshot, others[n], key)))
            others[n].delete(key)
        return run

    def qbr_s3_unchecked() -> None:
        times["qbr-s3-nosha"].append(_timed(lambda: qbr_backup(client, collection, snapshot, remote, key, check=False)))
        remote.delete(key)

    def qbr_upload_alone() -> None:  # qbr's upload fed by the baseline's own GET: the upload path alone
        def run() -> None:
            response = _raw_get(url, path)
            remote.put_stream(key, iter(lambda: response.read(MIB), b""), size=size)
            response.close()
        times["qbr-s3-rawdl"].append(_timed(run))
        remote.delete(key)

    local_runs = [] if s3_only else [plain_local(False), plain_local(True), qbr_local]
    s3_runs = [plain_s3, qbr_s3, *(qbr_s3_with(n) for n in compare), *([qbr_s3_unchecked, qbr_upload_alone] if without_sha256 else [])]
    for n in range(repeat):
        for run in local_runs[n % 3:] + local_runs[:n % 3]:
            run()
        for run in s3_runs[n % len(s3_runs):] + s3_runs[:n % len(s3_runs)]:
            run()
    # What the restores read (untimed).
    baseline_to_file(url, path, plain_file)
    qbr_backup(client, collection, snapshot, local, key)
    qbr_backup(client, collection, snapshot, remote, key)

    http = httpx.Client(timeout=600, trust_env=False)  # made once, as the QdrantClient is
    for _ in range(0 if s3_only else repeat):
        times["plain-upload"].append(_timed(lambda: baseline_upload(http, url, snapshot, plain_file)))
        _forget_upload(client, snapshot)
        times["qbr-upload-local"].append(_timed(lambda: qbr_restore(client, snapshot, local, key)))
        _forget_upload(client, snapshot)
        times["qbr-upload-s3"].append(_timed(lambda: qbr_restore(client, snapshot, remote, key)))
        _forget_upload(client, snapshot)

    http.close()
    remote.delete(key)
    local.delete(key)
    plain_file.unlink()
    client.delete_snapshot(collection, snapshot.name)
    client.close()
    print(f"  {size_mib} MiB: the node made the snapshot ({size} bytes, its sha256 computed) in {created:.1f} s",
          flush=True)

    times = {name: runs for name, runs in times.items() if runs}
    rate = {name: mib_per_s(size, median([wall for wall, _ in runs])) for name, runs in times.items()}
    cpu = {name: median([c for _, c in runs]) * 1000 / (size / MIB) for name, runs in times.items()}
    rows = []
    pairs = [*PAIRS, *((f"backup -> S3 (moto), {n} parts in flight", "plain-s3", f"qbr-s3-{n}") for n in compare),
             *([("backup -> S3 (moto), no sha256 check", "plain-s3", "qbr-s3-nosha"),
                ("backup -> S3 (moto), qbr's upload alone", "plain-s3", "qbr-s3-rawdl")] if without_sha256 else [])]
    for direction, base, ours in pairs:
        if base not in times or ours not in times:
            continue
        rows.append([
            f"{size_mib} MiB", direction, f"{rate[base]:.0f}", f"{rate[ours]:.0f}", f"{rate[ours] / rate[base]:.2f}",
            f"{cpu[base]:.2f}", f"{cpu[ours]:.2f}",
        ])
    return rows, {**{f"rate:{k}": v for k, v in rate.items()}, "size_mib": size_mib}, requests


#: (what is measured, baseline run, qbr run)
PAIRS = (
    ("backup -> local folder", "plain-file", "qbr-local"),
    ("backup -> local folder, vs copy+sha256", "plain-file-sha256", "qbr-local"),
    ("backup -> S3 (moto)", "plain-s3", "qbr-s3"),
    ("restore <- local folder", "plain-upload", "qbr-upload-local"),
    ("restore <- S3 (moto)", "plain-upload", "qbr-upload-s3"),
)
RATIOS = (
    ("backup_local", "plain-file", "qbr-local", "qbr MiB/s / plain copyfileobj+fsync MiB/s"),
    ("backup_local_vs_sha256", "plain-file-sha256", "qbr-local",
     "qbr MiB/s / plain copy+sha256+fsync MiB/s (the limit of a verified copy in one thread)"),
    ("backup_s3", "plain-s3", "qbr-s3", "qbr MiB/s / plain boto3 upload_fileobj MiB/s"),
    ("restore_local", "plain-upload", "qbr-upload-local", "qbr upload_snapshot MiB/s / plain httpx upload MiB/s"),
    ("restore_s3", "plain-upload", "qbr-upload-s3",
     "qbr upload_snapshot reading S3 MiB/s / plain httpx upload of a local file MiB/s"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qbr transfer throughput vs a plain copy, same run.")
    parser.add_argument("--size-mib", type=int, nargs="+", default=[256], help="snapshot sizes in MiB (default 256)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each transfer; the median is shown (default 5)")
    parser.add_argument("--moto", choices=["process", "in-process"], default="process",
                        help="run moto's S3 server in a process of its own (default: a real endpoint is another "
                             "process or machine) or in this one (as the tests do; it then competes for this "
                             "interpreter's CPU)")
    parser.add_argument("--in-flight", type=int, default=None,
                        help="parts of an S3 upload in flight at once (default: qbr's choice, multipart.parts_in_flight)")
    parser.add_argument("--compare-in-flight", type=int, nargs="*", default=[],
                        help="also back up into S3 with these many parts in flight (extra rows and ratios)")
    parser.add_argument("--without-sha256", action="store_true",
                        help="also back up into S3 without checking Qdrant's sha256, and with qbr's upload alone "
                             "fed by the baseline's GET (extra rows and ratios)")
    parser.add_argument("--checksums", choices=["when_required", "when_supported"], default=None,
                        help="qbr's S3 checksum mode (the manifest's `checksums`); default: qbr's for a custom "
                             "endpoint, when_required (no CRC32); when_supported is botocore's and boto3's default")
    parser.add_argument("--s3-backup-only", action="store_true",
                        help="only the backups into S3 (no local backups, no restores): more runs in the same time")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the local backup path step by step (first size only)")
    args = parser.parse_args(argv)
    use_fake_aws()
    print(f"transfer benchmark: sizes {args.size_mib} MiB, {args.repeat} runs each, median shown; "
          f"moto {args.moto}; S3 parts in flight {args.in_flight or 'as qbr chooses'}; {os.cpu_count()} CPUs; "
          f"load average {_load()}", flush=True)
    all_rows: list[list[object]] = []
    results: list[dict[str, float]] = []
    requests: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qbr-bench-transfer-") as tmp:
        work = Path(tmp)
        synthetic = {f"bench{n}": n * MIB for n in args.size_mib}
        moto = moto_in_process() if args.moto == "in-process" else moto_process()
        with emulator_process(synthetic=synthetic, data_dir=work / "emulator") as url, moto as endpoint:
            s3 = s3_client(endpoint)
            bucket = f"qbr-bench-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket)
            try:
                for size_mib in args.size_mib:
                    rows, rate, counted = run_size(size_mib, args.repeat, url, endpoint, bucket, work, args.in_flight,
                                                   tuple(args.compare_in_flight), args.without_sha256,
                                                   show_settings=not all_rows, s3_only=args.s3_backup_only,
                                                   checksums=args.checksums)
                    all_rows += rows
                    results.append(rate)
                    requests.append(f"{size_mib} MiB: {counted}")
                if args.breakdown:
                    breakdown(args.size_mib[0], args.repeat, url, work)
            finally:
                drop_bucket(s3, bucket)
    print()
    print("baselines: backup -> local = http.client GET + shutil.copyfileobj to a new file + fsync (no hashing);")
    print("           vs copy+sha256 = the same loop hashing each 1 MiB read with sha256 (one thread), then fsync;")
    print("           backup -> S3 = the same GET handed to boto3 upload_fileobj (defaults: 8 MiB parts, 10 threads);")
    print("           restore = httpx multipart upload of the plain file to the same upload endpoint, same query.")
    print("qbr path:  backup = QdrantClient.download_snapshot -> transfer.verified -> Repository.put_stream;")
    print("           restore = QdrantClient.upload_snapshot(lambda: repo.open_read(key)).")
    print("cpu = CPU ms per MiB of this process (the emulator runs in another process; moto "
          + ("in this one)." if args.moto == "in-process" else "in another too)."))
    print("S3 requests of one qbr backup (repo.requests, retries included): " + "; ".join(requests))
    print(f"load average at the end: {_load()}")
    print()
    print_table(["size", "direction", "base MiB/s", "qbr MiB/s", "qbr/base", "base cpu", "qbr cpu"], all_rows)
    print()
    for rate in results:
        n = int(rate["size_mib"])
        for name, base, ours, note in RATIOS:
            if f"rate:{ours}" not in rate:
                continue
            print_ratio(f"{name}_{n}mib", rate[f"rate:{ours}"] / rate[f"rate:{base}"], note)
        for k in args.compare_in_flight:
            print_ratio(f"backup_s3_inflight{k}_{n}mib", rate[f"rate:qbr-s3-{k}"] / rate["rate:plain-s3"],
                        f"qbr with {k} parts in flight MiB/s / plain boto3 upload_fileobj MiB/s")
        if args.without_sha256:
            print_ratio(f"backup_s3_upload_alone_{n}mib", rate["rate:qbr-s3-rawdl"] / rate["rate:plain-s3"],
                        "S3Repository.put_stream fed by the baseline's http.client GET (no sha256) MiB/s / plain boto3 MiB/s")
            print_ratio(f"backup_s3_no_sha256_{n}mib", rate["rate:qbr-s3-nosha"] / rate["rate:plain-s3"],
                        "qbr without its sha256 check MiB/s / plain boto3 upload_fileobj MiB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
