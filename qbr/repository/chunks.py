"""Content-defined chunks: how an archive is cut, how a chunk is stored, and the chunk list.

A dedup repository (`dedup: true`) stores each archive as chunks cut by FastCDC (2020, through
pyfastcdc), each stored once under `chunks/<id[:2]>/<id>` where the id is the BLAKE3 hash of its
plain bytes, compressed with zstd when that makes it smaller. The archive's key holds a small
chunk list (JSON, starting with MAGIC so a reader can tell it from a whole archive: both
encodings share a repository). Parameters and the measurements behind them: benchmarks/README.md.

Every library here (pyfastcdc, zstandard, blake3) is imported inside the functions that use it,
so importing this module costs nothing and the planner never pulls them in.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from qbr.errors import ChecksumError, QbrError

CHUNKS_PREFIX = "chunks/"
INDEX_PREFIX = "index/"
MAGIC = b'{"qbr_chunk_list":1,'
#: FastCDC 2020 parameters (bytes). pyfastcdc's chunks average avg + min (its cut-point skipping).
MIN_SIZE = 512 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 8 * 1024 * 1024
NORMALIZATION = 1
HASH = "blake3"
KEYED_HASH = "blake3-keyed"  # an encrypted repository's ids (qbr.repository.chunk_crypto)
#: Stored chunk objects start with one byte saying how the rest is encoded.
RAW, ZSTD = 0, 1
#: A chunk is compressed only if a sample of it shrinks below this fraction (vectors mostly do not).
SAMPLE_BYTES = 64 * 1024
SAMPLE_RATIO = 0.95


def chunk_key(chunk_id: str) -> str:
    return f"{CHUNKS_PREFIX}{chunk_id[:2]}/{chunk_id}"


def chunk_id_of_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) == 3 and parts[0] + "/" == CHUNKS_PREFIX and len(parts[2]) == 64 and parts[2].startswith(parts[1]):
        return parts[2]
    return None


def digest(data: bytes | memoryview) -> str:
    """A chunk's id: the BLAKE3 hash of its plain bytes, hex."""
    import blake3

    return blake3.blake3(data).hexdigest()


class Codec:
    """Compress and decompress chunks (thread-safe: a zstd context per thread)."""

    def __init__(self, compression: str = "zstd", level: int = 3) -> None:
        self.compression = compression
        self.level = level
        self._local = threading.local()

    def _zstd(self) -> tuple[Any, Any]:
        pair = getattr(self._local, "pair", None)
        if pair is None:
            import zstandard

            pair = self._local.pair = (zstandard.ZstdCompressor(level=self.level), zstandard.ZstdDecompressor())
        return pair

    def encode(self, data: bytes) -> bytes:
        """The stored form: raw, or zstd when a sample (and then the whole) shrinks."""
        if self.compression == "zstd" and data:
            compressor = self._zstd()[0]
            sample = data[:SAMPLE_BYTES]
            if len(sample) < SAMPLE_BYTES or len(compressor.compress(sample)) < SAMPLE_RATIO * len(sample):
                packed = compressor.compress(data)
                if len(packed) + 1 < len(data):
                    return bytes((ZSTD,)) + packed
        return bytes((RAW,)) + data

    def decode(self, stored: bytes, chunk_id: str, length: int | None = None,
               ids: Callable[[bytes], str] | None = digest) -> bytes:
        """The plain bytes of a stored chunk, checked against its id by `ids` (None: not checked
        by id) and its length; ChecksumError if not."""
        if not stored:
            raise ChecksumError(f"chunk {chunk_id} is empty; it is damaged")
        kind, body = stored[0], memoryview(stored)[1:]
        if kind == RAW:
            data = bytes(body)
        elif kind == ZSTD:
            try:
                data = self._zstd()[1].decompress(body, max_output_size=MAX_SIZE)
            except Exception as error:  # zstandard.ZstdError and friends
                raise ChecksumError(f"chunk {chunk_id} does not decompress ({error}); it is damaged") from None
        else:
            raise ChecksumError(f"chunk {chunk_id} has an unknown encoding byte {kind}; it is damaged")
        if length is not None and len(data) != length:
            raise ChecksumError(f"chunk {chunk_id} holds {len(data)} bytes where {length} were listed; it is damaged")
        if ids is not None and ids(data) != chunk_id:
            raise ChecksumError(f"chunk {chunk_id} does not match its hash; it is damaged")
        return data


class _IterReader:
    """A file over a chunk iterator, for pyfastcdc's cut_stream (readinto)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")

    def readinto(self, buffer: memoryview) -> int:
        while not self._view:
            piece = next(self._chunks, None)
            if piece is None:
                return 0
            self._view = memoryview(piece)
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


def cut(chunks: Iterable[bytes], avg_size: int = AVG_SIZE, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE,
        seed: int = 0) -> Iterator[bytes]:
    """The content-defined chunks of a byte stream, each as its own bytes; memory: one max chunk
    plus pyfastcdc's read buffer. An error the source raises propagates unchanged. A `seed`
    (an encrypted repository's, secret) alters FastCDC's gear table, so cut points depend on it."""
    from pyfastcdc import FastCDC

    cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, normalized_chunking=NORMALIZATION, seed=seed)
    for piece in cdc.cut_stream(_IterReader(chunks)):
        yield bytes(piece.data)


@dataclass(frozen=True)
class ChunkList:
    """What an archive's key holds in a dedup repository: its size and its chunks in order."""

    size: int
    chunks: tuple[tuple[str, int], ...]  # (id, plain length)
    chunker: dict[str, Any]
    #: An encrypted repository's list: keyed ids, and per chunk its stored (size, sha256), so
    #: verify checks the stored chunks without the identity.
    stored: tuple[tuple[int, str], ...] = ()

    @property
    def keyed(self) -> bool:
        return bool(self.stored)

    def ids(self) -> set[str]:
        return {c for c, _ in self.chunks}

    def to_bytes(self) -> bytes:
        entries = [[c, n, *s] for (c, n), s in zip(self.chunks, self.stored)] if self.stored else [list(c) for c in self.chunks]
        body = {"size": self.size, "hash": KEYED_HASH if self.stored else HASH, "chunker": self.chunker, "chunks": entries}
        return MAGIC + json.dumps(body, separators=(",", ":")).encode()[1:] + b"\n"

    @staticmethod
    def parse(raw: bytes, key: str) -> "ChunkList":
        if not raw.startswith(MAGIC):
            raise QbrError(f"{key} is not a chunk list")
        try:
            data = json.loads(raw)
            keyed = data.get("hash", HASH) == KEYED_HASH
            if data.get("hash", HASH) not in (HASH, KEYED_HASH):
                raise ValueError(f"chunk ids by {data.get('hash')}, this qbr knows {HASH} and {KEYED_HASH}")
            chunks = tuple((str(e[0]), int(e[1])) for e in data["chunks"])
            stored = tuple((int(e[2]), str(e[3])) for e in data["chunks"]) if keyed else ()
            if sum(n for _, n in chunks) != int(data["size"]):
                raise ValueError("its chunks do not add up to its size")
            return ChunkList(int(data["size"]), chunks, dict(data.get("chunker") or {}), stored)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ChecksumError(f"the chunk list {key} is damaged ({error})") from None


def chunker_params(avg_size: int = AVG_SIZE, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> dict[str, Any]:
    return {"algorithm": "fastcdc2020", "min": min_size, "avg": avg_size, "max": max_size, "nc": NORMALIZATION}
