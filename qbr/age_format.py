"""The age v1 file format (https://age-encryption.org/v1) for X25519 keys, on `cryptography`.

Why not pyrage for archives: pyrage holds the GIL for the whole of encrypt_io/decrypt_io and
runs ChaCha20-Poly1305 at about 2 ms/MiB of CPU, so every other thread of a transfer (download,
sha256, upload) stalls while it works. OpenSSL's ChaCha20-Poly1305 through `cryptography` costs
about 0.3 ms/MiB and releases the GIL on each 64 KiB chunk. The files are age files byte for
byte (`age -d`, rage and pyrage open them, and this opens theirs); ssh recipients and
identities, and sealed record fields, stay with pyrage (qbr.encryption chooses).

A file: a text header (`age-encryption.org/v1`, one `-> X25519` stanza per recipient wrapping a
random 16-byte file key, `--- ` and an HMAC of the header), a 16-byte nonce, then the payload in
64 KiB chunks, each sealed with its counter and a last-chunk flag, so a file cut at a chunk
boundary, reordered or altered does not open.
"""

from __future__ import annotations

import base64
import hmac
import os
from collections.abc import Iterable, Iterator
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INTRO = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024  # plaintext bytes per payload chunk
SEALED = CHUNK + 16  # a full chunk with its Poly1305 tag
OUT_CHUNK = 1 << 20  # bytes handed on at a time (about)
HEADER_LIMIT = 1 << 20  # a header longer than this is not one qbr wrote or can read
_X25519_INFO = b"age-encryption.org/v1/X25519"
_ZERO_NONCE = bytes(12)
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


class AgeFormatError(ValueError):
    """The bytes are not an age file this module can open: damaged, cut short, or not age."""


class NoMatchingKey(ValueError):
    """No X25519 stanza of the header opens with the identities given."""

    consumed: bytes = b""


# -- keys ------------------------------------------------------------------------------------


