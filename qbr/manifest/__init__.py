"""The manifest: what must be true about backups, read from YAML into frozen dataclasses.

One concern a module, in the order a manifest goes through them (loader.py runs the pipeline):
yaml_source (bytes -> values with positions), interpolate (${VAR}), schema (JSON Schema and its
wording), checks (cross-references), collection_map (the glob algebra of selectors and restore
maps), build (values -> the dataclasses of model). problems holds what every stage reports into.

The dataclasses are imported here eagerly and need neither PyYAML nor jsonschema, so code that
only reads a Manifest (the planner, observe, status...) does not load them. The loader's names
are imported on first use, by __getattr__ below, and are the same objects as in their modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qbr.manifest.model import (
    AdoptConfig,
    BackupConfig,
    ClusterConfig,
    Manifest,
    RepositoryConfig,
    RestoreConfig,
    SnapshotStorage,
    StateLocation,
)

if TYPE_CHECKING:
    from qbr.manifest.loader import DEFAULT_MANIFEST_PATH, EMBEDDED_SOURCE, load_manifest, load_manifest_text, resolve_manifest_path
    from qbr.manifest.schema import SCHEMA_PATH

__all__ = [
    "AdoptConfig",
    "BackupConfig",
    "ClusterConfig",
    "DEFAULT_MANIFEST_PATH",
    "EMBEDDED_SOURCE",
    "Manifest",
    "RepositoryConfig",
    "RestoreConfig",
    "SCHEMA_PATH",
    "SnapshotStorage",
    "StateLocation",
    "load_manifest",
    "load_manifest_text",
    "resolve_manifest_path",
]

# Public names whose modules import PyYAML or the schema machinery: name -> module of this package.
_LAZY = {
    "DEFAULT_MANIFEST_PATH": "loader",
    "EMBEDDED_SOURCE": "loader",
    "load_manifest": "loader",
    "load_manifest_text": "loader",
    "resolve_manifest_path": "loader",
    "SCHEMA_PATH": "schema",
}


def __getattr__(name: str) -> Any:
    """Import a loader name on first use (PEP 562), then keep it here like any other."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
