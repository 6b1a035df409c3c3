"""The manifest: what must be true about backups, read from YAML into frozen dataclasses.

Pipeline: bytes (size and text checks) -> YAML nodes with their marks (no anchors,
no aliases, bounded depth, no duplicate keys) -> ${VAR} interpolation from the
environment -> JSON Schema (schemas/manifest.v1.json) -> cross-reference checks ->
frozen dataclasses. Every problem found on the way is kept, with the line and column
of the node it is about, so one run of `qbr validate` lists them all, as
`FILE:LINE:COL: what is wrong`. Whatever the input, the only exception that leaves
this module is ManifestError.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping
from urllib.parse import urlsplit

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from qbr.durations import parse_duration
from qbr.errors import ManifestError
from qbr.retention import RetentionPolicy

__all__ = [
    "BackupConfig",
    "ClusterConfig",
    "DEFAULT_MANIFEST_PATH",
    "EMBEDDED_SOURCE",
    "Manifest",
    "RepositoryConfig",
    "RestoreConfig",
    "SCHEMA_PATH",
    "StateLocation",
    "load_manifest",
    "load_manifest_text",
    "resolve_manifest_path",
]

SCHEMA_PATH = Path(__file__).parent / "schemas" / "manifest.v1.json"
DEFAULT_MANIFEST_PATH = Path(__file__).parent / "default_manifest.yaml"
EMBEDDED_SOURCE = "<embedded default>"
DEFAULT_STATE_PATH = ".qbr/state.json"

MAX_BYTES = 1 << 20  # a manifest is a page of YAML; anything near this is a mistake
MAX_DEPTH = 32  # the schema needs 5 levels; deeper is junk, and recursion must stay bounded
MAX_PROBLEMS = 200  # beyond this a list of problems helps nobody

_GLOB_CHARS = frozenset("*?[")
_S3_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ClusterConfig:
    """A Qdrant cluster; `urls` lists the known nodes' REST URLs (url first, no trailing '/')."""

    name: str
    urls: tuple[str, ...]
    api_key: str | None = field(repr=False)
    rest_port: int | None
    timeout: timedelta | None
    discover: bool  # only `url` was given: the other nodes come from GET /cluster


@dataclass(frozen=True)
class RepositoryConfig:
    """Where archives and set records live: a prefix in an S3 bucket, or a folder."""

    name: str
    kind: Literal["s3", "path"]
    path: Path | None  # absolute
    bucket: str | None
    prefix: str  # no leading or trailing '/'
    endpoint_url: str | None
    region: str | None


@dataclass(frozen=True)
class StateLocation:
    """Where the state file lives."""

    kind: Literal["path", "s3"]
    path: Path | None
    bucket: str | None
    key: str | None
    endpoint_url: str | None
    region: str | None

    def describe(self) -> str:
        """A short human form: the absolute path, or s3://bucket/key."""
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return str(self.path)


@dataclass(frozen=True)
class BackupConfig:
    """Which collections of a cluster are copied into a repository, how often, how long kept."""

    name: str
    cluster: str
    repository: str
    collections: tuple[str, ...]
    rpo: timedelta
    only_changed: bool
    aliases: bool
    retention: RetentionPolicy

    def selects(self, collection: str) -> bool:
        """Whether this backup covers `collection`: the last glob that matches decides; '!' excludes."""
        return _selects(self.collections, collection)


@dataclass(frozen=True)
class RestoreConfig:
    """A cluster that must hold restored copies of a backup's collections."""

    name: str
    from_backup: str
    to: str
    at: datetime | None  # None: the latest set; else aware UTC
    collections: tuple[tuple[str, str], ...]
    if_exists: Literal["skip", "replace", "fail"]
    aliases: bool
    via: Literal["auto", "url", "upload"]

    def target_name(self, source_collection: str) -> str | None:
        """The collection `source_collection` is restored into; None when no entry matches."""
        return _target_name(self.collections, source_collection)


@dataclass(frozen=True)
class Manifest:
    """A loaded, checked manifest. `sha256` is of the raw bytes, so plans can spot a changed file."""

    source: str
    base_dir: Path
    sha256: str
    version: int
    state: StateLocation
    clusters: Mapping[str, ClusterConfig]
    repositories: Mapping[str, RepositoryConfig]
    backups: Mapping[str, BackupConfig]
    restores: Mapping[str, RestoreConfig]


def _selects(globs: Iterable[str], collection: str) -> bool:
    selected = False
    for glob in globs:
        exclude = glob.startswith("!")
        if fnmatchcase(collection, glob[1:] if exclude else glob):
            selected = not exclude
    return selected


def _target_name(entries: Iterable[tuple[str, str]], source: str) -> str | None:
    for left, right in entries:
        if not fnmatchcase(source, left):
            continue
        if right == "*":
            return source
        if "*" in right:
            left_prefix, left_suffix = left.split("*", 1)
            right_prefix, right_suffix = right.split("*", 1)
            middle = source[len(left_prefix) : len(source) - len(left_suffix)]
            return right_prefix + middle + right_suffix
        return right
    return None


# --------------------------------------------------------------------------- entry points


