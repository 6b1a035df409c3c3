"""qbr.transfer: hashing on the fly (in a thread past the first MiB), mismatches raised before the last
chunk, progress on terminals only; downloads cut into exact chunks."""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading

import httpx
import pytest

from qbr.errors import ChecksumError
from qbr.qdrant import QdrantClient
from qbr.qdrant.streams import _exact_chunks
from qbr.transfer import Digest, Progress, verified


def chunks(data: bytes, size: int = 7):
    return (data[i : i + size] for i in range(0, len(data), size))


def test_verified_passes_bytes_through_and_fills_the_digest():
    data = bytes(range(256)) * 10
    digest = Digest()
    out = b"".join(verified(chunks(data), digest, what="x", expected_size=len(data), expected_sha256=hashlib.sha256(data).hexdigest().upper()))
    assert out == data
    assert digest.size == len(data) and digest.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "size, sha, message",
    [(999, None, "got 2560 bytes where 999 were expected"), (None, "0" * 64, "does not match the expected")],
)
def test_a_mismatch_is_raised_before_the_consumer_sees_the_end(size, sha, message):
    data = bytes(range(256)) * 10
    received = []
    with pytest.raises(ChecksumError, match=message):
        for chunk in verified(chunks(data, 100), Digest(), what="snapshot s", expected_size=size, expected_sha256=sha):
            received.append(chunk)
    assert b"".join(received) != data, "the last chunk is withheld, so an atomic writer never completes"


def test_progress_draws_bytes_rate_and_eta_only_when_enabled():
    screen = io.StringIO()
    progress = Progress(enabled=True, stream=screen, interval=0)
    progress.expect(4 << 20)
    progress.advance(1 << 20)
    progress.close()
    drawn = screen.getvalue()
    assert "1.0 MiB / 4.0 MiB" in drawn and "/s" in drawn and "ETA" in drawn
    quiet = io.StringIO()
    silent = Progress(stream=quiet, interval=0)  # a StringIO is not a terminal
    silent.expect(10)
    silent.advance(10)
    silent.close()
    assert quiet.getvalue() == ""


# -- hashing off the I/O path ------------------------------------------------------------------

MiB = 1 << 20


def hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "qbr-sha256"]


def test_past_the_threshold_the_sha256_runs_in_a_thread_and_still_matches_hashlib():
    data = os.urandom(3 * MiB + 12345)
    digest = Digest()
    seen_threads = []
    out = []
    for chunk in verified(chunks(data, 64 * 1024), digest, what="x", expected_size=len(data),
                          expected_sha256=hashlib.sha256(data).hexdigest()):
        out.append(chunk)
        seen_threads.append(len(hashing_threads()))
    assert b"".join(out) == data
    assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.size == len(data)
    assert seen_threads[0] == 0 and max(seen_threads) == 1  # inline for the first MiB, then one thread
    assert hashing_threads() == []  # ended with the stream


def test_a_threaded_mismatch_still_withholds_the_last_chunk():
    data = os.urandom(2 * MiB + 1)
    received = []
    with pytest.raises(ChecksumError, match="does not match the expected"):
        for chunk in verified(chunks(data, MiB // 2), Digest(), what="s", expected_sha256="0" * 64):
            received.append(chunk)
    assert b"".join(received) == data[: 4 * (MiB // 2)], "everything but the last chunk"
    assert hashing_threads() == []


def test_a_stream_abandoned_midway_or_failing_ends_its_hashing_thread():
    data = os.urandom(4 * MiB)
    stream = verified(chunks(data, MiB // 4), Digest(), what="x")
    for n, _ in enumerate(stream):
        if n == 8:
            break
    assert len(hashing_threads()) == 1
    stream.close()  # what a consumer's failure does to the generator
    assert hashing_threads() == []

    def failing():
        yield from chunks(data, MiB // 4)
        raise OSError("cut")

    with pytest.raises(OSError, match="cut"):
        for _ in verified(failing(), Digest(), what="x"):
            pass
    assert hashing_threads() == []


def test_a_reused_buffer_is_hashed_as_it_was_when_given():
    """A source that refills one bytearray: each chunk is copied before the hasher sees it."""
    buffer = bytearray(MiB)
    expected = hashlib.sha256()

    def refilling():
        for n in range(4):
            buffer[:] = bytes([n]) * MiB
            expected.update(buffer)
            yield buffer

    digest = Digest()
    out = [bytes(c) for c in verified(refilling(), digest, what="x")]
    assert [c[:1] for c in out] == [b"\x00", b"\x01", b"\x02", b"\x03"]
    assert digest.sha256 == expected.hexdigest()


# -- downloads cut into exact chunks ----------------------------------------------------------


def test_exact_chunks_regroups_any_pieces_without_losing_or_reordering_bytes():
    rng = random.Random(7)
    for _ in range(300):
        data = rng.randbytes(rng.randint(0, 400))
        cuts = sorted(rng.sample(range(len(data) + 1), rng.randint(0, min(12, len(data) + 1))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        size = rng.randint(1, 64)
        out = list(_exact_chunks(iter(pieces), size))
        assert b"".join(out) == data
        assert all(len(c) == size for c in out[:-1]) and all(type(c) is bytes for c in out)
        assert not out or 0 < len(out[-1]) <= size


def test_a_download_arrives_in_exact_chunks_whatever_the_socket_gives():
    data = os.urandom(5 * 65536 + 123)

    class Uneven(httpx.SyncByteStream):
        def __iter__(self):
            for offset in range(0, len(data), 50000):  # not a multiple of the chunk size
                yield data[offset : offset + 50000]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(len(data))}, stream=Uneven())

    client = QdrantClient("http://q0:6333", transport=httpx.MockTransport(answer), retries=0)
    with client.download_snapshot("docs", "a.snapshot", chunk_size=65536) as stream:
        got = list(stream)
    assert b"".join(got) == data and stream.size == len(data)
    assert [len(c) for c in got] == [65536] * 5 + [123]


def test_a_chunk_worker_keeps_order_and_hands_back_its_failure():
    from qbr.transfer import ChunkWorker

    done: list[bytes] = []
    worker = ChunkWorker(done.append, "qbr-test-worker")
    pieces = [bytes([n]) * (MiB // 2) for n in range(8)]
    for piece in pieces:
        worker.put(piece)
    worker.finish()
    assert done == pieces  # inline first, then in its thread, in order

    def fails(chunk: bytes) -> None:
        if chunk[:1] == b"\x03":
            raise OSError("disk gone")

    failing = ChunkWorker(fails, "qbr-test-worker")
    with pytest.raises(OSError, match="disk gone"):
        for piece in pieces * 10:  # put() raises once the thread has failed; it never blocks
            failing.put(piece)
        failing.finish()
    failing.close()
    assert not [t for t in threading.enumerate() if t.name == "qbr-test-worker"]
