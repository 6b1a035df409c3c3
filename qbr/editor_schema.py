"""The manifest schema has two readers: editors, which see the YAML as written, and qbr, which
checks the values after ${VAR} interpolation. schemas/manifest.v1.json is written for the editor:
where a value may be interpolated it also accepts a ${...} reference, as a pattern alternative
(EDITOR_ALTERNATIVE, in front of the pattern) or an anyOf branch ({"$ref": INTERPOLATED}).
`strict` removes both, giving back exactly the schema qbr checks interpolated values against
(so qbr's own messages do not change). Pure, standard library only.
"""

from __future__ import annotations

from typing import Any

EDITOR_ALTERNATIVE = r"^(?:.*\$\{[^}]*\}.*)$|"
INTERPOLATED = "#/$defs/interpolated"


def strict(node: Any) -> Any:
    """The schema without the editor's allowances for ${...}."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items() if key != "patternErrorMessage"}
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith(EDITOR_ALTERNATIVE):
        out["pattern"] = pattern[len(EDITOR_ALTERNATIVE):]
    branches = out.get("anyOf")
    if isinstance(branches, list) and {"$ref": INTERPOLATED} in branches:
        kept = [b for b in branches if b != {"$ref": INTERPOLATED}]
        del out["anyOf"]
        if len(kept) == 1 and isinstance(kept[0], dict) and not set(kept[0]) & set(out):
            out.update(kept[0])
        else:
            out["anyOf"] = kept
    if "$defs" in out and isinstance(out["$defs"], dict):
        out["$defs"] = {k: v for k, v in out["$defs"].items() if k != "interpolated"}
    return out