def resolve_manifest_path(file: str | None) -> Path | None:
    """The manifest to read: the given file (even if missing), else ./qbr.yaml if present, else None (the embedded default)."""
    if file:
        return Path(file)
    candidate = Path("qbr.yaml")
    return candidate if candidate.exists() else None


def load_manifest(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Manifest:
    """Read and check a manifest file; None reads the embedded default (relative paths from cwd)."""
    if path is None:
        data = DEFAULT_MANIFEST_PATH.read_bytes()
        return load_manifest_text(data, EMBEDDED_SOURCE, base_dir or Path.cwd(), env)
    file = Path(path)
    source = str(file)
    data = _read_limited(file, source)
    if base_dir is None:
        base_dir = Path(os.path.abspath(file)).parent
    return load_manifest_text(data, source, base_dir, env)


def load_manifest_text(
    text: str | bytes,
    source: str,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Manifest:
    """Check manifest text; raise ManifestError listing every problem, each as FILE:LINE:COL: what."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    base_dir = Path(os.path.abspath(base_dir))
    problems = _Problems(source)
    if len(raw) > MAX_BYTES:
        problems.add((1, 1), f"the manifest is {len(raw)} bytes; the limit is {MAX_BYTES} bytes (1 MiB)")
        raise problems.error()
    decoded = _decode(raw, problems)
    if decoded is None:
        raise problems.error()
    tree = _Tree()
    root = _parse(decoded, problems)
    if problems:
        raise problems.error()
    if root is None:
        problems.add((1, 1), "the manifest is empty; it needs at least version: 1, clusters and repositories")
        raise problems.error()
    data = _Converter(tree, problems, os.environ if env is None else env).convert(root, ())
    _check_schema(data, tree, problems)
    _check_references(data, tree, problems)
    if problems:
        raise problems.error()
    return _build(data, source, base_dir, hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------- problems

Pos = tuple[int, int]  # 1-based line and column
PathKey = tuple[Any, ...]


class _Problems:
    """Problems found so far, each with a position; rendered sorted, one line each."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[tuple[Pos, str]] = []

    def add(self, pos: Pos, text: str) -> None:
        self.items.append((pos, text))

    def __bool__(self) -> bool:
        return bool(self.items)

    def error(self) -> ManifestError:
        first: dict[tuple[Pos, str], int] = {}
        for index, item in enumerate(self.items):
            first.setdefault(item, index)
        unique = sorted(first, key=lambda item: (item[0], first[item]))
        lines = [f"{self.source}:{line}:{col}: {text}" for (line, col), text in unique[:MAX_PROBLEMS]]
        if len(unique) > MAX_PROBLEMS:
            (line, col), _ = unique[MAX_PROBLEMS]
            lines.append(f"{self.source}:{line}:{col}: {len(unique) - MAX_PROBLEMS} more problems not shown")
        return ManifestError(lines)


class _Tree:
    """Where each value and each key sits in the file, by path; and paths already reported on."""

    def __init__(self) -> None:
        self.value_pos: dict[PathKey, Pos] = {(): (1, 1)}
        self.key_pos: dict[PathKey, Pos] = {}
        self.reported: set[PathKey] = set()

    def pos(self, path: PathKey) -> Pos:
        path = tuple(path)
        while path not in self.value_pos:
            path = path[:-1]
        return self.value_pos[path]

    def key(self, path: PathKey) -> Pos:
        return self.key_pos.get(tuple(path)) or self.pos(path)

    def is_reported(self, path: PathKey) -> bool:
        path = tuple(path)
        return any(path[:n] in self.reported for n in range(len(path) + 1))


def _mark(mark: Any) -> Pos:
    return (mark.line + 1, mark.column + 1)


def _q(value: str, limit: int = 60) -> str:
    """Quote a user string for a message, cut short so junk cannot flood the output."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return repr(value)


def _where(path: PathKey) -> str:
    """backups.nightly.collections[0]; names with odd characters in brackets."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part if len(part) <= 60 else part[:60] + '...')}]"
    return out


# Values never echoed: API keys always; URLs when they may carry credentials (user:pass@).
_SECRET_KEYS = frozenset({"api_key", "url", "nodes", "endpoint_url"})
_TYPE_NAMES = {bool: "true or false", int: "a number", float: "a number", str: "an empty string"}


def _describe(value: Any, path: PathKey = ()) -> str:
    """What a value is, for 'got ...'; never echoes strings that may hold secrets."""
    if value is None:
        return "nothing (null)"
    secret = any(isinstance(p, str) and p in _SECRET_KEYS for p in path)
    if secret and (not isinstance(value, str) or "@" in value or "api_key" in path):
        return "a string" if isinstance(value, str) and value else _TYPE_NAMES.get(type(value), "a value")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        digits = str(value) if abs(value) < 10**30 else None
        return digits if digits is not None else "a number too large to be useful"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return _q(value) if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if choices:
        return f"; expected one of: {', '.join(choices)}"
    return ""


# --------------------------------------------------------------------------- bytes and YAML


def _read_limited(file: Path, source: str) -> bytes:
    """Read at most MAX_BYTES + 1 bytes, so a huge or endless file costs nothing."""
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                size = os.fstat(handle.fileno()).st_size
                told = f"{size} bytes" if size > MAX_BYTES else f"more than {MAX_BYTES} bytes"
                raise ManifestError(
                    [f"{source}:1:1: the manifest is {told}; the limit is {MAX_BYTES} bytes (1 MiB)"]
                )
            return data
    except FileNotFoundError:
        raise ManifestError(
            [f"{source}: no such manifest file; check the path, or write one (see examples/plans)"]
        ) from None
    except IsADirectoryError:
        raise ManifestError([f"{source}: is a folder, not a manifest file"]) from None
    except PermissionError:
        raise ManifestError([f"{source}: cannot read the manifest: permission denied"]) from None
    except OSError as error:
        raise ManifestError([f"{source}: cannot read the manifest: {error.strerror or error}"]) from None


def _decode(raw: bytes, problems: _Problems) -> str | None:
    """UTF-8 text without NUL bytes, or a problem saying this is not a text file."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        problems.add(_byte_pos(raw, nul), "not a text file: it contains NUL bytes")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = raw[error.start]
        problems.add(
            _byte_pos(raw, error.start),
            f"not a text file: byte 0x{byte:02x} is not valid UTF-8 (save the manifest as UTF-8)",
        )
        return None
    return text[1:] if text.startswith("\ufeff") else text


def _byte_pos(raw: bytes, index: int) -> Pos:
    line_start = raw.rfind(b"\n", 0, index) + 1
    column = len(raw[line_start:index].decode("utf-8", "replace"))
    return (raw.count(b"\n", 0, index) + 1, column + 1)


class _Refused(Exception):
    """YAML that is well-formed but not allowed in a manifest (anchors, aliases, depth)."""

    def __init__(self, mark: Any, text: str) -> None:
        super().__init__(text)
        self.mark = mark
        self.text = text


class _ComposeMixin(Composer):
    """Composer that refuses anchors and aliases (no billion laughs) and bounds the depth."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                event.start_mark,
                f"YAML aliases (*{_cut(event.anchor)}) are not allowed in a manifest; write the value out",
            )
        if getattr(event, "anchor", None) is not None:
            raise _Refused(
                event.start_mark,
                f"YAML anchors (&{_cut(event.anchor)}) are not allowed in a manifest; write the value out",
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"the YAML is nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_scalar_node(self, anchor: Any) -> Any:
        event = self.peek_event()
        node = super().compose_scalar_node(anchor)
        # Plain and untagged: its type comes from its text, so re-resolve it after interpolation.
        node.qbr_plain = event.tag is None and bool(event.implicit[0])
        return node


def _cut(text: Any, limit: int = 40) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


try:  # libyaml's parser when present (faster); composing stays in Python, where the checks are
    from yaml._yaml import CParser as _FastParser

    class _Loader(_ComposeMixin, _FastParser, Resolver):  # type: ignore[misc]
        def __init__(self, text: str) -> None:
            _FastParser.__init__(self, text)
            _ComposeMixin.__init__(self)
            Resolver.__init__(self)

except ImportError:  # pragma: no cover - pure-Python PyYAML
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, _ComposeMixin, Resolver):  # type: ignore[no-redef]
        def __init__(self, text: str) -> None:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)
            _ComposeMixin.__init__(self)
            Resolver.__init__(self)


