"""Encrypted transfers against unencrypted ones, same run, same bytes: backup throughput
(download -> sha256 -> age encryption -> repository) over the plain path (download -> sha256 ->
repository), restore throughput (repository -> age decryption -> sha256 check -> upload) over the
plain upload, and memory: Python's traced peak of an encrypted backup and restore at two sizes
(flat: the ratio stays near 1) and the process's peak RSS growth while they run. Each path's CPU
per MiB is measured too, for this process and for the emulator's: on a machine whose cores are
the limit (two, shared with the emulator), the ratio of the sums is the throughput ratio to expect.

    python benchmarks/encryption.py --size-mib 64 256 --repeat 3

Both paths are qbr's own code (qbr.apply.at_rest.put_encrypted and plaintext, and the same
transfer.verified / Repository.put_stream / QdrantClient.upload_snapshot the plain path uses),
into a local folder repository; the emulator serves the snapshot from its own process.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from _common import MIB, emulator_process, median, print_ratio, print_table

from qbr import encryption
from qbr.apply.at_rest import encrypts_inline, plaintext, put_encrypted
from qbr.qdrant import QdrantClient, SnapshotInfo
from qbr.records import ArchiveRecord
from qbr.repository import Repository, open_local_repository
from qbr.transfer import Digest, verified

TARGET = "restored"


def _cpu_self() -> float:
    used = os.times()
    return used.user + used.system


def _cpu_children() -> float:
    """CPU seconds of this process's live children (the emulator), from /proc (Linux)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _timed(work: Callable[[], object]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, CPU seconds of the emulator) of `work`."""
    started, mine, theirs = time.perf_counter(), _cpu_self(), _cpu_children()
    work()
    return time.perf_counter() - started, _cpu_self() - mine, _cpu_children() - theirs


def backup(client: QdrantClient, collection: str, snapshot: SnapshotInfo, repo: Repository, key: str, recipients: list | None) -> Digest | None:
    digest = Digest()
    with client.download_snapshot(collection, snapshot.name) as stream:
        plain = verified(stream, digest, what="snapshot", expected_size=snapshot.size, expected_sha256=snapshot.checksum,
                         inline=encrypts_inline(repo, recipients))  # as qbr.apply.backup does
        if recipients is None:
            repo.put_stream(key, plain, size=snapshot.size)
            return None
        return put_encrypted(repo, key, plain, recipients, snapshot.size, "snapshot")


