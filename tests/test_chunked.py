"""The dedup repository wrapper (qbr.repository.chunked) over a folder: chunking, dedup,
compression, rebuilds checked chunk by chunk, the chunk index and mixed encodings."""

from __future__ import annotations

import os
import random

import pytest

from qbr.errors import ChecksumError, QbrError
from qbr.repository import open_local_repository
from qbr.repository.chunk_index import ChunkIndex, read_index_files
from qbr.repository.chunked import ChunkedRepository
from qbr.repository.chunks import MAGIC, ChunkList, chunk_key

MIB = 1 << 20


def pieces(data: bytes, size: int = MIB) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def archive(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def repo(tmp_path):
    return ChunkedRepository(open_local_repository(tmp_path / "repo"))


def stored_chunks(repo) -> dict[str, int]:
    return {o.key: o.size for o in repo.inner.list("chunks/")}


def test_an_archive_reads_back_byte_for_byte_and_a_small_change_stores_only_a_few_chunks(repo):
    first = archive(1, 12 * MIB)
    info = repo.put_stream("snapshots/c/one", pieces(first))
    assert info.size == len(first)
    before = stored_chunks(repo)
    second = bytearray(first)
    second[5 * MIB : 5 * MIB + 10] = b"0123456789"
    repo.put_stream("snapshots/c/two", pieces(bytes(second), 300_000))
    added = set(stored_chunks(repo)) - set(before)
    assert 1 <= len(added) <= 2, "one edit touches at most two content-defined chunks"
    with repo.open_read("snapshots/c/two") as chunks:
        assert b"".join(chunks) == bytes(second)
    assert repo.get_bytes("snapshots/c/one") == first
    assert repo.head("snapshots/c/two").size == len(second)
    assert repo.inner.get_bytes("snapshots/c/two").startswith(MAGIC)
    assert repo.presigned_get("snapshots/c/two") is None


def test_compressible_chunks_are_stored_compressed_and_random_ones_as_they_are(repo):
    text = b"".join(b'{"id": %d, "payload": {"tag": "v1"}}\n' % i for i in range(200_000))
    noise = os.urandom(3 * MIB)
    repo.put_stream("snapshots/c/text", pieces(text))
    text_stored = sum(stored_chunks(repo).values())
    assert text_stored < len(text) / 4
    repo.put_stream("snapshots/c/noise", pieces(noise))
    assert sum(stored_chunks(repo).values()) - text_stored == pytest.approx(len(noise), rel=0.01)
    assert repo.get_bytes("snapshots/c/text") == text


def test_compression_none_stores_chunks_as_they_are(tmp_path):
    repo = ChunkedRepository(open_local_repository(tmp_path / "r"), compression="none")
    text = b"abc" * MIB
    repo.put_stream("snapshots/c/a", pieces(text))
    assert sum(stored_chunks(repo).values()) == len(text) + len(stored_chunks(repo))  # one encoding byte each


def test_a_stream_that_fails_leaves_no_archive_and_what_it_stored_is_in_the_index(repo):
    data = archive(2, 6 * MIB)

    def failing():
        yield from pieces(data)[:5]
        raise ChecksumError("cut short")

    with pytest.raises(ChecksumError, match="cut short"):
        repo.put_stream("snapshots/c/bad", failing())
    assert repo.inner.head("snapshots/c/bad") is None
    files, broken = read_index_files(repo.inner)
    assert not broken and not any(f.pending for f in files), "the pending marker is removed once its chunks are confirmed"
    indexed = {cid for f in files for cid in f.chunks}
    assert {k.rsplit("/", 1)[1] for k in stored_chunks(repo)} == indexed


def test_a_damaged_chunk_is_named_when_the_archive_is_read_and_a_missing_one_before(repo):
    data = archive(3, 4 * MIB)
    repo.put_stream("snapshots/c/a", pieces(data))
    listing = ChunkList.parse(repo.inner.get_bytes("snapshots/c/a"), "snapshots/c/a")
    victim = listing.chunks[1][0]
    path = repo.inner.root / chunk_key(victim)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match=f"chunk {victim} .*damaged"):
        with repo.open_read("snapshots/c/a") as chunks:
            b"".join(chunks)
    path.unlink()
    assert repo.index.has(victim), "the index still lists it: a cache, not the truth"
    with pytest.raises(ChecksumError, match=f"chunk {victim} of archive snapshots/c/a is missing"):
        repo.check_archive("snapshots/c/a", len(data))


def test_whole_archives_and_chunked_ones_share_a_repository(repo):
    whole = archive(4, 2 * MIB)
    repo.inner.put_stream("snapshots/c/whole", pieces(whole))
    with repo.open_read("snapshots/c/whole") as chunks:
        assert b"".join(chunks) == whole
    assert repo.head("snapshots/c/whole").size == len(whole)
    repo.check_archive("snapshots/c/whole", len(whole))  # nothing to check: it is one object
    assert repo.put_bytes("sets/b/x.json", b"{}").size == 2 and repo.get_bytes("sets/b/x.json") == b"{}"


