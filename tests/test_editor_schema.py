"""The manifest schema as an editor sees it: every shipped manifest names it in a modeline and is
clean against it as written (before ${VAR} interpolation); every pattern has a plain
patternErrorMessage; and qbr itself still checks interpolated values against the strict view.
Every environment variable qbr reads is documented in the README."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from qbr.editor_schema import EDITOR_ALTERNATIVE, INTERPOLATED, strict
from qbr.errors import ManifestError
from qbr.manifest import DEFAULT_MANIFEST_PATH, load_manifest_text

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "schemas" / "manifest.v1.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
SHIPPED = [*sorted((ROOT / "examples" / "plans").glob("*.yaml")), DEFAULT_MANIFEST_PATH]
MODELINE = re.compile(r"# yaml-language-server: \$schema=(\S+)\n")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_manifest_names_the_schema_and_is_clean_in_an_editor(path):
    text = path.read_text()
    match = MODELINE.match(text)
    assert match, f"{path.name} starts with a yaml-language-server modeline"
    assert (path.parent / match.group(1)).resolve() == SCHEMA_FILE.resolve()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(text))]
    assert errors == [], f"{path.name}, as an editor sees it (not interpolated): {errors}"


def _patterns(node, where=""):
    if isinstance(node, dict):
        if "pattern" in node:
            yield where, node
        for key, value in node.items():
            if key != "errorMessage":  # qbr's wording, keyed by validator: not a schema
                yield from _patterns(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _patterns(value, f"{where}/{index}")


def test_every_pattern_has_a_plain_pattern_error_message():
    found = list(_patterns(SCHEMA))
    assert len(found) >= 8
    for where, node in found:
        message = node.get("patternErrorMessage")
        assert isinstance(message, str) and message[0].isupper() and "^" not in message, where


def test_the_editor_accepts_references_where_qbr_interpolates_and_qbr_checks_the_strict_view():
    editor = Draft202012Validator(SCHEMA)
    loose = {"version": 1, "clusters": {"c": {"url": "${URL:-http://q:6333}", "rest_port": "${PORT}"}},
             "repositories": {"r": {"s3": {"bucket": "${BUCKET}", "endpoint_url": "${S3_ENDPOINT:-}"}}},
             "backups": {"b": {"cluster": "c", "repository": "r", "only_changed": "${ONLY:-false}", "retention": {"daily": "${DAYS:-7}"}}}}
    assert list(editor.iter_errors(loose)) == []
    assert list(editor.iter_errors({**loose, "clusters": {"c": {"url": "ftp://q"}}}))  # still a wrong URL
    checked = strict(SCHEMA)
    assert INTERPOLATED.rsplit("/", 1)[1] not in checked["$defs"] and EDITOR_ALTERNATIVE not in json.dumps(checked)
    assert not [where for where, node in _patterns(checked) if "patternErrorMessage" in node]
    literal = "version: 1\nclusters: {c: {url: 'http://q:6333'}}\nrepositories: {r: {s3: {bucket: '$${BUCKET}'}}}\n"
    with pytest.raises(ManifestError, match="is not a valid S3 bucket name"):
        load_manifest_text(literal, "qbr.yaml", ROOT, env={})  # a literal ${...} is a value like any other


ENV_NAME = re.compile(r"^(QBR_[A-Z0-9_]+|QDRANT_[A-Z0-9_]+|NO_COLOR|S3_ENDPOINT|AWS_[A-Z0-9_]+)$")


def _env_names_in_code() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "qbr").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value):
                names.add(node.value)
    names |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", DEFAULT_MANIFEST_PATH.read_text()))
    return names


def test_every_environment_variable_qbr_reads_is_documented_in_the_readme():
    names = _env_names_in_code()
    assert {"QBR_FILE", "QBR_METRICS_FILE", "QBR_HTTP_RETRIES", "QBR_LOCK_LEASE", "QDRANT_URL"} <= names
    section = (ROOT / "README.md").read_text().split("## Environment variables", 1)
    assert len(section) == 2, "the README has an Environment variables section"
    undocumented = sorted(name for name in names if f"`{name}`" not in section[1].split("\n## ", 1)[0])
    assert undocumented == []
