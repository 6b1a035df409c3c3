"""Problems found in a manifest, each at the line and column of the node it is about, and the few
helpers every stage uses to word them (quoting user text, naming a place in the manifest)."""

from __future__ import annotations

import json
import re
from typing import Any

from qbr.errors import ManifestError

MAX_PROBLEMS = 200  # beyond this a list of problems helps nobody

Pos = tuple[int, int]  # 1-based line and column
PathKey = tuple[Any, ...]


class Problems:
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


class Tree:
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


def mark_pos(mark: Any) -> Pos:
    """A YAML mark (0-based) as a 1-based line and column."""
    return (mark.line + 1, mark.column + 1)


def quote(value: str, limit: int = 60) -> str:
    """Quote a user string for a message, cut short so junk cannot flood the output."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return repr(value)


def dotted_path(path: PathKey) -> str:
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


def shorten(text: Any, limit: int = 40) -> str:
    """Any text cut to `limit` characters, for messages that quote what they did not write."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."