def test_the_index_is_a_cache_dedup_never_trusts_a_pending_entry(repo):
    data = archive(5, 3 * MIB)
    repo.put_stream("snapshots/c/a", pieces(data))
    index = ChunkIndex(repo.inner)
    ids = set(index.known())
    assert ids and all(index.exists(i) for i in ids)
    (repo.inner.root / "index").rename(repo.inner.root / "old-index")
    index.announce("index/killed.pending.json", {})
    with pytest.raises(QbrError):
        ChunkList.parse(b"not a list", "k")
    assert set(ChunkIndex(repo.inner).known()) == ids, "a missing index is rebuilt from the stored chunks"


MANIFEST = """
version: 1
clusters:
  prod: {url: "http://127.0.0.1:6333"}
repositories:
  main: {path: ./b%s}
backups:
  nightly: {cluster: prod, repository: main, rpo: 1h}
"""


def test_dedup_is_off_by_default_and_its_keys_are_checked(tmp_path):
    from qbr.errors import ManifestError
    from qbr.manifest import load_manifest

    def load(extra: str):
        path = tmp_path / "qbr.yaml"
        path.write_text(MANIFEST % extra)
        return load_manifest(path).repositories["main"]

    plain = load("")
    assert (plain.dedup, plain.compression, plain.compression_level) == (False, "zstd", 3)
    chosen = load(", dedup: true, compression: none, compression_level: 9")
    assert (chosen.dedup, chosen.compression, chosen.compression_level) == (True, "none", 9)
    with pytest.raises(ManifestError, match="compression"):
        load(", dedup: true, compression: lz4")
    with pytest.raises(ManifestError, match="compression_level"):
        load(", dedup: true, compression_level: 40")


def test_a_dedup_repository_is_opened_wrapped_and_never_presigns(tmp_path):
    from qbr.connections import Connections
    from qbr.manifest import load_manifest

    path = tmp_path / "qbr.yaml"
    path.write_text(MANIFEST % ", dedup: true")
    with Connections(load_manifest(path)) as connections:
        assert isinstance(connections.repository("main"), ChunkedRepository)
        assert connections.can_presign("main") is False


def test_the_sweep_plan_deletes_freed_chunks_now_and_orphans_only_past_the_grace_period():
    from datetime import datetime, timezone

    from qbr.plan import Action
    from qbr.planner.chunks import plan_chunk_sweep
    from qbr.planner.draft import DEFAULT_GRACE, Draft
    from qbr.world import ChunkCensus, ChunkIndexObject, ObservedRepository

    now = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)
    old, recent = "2026-11-19T00:00:00Z", "2026-11-21T11:00:00Z"
    census = ChunkCensus(
        index=(ChunkIndexObject("index/a.json", recent, False, {"c1": 10, "c2": 20, "c3": 30}),
               ChunkIndexObject("index/b.json", old, False, {"c9": 90}),
               ChunkIndexObject("index/c.json", recent, False, {"c8": 80}),
               ChunkIndexObject("index/killed.pending.json", old, True, {})),
        lists={"snapshots/x/a": ("c1", "c2"), "snapshots/x/b": ("c2", "c3")},
        unindexed={"c7": (70, old)},
    )
    repo = ObservedRepository("main", "folder", False, (), {}, chunks=census)
    draft = Draft(actions=[Action(id="gc.main.snapshots/x/a", kind="delete_archive", change="delete", group="g", title="t",
                                  reason="r", params={"repository": "main", "key": "snapshots/x/a"})])
    plan_chunk_sweep(draft, repo, "g", now, DEFAULT_GRACE)
    sweep = draft.actions[-1]
    assert sweep.kind == "sweep_chunks" and sweep.depends_on == ("gc.main.snapshots/x/a",)
    assert sweep.params["chunks"] == ["c1", "c7", "c9"], "freed now; orphans past the grace period; c8 waits; c2, c3 live"
    assert sweep.params["markers"] == ["index/killed.pending.json"] and sweep.params["relist"] is True
    assert "1 unreferenced chunks are younger than the grace period" in sweep.reason

    quiet = Draft()
    tidy = ChunkCensus(index=(ChunkIndexObject("index/a.json", old, False, {"c1": 1}),), lists={"snapshots/x/a": ("c1",)})
    plan_chunk_sweep(quiet, ObservedRepository("main", "folder", False, (), {}, chunks=tidy), "g", now, DEFAULT_GRACE)
    assert quiet.actions == [], "nothing to sweep: no action, so a second plan is empty"


def test_memory_stays_flat_whatever_the_archive_size(tmp_path):
    import tracemalloc

    repo = ChunkedRepository(open_local_repository(tmp_path / "flat"))

    def stream(mib: int):
        rng = random.Random(mib)
        for _ in range(mib):
            yield rng.randbytes(MIB)

    peaks = {}
    for mib in (8, 64):
        tracemalloc.start()
        repo.put_stream(f"snapshots/c/{mib}", stream(mib))
        peaks[mib] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # bound: IN_FLIGHT chunks of at most 8 MiB, plus the chunker's buffer (measured: 28 MiB at 8 MiB, 34-40 up to 192)
    assert peaks[64] < 64 * MIB and peaks[64] < 2 * peaks[8], {k: v >> 20 for k, v in peaks.items()}


