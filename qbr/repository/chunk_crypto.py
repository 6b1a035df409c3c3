"""Dedup with encryption: keyed chunk ids, and chunks encrypted after compression.

In a dedup repository with `encryption:`, a chunk's id is the keyed BLAKE3 hash of its plain
bytes under the repository's *chunk key* (32 random bytes), so a chunk's name reveals nothing
about its content to whoever cannot compute it; the chunk is compressed, then age-encrypted to
the repository's recipients. Backup hosts hold only public recipients, yet need the key to name
chunks, so the key travels apart from the manifest:

- `qbr chunk-key new REPOSITORY -o FILE` makes it once: FILE (0600) for the backup hosts, and
  `keys/chunk-id.json` in the repository, holding it sealed to the recipients (anyone with an
  identity recovers it: `qbr chunk-key get`), a check value (a keyed hash of a constant) and
  the recipients' fingerprint, both readable;
- a backup reads it from `--chunk-key FILE` / $QBR_CHUNK_KEY_FILE, else unseals it with the
  identity when the host has one; and before anything is written it must match the check value
  (a host with another key would store every chunk again under names nobody else computes).

Restores need only the identity: each chunk is checked against the sha256 its chunk list
recorded, authenticated by age, checked against its id when the key can be unsealed (a
repository whose key object was lost still restores), and the archive against its sha256
before the node sees the last byte. Recipients cannot change under a chunk key: chunks are
shared across sets, so re-encrypting one would touch every set naming it; a changed recipient
list is refused (and so is qbr rekey of such a repository) with one sentence.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any, Callable

from qbr import encryption
from qbr.errors import NotFoundError, QbrError

KEY_OBJECT = "keys/chunk-id.json"
KEY_ENV = "QBR_CHUNK_KEY_FILE"
KEYED_HASH = "blake3-keyed"
AGE_MAGIC = b"age-encryption.org/v1\n"
_CHECK_INPUT = b"qbr chunk key check v1"
_SEED_INPUT = b"qbr chunker seed v1"
_FILE_PREFIX = "QBR-CHUNK-KEY-1-"


def check_value(key: bytes) -> str:
    """What the repository stores readable to tell the right key from another: a keyed hash of a constant."""
    import blake3

    return blake3.blake3(_CHECK_INPUT, key=key).hexdigest()[:32]


def chunker_seed(key: bytes) -> int:
    """The 63-bit seed FastCDC's gear table is altered with, derived from the chunk key: cut points
    (and so chunk sizes) depend on a secret too, as borg's and fastcdc-rs's seeds do."""
    import blake3

    seed = int.from_bytes(blake3.blake3(_SEED_INPUT, key=key).digest()[:8], "little") >> 1  # pyfastcdc shifts it left
    return seed or 1


def keyed_ids(key: bytes) -> Callable[[bytes | memoryview], str]:
    import blake3

    return lambda data: blake3.blake3(data, key=key).hexdigest()


class ChunkKeyFile:
    """The run's chunk key file: --chunk-key FILE, else $QBR_CHUNK_KEY_FILE (read when needed)."""

    def __init__(self) -> None:
        self._path: Path | None = None

    def use_file(self, path: str | os.PathLike[str] | None) -> None:
        self._path = Path(path) if path else None

    def path(self) -> Path | None:
        if self._path is not None:
            return self._path
        env = os.environ.get(KEY_ENV, "").strip()
        return Path(env) if env else None


CHUNK_KEY_FILE = ChunkKeyFile()


def read_key_file(path: Path) -> bytes:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise QbrError(f"cannot read the chunk key file {path}: {getattr(error, 'strerror', None) or error}") from None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(_FILE_PREFIX):
            try:
                key = bytes.fromhex(line[len(_FILE_PREFIX):])
            except ValueError:
                break
            if len(key) == 32:
                return key
    raise QbrError(f"the chunk key file {path} holds no chunk key ({_FILE_PREFIX}... as qbr chunk-key new writes it)")


def write_key_file(path: Path, key: bytes, repository: str) -> None:
    """FILE created exclusively, readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise QbrError(f"{path} exists; qbr never overwrites a key file: name another one") from None
    except OSError as error:
        raise QbrError(f"cannot create the chunk key file {path}: {error.strerror or error}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(f"# qbr chunk key of repository {repository}: names chunks, cannot decrypt them. Keep it secret.\n"
                     f"{_FILE_PREFIX}{key.hex()}\n")


def read_key_object(repo: Any) -> dict[str, Any] | None:
    """The repository's key object, or None when it has none."""
    try:
        data = json.loads(repo.get_bytes(KEY_OBJECT))
        if data.get("qbr_chunk_key") != 1 or not isinstance(data.get("check"), str):
            raise ValueError
        return data
    except NotFoundError:
        return None
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        raise QbrError(f"{repo.describe()}/{KEY_OBJECT} is damaged; delete it and store it again from the key file: qbr chunk-key new REPOSITORY --from FILE") from None


