"""Client-side encryption to age recipients (https://age-encryption.org/v1), on pyrage.

Archives and the sensitive parts of set records are encrypted to the repository's recipients
(`age1...` X25519 keys, `ssh-ed25519` / `ssh-rsa` public keys), so a person can decrypt them
without qbr: `age -d -i key.txt archive > snapshot.tar`. Backups need only the public keys;
restores, `verify --deep` and `rekey` need an identity (an age or ssh private key file) from
`--identity FILE` or $QBR_AGE_IDENTITY_FILE. qbr never reads it from the manifest and never
writes it anywhere.

Archive streams to and from age1 (X25519) keys are qbr.age_format's (OpenSSL's ChaCha20-Poly1305,
the GIL released: pyrage's keeps it for the whole file and stalled every other thread of a
transfer); ssh keys go through pyrage's encrypt_io/decrypt_io. Either way the cipher runs in a
thread of its own and hands its output on in chunks through a bounded queue (at most
QUEUE_DEPTH x OUT_CHUNK bytes waiting), so memory stays flat. An error the source raises (a
checksum mismatch, a cut download) comes out of the stream unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from qbr import age_format
from qbr.errors import QbrError

IDENTITY_ENV = "QBR_AGE_IDENTITY_FILE"
METHOD = "age"
AGE_CHUNK = 64 * 1024  # age's STREAM chunk: each carries a 16-byte tag
OUT_CHUNK = 1 << 20  # output handed on in chunks of this size
QUEUE_DEPTH = 4
HEADER_ALLOWANCE = 1024  # bytes of header per recipient, generously (X25519 ~ 100, ssh-rsa ~ 400)

_AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_SSH_RECIPIENT = re.compile(r"^(ssh-ed25519|ssh-rsa) [A-Za-z0-9+/]+={0,3}$")


class IdentityError(QbrError):
    """No identity was given, it cannot be read, or it does not open what it must."""


# -- recipients (pure: the manifest checks them without pyrage) ------------------------------


def canonical_recipient(text: str) -> str | None:
    """A recipient as qbr records it (an ssh key without its comment), or None if malformed."""
    words = text.strip().split()
    if len(words) == 1 and _AGE_RECIPIENT.match(words[0]):
        return words[0]
    if len(words) >= 2 and _SSH_RECIPIENT.match(f"{words[0]} {words[1]}"):
        return f"{words[0]} {words[1]}"
    return None


def read_recipients_file(path: Path) -> tuple[str, ...]:
    """Recipients, one a line (blank lines and # comments skipped), as `age -R` reads them."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise QbrError(f"cannot read the recipients file {path}: {error.strerror or error}") from None
    lines = [line.strip() for line in text.splitlines()]
    return tuple(line for line in lines if line and not line.startswith("#"))


def fingerprint(recipients: Iterable[str]) -> str:
    """A short, stable name for a recipient list (sorted, comments dropped): rekey compares it."""
    keys = sorted({canonical_recipient(r) or r.strip() for r in recipients})
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def ciphertext_size(size: int, recipients: int) -> int:
    """An upper bound of the encrypted size of `size` bytes (S3 sizes its parts by it)."""
    chunks = max(1, -(-size // AGE_CHUNK))
    return size + 16 * chunks + 16 + 200 + HEADER_ALLOWANCE * max(1, recipients)


# -- keys (pyrage) ---------------------------------------------------------------------------


def _pyrage() -> Any:
    try:
        import pyrage
    except ImportError:  # pragma: no cover - a dependency of qbr
        raise QbrError("encryption needs the Python package pyrage; reinstall qbr (pip install qbr)") from None
    return pyrage


def parse_recipients(texts: Iterable[str], where: str) -> list[Any]:
    """pyrage recipients for the texts; a malformed one is a sentence naming `where`."""
    pyrage = _pyrage()
    parsed = []
    for text in texts:
        key = canonical_recipient(text)
        try:
            if key is None:
                raise ValueError("malformed")
            parsed.append(pyrage.x25519.Recipient.from_str(key) if key.startswith("age1") else pyrage.ssh.Recipient.from_str(key))
        except (ValueError, pyrage.RecipientError):
            shown = text.strip()[:24]
            raise QbrError(
                f"{where}: {shown!r}... is not an age recipient (age1...) or an ssh-ed25519/ssh-rsa public key"
            ) from None
    if not parsed:
        raise QbrError(f"{where}: no recipients; list at least one public key")
    return parsed


def load_identities(path: Path) -> list[Any]:
    """The identities in an age identity file (AGE-SECRET-KEY-1... lines) or an ssh private key."""
    pyrage = _pyrage()
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as error:
        raise IdentityError(f"cannot read the identity file {path}: {error.strerror or error}") from None
    try:
        if b"-----BEGIN" in data:
            return [pyrage.ssh.Identity.from_buffer(data)]
        keys = [line.strip() for line in data.decode("utf-8").splitlines()]
        found = [pyrage.x25519.Identity.from_str(k) for k in keys if k.startswith("AGE-SECRET-KEY-")]
    except (ValueError, UnicodeDecodeError, pyrage.IdentityError):
        found = []
    if not found:
        raise IdentityError(
            f"the identity file {path} holds no age identity (AGE-SECRET-KEY-1...) or unencrypted ssh private key"
        )
    return found


class Keyring:
    """The run's identity: the file given with --identity, else $QBR_AGE_IDENTITY_FILE. Read on
    first use, kept in memory only."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._loaded: tuple[Path, list[Any]] | None = None
        self._guard = threading.Lock()

    def use_file(self, path: str | os.PathLike[str] | None) -> None:
        with self._guard:
            self._path = Path(path) if path else None
            self._loaded = None

    def path(self) -> Path | None:
        if self._path is not None:
            return self._path
        env = os.environ.get(IDENTITY_ENV, "").strip()
        return Path(env) if env else None

    def available(self) -> bool:
        return self.path() is not None

    def identities(self, needed_for: str) -> list[Any]:
        path = self.path()
        if path is None:
            raise IdentityError(
                f"{needed_for} needs the private key its recipients were given: pass --identity FILE or set "
                f"{IDENTITY_ENV} (an age identity file or an ssh private key)"
            )
        with self._guard:
            if self._loaded is None or self._loaded[0] != path:
                self._loaded = (path, load_identities(path))
            return self._loaded[1]


KEYRING = Keyring()


# -- small values: sealed JSON ---------------------------------------------------------------


def seal(value: Any, recipients: list[Any]) -> str:
    """JSON of `value`, encrypted, as ASCII text (base64 of the age file)."""
    pyrage = _pyrage()
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(pyrage.encrypt(data, recipients)).decode("ascii")


def unseal(text: str, identities: list[Any], what: str) -> Any:
    pyrage = _pyrage()
    try:
        return json.loads(pyrage.decrypt(base64.b64decode(text), identities))
    except pyrage.DecryptError:
        raise IdentityError(f"{what} cannot be decrypted with the identity given (it was encrypted to other recipients)") from None
    except (ValueError, TypeError):
        raise QbrError(f"{what}: its encrypted part is damaged") from None


# -- streams ---------------------------------------------------------------------------------


class _Stopped(Exception):
    """The consumer went away; the worker thread stops at its next read or write."""


class _SourceReader(io.RawIOBase):
    """A file over a chunk iterator; what the iterator raises is kept to be raised again."""

    def __init__(self, chunks: Iterable[bytes], stop: threading.Event) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")
        self._stop = stop
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._stop.is_set():
            raise _Stopped()
        while not self._view:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return 0
            except BaseException as error:
                self.error = error
                raise
            self._view = memoryview(chunk)
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


class _QueueWriter(io.RawIOBase):
    """A file whose bytes go, OUT_CHUNK at a time, into a bounded queue."""

    def __init__(self, out: queue.Queue[Any], stop: threading.Event) -> None:
        self._out = out
        self._stop = stop
        self._held = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._held += data
        if len(self._held) >= OUT_CHUNK:
            self.send(bytes(self._held))
            self._held.clear()
        return len(data)

    def send(self, item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped()
            try:
                self._out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def rest(self) -> None:
        if self._held:
            self.send(bytes(self._held))
            self._held.clear()


_END = object()


def _received(out: "queue.Queue[Any]", stop: threading.Event, worker: threading.Thread) -> Iterator[bytes]:
    """Start `worker` and yield what it sends through `out` until _END; an exception it sends is
    raised here. A consumer that stops early sets `stop` and drains `out` until the worker ends."""
    worker.start()
    try:
        while True:
            item = out.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                out.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


def _piped(work: Callable[[Any, Any], None], chunks: Iterable[bytes], name: str, translate: Callable[[BaseException], BaseException]) -> Iterator[bytes]:
    out: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()
    source = _SourceReader(chunks, stop)
    writer = _QueueWriter(out, stop)

    def run() -> None:
        try:
            work(io.BufferedReader(source, buffer_size=OUT_CHUNK), writer)
            writer.rest()
            writer.send(_END)
        except BaseException as error:  # the source's own error first: it says what happened
            failure = source.error if source.error is not None else translate(error)
            try:
                writer.send(failure)
            except _Stopped:
                pass

    yield from _received(out, stop, threading.Thread(target=run, name=name, daemon=True))


def _ahead(stream: Iterator[bytes], name: str) -> Iterator[bytes]:
    """`stream`'s chunks, computed in a thread of its own up to QUEUE_DEPTH chunks ahead of the
    consumer, so the cipher (which releases the GIL) runs beside the read and the write. What
    `stream` raises comes out unchanged; a consumer that stops early stops the thread."""
    out: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()
    writer = _QueueWriter(out, stop)

    def run() -> None:
        try:
            for chunk in stream:
                writer.send(chunk)
            writer.send(_END)
        except _Stopped:
            pass
        except BaseException as error:
            try:
                writer.send(error)
            except _Stopped:
                pass
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    yield from _received(out, stop, threading.Thread(target=run, name=name, daemon=True))


def _x25519_keys(keys: list[Any], kind: str) -> list[str] | None:
    """The text of each key when every one is an X25519 `kind` ("Recipient"/"Identity"), else None."""
    pyrage = _pyrage()
    wanted = getattr(pyrage.x25519, kind)
    return [str(key) for key in keys] if keys and all(isinstance(key, wanted) for key in keys) else None


def encrypt_stream(chunks: Iterable[bytes], recipients: list[Any], *, inline: bool = False) -> Iterator[bytes]:
    """The age encryption of the bytes `chunks` yields, streamed: by qbr.age_format (OpenSSL,
    the GIL released) when every recipient is an age1 key, else by pyrage in a thread. `inline`:
    age1 keys encrypt in the consumer's thread instead of one running ahead of it."""
    pyrage = _pyrage()
    keys = _x25519_keys(recipients, "Recipient")
    if keys is not None:
        sealed = age_format.encrypt(chunks, [age_format.recipient_key(key) for key in keys])
        return sealed if inline else _ahead(sealed, "qbr-age-encrypt")

    def translate(error: BaseException) -> BaseException:
        return QbrError(f"encryption failed: {error}")

    return _piped(lambda src, dst: pyrage.encrypt_io(src, dst, recipients), chunks, "qbr-age-encrypt", translate)


def decrypt_stream(chunks: Iterable[bytes], identities: list[Any], what: str) -> Iterator[bytes]:
    """The plaintext of an age file that `chunks` yields, streamed; a wrong identity or damaged
    ciphertext is a sentence naming `what`. X25519 stanzas are opened by qbr.age_format; a file
    none of them opens goes to pyrage when there are ssh identities to try."""
    pyrage = _pyrage()
    wrong = f"{what} cannot be decrypted with the identity given (it was encrypted to other recipients)"

    def translate(error: BaseException) -> BaseException:
        if isinstance(error, pyrage.DecryptError) and "No matching keys" in str(error):
            return IdentityError(wrong)
        return QbrError(f"{what} cannot be decrypted: it is damaged or cut short ({error})")

    def with_pyrage(source: Iterable[bytes]) -> Iterator[bytes]:
        return _piped(lambda src, dst: pyrage.decrypt_io(src, dst, identities), source, "qbr-age-decrypt", translate)

    pyrage_x25519 = [i for i in identities if isinstance(i, pyrage.x25519.Identity)]
    if not pyrage_x25519:
        return with_pyrage(chunks)
    keys = [age_format.identity_key(str(i)) for i in pyrage_x25519]
    others = len(pyrage_x25519) < len(identities)

    def native() -> Iterator[bytes]:
        source = iter(chunks)
        try:
            try:
                _, payload_key, rest = age_format.open_header(source, keys)
            except age_format.NoMatchingKey as error:
                if not others:
                    raise IdentityError(wrong) from None
                yield from with_pyrage(itertools.chain([error.consumed], source))
                return
            yield from age_format.decrypt_payload(payload_key, rest, source)
        except age_format.AgeFormatError as error:
            raise QbrError(f"{what} cannot be decrypted: it is damaged or cut short ({error})") from None

    return _ahead(native(), "qbr-age-decrypt")


# -- small objects: a dedup repository's chunks (qbr.repository.chunk_crypto) ----------------


def encrypt_bytes(data: bytes, recipients: list[Any]) -> bytes:
    """The age encryption of `data`, whole (a chunk: a few MiB at most): by qbr.age_format when
    every recipient is an age1 key (the GIL released), else by pyrage."""
    keys = _x25519_keys(recipients, "Recipient")
    if keys is not None:
        return b"".join(age_format.encrypt([bytes(data)], [age_format.recipient_key(key) for key in keys]))
    return bytes(_pyrage().encrypt(bytes(data), recipients))


def decrypt_bytes(data: bytes, identities: list[Any], what: str) -> bytes:
    """The plaintext of the age file `data`; a wrong identity or damaged ciphertext is a sentence
    naming `what`. X25519 stanzas are opened by qbr.age_format; ssh identities by pyrage."""
    pyrage = _pyrage()
    wrong = f"{what} cannot be decrypted with the identity given (it was encrypted to other recipients)"
    x25519 = [i for i in identities if isinstance(i, pyrage.x25519.Identity)]
    if x25519:
        source = iter([bytes(data)])
        try:
            try:
                _, payload_key, rest = age_format.open_header(source, [age_format.identity_key(str(i)) for i in x25519])
            except age_format.NoMatchingKey:
                if len(x25519) == len(identities):
                    raise IdentityError(wrong) from None
            else:
                return b"".join(age_format.decrypt_payload(payload_key, rest, source))
        except age_format.AgeFormatError as error:
            raise QbrError(f"{what} cannot be decrypted: it is damaged or cut short ({error})") from None
    try:
        return bytes(pyrage.decrypt(bytes(data), identities))
    except pyrage.DecryptError as error:
        if "No matching keys" in str(error):
            raise IdentityError(wrong) from None
        raise QbrError(f"{what} cannot be decrypted: it is damaged or cut short ({error})") from None