def _polymod(values: list[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            check ^= gen if (top >> i) & 1 else 0
    return check


def bech32_decode(text: str, hrp: str) -> bytes:
    """The bytes of a Bech32 string with human-readable part `hrp` (age's keys; no length cap)."""
    text = text.strip().lower()
    cut = text.rfind("1")
    if cut < 1 or text[:cut] != hrp or any(c not in _BECH32 for c in text[cut + 1:]) or len(text) - cut < 8:
        raise ValueError("not a bech32 key")
    data = [_BECH32.index(c) for c in text[cut + 1:]]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + data) != 1:
        raise ValueError("bad bech32 checksum")
    acc, bits, out = 0, 0, bytearray()
    for value in data[:-6]:
        acc, bits = (acc << 5) | value, bits + 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or acc & ((1 << bits) - 1):
        raise ValueError("bad bech32 padding")
    return bytes(out)


def recipient_key(text: str) -> bytes:
    """The 32-byte X25519 public key of an `age1...` recipient."""
    key = bech32_decode(text, "age")
    if len(key) != 32:
        raise ValueError("an age recipient holds 32 bytes")
    return key


def identity_key(text: str) -> X25519PrivateKey:
    """The X25519 private key of an `AGE-SECRET-KEY-1...` identity."""
    key = bech32_decode(text, "age-secret-key-")
    if len(key) != 32:
        raise ValueError("an age identity holds 32 bytes")
    return X25519PrivateKey.from_private_bytes(key)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    if b"=" in text or b"\r" in text:
        raise AgeFormatError("non-canonical base64 in the header")
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise AgeFormatError("bad base64 in the header") from None


def _mac(file_key: bytes, header: bytes) -> bytes:
    return hmac.new(_hkdf(file_key, b"", b"header"), header, sha256).digest()


# -- encryption ------------------------------------------------------------------------------


def header(recipients: list[bytes]) -> tuple[bytes, bytes]:
    """(the header and payload nonce of a new file to `recipients`, the payload key)."""
    file_key = os.urandom(16)
    text = bytearray(INTRO)
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
        wrap = _hkdf(shared, share + recipient, _X25519_INFO)
        body = ChaCha20Poly1305(wrap).encrypt(_ZERO_NONCE, file_key, None)
        text += b"-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n"  # 43 characters: one short line
    text += b"---"
    text += b" " + _b64(_mac(file_key, bytes(text))) + b"\n"
    nonce = os.urandom(16)
    return bytes(text) + nonce, _hkdf(file_key, nonce, b"payload")


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt(chunks: Iterable[bytes], recipients: list[bytes]) -> Iterator[bytes]:
    """The age file of the bytes `chunks` yields, in pieces of about OUT_CHUNK bytes."""
    start, key = header(recipients)
    aead = ChaCha20Poly1305(key)
    out: list[bytes] = [start]
    held = len(start)
    buf = bytearray()
    counter = 0
    for chunk in chunks:
        buf += chunk
        view = memoryview(buf)
        done = 0
        while len(buf) - done > CHUNK:  # a chunk is final only once the source has ended
            out.append(aead.encrypt(_nonce(counter, False), view[done:done + CHUNK], None))
            counter += 1
            done += CHUNK
            held += SEALED
        view.release()
        del buf[:done]
        if held >= OUT_CHUNK:
            yield b"".join(out)
            out, held = [], 0
    out.append(aead.encrypt(_nonce(counter, True), bytes(buf), None))
    yield b"".join(out)


# -- decryption ------------------------------------------------------------------------------


def _read_header(source: Iterator[bytes]) -> tuple[bytes, bytearray]:
    """(the header through its MAC line, the bytes that came after it)."""
    buf = bytearray()
    for chunk in source:
        buf += chunk
        if len(buf) >= len(INTRO) and not buf.startswith(INTRO):
            raise AgeFormatError("it is not an age file")
        mark = buf.find(b"\n--- ")
        end = buf.find(b"\n", mark + 1) if mark >= 0 else -1
        if end >= 0:
            return bytes(buf[:end + 1]), buf[end + 1:]
        if len(buf) > HEADER_LIMIT:
            break
    raise AgeFormatError("it is cut short or not an age file (no complete header)")


def _stanzas(text: bytes) -> tuple[list[tuple[list[bytes], bytes]], bytes, bytes]:
    """(stanzas as (arguments, body), the MAC, the bytes the MAC covers) of a header."""
    lines = text[len(INTRO):-1].split(b"\n")
    found: list[tuple[list[bytes], bytes]] = []
    i = 0
    while i < len(lines) and lines[i].startswith(b"-> "):
        args = lines[i][3:].split(b" ")
        body = b""
        i += 1
        while i < len(lines):
            body += lines[i]
            i += 1
            if len(lines[i - 1]) < 64:
                break
        else:
            raise AgeFormatError("a header stanza is cut short")
        found.append((args, _unb64(body)))
    if i != len(lines) - 1 or not lines[i].startswith(b"--- ") or not found:
        raise AgeFormatError("its header is malformed")
    mac = _unb64(lines[i][4:])
    return found, mac, text[:len(text) - len(lines[i]) - 1 + 3]


def _file_key(stanzas: list[tuple[list[bytes], bytes]], identities: list[X25519PrivateKey]) -> bytes:
    for args, body in stanzas:
        if args[0] != b"X25519" or len(args) != 2:
            continue
        share = _unb64(args[1])
        if len(share) != 32 or len(body) != 32:
            raise AgeFormatError("an X25519 stanza is malformed")
        for identity in identities:
            try:
                shared = identity.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:  # a low-order share: the shared secret is all zeros
                raise AgeFormatError("an X25519 stanza is invalid") from None
            wrap = _hkdf(shared, share + identity.public_key().public_bytes_raw(), _X25519_INFO)
            try:
                return ChaCha20Poly1305(wrap).decrypt(_ZERO_NONCE, body, None)
            except InvalidTag:
                continue
    raise NoMatchingKey("no identity matched any of the file's recipients")


def open_header(source: Iterator[bytes], identities: list[X25519PrivateKey]) -> tuple[bytes, bytes, bytearray]:
    """Read an age file's header from `source`: (the header's bytes, the payload key, the
    payload bytes read past it). NoMatchingKey when no identity opens it."""
    text, rest = _read_header(source)
    stanzas, mac, covered = _stanzas(text)
    try:
        file_key = _file_key(stanzas, identities)
    except NoMatchingKey as error:
        error.consumed = text + rest  # another decrypter may start over from these bytes
        raise
    if not hmac.compare_digest(_mac(file_key, covered), mac):
        raise AgeFormatError("its header was altered (the MAC does not match)")
    while len(rest) < 16 and (chunk := next(source, None)) is not None:
        rest += chunk
    if len(rest) < 16:
        raise AgeFormatError("it is cut short (no payload)")
    return text, _hkdf(file_key, bytes(rest[:16]), b"payload"), rest[16:]


def decrypt_payload(payload_key: bytes, rest: bytearray, source: Iterator[bytes]) -> Iterator[bytes]:
    """The plaintext of the payload: `rest` (read already), then what `source` yields."""
    aead = ChaCha20Poly1305(payload_key)
    buf = rest
    counter = 0
    out: list[bytes] = []
    held = 0
    ended = False
    while not ended:
        chunk = next(source, None)
        if chunk is None:
            ended = True
        else:
            buf += chunk
        view = memoryview(buf)
        done = 0
        while len(buf) - done > SEALED:  # a full chunk with more after it: not the last
            try:
                out.append(aead.decrypt(_nonce(counter, False), view[done:done + SEALED], None))
            except InvalidTag:
                raise AgeFormatError(f"payload chunk {counter} does not authenticate (altered)") from None
            counter += 1
            done += SEALED
            held += CHUNK
        view.release()
        del buf[:done]
        if held >= OUT_CHUNK and not ended:
            yield b"".join(out)
            out, held = [], 0
    if len(buf) < 16 or (len(buf) == 16 and counter > 0):
        raise AgeFormatError("it is cut short (its last chunk is missing)")
    try:
        out.append(aead.decrypt(_nonce(counter, True), bytes(buf), None))
    except InvalidTag:
        raise AgeFormatError("its last chunk does not authenticate (cut short or altered)") from None
    yield b"".join(out)
