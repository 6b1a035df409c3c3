"""${VAR} interpolation from the environment, and the typing of scalars after it.

`${VAR}` is replaced by the variable (an unset one is a problem), `${VAR:-default}` by the default
when the variable is unset or empty, and `$$` is a literal `$`. An unquoted scalar is typed from
its text after interpolation, as YAML would have typed it written out (`port: ${PORT}` is a
number); a quoted one stays a string. Keys are never interpolated.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from qbr.manifest.problems import PathKey, Pos, Problems, Tree, dotted_path, mark_pos, quote

YAML_TAG = "tag:yaml.org,2002:"
_VAR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(:-(.*))?", re.DOTALL)
_constructor = SafeConstructor()
_resolver = Resolver()


class ScalarConverter:
    """Turns scalar nodes into values, interpolating ${VAR}; records problems (yaml_source.Converter walks the rest)."""

    def __init__(self, tree: Tree, problems: Problems, env: Mapping[str, str]) -> None:
        self.tree = tree
        self.problems = problems
        self.env = env

    def fail(self, path: PathKey, pos: Pos, text: str) -> None:
        self.problems.add(pos, text)
        self.tree.reported.add(path)

    def scalar(self, node: ScalarNode, path: PathKey) -> Any:
        pos = mark_pos(node.start_mark)
        tag, text = node.tag, node.value
        if tag == YAML_TAG + "str" and "$" in text:
            interpolated = self.interpolate(text, path, pos)
            if interpolated is None:
                return ""
            if interpolated != text and getattr(node, "qbr_plain", False):
                tag = _resolver.resolve(ScalarNode, interpolated, (True, False))
                if interpolated == "":
                    tag = YAML_TAG + "str"  # ${VAR:-} means an empty string, not null
            text = interpolated
        if tag in (YAML_TAG + "str", YAML_TAG + "timestamp", YAML_TAG + "merge"):
            return text  # timestamps stay text: `at` is parsed by the checks, with their messages
        if tag == YAML_TAG + "null":
            return None
        if tag in (YAML_TAG + "bool", YAML_TAG + "int", YAML_TAG + "float"):
            try:
                return getattr(_constructor, "construct_yaml_" + tag[len(YAML_TAG) :])(ScalarNode(tag, text))
            except (ValueError, KeyError, OverflowError):
                self.fail(path, pos, f"{dotted_path(path) or 'value'}: the number is too large or malformed")
                return None
        self.fail(path, pos, f"unsupported YAML tag {quote(tag)}")
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
                self.fail(path, pos, f"{dotted_path(path)}: '${{' is not closed by '}}' (write $$ for a literal $)")
                return None
            body = text[dollar + 2 : end]
            match = _VAR.fullmatch(body)
            if match is None or "${" in body:
                self.fail(
                    path,
                    pos,
                    f"{dotted_path(path)}: {quote('${' + body + '}', 40)} is not a valid reference; "
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
                    f"{dotted_path(path)}: environment variable {name} is not set "
                    f"(set it, or write ${{{name}:-default}} to give a default)",
                )
                ok = False
            else:
                out.append(value)
            index = end + 1
        return "".join(out) if ok else None
