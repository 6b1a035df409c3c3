"""Encrypted dedup against plain dedup, same run, same bytes: write and read throughput and CPU
per MiB of qbr's ChunkedRepository (FastCDC, BLAKE3 ids, zstd) with and without `sealing`
(keyed BLAKE3 ids, each chunk age-encrypted after compression: qbr.repository.chunk_crypto),
into a local folder, and the bytes stored. The archive is half random (vectors do not compress)
and half repeated JSON text (payloads do).

    python benchmarks/dedup_encrypted.py --size-mib 128 --repeat 3

Each repeat writes one archive into a fresh repository of each kind and reads it back (every
chunk checked, the archive's sha256 compared); the medians are printed, and their ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import MIB, median, print_ratio, print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qbr import encryption  # noqa: E402
from qbr.repository import open_local_repository  # noqa: E402
from qbr.repository.chunk_crypto import ChunkSealing, new_key_object  # noqa: E402
from qbr.repository.chunked import ChunkedRepository  # noqa: E402


def make_archive(size: int) -> bytes:
    text = b'{"payload": "a line of text that compresses", "n": 12345}\n'
    return os.urandom(size // 2) + (text * (size // 2 // len(text) + 1))[: size - size // 2]


def one(data: bytes, sealed: bool, public: str) -> tuple[float, float, float, float, int]:
    """(write s, write cpu s, read s, read cpu s, stored bytes) of one archive."""
    root = Path(tempfile.mkdtemp(prefix="qbr-dedup-enc-"))
    inner = open_local_repository(root)
    sealing = None
    if sealed:
        sealing = ChunkSealing("bench", (public,), encryption.fingerprint([public]))
        new_key_object(inner, sealing)
    repo = ChunkedRepository(inner, sealing=sealing)
    pieces = (data[i : i + MIB] for i in range(0, len(data), MIB))
    wall, cpu = time.perf_counter(), time.process_time()
    if sealing is not None:
        repo.put_sealed("snapshots/c/a", pieces)
    else:
        repo.put_stream("snapshots/c/a", pieces)
    write = (time.perf_counter() - wall, time.process_time() - cpu)
    stored = sum(p.stat().st_size for p in (root / "chunks").rglob("*") if p.is_file())
    wall, cpu = time.perf_counter(), time.process_time()
    digest = hashlib.sha256()
    with repo.open_read("snapshots/c/a") as chunks:
        for chunk in chunks:
            digest.update(chunk)
    read = (time.perf_counter() - wall, time.process_time() - cpu)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    return write[0], write[1], read[0], read[1], stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    folder = Path(tempfile.mkdtemp(prefix="qbr-dedup-enc-id-"))
    (folder / "id.txt").write_text(f"{identity}\n")
    encryption.KEYRING.use_file(folder / "id.txt")
    data = make_archive(args.size_mib * MIB)
    runs: dict[str, list[tuple[float, float, float, float, int]]] = {"plain": [], "encrypted": []}
    for _ in range(args.repeat):
        for kind in runs:
            runs[kind].append(one(data, kind == "encrypted", str(identity.to_public())))
    mib = len(data) / MIB
    rows, medians = [], {}
    for kind, found in runs.items():
        w, wc, r, rc = (median([x[i] for x in found]) for i in range(4))
        medians[kind] = (mib / w, wc * 1000 / mib, mib / r, rc * 1000 / mib)
        rows.append([kind, f"{mib / w:.0f}", f"{wc * 1000 / mib:.2f}", f"{mib / r:.0f}", f"{rc * 1000 / mib:.2f}",
                     f"{found[0][4] / MIB:.1f}"])
    print(f"{args.size_mib} MiB archive (half random, half text), {args.repeat} runs each, medians")
    print_table(["repository", "write MiB/s", "write cpu ms/MiB", "read MiB/s", "read cpu ms/MiB", "stored MiB"], rows)
    plain, sealed = medians["plain"], medians["encrypted"]
    print_ratio("encrypted_write_speed_over_plain", sealed[0] / plain[0], "goal: >= 0.7")
    print_ratio("encrypted_read_speed_over_plain", sealed[2] / plain[2], "decrypting each chunk costs")
    print_ratio("encrypted_stored_over_plain", runs["encrypted"][0][4] / runs["plain"][0][4], "compressed before encrypted: ~1")


if __name__ == "__main__":
    main()