# -- encrypted dedup repositories (qbr.repository.chunk_crypto) --------------------------------


@pytest.fixture
def sealed(tmp_path, monkeypatch):
    """An encrypted dedup repository over a folder, with its chunk key made and this run's identity."""
    import pyrage

    from qbr import encryption
    from qbr.repository.chunk_crypto import ChunkSealing, new_key_object

    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "id.txt").write_text(f"{identity}\n")
    encryption.KEYRING.use_file(tmp_path / "id.txt")  # as --identity does (an earlier CLI run may have set another)
    public = str(identity.to_public())
    sealing = ChunkSealing("main", (public,), encryption.fingerprint([public]))
    inner = open_local_repository(tmp_path / "repo")
    new_key_object(inner, sealing)
    yield ChunkedRepository(inner, sealing=sealing, in_flight=2)
    encryption.KEYRING.use_file(None)


class _SlowChunks:
    """A folder whose chunk writes take a while, so two archives written at once overlap."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_bytes(self, key, data, **kw):
        if key.startswith("chunks/"):
            import time

            time.sleep(self.delay)
        return self.inner.put_bytes(key, data, **kw)


def test_two_encrypted_archives_written_at_once_store_a_shared_chunk_once_and_verify_clean(sealed):
    from concurrent.futures import ThreadPoolExecutor

    sealed.inner = _SlowChunks(sealed.inner, 0.05)
    sealed.index.repo = sealed.inner
    shared = archive(7, 6 * MIB)
    with ThreadPoolExecutor(2) as pool:
        digests = list(pool.map(lambda k: sealed.put_sealed(f"snapshots/c/{k}", pieces(shared)), ["a", "b"]))
    keys = ["snapshots/c/a", "snapshots/c/b"]
    scans = sealed.scan_archives(keys)
    assert [(scans[k].read_error, scans[k].size, scans[k].sha256) for k in keys] == [(None, *d) for d in digests]
    assert sealed.get_bytes("snapshots/c/b") == shared


def test_an_encrypted_archive_after_the_index_was_rebuilt_records_the_stored_sha256_of_chunks_it_did_not_store(sealed):
    from qbr.repository.chunk_index import rebuild

    first = archive(8, 5 * MIB)
    sealed.put_sealed("snapshots/c/one", pieces(first))
    rebuild(sealed.inner)  # a listing knows sizes, not sha256s
    sealed.index.reset()
    stored_before = stored_chunks(sealed)
    size, sha = sealed.put_sealed("snapshots/c/two", pieces(first + b"tail"))
    assert set(stored_chunks(sealed)) - set(stored_before) and len(stored_chunks(sealed)) <= len(stored_before) + 2
    assert sealed.scan_archives(["snapshots/c/two"])["snapshots/c/two"].sha256 == sha
    files, _ = read_index_files(sealed.inner)
    assert all(c in {d for f in files for d in f.digests} for c in sealed.read_list("snapshots/c/two").ids())


def test_an_encrypted_chunk_list_names_no_plain_hash_and_a_flipped_byte_is_named_without_the_identity(sealed, monkeypatch):
    import blake3

    from qbr import encryption

    data = archive(9, 3 * MIB)
    sealed.put_sealed("snapshots/c/one", pieces(data))
    listing = sealed.read_list("snapshots/c/one")
    assert listing.keyed and all(blake3.blake3(d).hexdigest() not in listing.ids() for d in pieces(data, 64 * 1024))
    victim = listing.chunks[1][0]
    stored = bytearray(sealed.inner.get_bytes(chunk_key(victim)))
    stored[-5] ^= 0x01
    sealed.inner.put_bytes(chunk_key(victim), bytes(stored))
    encryption.KEYRING.use_file(None)
    monkeypatch.delenv(encryption.IDENTITY_ENV, raising=False)
    scan = sealed.scan_archives(["snapshots/c/one"])["snapshots/c/one"]
    assert victim in scan.read_error and "damaged" in scan.read_error
    with pytest.raises(QbrError, match="needs the private key"):
        sealed.get_bytes("snapshots/c/one")


def test_an_encrypted_repository_cuts_at_keyed_points_and_still_dedups_with_itself(sealed, tmp_path):
    from qbr.repository.chunks import cut

    data = archive(10, 6 * MIB)
    sealed.put_sealed("snapshots/c/one", pieces(data))
    listing = sealed.read_list("snapshots/c/one")
    plain = [len(c) for c in cut(pieces(data), **sealed.sizes)]
    assert [n for _, n in listing.chunks] != plain, "cut points depend on the chunk key"
    assert listing.chunker["seed"] == "keyed" and sum(n for _, n in listing.chunks) == len(data)
    before = stored_chunks(sealed)
    sealed.put_sealed("snapshots/c/two", pieces(data))
    assert stored_chunks(sealed) == before, "the same bytes with the same key: no new chunk"
