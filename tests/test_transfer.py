"""qbr.transfer: hashing on the fly, mismatches raised before the last chunk, progress on terminals only."""

from __future__ import annotations

import hashlib
import io

import pytest

from qbr.errors import ChecksumError
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
