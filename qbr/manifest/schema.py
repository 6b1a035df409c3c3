"""JSON Schema validation (schemas/manifest.v1.json) and the wording of its errors.

jsonschema's own messages are written for programmers; each error is reworded here for the
person editing the file: at the node it is about, never echoing secrets, with a did-you-mean
for misspelt keys and choices. jsonschema is imported on first use, not with this module.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from qbr.editor_schema import strict
from qbr.manifest.problems import MAX_PROBLEMS, PathKey, Pos, Problems, Tree, dotted_path, quote, shorten

SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "manifest.v1.json"


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    # The file is the editor's view (it also accepts ${...}); values are checked after interpolation.
    return strict(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


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


def check_schema(data: Any, tree: Tree, problems: Problems) -> None:
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


def _schema_messages(error: Any, path: PathKey, tree: Tree) -> list[tuple[Pos, str]]:
    where = dotted_path(path)
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
                f"unknown key {quote(key)} {place}" + (_did_you_mean(key, allowed) if index < MAX_PROBLEMS else ""),
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
        return [(tree.key(key_path), f"{where}: {quote(instance)} {text}")]

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
    if kind in ("minLength", "minItems", "minProperties"):
        return [(pos, f"{prefix}must not be empty")]
    if kind == "uniqueItems":
        return [(pos, f"{prefix}lists the same entry more than once")]
    if kind == "const":
        return [(pos, f"{prefix}expected {error.validator_value!r}, got {got}")]
    if kind == "pattern":
        return [(pos, f"{prefix}{got} has the wrong form")]
    return [(pos, f"{prefix}{shorten(error.message, 120)}")]


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
        return quote(value) if value else "an empty string"
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
