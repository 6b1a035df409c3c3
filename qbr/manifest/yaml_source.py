"""From bytes to plain values, each with its position: the YAML a manifest may be written in.

Bytes are capped at MAX_BYTES and must be UTF-8 text. They are composed into YAML nodes that keep
their marks, refusing anchors and aliases (no billion laughs) and nesting deeper than MAX_DEPTH.
The nodes become dicts, lists and scalars (scalars by interpolate.py), refusing duplicate keys
and unknown tags; the position of every value and key is recorded in a Tree for later messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from qbr.errors import ManifestError
from qbr.manifest.interpolate import YAML_TAG, ScalarConverter
from qbr.manifest.problems import PathKey, Pos, Problems, dotted_path, mark_pos, quote, shorten

MAX_BYTES = 1 << 20  # a manifest is a page of YAML; anything near this is a mistake
MAX_DEPTH = 32  # the schema needs 5 levels; deeper is junk, and recursion must stay bounded


def read_limited(file: Path, source: str) -> bytes:
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


def decode(raw: bytes, problems: Problems) -> str | None:
    """At most MAX_BYTES of UTF-8 text without NUL bytes, or a problem saying why not."""
    if len(raw) > MAX_BYTES:
        problems.add((1, 1), f"the manifest is {len(raw)} bytes; the limit is {MAX_BYTES} bytes (1 MiB)")
        return None
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
                f"YAML aliases (*{shorten(event.anchor)}) are not allowed in a manifest; write the value out",
            )
        if getattr(event, "anchor", None) is not None:
            raise _Refused(
                event.start_mark,
                f"YAML anchors (&{shorten(event.anchor)}) are not allowed in a manifest; write the value out",
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


def parse(text: str, problems: Problems) -> Any:
    """Compose one YAML document into nodes (with marks); syntax errors become problems."""
    try:
        return _Loader(text).get_single_node()
    except _Refused as refused:
        problems.add(mark_pos(refused.mark), refused.text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        pos = mark_pos(mark) if mark is not None else (1, 1)
        message = f"invalid YAML: {error.problem or error.context or 'unreadable'}"
        if error.context and error.problem and error.problem.startswith("but found"):
            message = f"invalid YAML: {error.context}, {error.problem}"
        elif error.context and error.problem and error.context_mark is not None:
            line, col = mark_pos(error.context_mark)
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


class Converter(ScalarConverter):
    """Turns nodes into plain values; records positions and problems (duplicate keys, unknown tags)."""

    def convert(self, node: Any, path: PathKey) -> Any:
        self.tree.value_pos[path] = mark_pos(node.start_mark)
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != YAML_TAG + "seq":
                self.fail(path, mark_pos(node.start_mark), f"unsupported YAML tag {quote(node.tag)}")
                return None
            return [self.convert(item, path + (index,)) for index, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: MappingNode, path: PathKey) -> Any:
        if node.tag != YAML_TAG + "map":
            self.fail(path, mark_pos(node.start_mark), f"unsupported YAML tag {quote(node.tag)}")
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_pos = mark_pos(key_node.start_mark)
            if not isinstance(key_node, ScalarNode):
                self.problems.add(key_pos, f"{dotted_path(path) or 'top level'}: a key must be a plain name, not a list or mapping")
                continue
            key = key_node.value  # keys are names: taken as written, never retyped or interpolated
            if key in result:
                first = self.tree.key_pos[path + (key,)][0]
                where = f"in {dotted_path(path)}" if path else "at the top level"
                self.problems.add(key_pos, f"duplicate key {quote(key)} {where} (first at line {first})")
                continue
            self.tree.key_pos[path + (key,)] = key_pos
            result[key] = self.convert(value_node, path + (key,))
            if isinstance(value_node, ScalarNode) and value_node.value == "" and not value_node.style:
                self.tree.value_pos[path + (key,)] = key_pos  # an empty value sits where its key is
        return result