def restore(client: QdrantClient, snapshot: SnapshotInfo, repo: Repository, archive: ArchiveRecord) -> None:
    client.upload_snapshot(TARGET, lambda: plaintext(repo, archive, "archive"), filename=snapshot.name,
                           size=snapshot.size, priority="snapshot", checksum=snapshot.checksum)
    client.delete_snapshot(TARGET, snapshot.name)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(size_mib: int, repeat: int, url: str, work: Path, recipients: list) -> tuple[dict[str, tuple[float, float, float]], float, float]:
    collection = f"bench{size_mib}"
    client = QdrantClient(url, snapshot_timeout=600, timeout=600)
    snapshot = client.create_snapshot(collection)
    assert snapshot is not None and snapshot.checksum and snapshot.size
    repo = open_local_repository(work / f"repo-{size_mib}")
    plain_key, sealed_key = f"snapshots/{collection}/plain", f"snapshots/{collection}/sealed"
    # Both restores read an archive written once, here, so both find it in the same cache state
    # (a backup drops what it wrote from the page cache); the timed backups write beside them.
    backup(client, collection, snapshot, repo, plain_key, None)
    plain_archive = ArchiveRecord(plain_key, snapshot.size, snapshot.checksum, "collection", (0,), url)
    stored = backup(client, collection, snapshot, repo, sealed_key, recipients)
    assert stored is not None
    sealed_archive = ArchiveRecord(sealed_key, snapshot.size, snapshot.checksum, "collection", (0,), url,
                                   encryption="age bench", stored_size=stored.size, stored_blake3=stored.blake3)
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ("backup", "backup-age", "restore", "restore-age")}
    for turn in range(repeat):  # the order turns round between repetitions: neither side always goes first
        order = [False, True] if turn % 2 == 0 else [True, False]
        for sealed in order:
            key = (sealed_key if sealed else plain_key) + ".again"
            times["backup-age" if sealed else "backup"].append(
                _timed(lambda: backup(client, collection, snapshot, repo, key, recipients if sealed else None)))
            repo.delete(key)
        for sealed in order:
            archive = sealed_archive if sealed else plain_archive
            times["restore-age" if sealed else "restore"].append(_timed(lambda: restore(client, snapshot, repo, archive)))
    # name -> (MiB/s from the median wall time, median CPU ms/MiB of qbr, of the emulator)
    rates = {name: (size_mib / median([v[0] for v in values]), 1000 * median([v[1] for v in values]) / size_mib,
                    1000 * median([v[2] for v in values]) / size_mib) for name, values in times.items()}
    # Memory of encrypted backups and restores, traced (Python's allocations; the highest of two
    # rounds: how full the bounded queues are at the peak varies) and as RSS growth.
    rss_before = _rss_mib()
    tracemalloc.start()
    for _ in range(2):
        backup(client, collection, snapshot, repo, sealed_key + ".traced", recipients)
        repo.delete(sealed_key + ".traced")
        restore(client, snapshot, repo, sealed_archive)
    traced = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    client.delete_snapshot(collection, snapshot.name)
    client.close()
    return rates, traced, _rss_mib() - rss_before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="encrypted transfers vs unencrypted ones, same run.")
    parser.add_argument("--size-mib", type=int, nargs=2, default=[64, 256], help="two snapshot sizes in MiB (default 64 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each transfer; the median is shown (default 3)")
    args = parser.parse_args(argv)
    print(f"encryption benchmark: sizes {args.size_mib} MiB, {args.repeat} runs each, median shown; {os.cpu_count()} CPUs", flush=True)
    identity = encryption.load_identities  # (the identity file is written below, read as a user's would be)
    with tempfile.TemporaryDirectory(prefix="qbr-bench-age-") as tmp:
        work = Path(tmp)
        import pyrage

        secret = pyrage.x25519.Identity.generate()
        (work / "key.txt").write_text(f"{secret}\n")
        encryption.KEYRING.use_file(work / "key.txt")
        recipients = [secret.to_public()]
        assert identity(work / "key.txt")
        rows, cpu_rows, found = [], [], {}
        synthetic = {f"bench{n}": n * MIB for n in args.size_mib}
        with emulator_process(synthetic=synthetic, data_dir=work / "emulator") as url:
            for size_mib in args.size_mib:
                rates, traced, rss = run_size(size_mib, args.repeat, url, work, recipients)
                found[size_mib] = (rates, traced, rss)
                rows.append([f"{size_mib} MiB", f"{rates['backup'][0]:.0f}", f"{rates['backup-age'][0]:.0f}",
                             f"{rates['restore'][0]:.0f}", f"{rates['restore-age'][0]:.0f}", f"{traced:.1f}", f"{rss:.1f}"])
                for name in ("backup", "backup-age", "restore", "restore-age"):
                    _, mine, theirs = rates[name]
                    cpu_rows.append([f"{size_mib} MiB", name, f"{mine:.2f}", f"{theirs:.2f}", f"{mine + theirs:.2f}"])
    print("plain = download -> sha256 -> folder, and folder -> upload; age = the same with age encryption / decryption")
    print("between (an age1 key: qbr.age_format, in a thread of its own). traced = Python's peak MiB during two encrypted backups + restores;")
    print("rss+ = growth of this process's peak RSS during them.")
    print_table(["size", "plain backup MiB/s", "age backup MiB/s", "plain restore MiB/s", "age restore MiB/s", "traced", "rss+"], rows)
    print("CPU ms per MiB (medians): qbr = this process (every thread), emulator = the node's process. When the")
    print("cores are the limit, wall time follows the sum, so plain sum / age sum is the ratio to expect.")
    print_table(["size", "path", "qbr CPU", "emulator CPU", "sum"], cpu_rows)
    small, large = args.size_mib
    for size_mib, (rates, _, _) in found.items():
        for kind in ("backup", "restore"):
            plain, sealed = rates[kind], rates[f"{kind}-age"]
            print_ratio(f"encrypted_{kind}_vs_plain_{size_mib}mib", sealed[0] / plain[0], f"age {kind} MiB/s / plain {kind} MiB/s")
            spent = (plain[1] + plain[2], sealed[1] + sealed[2])  # 0: below the clock tick (10 ms), too small to say
            print_ratio(f"encrypted_{kind}_cpu_bound_{size_mib}mib", spent[0] / spent[1] if all(spent) else 0.0,
                        f"plain {kind} CPU / age {kind} CPU, qbr + emulator: the ratio when the cores are the limit")
    print_ratio(f"encrypted_traced_peak_{large}_vs_{small}mib", found[large][1] / max(found[small][1], 1e-6),
                "traced peak of the larger / the smaller: 1 when memory is flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
