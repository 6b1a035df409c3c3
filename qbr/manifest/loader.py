"""Where a manifest is read: the entry points, and the pipeline they run.

Pipeline: bytes (size and text checks) -> YAML nodes with their marks (no anchors,
no aliases, bounded depth, no duplicate keys) -> ${VAR} interpolation from the
environment -> JSON Schema (schemas/manifest.v1.json) -> cross-reference checks ->
frozen dataclasses. Every problem found on the way is kept, with the line and column
of the node it is about, so one run of `qbr validate` lists them all, as
`FILE:LINE:COL: what is wrong`. Whatever the input, the only exception that leaves
this module is ManifestError.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

from qbr.manifest.build import build
from qbr.manifest.checks import check_references
from qbr.manifest.model import Manifest
from qbr.manifest.problems import Problems, Tree
from qbr.manifest.schema import check_schema
from qbr.manifest.yaml_source import Converter, decode, parse, read_limited

DEFAULT_MANIFEST_PATH = Path(__file__).parent.parent / "default_manifest.yaml"
EMBEDDED_SOURCE = "<embedded default>"


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
    data = read_limited(file, source)
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
    problems = Problems(source)
    decoded = decode(raw, problems)
    if decoded is None:
        raise problems.error()
    tree = Tree()
    root = parse(decoded, problems)
    if problems:
        raise problems.error()
    if root is None:
        problems.add((1, 1), "the manifest is empty; it needs at least version: 1, clusters and repositories")
        raise problems.error()
    data = Converter(tree, problems, os.environ if env is None else env).convert(root, ())
    check_schema(data, tree, problems)
    check_references(data, tree, problems)
    if problems:
        raise problems.error()
    return build(data, source, base_dir, hashlib.sha256(raw).hexdigest())