class ChunkSealing:
    """An encrypted dedup repository's chunk ids and chunk encryption, for one process."""

    def __init__(self, name: str, recipients: tuple[str, ...], fingerprint: str) -> None:
        self.name = name
        self.recipient_texts = recipients
        self.fingerprint = fingerprint
        self._guard = threading.Lock()
        self._recipients: list[Any] | None = None
        self._write_key: bytes | None = None
        self._read_key: tuple[bytes | None] | None = None

    def recipients(self) -> list[Any]:
        if self._recipients is None:
            self._recipients = encryption.parse_recipients(self.recipient_texts, f"repositories.{self.name}.encryption")
        return self._recipients

    # -- the key -------------------------------------------------------------------------------

    def writing_ids(self, repo: Any) -> Callable[[bytes | memoryview], str]:
        """The id function a backup names chunks with; refuses, in one sentence, a repository
        without a chunk key, a key that is not the repository's, and changed recipients."""
        return keyed_ids(self._writing_key(repo))

    def writing_seed(self, repo: Any) -> int:
        """The chunker seed a backup cuts with (checked as writing_ids is)."""
        return chunker_seed(self._writing_key(repo))

    def _writing_key(self, repo: Any) -> bytes:
        with self._guard:
            if self._write_key is None:
                self._write_key = self._checked_key(repo)
            return self._write_key

    def _checked_key(self, repo: Any) -> bytes:
        found = read_key_object(repo)
        if found is None:
            raise QbrError(f"repository {self.name} is encrypted with dedup and has no chunk key yet: run "
                           f"qbr chunk-key new {self.name} -o FILE once, then give backups --chunk-key FILE (or ${KEY_ENV})")
        if found.get("recipients") != self.fingerprint:
            raise QbrError(f"repository {self.name}'s chunks are encrypted to other recipients than the manifest lists "
                           f"(fingerprint {found.get('recipients')}, the manifest's {self.fingerprint}); chunks are shared "
                           "by sets and are never encrypted again: put the recipients back, or back up into a new repository")
        path = CHUNK_KEY_FILE.path()
        if path is not None:
            key = read_key_file(path)
            where = f"the chunk key in {path}"
        elif encryption.KEYRING.available():
            key = self._unsealed(found)
            where = "the chunk key unsealed with the identity"
        else:
            raise QbrError(f"backing up into repository {self.name} (encrypted, with dedup) needs its chunk key: pass "
                           f"--chunk-key FILE or set {KEY_ENV} (qbr chunk-key get {self.name} -o FILE makes one with the identity)")
        if check_value(key) != found["check"]:
            raise QbrError(f"{where} is not repository {self.name}'s chunk key (its check value differs); nothing was "
                           "written: use the key file qbr chunk-key new made for this repository")
        return key

    def _unsealed(self, found: dict[str, Any]) -> bytes:
        identities = encryption.KEYRING.identities(f"unsealing repository {self.name}'s chunk key")
        value = encryption.unseal(str(found.get("sealed", "")), identities, f"repository {self.name}'s chunk key")
        try:
            key = bytes.fromhex(value["chunk_key"])
        except (KeyError, TypeError, ValueError):
            key = b""
        if len(key) != 32 or check_value(key) != found["check"]:
            raise QbrError(f"repository {self.name}'s sealed chunk key does not match its check value; {KEY_OBJECT} is damaged")
        return key

    def reading_ids(self, repo: Any) -> Callable[[bytes | memoryview], str] | None:
        """The id function to check chunks with as they are read: the key unsealed with the
        identity, or the key file's; None when neither is at hand (the repository's key object
        was lost): then the stored sha256, age and the archive's sha256 still check every byte."""
        with self._guard:
            if self._read_key is None:
                key = self._write_key
                try:
                    found = read_key_object(repo) if key is None else None
                    if key is None and found is not None:
                        path = CHUNK_KEY_FILE.path()
                        if encryption.KEYRING.available():
                            key = self._unsealed(found)
                        elif path is not None and check_value(candidate := read_key_file(path)) == found["check"]:
                            key = candidate
                except encryption.IdentityError:
                    raise
                except QbrError:  # a damaged key object: the other checks still hold every byte
                    key = None
                self._read_key = (key,)
            key = self._read_key[0]
        return None if key is None else keyed_ids(key)

    # -- chunks --------------------------------------------------------------------------------

    def seal(self, stored: bytes) -> bytes:
        return encryption.encrypt_bytes(stored, self.recipients())

    def open(self, sealed: bytes, what: str) -> bytes:
        identities = encryption.KEYRING.identities(f"reading the encrypted chunks of repository {self.name}")
        return encryption.decrypt_bytes(sealed, identities, what)


def new_key_object(repo: Any, sealing: ChunkSealing, key: bytes | None = None) -> bytes:
    """`qbr chunk-key new`: a fresh key (or `key`) stored sealed in the repository, exclusively;
    returns the key for the caller to write to its file."""
    if read_key_object(repo) is not None:
        raise QbrError(f"repository {sealing.name} has a chunk key already; recover it with "
                       f"qbr chunk-key get {sealing.name} -o FILE --identity IDENTITY")
    key = key if key is not None else secrets.token_bytes(32)
    body = {"qbr_chunk_key": 1, "hash": KEYED_HASH, "check": check_value(key), "recipients": sealing.fingerprint,
            "sealed": encryption.seal({"chunk_key": key.hex()}, sealing.recipients())}
    repo.put_bytes(KEY_OBJECT, json.dumps(body, indent=1).encode() + b"\n", if_none_match=True)
    return key


def recovered_key(repo: Any, sealing: ChunkSealing) -> bytes:
    """`qbr chunk-key get`: the repository's key, unsealed with the identity."""
    found = read_key_object(repo)
    if found is None:
        raise QbrError(f"repository {sealing.name} has no chunk key; make one with qbr chunk-key new {sealing.name} -o FILE")
    return sealing._unsealed(found)