def _parse(text: str, problems: _Problems) -> Any:
    """Compose one YAML document into nodes (with marks); syntax errors become problems."""
    try:
        return _Loader(text).get_single_node()
    except _Refused as refused:
        problems.add(_mark(refused.mark), refused.text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        pos = _mark(mark) if mark is not None else (1, 1)
        message = f"invalid YAML: {error.problem or error.context or 'unreadable'}"
        if error.context and error.problem and error.problem.startswith("but found"):
            message = f"invalid YAML: {error.context}, {error.problem}"
        elif error.context and error.problem and error.context_mark is not None:
            line, col = _mark(error.context_mark)
            message += f" ({error.context} at line {line}, column {col})"
        if _char_at(text, pos) == "\t":
            message += "; tabs are not allowed for indentation in YAML, use spaces"
        problems.add(pos, message)
    except yaml.YAMLError as error:  # ReaderError and friends carry a character index
        index = getattr(error, "position", None)
        pos = _text_pos(text, index) if isinstance(index, int) else (1, 1)
        reason = getattr(error, "reason", None) or "unreadable"
        problems.add(pos, f"invalid YAML: {reason}")
    except RecursionError:  # pragma: no cover - the depth bound should make this unreachable
        problems.add((1, 1), "the YAML is nested too deeply")
    return None


def _char_at(text: str, pos: Pos) -> str:
    lines = text.split("\n")
    line, col = pos
    if 0 < line <= len(lines) and 0 < col <= len(lines[line - 1]):
        return lines[line - 1][col - 1]
    return ""


def _text_pos(text: str, index: int) -> Pos:
    return (text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1)


# --------------------------------------------------------------------------- nodes -> values

_TAG = "tag:yaml.org,2002:"
_VAR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(:-(.*))?", re.DOTALL)
_constructor = SafeConstructor()
_resolver = Resolver()


class _Converter:
    """Turns nodes into plain values, interpolating ${VAR}; records positions and problems."""

    def __init__(self, tree: _Tree, problems: _Problems, env: Mapping[str, str]) -> None:
        self.tree = tree
        self.problems = problems
        self.env = env

    def fail(self, path: PathKey, pos: Pos, text: str) -> None:
        self.problems.add(pos, text)
        self.tree.reported.add(path)

    def convert(self, node: Any, path: PathKey) -> Any:
        self.tree.value_pos[path] = _mark(node.start_mark)
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                self.fail(path, _mark(node.start_mark), f"unsupported YAML tag {_q(node.tag)}")
                return None
            return [self.convert(item, path + (index,)) for index, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: MappingNode, path: PathKey) -> Any:
        if node.tag != _TAG + "map":
            self.fail(path, _mark(node.start_mark), f"unsupported YAML tag {_q(node.tag)}")
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_pos = _mark(key_node.start_mark)
            if not isinstance(key_node, ScalarNode):
                self.problems.add(key_pos, f"{_where(path) or 'top level'}: a key must be a plain name, not a list or mapping")
                continue
            key = key_node.value  # keys are names: taken as written, never retyped or interpolated
            if key in result:
                first = self.tree.key_pos[path + (key,)][0]
                where = f"in {_where(path)}" if path else "at the top level"
                self.problems.add(key_pos, f"duplicate key {_q(key)} {where} (first at line {first})")
                continue
            self.tree.key_pos[path + (key,)] = key_pos
            result[key] = self.convert(value_node, path + (key,))
            if isinstance(value_node, ScalarNode) and value_node.value == "" and not value_node.style:
                self.tree.value_pos[path + (key,)] = key_pos  # an empty value sits where its key is
        return result

    def scalar(self, node: ScalarNode, path: PathKey) -> Any:
        pos = _mark(node.start_mark)
        tag, text = node.tag, node.value
        if tag == _TAG + "str" and "$" in text:
            interpolated = self.interpolate(text, path, pos)
            if interpolated is None:
                return ""
            if interpolated != text and getattr(node, "qbr_plain", False):
                tag = _resolver.resolve(ScalarNode, interpolated, (True, False))
                if interpolated == "":
                    tag = _TAG + "str"  # ${VAR:-} means an empty string, not null
            text = interpolated
        if tag in (_TAG + "str", _TAG + "timestamp", _TAG + "merge"):
            return text  # timestamps stay text: `at` is parsed by the checks, with their messages
        if tag == _TAG + "null":
            return None
        if tag in (_TAG + "bool", _TAG + "int", _TAG + "float"):
            try:
                return getattr(_constructor, "construct_yaml_" + tag[len(_TAG) :])(ScalarNode(tag, text))
            except (ValueError, KeyError, OverflowError):
                self.fail(path, pos, f"{_where(path) or 'value'}: the number is too large or malformed")
                return None
        self.fail(path, pos, f"unsupported YAML tag {_q(tag)}")
        return None

    def interpolate(self, text: str, path: PathKey, pos: Pos) -> str | None:
        """Replace ${VAR} and ${VAR:-default}; $$ is a literal $. None when a reference fails."""
        out: list[str] = []
        ok = True
        index = 0
        while True:
            dollar = text.find("$", index)
            if dollar < 0:
                out.append(text[index:])
                break
            out.append(text[index:dollar])
            follower = text[dollar + 1 : dollar + 2]
            if follower == "$":
                out.append("$")
                index = dollar + 2
                continue
            if follower != "{":
                out.append("$")
                index = dollar + 1
                continue
            end = text.find("}", dollar + 2)
            if end < 0:
                self.fail(path, pos, f"{_where(path)}: '${{' is not closed by '}}' (write $$ for a literal $)")
                return None
            body = text[dollar + 2 : end]
            match = _VAR.fullmatch(body)
            if match is None or "${" in body:
                self.fail(
                    path,
                    pos,
                    f"{_where(path)}: {_q('${' + body + '}', 40)} is not a valid reference; "
                    "write ${NAME} or ${NAME:-default} (and $$ for a literal $)",
                )
                return None
            name, has_default, default = match.group(1), match.group(2) is not None, match.group(3)
            value = self.env.get(name)
            if has_default and not value:
                out.append(default or "")
            elif value is None:
                self.fail(
                    path,
                    pos,
                    f"{_where(path)}: environment variable {name} is not set "
                    f"(set it, or write ${{{name}:-default}} to give a default)",
                )
                ok = False
            else:
                out.append(value)
            index = end + 1
        return "".join(out) if ok else None


# --------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import ValidationError

    def strict_integer(checker: Any, instance: Any) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    def anchored_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
        # Python's `$` also matches before a final newline; the schema means end of string.
        if isinstance(instance, str) and not re.search(_anchored(pattern), instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", strict_integer)
    cls = validators.extend(Draft202012Validator, {"pattern": anchored_pattern}, type_checker=checker)
    return cls(_schema())


@lru_cache(maxsize=64)
def _anchored(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


# Validators whose error is about the value itself (not about keys of a mapping).
_VALUE_VALIDATORS = frozenset(
    {"type", "pattern", "const", "enum", "minimum", "maximum", "minLength", "maxLength", "minItems", "uniqueItems"}
)

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def _check_schema(data: Any, tree: _Tree, problems: _Problems) -> None:
    """Every schema violation, as a problem at the node it is about."""
    if not isinstance(data, dict):
        if not tree.is_reported(()):
            problems.add(
                tree.pos(()),
                f"the manifest must be a mapping (version: 1, clusters: ..., repositories: ...), got {_describe(data)}",
            )
        return
    seen: set[tuple[PathKey, str]] = set()
    silenced: set[PathKey] = set()
    for error in _validator().iter_errors(data):
        path = tuple(error.absolute_path)
        if tree.is_reported(path):
            continue
        for pos, text in _schema_messages(error, path, tree):
            if (path, text) not in seen:
                seen.add((path, text))
                problems.add(pos, text)
        if error.validator in _VALUE_VALIDATORS and "propertyNames" not in error.absolute_schema_path:
            silenced.add(path)
    tree.reported |= silenced  # the cross-checks need not repeat what is already said


def _schema_messages(error: Any, path: PathKey, tree: _Tree) -> list[tuple[Pos, str]]:
    where = _where(path)
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    custom = custom.get(error.validator) if isinstance(custom, dict) else None
    kind = error.validator
    instance = error.instance

    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = list(error.schema.get("properties", {}))
        place = f"in {where}" if path else "at the top level"
        unknown = [key for key in instance if key not in allowed]
        # Past MAX_PROBLEMS a key's problem is never shown, only counted: skip the costly hint.
        return [
            (
                tree.key(path + (key,)),
                f"unknown key {_q(key)} {place}" + (_did_you_mean(key, allowed) if index < MAX_PROBLEMS else ""),
            )
            for index, key in enumerate(unknown)
        ]
    if kind == "required" and isinstance(instance, dict):
        place = f"in {where}" if path else "at the top level"
        return [
            (tree.pos(path), f"missing required key {key!r} {place}")
            for key in error.validator_value
            if key not in instance
        ]
    if "propertyNames" in error.absolute_schema_path and isinstance(instance, str):
        key_path = path + (instance,)
        if tree.is_reported(key_path):
            return []
        text = custom or "is not a valid name"
        return [(tree.key(key_path), f"{where}: {_q(instance)} {text}")]

    pos = tree.pos(path)
    prefix = f"{where}: " if path else ""
    got = _describe(instance, path)
    if custom:
        if custom.startswith("is "):
            return [(pos, f"{prefix}{got} {custom}")]
        if kind in ("type", "pattern", "const"):
            return [(pos, f"{prefix}{custom}, got {got}")]
        return [(pos, f"{prefix}{custom}")]
    if kind == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else list(expected)
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in expected if t != "null")
        return [(pos, f"{prefix}expected {words}, got {got}")]
    if kind == "enum":
        choices = [str(choice) for choice in error.validator_value]
        hint = _did_you_mean(instance, choices) if isinstance(instance, str) else ""
        hint = hint if hint.startswith("; did") else ""
        return [(pos, f"{prefix}expected one of {', '.join(choices)}, got {got}{hint}")]
    if kind == "minimum":
        return [(pos, f"{prefix}must be at least {error.validator_value}, got {got}")]
    if kind == "maximum":
        return [(pos, f"{prefix}must be at most {error.validator_value}, got {got}")]
    if kind == "minLength":
        return [(pos, f"{prefix}must not be empty")]
    if kind in ("minItems", "minProperties"):
        return [(pos, f"{prefix}must not be empty")]
    if kind == "uniqueItems":
        return [(pos, f"{prefix}lists the same entry more than once")]
    if kind == "const":
        return [(pos, f"{prefix}expected {error.validator_value!r}, got {got}")]
    if kind == "pattern":
        return [(pos, f"{prefix}{got} has the wrong form")]
    return [(pos, f"{prefix}{_cut(error.message, 120)}")]


# --------------------------------------------------------------------------- cross-references


def _maps(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _check_references(data: Any, tree: _Tree, problems: _Problems) -> None:
    """What the schema cannot say: names that must exist, durations, timestamps, URLs, restore maps."""
    if not isinstance(data, dict):
        return

    def report(path: PathKey, text: str, *, at_key: bool = False) -> None:
        if not tree.is_reported(path):
            problems.add(tree.key(path) if at_key else tree.pos(path), f"{_where(path)}: {text}")

    clusters, repositories = _maps(data, "clusters"), _maps(data, "repositories")
    backups, restores = _maps(data, "backups"), _maps(data, "restores")

    _check_state(data.get("state"), report)

    for name, cluster in clusters.items():
        if not isinstance(cluster, dict):
            continue
        base = ("clusters", name)
        urls = [("url",)] if isinstance(cluster.get("url"), str) else []
        nodes = cluster.get("nodes")
        if isinstance(nodes, list):
            urls += [("nodes", i) for i, node in enumerate(nodes) if isinstance(node, str)]
        for sub in urls:
            url = cluster[sub[0]] if len(sub) == 1 else nodes[sub[1]]  # type: ignore[index]
            reason = _url_problem(url)
            if reason:
                report(base + sub, reason)
        _check_duration(cluster.get("timeout"), base + ("timeout",), report)

    for name, repository in repositories.items():
        if isinstance(repository, dict) and isinstance(repository.get("path"), str):
            if _has_control(repository["path"]):
                report(("repositories", name, "path"), "a path may not hold control characters")
        if isinstance(repository, dict) and isinstance(repository.get("s3"), dict):
            s3 = repository["s3"]
            base = ("repositories", name, "s3")
            if isinstance(s3.get("prefix"), str):
                reason = _prefix_problem(s3["prefix"])
                if reason:
                    report(base + ("prefix",), reason)
            if isinstance(s3.get("endpoint_url"), str) and s3["endpoint_url"]:
                reason = _url_problem(s3["endpoint_url"])
                if reason:
                    report(base + ("endpoint_url",), reason)

    for name, backup in backups.items():
        if not isinstance(backup, dict):
            continue
        base = ("backups", name)
        _check_name_ref(backup.get("cluster"), clusters, "cluster", base + ("cluster",), report)
        _check_name_ref(backup.get("repository"), repositories, "repository", base + ("repository",), report)
        _check_duration(backup.get("rpo"), base + ("rpo",), report)
        retention = backup.get("retention")
        if isinstance(retention, dict):
            _check_duration(retention.get("within"), base + ("retention", "within"), report)
        selectors = backup.get("collections")
        if isinstance(selectors, list) and all(isinstance(s, str) for s in selectors) and selectors:
            for index, selector in enumerate(selectors):
                if selector == "!":
                    report(base + ("collections", index), "an exclude needs a glob after '!', such as '!tmp_*'")
            if all(s.startswith("!") for s in selectors):
                report(
                    base + ("collections",),
                    "selects no collection: every entry excludes; put an include such as '*' first",
                )

    for name, restore in restores.items():
        if not isinstance(restore, dict):
            continue
        base = ("restores", name)
        backup_name, target = restore.get("from"), restore.get("to")
        _check_name_ref(backup_name, backups, "backup", base + ("from",), report)
        _check_name_ref(target, clusters, "cluster", base + ("to",), report)
        at = restore.get("at")
        if isinstance(at, str) and at != "latest" and _parse_at(at) is None:
            report(
                base + ("at",),
                f"expected latest or an ISO 8601 timestamp such as 2024-05-01T12:00:00Z, got {_q(at)}",
            )
        backup = backups.get(backup_name) if isinstance(backup_name, str) else None
        backup = backup if isinstance(backup, dict) else None
        if restore.get("via") == "url" and backup is not None and isinstance(backup.get("repository"), str):
            repository = repositories.get(backup["repository"])
            if isinstance(repository, dict) and "path" in repository and "s3" not in repository:
                report(
                    base + ("via",),
                    f"'url' needs an S3 repository (Qdrant downloads from a presigned URL), "
                    f"but backup {backup_name!r} writes to a folder; use auto or upload",
                )
        _check_restore_map(name, restore, backup, tree, report)


def _check_state(state: Any, report: Any) -> None:
    if isinstance(state, str) and state.startswith("s3://"):
        if _parse_s3_url(state) is None:
            report(("state",), "expected s3://bucket/key with a valid bucket name and a key that does not end in '/'")
    elif isinstance(state, str) and _has_control(state):
        report(("state",), "a path may not hold control characters")
    elif isinstance(state, dict) and isinstance(state.get("path"), str) and _has_control(state["path"]):
        report(("state", "path"), "a path may not hold control characters")
    elif isinstance(state, dict) and isinstance(state.get("s3"), dict):
        key = state["s3"].get("key")
        if isinstance(key, str) and (key.endswith("/") or not key.strip("/") or _has_control(key)):
            report(("state", "s3", "key"), "the state key must name an object: no trailing '/', no control characters")
        endpoint = state["s3"].get("endpoint_url")
        if isinstance(endpoint, str) and endpoint:
            reason = _url_problem(endpoint)
            if reason:
                report(("state", "s3", "endpoint_url"), reason)


def _check_name_ref(value: Any, known: dict[str, Any], kind: str, path: PathKey, report: Any) -> None:
    if isinstance(value, str) and value not in known:
        choices = list(known)
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else (f" (there are: {', '.join(choices)})" if choices else "")
        report(path, f"no {kind} named {_q(value)}{hint}")


def _check_duration(value: Any, path: PathKey, report: Any) -> None:
    if isinstance(value, str):
        try:
            parse_duration(value)
        except ValueError as error:
            report(path, str(error))


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the URL has an invalid host or port"
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return "credentials do not belong in a URL; give the key as api_key: ${QDRANT_API_KEY}"
    if not parts.hostname:
        return "the URL has no host"
    if port == 0:
        return "the URL has an invalid port"
    return None


def _prefix_problem(prefix: str) -> str | None:
    stripped = prefix.strip("/")
    if not stripped:
        return None
    if "\\" in stripped or _has_control(stripped):
        return "a prefix may not hold backslashes or control characters"
    if any(part in ("", ".", "..") for part in stripped.split("/")):
        return "a prefix may not hold empty, '.' or '..' segments"
    return None


def _parse_s3_url(text: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"s3://([^/]+)/(.+)", text)
    if match is None or not _S3_BUCKET.fullmatch(match.group(1)) or match.group(2).endswith("/"):
        return None
    return match.group(1), match.group(2)


def _parse_at(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _has_control(text: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


def _has_glob(text: str) -> bool:
    return any(char in _GLOB_CHARS for char in text)


def _split_star(pattern: str) -> tuple[str, str] | None:
    """(prefix, suffix) of a pattern with exactly one '*' and no other glob syntax; else None."""
    if pattern.count("*") != 1 or "?" in pattern or "[" in pattern:
        return None
    prefix, suffix = pattern.split("*", 1)
    return prefix, suffix


def _star_patterns_meet(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether two one-star patterns can match the same name."""
    prefixes = a[0].startswith(b[0]) or b[0].startswith(a[0])
    suffixes = a[1].endswith(b[1]) or b[1].endswith(a[1])
    return prefixes and suffixes


def _check_restore_map(
    name: str, restore: dict[str, Any], backup: dict[str, Any] | None, tree: _Tree, report: Any
) -> None:
    """A restore map must be unambiguous: one target per name, no two names into one target,
    and never a collection restored onto itself."""
    base = ("restores", name, "collections")
    given = restore.get("collections")
    if given is None:
        entries = [("*", "*")]
        given_map = False
    elif isinstance(given, dict) and all(isinstance(v, str) for v in given.values()):
        entries = list(given.items())
        given_map = True
    else:
        return

    def at(left: str) -> PathKey:
        return base + (left,) if given_map else ("restores", name, "to")

    def entry(left: str, right: str) -> str:
        return f"{_q(left)} -> {_q(right)}" if given_map else 'the default collections map {"*": "*"}'

    usable: list[int] = []
    for index, (left, right) in enumerate(entries):
        if right.count("*") > 1:
            report(at(left), f"the target {_q(right)} may hold one '*' at most")
            continue
        if "*" in right and right != "*" and _split_star(left) is None:
            report(
                at(left),
                f"the target {_q(right)} has a '*', so the source must be a pattern with exactly one '*' "
                "(and no ? or [...]) whose match the '*' receives",
            )
            continue
        if "*" not in right and _has_glob(left):
            report(
                at(left),
                f"the source {_q(left)} is a glob that may match several collections, but the target "
                f"{_q(right)} is one name; use '*' or a pattern such as 'restored_*'",
            )
            continue
        shadow = next(
            (earlier for earlier, _ in entries[:index] if earlier == "*" or (not _has_glob(left) and fnmatchcase(left, earlier))),
            None,
        )
        if shadow is not None:
            report(
                at(left),
                f"the entry {_q(left)} is never used: the earlier entry {_q(shadow)} matches first "
                "(the first matching entry wins)",
            )
            continue
        usable.append(index)

    same_cluster = backup is not None and isinstance(restore.get("to"), str) and backup.get("cluster") == restore["to"]
    selectors = backup.get("collections", ["*"]) if backup is not None else ["*"]
    if not (isinstance(selectors, list) and all(isinstance(s, str) for s in selectors)):
        selectors = ["*"]
    includes = [s for s in selectors if not s.startswith("!")]

    def onto_itself(left: str, right: str, what: str) -> None:
        report(
            at(left),
            f"{entry(left, right)} would restore {what} onto itself: cluster "
            f"{restore['to']!r} is the cluster backup {restore['from']!r} reads; rename the targets "
            "(such as {\"*\": \"*_restored\"}) or restore to another cluster",
        )

    def clash(later: int, earlier: int, target: str) -> None:
        left, right = entries[later]
        into = f"names matching {_q(target)}" if "*" in target else _q(target)
        report(
            at(left),
            f"{_q(left)} -> {_q(right)} and {_q(entries[earlier][0])} -> {_q(entries[earlier][1])} "
            f"can both restore into {into}; give each source its own target",
        )

    def entry_of(source: str) -> int | None:
        for index, (left, _) in enumerate(entries):
            if fnmatchcase(source, left):
                return index
        return None

    if includes and not any(_has_glob(s) for s in includes):
        # The backup names its collections: check the map on exactly those.
        sources = [s for s in dict.fromkeys(includes) if _selects(selectors, s)]
        targets: dict[str, tuple[int, str]] = {}
        for source in sources:
            index = entry_of(source)
            if index is None or index not in usable:
                continue
            target = _target_name(entries, source)
            assert target is not None
            if same_cluster and target == source:
                onto_itself(*entries[index], _q(source))
            if target in targets and targets[target][1] != source:
                earlier = targets[target][0]
                clash(max(index, earlier), min(index, earlier), target)
            else:
                targets[target] = (index, source)
        return

    # Otherwise reason about the patterns themselves.
    def reaches(source: str, index: int) -> bool:
        """Whether `source` is selected by the backup and reaches entry `index` (first match wins)."""
        return _selects(selectors, source) and entry_of(source) == index

    if same_cluster:
        for index in usable:
            left, right = entries[index]
            if right == "*" or right == left:
                onto_itself(left, right, f"every collection matching {_q(left)}" if _has_glob(left) else _q(left))

    for later_pos, j in enumerate(usable):
        for i in usable[:later_pos]:
            target = _targets_meet(entries, i, j, reaches)
            if target is not None:
                clash(j, i, target)
                break


def _targets_meet(entries: list[tuple[str, str]], i: int, j: int, reaches: Any) -> str | None:
    """A name entries i and j could both restore into, from different sources; None if none is seen."""
    forms = [_target_form(*entries[i]), _target_form(*entries[j])]
    kinds = {forms[0][0], forms[1][0]}
    if kinds == {"name"}:
        return forms[0][1] if forms[0][1] == forms[1][1] else None
    if kinds == {"same"}:
        return None  # names map to themselves: distinct sources stay distinct
    if "name" in kinds:
        (name_index, name_form), (other_index, other_form) = (
            ((i, forms[0]), (j, forms[1])) if forms[0][0] == "name" else ((j, forms[1]), (i, forms[0]))
        )
        target = name_form[1]
        if other_form[0] == "same":
            # `{docs: docs_dr, "*": "*"}` only clashes if the source holds a collection named
            # docs_dr; whether it does is known at plan time, where the planner refuses it.
            return None
        (lp, ls), (rp, rs) = other_form[1], other_form[2]
        if target.startswith(rp) and target.endswith(rs) and len(target) >= len(rp) + len(rs):
            middle = target[len(rp) : len(target) - len(rs)]
            source = lp + middle + ls
            if reaches(source, other_index) and source != entries[name_index][0]:
                return target
        return None
    # Two patterns: compare their one-star shapes when both have one.
    shapes = []
    for form in forms:
        shape = _split_star(form[1]) if form[0] == "same" else form[2]
        if shape is None:
            return None
        shapes.append(shape)
    if _star_patterns_meet(shapes[0], shapes[1]):
        return f"{max(shapes[0][0], shapes[1][0], key=len)}*{max(shapes[0][1], shapes[1][1], key=len)}"
    return None


def _target_form(left: str, right: str) -> tuple[Any, ...]:
    """('name', n): one target; ('same', glob): names kept; ('pattern', left_shape, right_shape)."""
    if right == "*":
        return ("same", left) if _has_glob(left) else ("name", left)
    if "*" in right:
        return ("pattern", _split_star(left), _split_star(right))
    return ("name", right)


# --------------------------------------------------------------------------- build


def _build(data: dict[str, Any], source: str, base_dir: Path, sha256: str) -> Manifest:
    """Checked values -> frozen dataclasses, with defaults filled in."""

    def local(path: str) -> Path:
        return Path(os.path.normpath(base_dir / os.path.expanduser(path)))

    def blank(value: Any) -> str | None:
        return value if value else None

    state_value = data.get("state", DEFAULT_STATE_PATH)
    if isinstance(state_value, dict) and "s3" in state_value:
        s3 = state_value["s3"]
        state = StateLocation("s3", None, s3["bucket"], s3["key"], blank(s3.get("endpoint_url")), blank(s3.get("region")))
    elif isinstance(state_value, str) and state_value.startswith("s3://"):
        bucket, key = _parse_s3_url(state_value)  # type: ignore[misc]
        state = StateLocation("s3", None, bucket, key, None, None)
    else:
        path = state_value["path"] if isinstance(state_value, dict) else state_value
        state = StateLocation("path", local(path), None, None, None, None)

    clusters: dict[str, ClusterConfig] = {}
    for name, c in data["clusters"].items():
        urls = ([c["url"]] if "url" in c else []) + list(c.get("nodes", []))
        clusters[name] = ClusterConfig(
            name=name,
            urls=tuple(dict.fromkeys(u.rstrip("/") for u in urls)),
            api_key=blank(c.get("api_key")),
            rest_port=c.get("rest_port"),
            timeout=parse_duration(c["timeout"]) if "timeout" in c else None,
            discover="nodes" not in c,
        )

    repositories: dict[str, RepositoryConfig] = {}
    for name, r in data["repositories"].items():
        if "s3" in r:
            s3 = r["s3"]
            repositories[name] = RepositoryConfig(
                name, "s3", None, s3["bucket"], s3.get("prefix", "").strip("/"),
                blank(s3.get("endpoint_url")), blank(s3.get("region")),
            )
        else:
            repositories[name] = RepositoryConfig(name, "path", local(r["path"]), None, "", None, None)

    backups: dict[str, BackupConfig] = {}
    for name, b in (data.get("backups") or {}).items():
        kept = b.get("retention", {})
        backups[name] = BackupConfig(
            name=name,
            cluster=b["cluster"],
            repository=b["repository"],
            collections=tuple(b.get("collections", ["*"])),
            rpo=parse_duration(b.get("rpo", "24h")),
            only_changed=b.get("only_changed", False),
            aliases=b.get("aliases", True),
            retention=RetentionPolicy(
                keep_last=kept.get("keep_last"),
                hourly=kept.get("hourly"),
                daily=kept.get("daily"),
                weekly=kept.get("weekly"),
                monthly=kept.get("monthly"),
                yearly=kept.get("yearly"),
                within=parse_duration(kept["within"]) if "within" in kept else None,
            ),
        )

    restores: dict[str, RestoreConfig] = {}
    for name, r in (data.get("restores") or {}).items():
        at = r.get("at", "latest")
        restores[name] = RestoreConfig(
            name=name,
            from_backup=r["from"],
            to=r["to"],
            at=None if at == "latest" else _parse_at(at),
            collections=tuple(r.get("collections", {"*": "*"}).items()),
            if_exists=r.get("if_exists", "skip"),
            aliases=r.get("aliases", True),
            via=r.get("via", "auto"),
        )

    return Manifest(
        source=source,
        base_dir=base_dir,
        sha256=sha256,
        version=int(data["version"]),
        state=state,
        clusters=clusters,
        repositories=repositories,
        backups=backups,
        restores=restores,
    )
