"""`qbr validate` through the CLI: examples pass, broken and hostile manifests fail with
FILE:LINE:COL: lines and exit 1, and never with a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qbr.cli import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "plans").glob("*.yaml"))

GOOD = """\
version: 1
clusters:
  prod: {url: "http://q0:6333"}
repositories:
  main: {path: ./backups}
backups:
  nightly: {cluster: prod, repository: main, rpo: 4h, retention: {keep_last: 3}}
"""


def run(args: list[str], env: dict[str, str] | None = None):
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def problem_lines(stderr: str, file: str) -> list[str]:
    """The problem lines; a single problem comes prefixed with 'Error: ' by the CLI group."""
    lines = [line.removeprefix("Error: ") for line in stderr.splitlines() if line.strip()]
    for line in lines:
        assert re.match(rf"^{re.escape(file)}:\d+:\d+: \S", line), line
    return lines


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_each_example_validates(example):
    result = run(["validate", "-f", str(example)], env={"QDRANT_API_KEY": None})
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout


def test_qbr_file_environment_variable_names_the_manifest(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    result = run(["validate"], env={"QBR_FILE": str(path)})
    assert result.exit_code == 0, result.output
    assert f"{path}: valid (1 backups, 0 restores)" in result.stdout


def test_qbr_yaml_in_the_current_folder_is_found(tmp_path, monkeypatch):
    (tmp_path / "qbr.yaml").write_text(GOOD.replace("version: 1", "version: 2"))
    monkeypatch.chdir(tmp_path)
    result = run(["validate"], env={"QBR_FILE": None})
    assert result.exit_code == 1
    assert problem_lines(result.stderr, "qbr.yaml") == ["qbr.yaml:1:10: version: this qbr reads manifest version 1, got 2"]


def test_no_manifest_uses_the_embedded_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(["validate"], env={"QBR_FILE": None, "QDRANT_URL": None, "QDRANT_API_KEY": None})
    assert result.exit_code == 0, result.output
    assert "valid (1 backups, 0 restores)" in result.stdout


def test_broken_manifest_lists_every_problem_with_positions(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(
        GOOD.replace("rpo: 4h", "rpoo: 4h").replace("keep_last: 3", "keep_last: 0")
        + "restores:\n  r: {from: nighty, to: prod}\n"
    )
    result = run(["validate", "-f", str(path)])
    assert result.exit_code == 1
    assert problem_lines(result.stderr, str(path)) == [
        f"{path}:7:46: unknown key 'rpoo' in backups.nightly; did you mean 'rpo'?",
        f"{path}:7:79: backups.nightly.retention.keep_last: must be at least 1, got 0",
        f"{path}:9:13: restores.r.from: no backup named 'nighty'; did you mean 'nightly'?",
    ]
    assert result.stdout == ""


def test_missing_file_exits_1_naming_it(tmp_path):
    result = run(["validate", "-f", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 1
    assert "absent.yaml: no such manifest file" in result.stderr


def _bomb() -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


def _backup(body: str) -> bytes:
    return (GOOD + "  other:\n" + "".join(f"    {line}\n" for line in body.splitlines())).encode()


HOSTILE: list[tuple[str, bytes, str]] = [
    ("empty", b"", "the manifest is empty"),
    ("only-comments", b"# nothing here\n", "the manifest is empty"),
    ("list-at-top", b"- version: 1\n- clusters: {}\n", "must be a mapping"),
    ("scalar-at-top", b"just a string\n", "must be a mapping"),
    ("tabs", b"version: 1\nclusters:\n\tprod: {url: http://q:6333}\n", "tabs are not allowed"),
    ("binary-junk", bytes(range(128, 256)) * 8, "not a text file"),
    ("nul-bytes", b"version: 1\x00\x00\n", "not a text file"),
    ("latin-1", "version: 1\nclusters: {pr\u00f6d: {}}\n".encode("latin-1"), "not a text file"),
    ("ten-megabytes", b"# " + b"x" * (10 * 1024 * 1024) + b"\n", "the limit is 1048576 bytes"),
    ("yaml-bomb", _bomb(), "anchors (&a) are not allowed"),
    ("alias", b"version: 1\nclusters: *x\n", "aliases (*x) are not allowed"),
    ("deep-nesting", b"x: " + b"[" * 100_000, "hostile.yaml:1:"),  # stopped by qbr or by libyaml: a position either way
    ("glob-syntax-in-a-restore-target", GOOD.encode() + b'restores:\n  back: {from: nightly, to: dr, collections: {"a": "x", "b*": "[c]*"}}\n',
     "it may not hold ? or [...]"),
    ("deep-block-nesting", b"".join(b" " * i + b"k:\n" for i in range(500)), "nested more than"),
    ("huge-int", _backup("cluster: prod\nrepository: main\nretention: {keep_last: " + "9" * 6000 + "}"), "too large"),
    ("big-int", _backup("cluster: prod\nrepository: main\nretention: {keep_last: 123456789012345678901234567890}"), "must be at most 100000"),
    ("negative-count", _backup("cluster: prod\nrepository: main\nretention: {daily: -3}"), "must be at least 1, got -3"),
    ("zero-count", _backup("cluster: prod\nrepository: main\nretention: {keep_last: 0}"), "must be at least 1, got 0"),
    ("float-count", _backup("cluster: prod\nrepository: main\nretention: {weekly: 2.5}"), "expected a whole number"),
    ("negative-duration", _backup("cluster: prod\nrepository: main\nrpo: -5m"), "'-5m' is not a duration"),
    ("unknown-unit", _backup("cluster: prod\nrepository: main\nrpo: 5x"), "'5x' is not a duration"),
    ("empty-duration", _backup('cluster: prod\nrepository: main\nrpo: ""'), "'' is not a duration"),
    ("zero-duration", _backup("cluster: prod\nrepository: main\nrpo: 0h"), "must be longer than zero"),
    ("unknown-key", _backup("cluster: prod\nrepository: main\nretension: {daily: 3}"), "did you mean 'retention'?"),
    ("traversal-backup-name", GOOD.encode().replace(b"  nightly:", b'  "../../etc":'), "'../../etc' is not a valid name"),
    ("traversal-cluster-name", GOOD.encode().replace(b"  prod: {url", b'  "/tmp/x": {url'), "is not a valid name"),
    ("traversal-collection", _backup('cluster: prod\nrepository: main\ncollections: ["../secrets"]'), "is not a valid collection glob"),
    ("backslash-collection", _backup('cluster: prod\nrepository: main\ncollections: ["..\\\\x"]'), "is not a valid collection glob"),
    ("duplicate-keys", GOOD.encode() + b"backups: {}\n", "duplicate key 'backups'"),
    ("missing-env-var", GOOD.encode().replace(b"./backups", b'"${QBR_TEST_SURELY_UNSET_VAR}"'), "QBR_TEST_SURELY_UNSET_VAR is not set"),
    ("unclosed-reference", GOOD.encode().replace(b"./backups", b'"${OOPS"'), "is not closed"),
    ("version-2", GOOD.encode().replace(b"version: 1", b"version: 2"), "reads manifest version 1"),
    ("unclosed-flow", b"version: 1\nclusters: {prod: {url: x}\n", "invalid YAML"),
    ("two-documents", b"version: 1\n---\nversion: 1\n", "single document"),
    ("python-tag", b'!!python/object/apply:os.system ["touch /tmp/qbr-pwned"]\n', "unsupported YAML tag"),
    ("control-character", b"version: 1\nclusters: \x07\n", "invalid YAML"),
    ("list-as-key", b"? [a, b]\n: c\n", "a key must be a plain name"),
    ("port-too-big", GOOD.encode().replace(b'{url: "http://q0:6333"}', b'{url: "http://q0:6333", rest_port: 70000}'), "must be at most 65535"),
    ("credentials-in-url", GOOD.encode().replace(b"http://q0:6333", b"http://admin:hunter2@q0:6333"), "clusters.prod.url"),
    ("unknown-cluster", GOOD.encode().replace(b"cluster: prod", b"cluster: prd"), "no cluster named 'prd'"),
    ("many-junk-keys", GOOD.encode() + b"".join(b"junk%d: 1\n" % i for i in range(5000)), "more problems not shown"),
]


@pytest.mark.parametrize("name, content, expected", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_manifest_fails_cleanly(tmp_path, name, content, expected):
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    result = run(["validate", "-f", str(path)], env={"QBR_TEST_SURELY_UNSET_VAR": None})
    assert result.exit_code == 1, result.output
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert "hunter2" not in result.output
    lines = problem_lines(result.stderr, str(path))
    assert 1 <= len(lines) <= 201
    assert not Path("/tmp/qbr-pwned").exists()


def test_hostile_table_is_large_enough():
    assert len(HOSTILE) >= 20


def test_real_subprocess_exit_codes_and_output(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "QBR_"))}
    ok = subprocess.run(
        [sys.executable, "-m", "qbr", "validate", "-f", "examples/plans/quickstart.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "examples/plans/quickstart.yaml: valid (1 backups, 0 restores)"

    broken = tmp_path / "broken.yaml"
    broken.write_text(GOOD.replace("rpo: 4h", "rpo: 4 hours").replace("cluster: prod", "cluster: staging"))
    bad = subprocess.run(
        [sys.executable, "-m", "qbr", "validate", "-f", str(broken)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr + bad.stdout
    assert problem_lines(bad.stderr, str(broken)) == [
        f"{broken}:7:22: backups.nightly.cluster: no cluster named 'staging' (there are: prod)",
        f"{broken}:7:54: backups.nightly.rpo: '4 hours' is not a duration: use a number and a unit "
        "(s, m, h, d, w), such as 15m, 4h or 30d",
    ]
