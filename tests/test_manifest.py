"""The manifest loader: defaults, interpolation, schema and cross-reference problems with exact
positions, and the behaviour of the dataclasses others code against."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qbr.errors import ManifestError
from qbr.manifest import (
    EMBEDDED_SOURCE,
    SCHEMA_PATH,
    Manifest,
    load_manifest,
    load_manifest_text,
    resolve_manifest_path,
)
from qbr.retention import RetentionPolicy

BASE = Path("/srv/qbr")

MINIMAL = """\
version: 1
clusters:
  prod: {url: "http://q0:6333"}
repositories:
  main: {path: ./backups}
"""


def load(text: str, env: dict[str, str] | None = None, base: Path = BASE) -> Manifest:
    return load_manifest_text(textwrap.dedent(text), "m.yaml", base, env or {})


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load(text, env)
    return caught.value.problems


def only_problem(text: str, env: dict[str, str] | None = None) -> str:
    found = problems(text, env)
    assert len(found) == 1, found
    return found[0]


def with_backup(body: str, extra: str = "") -> str:
    return MINIMAL + "backups:\n  nightly:\n" + textwrap.indent(textwrap.dedent(body), "    ") + extra


# --------------------------------------------------------------------------- defaults


def test_minimal_manifest_gets_documented_defaults():
    m = load(
        MINIMAL
        + """\
backups:
  nightly: {cluster: prod, repository: main}
restores:
  copy: {from: nightly, to: prod, collections: {"*": "*_copy"}}
"""
    )
    assert m.version == 1
    assert m.source == "m.yaml"
    assert m.base_dir == BASE
    assert m.state.kind == "path"
    assert m.state.path == BASE / ".qbr" / "state.json"
    assert m.state.describe() == str(BASE / ".qbr" / "state.json")
    cluster = m.clusters["prod"]
    assert cluster.urls == ("http://q0:6333",)
    assert cluster.discover is True
    assert (cluster.api_key, cluster.rest_port, cluster.timeout) == (None, None, None)
    assert m.repositories["main"].kind == "path"
    assert m.repositories["main"].path == BASE / "backups"
    backup = m.backups["nightly"]
    assert backup.collections == ("*",)
    assert backup.rpo == timedelta(hours=24)
    assert backup.only_changed is False
    assert backup.aliases is True
    assert backup.retention == RetentionPolicy()
    restore = m.restores["copy"]
    assert restore.from_backup == "nightly"
    assert restore.at is None
    assert restore.collections == (("*", "*_copy"),)
    assert (restore.if_exists, restore.aliases, restore.via) == ("skip", True, "auto")


def test_restore_collections_default_to_every_name_unchanged():
    m = load(
        """\
        version: 1
        clusters:
          prod: {url: "http://q0:6333"}
          dr: {url: "http://dr:6333"}
        repositories:
          main: {path: ./backups}
        backups:
          nightly: {cluster: prod, repository: main}
        restores:
          replica: {from: nightly, to: dr}
        """
    )
    assert m.restores["replica"].collections == (("*", "*"),)
    assert m.restores["replica"].target_name("docs") == "docs"


def test_empty_backups_and_restores_sections_mean_none():
    m = load(MINIMAL + "backups:\nrestores:\n")
    assert m.backups == {} and m.restores == {}


def test_embedded_default_matches_its_promise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = load_manifest(None, env={})
    assert m.source == EMBEDDED_SOURCE
    assert m.base_dir == tmp_path
    assert m.clusters["local"].urls == ("http://localhost:6333",)
    assert m.clusters["local"].api_key is None
    assert m.repositories["local"].path == tmp_path / "qbr-backups"
    backup = m.backups["default"]
    assert (backup.cluster, backup.repository, backup.collections) == ("local", "local", ("*",))
    assert backup.rpo == timedelta(hours=24)
    assert backup.only_changed is False  # it cannot see in-place updates: off by default (issue 10)
    assert backup.retention == RetentionPolicy(keep_last=3, daily=7, weekly=4)
    assert m.state.path == tmp_path / ".qbr" / "state.json"
    assert m.restores == {}


def test_embedded_default_takes_url_and_key_from_environment(tmp_path):
    m = load_manifest(None, env={"QDRANT_URL": "https://q.example:6333/", "QDRANT_API_KEY": "k"}, base_dir=tmp_path)
    assert m.clusters["local"].urls == ("https://q.example:6333",)
    assert m.clusters["local"].api_key == "k"


def test_full_cluster_repository_and_state_forms():
    m = load(
        """\
        version: 1
        state: {s3: {bucket: qbr-state, key: prod/state.json, endpoint_url: "", region: eu-west-1}}
        clusters:
          a: {url: "http://a0:6333/", nodes: ["http://a1:6333", "http://a0:6333"], rest_port: 6333, timeout: 90s, api_key: k}
          b: {nodes: ["http://b0:6333", "http://b1:6333"]}
        repositories:
          s3: {s3: {bucket: qdrant-backups, prefix: /prod/eu/, endpoint_url: "http://minio:9000", region: ""}}
          home: {path: ~/qbr}
          abs: {path: /var/backups/../qbr}
        """
    )
    assert m.state.kind == "s3"
    assert (m.state.bucket, m.state.key, m.state.endpoint_url, m.state.region) == (
        "qbr-state",
        "prod/state.json",
        None,
        "eu-west-1",
    )
    assert m.state.describe() == "s3://qbr-state/prod/state.json"
    a, b = m.clusters["a"], m.clusters["b"]
    assert a.urls == ("http://a0:6333", "http://a1:6333")  # url first, duplicates dropped
    assert a.discover is False and b.discover is False
    assert (a.rest_port, a.timeout, a.api_key) == (6333, timedelta(seconds=90), "k")
    assert b.urls == ("http://b0:6333", "http://b1:6333")
    s3 = m.repositories["s3"]
    assert (s3.kind, s3.bucket, s3.prefix, s3.endpoint_url, s3.region, s3.path) == (
        "s3",
        "qdrant-backups",
        "prod/eu",
        "http://minio:9000",
        None,
        None,
    )
    assert m.repositories["home"].path == Path(os.path.expanduser("~/qbr"))
    assert m.repositories["abs"].path == Path("/var/qbr")


@pytest.mark.parametrize(
    "state, kind, described",
    [
        ("s3://bucket-1/a/state.json", "s3", "s3://bucket-1/a/state.json"),
        ("state/qbr.json", "path", str(BASE / "state" / "qbr.json")),
        ("{path: /abs/state.json}", "path", "/abs/state.json"),
    ],
)
def test_state_string_and_path_forms(state, kind, described):
    m = load(f"state: {state}\n" + MINIMAL)
    assert m.state.kind == kind
    assert m.state.describe() == described


def test_load_manifest_resolves_paths_against_the_manifest_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "qbr.yaml").write_text(MINIMAL)
    monkeypatch.chdir(tmp_path)
    m = load_manifest(Path("conf/qbr.yaml"), env={})
    assert m.source == "conf/qbr.yaml"
    assert m.base_dir == folder
    assert m.repositories["main"].path == folder / "backups"
    assert m.state.path == folder / ".qbr" / "state.json"


def test_sha256_is_of_the_raw_bytes_and_text_equals_bytes():
    raw = MINIMAL.encode()
    from_bytes = load_manifest_text(raw, "m.yaml", BASE, {})
    from_text = load_manifest_text(MINIMAL, "m.yaml", BASE, {})
    assert from_bytes.sha256 == from_text.sha256 == hashlib.sha256(raw).hexdigest()
    assert load(MINIMAL + "# a comment\n").sha256 != from_bytes.sha256


def test_resolve_manifest_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_manifest_path("missing.yaml") == Path("missing.yaml")
    assert resolve_manifest_path(None) is None
    (tmp_path / "qbr.yaml").write_text(MINIMAL)
    assert resolve_manifest_path(None) == Path("qbr.yaml")
    assert resolve_manifest_path("other.yaml") == Path("other.yaml")


def test_missing_file_is_one_plain_problem(tmp_path):
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "nope.yaml", env={})
    assert caught.value.problems == [f"{tmp_path / 'nope.yaml'}: no such manifest file; check the path, or write one (see examples/plans)"]


def test_yaml_timestamp_and_iso_strings_for_at_become_aware_utc():
    text = """\
        version: 1
        clusters: {prod: {url: "http://q0:6333"}, dr: {url: "http://dr:6333"}}
        repositories: {main: {path: /b}}
        backups: {nightly: {cluster: prod, repository: main}}
        restores:
          naive: {from: nightly, to: dr, at: 2024-05-01T12:00:00}
          zulu: {from: nightly, to: dr, at: 2024-05-01T12:00:00Z}
          offset: {from: nightly, to: dr, at: "2024-05-01T14:00:00+02:00"}
          date: {from: nightly, to: dr, at: 2024-05-01}
          latest: {from: nightly, to: dr, at: latest}
        """
    r = load(text).restores
    noon = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert r["naive"].at == noon and r["naive"].at.tzinfo is not None
    assert r["zulu"].at == noon
    assert r["offset"].at == noon and r["offset"].at.utcoffset() == timedelta(0)
    assert r["date"].at == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert r["latest"].at is None


def test_yaml_11_words_as_names_stay_names():
    m = load(
        """\
        version: 1
        clusters: {"on": {url: "http://q0:6333"}}
        repositories: {yes: {path: /b}}
        backups: {no: {cluster: "on", repository: "yes", only_changed: yes}}
        """
    )
    assert list(m.repositories) == ["yes"]
    assert m.backups["no"].only_changed is True


# --------------------------------------------------------------------------- interpolation


def test_interpolation_forms():
    m = load(
        """\
        version: 1
        clusters:
          prod:
            url: ${URL}
            api_key: "${KEY:-fallback}"
        repositories:
          main: {s3: {bucket: "${BUCKET:-qdrant-backups}", prefix: "cost$$center/${EMPTY:-x}", region: "${REGION}"}}
        backups:
          nightly: {cluster: prod, repository: main, collections: ["price$"]}
        """,
        env={"URL": "http://from-env:6333", "EMPTY": "", "REGION": ""},
    )
    assert m.clusters["prod"].urls == ("http://from-env:6333",)
    assert m.clusters["prod"].api_key == "fallback"
    repo = m.repositories["main"]
    assert (repo.bucket, repo.prefix, repo.region) == ("qdrant-backups", "cost$center/x", None)
    assert m.backups["nightly"].collections == ("price$",)  # a lone $ is literal


def test_unquoted_interpolation_is_retyped():
    text = with_backup(
        """\
        cluster: prod
        repository: main
        only_changed: ${ONLY_CHANGED:-true}
        retention:
          keep_last: ${KEEP:-3}
          within: ${WITHIN:-2d}
        """
    )
    m = load(text)
    assert m.backups["nightly"].retention.keep_last == 3
    assert m.backups["nightly"].only_changed is True
    assert m.backups["nightly"].retention.within == timedelta(days=2)
    m = load(text, env={"KEEP": "12", "ONLY_CHANGED": "false"})
    assert m.backups["nightly"].retention.keep_last == 12
    assert m.backups["nightly"].only_changed is False


def test_quoted_interpolation_stays_a_string():
    found = only_problem(with_backup('cluster: prod\nrepository: main\nretention: {keep_last: "${KEEP:-3}"}\n'))
    assert found == "m.yaml:10:28: backups.nightly.retention.keep_last: expected a whole number, got '3'"


def test_unquoted_references_inside_flow_collections_are_a_yaml_error():
    # '{' and '}' end a flow mapping: ${VAR} there must be quoted (YAML, not qbr, decides this).
    found = only_problem(with_backup("cluster: prod\nrepository: main\nretention: {keep_last: ${KEEP:-3}}\n"))
    assert found.startswith("m.yaml:10:") and "invalid YAML" in found


def test_environment_values_are_not_parsed_as_yaml():
    m = load(MINIMAL.replace('{url: "http://q0:6333"}', '{url: "http://q0:6333", api_key: "${K}"}'), env={"K": "[1, {a: 2}]"})
    assert m.clusters["prod"].api_key == "[1, {a: 2}]"


def test_empty_unquoted_interpolation_is_an_empty_string_not_null():
    m = load(MINIMAL.replace('{url: "http://q0:6333"}', '\n    url: "http://q0:6333"\n    api_key: ${K:-}'))
    assert m.clusters["prod"].api_key is None  # "" -> None, and no type error
    found = only_problem(with_backup("cluster: prod\nrepository: main\nretention:\n  daily: ${DAILY:-}\n"))
    assert found == "m.yaml:11:14: backups.nightly.retention.daily: expected a whole number, got an empty string"


def test_unset_variable_is_named_at_its_scalar():
    text = """\
        version: 1
        clusters:
          prod:
            url: http://q0:6333
            api_key: ${QDRANT_API_KEY}
        repositories:
          main: {path: "${BACKUP_DIR}/qbr"}
        """
    assert problems(text) == [
        "m.yaml:5:14: clusters.prod.api_key: environment variable QDRANT_API_KEY is not set "
        "(set it, or write ${QDRANT_API_KEY:-default} to give a default)",
        "m.yaml:7:16: repositories.main.path: environment variable BACKUP_DIR is not set "
        "(set it, or write ${BACKUP_DIR:-default} to give a default)",
    ]


@pytest.mark.parametrize(
    "value, expected",
    [
        ('"${NOPE"', "'${' is not closed by '}'"),
        ('"${}"', "'${}' is not a valid reference"),
        ('"${1ABC}"', "'${1ABC}' is not a valid reference"),
        ('"${A B}"', "'${A B}' is not a valid reference"),
        ('"${A:-${B}}"', "'${A:-${B}' is not a valid reference"),
    ],
)
def test_malformed_references(value, expected):
    found = only_problem(MINIMAL.replace("./backups", value))
    assert found.startswith("m.yaml:5:16: repositories.main.path: ")
    assert expected in found


def test_secrets_never_appear_in_problems_or_reprs():
    text = MINIMAL.replace('{url: "http://q0:6333"}', '{url: "http://q0:6333", api_key: "${K}", rest_port: x}') + "bogus: 1\n"
    found = problems(text, env={"K": "sekrit-value"})
    assert "sekrit-value" not in "\n".join(found)
    assert "12345" not in only_problem(MINIMAL.replace('{url: "http://q0:6333"}', '{url: "http://q0:6333", api_key: 12345}'))
    leaky = only_problem(MINIMAL.replace('"http://q0:6333"', '"http://user:pw@q0:6333"'))
    assert "pw" not in leaky and "user" not in leaky
    m = load(MINIMAL.replace('{url: "http://q0:6333"}', '{url: "http://q0:6333", api_key: "${K}"}'), env={"K": "sekrit-value"})
    assert m.clusters["prod"].api_key == "sekrit-value"
    assert "sekrit-value" not in repr(m.clusters["prod"])
    assert "sekrit-value" not in repr(m)


# --------------------------------------------------------------------------- positions


POSITIONED = """\
version: 1
clusters:
  prod:
    url: http://q0:6333
    rest_port: "6333"
repositories:
  main:
    s3:
      prefix: x
backups:
  nightly:
    cluster: prod
    rpoo: 4h
    collections:
      - docs
      - 5
    retention: {keep_last: 0, weekly: -1}
  "bad/name": {cluster: prod, repository: main}
"""


def test_problems_sit_at_exact_lines_and_columns_sorted():
    assert problems(POSITIONED) == [
        "m.yaml:5:16: clusters.prod.rest_port: expected a whole number, got '6333'",
        "m.yaml:9:7: missing required key 'bucket' in repositories.main.s3",
        "m.yaml:12:5: missing required key 'repository' in backups.nightly",
        "m.yaml:13:5: unknown key 'rpoo' in backups.nightly; did you mean 'rpo'?",
        "m.yaml:16:9: backups.nightly.collections[1]: expected a string, got 5",
        "m.yaml:17:28: backups.nightly.retention.keep_last: must be at least 1, got 0",
        "m.yaml:17:39: backups.nightly.retention.weekly: must be at least 1, got -1",
        "m.yaml:18:3: backups: 'bad/name' is not a valid name: use 1 to 63 letters, digits, '_', '.' or '-', "
        "starting with a letter or digit",
    ]


def test_error_renders_each_problem_on_its_own_line():
    with pytest.raises(ManifestError) as caught:
        load(POSITIONED)
    lines = str(caught.value).splitlines()
    assert lines == caught.value.problems
    assert all(re.match(r"^m\.yaml:\d+:\d+: ", line) for line in lines)


def test_empty_value_points_at_its_key():
    assert only_problem(MINIMAL + "backups:\n  nightly:\n") == (
        "m.yaml:7:3: backups.nightly: expected a mapping, got nothing (null)"
    )


def test_missing_top_level_keys_point_at_the_top_mapping():
    assert problems("# header\n\nversion: 1\n") == [
        "m.yaml:3:1: missing required key 'clusters' at the top level",
        "m.yaml:3:1: missing required key 'repositories' at the top level",
    ]


def test_columns_count_characters_not_bytes():
    text = MINIMAL + 'backups:\n  nightly: {cluster: "prød", repository: main}\n'
    assert only_problem(text) == "m.yaml:7:22: backups.nightly.cluster: no cluster named 'prød'; did you mean 'prod'?"


def test_yaml_syntax_error_has_position():
    found = only_problem("version: 1\nclusters: {prod: {url: x}\n")
    assert found.startswith("m.yaml:3:1: invalid YAML:")


def test_tab_indentation_gets_a_hint():
    found = only_problem("version: 1\nclusters:\n\tprod: {}\n")
    assert found.startswith("m.yaml:3:1: invalid YAML:")
    assert "tabs are not allowed" in found


def test_duplicate_keys_are_named_with_the_first_line():
    found = problems(MINIMAL + "clusters:\n  other: {url: http://o:6333}\n")
    assert found == ["m.yaml:6:1: duplicate key 'clusters' at the top level (first at line 2)"]
    nested = only_problem(MINIMAL.replace('{url: "http://q0:6333"}', '{url: "http://q0:6333", url: "http://q1:6333"}'))
    assert nested == "m.yaml:3:33: duplicate key 'url' in clusters.prod (first at line 3)"


def test_anchors_and_aliases_are_refused():
    found = only_problem(MINIMAL + "backups:\n  a: &shared {cluster: prod, repository: main}\n  b: *shared\n")
    assert found == "m.yaml:7:6: YAML anchors (&shared) are not allowed in a manifest; write the value out"


def test_billion_laughs_is_refused_at_once():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
    )
    assert "anchors" in only_problem(bomb)


def test_deep_nesting_is_bounded():
    # Which guard stops it (qbr's depth limit or libyaml's own) depends on the YAML library; the
    # behaviour is what counts: one problem, with a position, and no recursion blow-up.
    found = only_problem("[" * 200000)
    assert re.match(r"m\.yaml:1:\d+: \S", found), found
    assert "nested more than 32 levels" in only_problem("x: " + "[" * 500)


def test_top_level_must_be_a_mapping():
    assert only_problem("- a\n- b\n") == (
        "m.yaml:1:1: the manifest must be a mapping (version: 1, clusters: ..., repositories: ...), got a list"
    )
    assert only_problem("") == "m.yaml:1:1: the manifest is empty; it needs at least version: 1, clusters and repositories"
    assert "empty" in only_problem("# only a comment\n")


def test_size_limit_is_checked_before_parsing():
    found = only_problem("#" * (1 << 20) + "\n")
    assert found == f"m.yaml:1:1: the manifest is {(1 << 20) + 1} bytes; the limit is {1 << 20} bytes (1 MiB)"


@pytest.mark.parametrize(
    "raw, position",
    [
        (b"version: 1\nx: \xff\n", "2:4"),
        (b"version: 1\x00\n", "1:11"),
    ],
)
def test_binary_is_not_a_text_file(raw, position):
    with pytest.raises(ManifestError) as caught:
        load_manifest_text(raw, "m.yaml", BASE, {})
    [found] = caught.value.problems
    assert found.startswith(f"m.yaml:{position}: not a text file")


def test_unsafe_tags_are_refused_not_run():
    found = only_problem('!!python/object/apply:os.system ["echo pwned"]\n')
    assert "unsupported YAML tag" in found


def test_huge_numbers_are_problems_not_crashes():
    huge = "9" * 5000
    assert "too large" in only_problem(with_backup(f"cluster: prod\nrepository: main\nretention: {{keep_last: {huge}}}\n"))
    big = "9" * 40
    found = only_problem(with_backup(f"cluster: prod\nrepository: main\nretention: {{daily: {big}}}\n"))
    assert found.endswith("must be at most 100000, got a number too large to be useful")


def test_problem_list_is_capped():
    text = MINIMAL + "".join(f"junk{i}: 1\n" for i in range(500))
    found = problems(text)
    assert len(found) == 201
    assert found[-1] == "m.yaml:206:1: 300 more problems not shown"


# --------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize(
    "text, expected",
    [
        (MINIMAL + "backup: {}\n", "m.yaml:6:1: unknown key 'backup' at the top level; did you mean 'backups'?"),
        (
            MINIMAL.replace("{url:", "{nodes: [], urll:").replace("nodes: [], ", "nodes: [\"http://q1:6333\"], "),
            "m.yaml:3:37: unknown key 'urll' in clusters.prod; did you mean 'url'?",
        ),
        (
            MINIMAL + "backups:\n  n: {cluster: prod, repository: main, retention: {dialy: 3}}\n",
            "m.yaml:7:52: unknown key 'dialy' in backups.n.retention; did you mean 'daily'?",
        ),
        (
            MINIMAL + "zzz: 1\n",
            "m.yaml:6:1: unknown key 'zzz' at the top level; expected one of: version, state, clusters, "
            "repositories, backups, restores, adopt",
        ),
    ],
)
def test_unknown_keys_suggest_the_closest(text, expected):
    assert only_problem(text) == expected


def test_enum_suggests_the_closest():
    text = with_backup("cluster: prod\nrepository: main\n") + "restores:\n  r: {from: nightly, to: prod, collections: {a: b}, if_exists: replce}\n"
    assert only_problem(text) == (
        "m.yaml:11:64: restores.r.if_exists: expected one of skip, replace, fail, got 'replce'; did you mean 'replace'?"
    )


# --------------------------------------------------------------------------- schema values


def _mangle(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new)


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("version: 1", "version: 2", "version: this qbr reads manifest version 1, got 2"),
        ('{url: "http://q0:6333"}', "{}", "clusters.prod: needs 'url' (one node; its peers are discovered) or 'nodes'"),
        ('{url: "http://q0:6333"}', "{nodes: []}", "clusters.prod.nodes: must not be empty"),
        ('"http://q0:6333"', '"ftp://q0"', "clusters.prod.url: expected an http:// or https:// URL"),
        ('"http://q0:6333"', '"http://q0:99999"', "clusters.prod.url: the URL has an invalid host or port"),
        ("{path: ./backups}", "{path: ./b, s3: {bucket: bkt}}", "repositories.main: has both 's3' and 'path'; use one"),
        ("{path: ./backups}", "{}", "repositories.main: needs 's3' or 'path'"),
        ("{path: ./backups}", "{s3: {bucket: B_}}", "repositories.main.s3.bucket: 'B_' is not a valid S3 bucket name"),
        ("{path: ./backups}", '{s3: {bucket: bkt, prefix: "a/../b"}}', "a prefix may not hold empty, '.' or '..' segments"),
        ("{path: ./backups}", '{s3: {bucket: bkt, endpoint_url: "minio:9000"}}', "expected an http:// or https:// URL"),
        ("{path: ./backups}", '{path: ""}', "repositories.main.path: must not be empty"),
        ("{path: ./backups}", '{path: "a\\0b"}', "repositories.main.path: a path may not hold control characters"),
        ("version: 1", 'version: 1\nstate: "s\\tx"', "state: a path may not hold control characters"),
        ("version: 1", "version: 1\nstate: {s3: {bucket: bkt, key: a/}}", "state.s3.key: the state key must name an object"),
        ("version: 1", "version: 1\nstate: s3://bkt/", "state: expected s3://bucket/key"),
        ("clusters:\n  prod", 'clusters:\n  "prod\\n"', "clusters: 'prod\\n' is not a valid name"),
        ("clusters:\n  prod", "clusters:\n  " + "p" * 64, "is not a valid name"),
    ],
)
def test_schema_value_problems_are_explained(old, new, expected):
    assert expected in only_problem(_mangle(old, new))


def test_integers_must_be_whole_not_floats():
    text = with_backup("cluster: prod\nrepository: main\nretention: {daily: 3.0}\n")
    assert only_problem(text).endswith("retention.daily: expected a whole number, got the number 3.0")


@pytest.mark.parametrize(
    "rpo, expected",
    [
        ("-5m", "'-5m' is not a duration"),
        ("5x", "'5x' is not a duration"),
        ('""', "'' is not a duration"),
        ("0m", "'0m' must be longer than zero"),
        ("24", "expected a duration such as 15m, 4h or 30d, got 24"),
    ],
)
def test_bad_durations_use_parse_duration_messages(rpo, expected):
    found = only_problem(with_backup(f"cluster: prod\nrepository: main\nrpo: {rpo}\n"))
    assert found.startswith("m.yaml:10:10: backups.nightly.rpo: ")
    assert expected in found


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("../etc", "'../etc' is not a valid collection glob"),
        ("a/b", "is not a valid collection glob"),
        ("..", "is not a valid collection glob"),
        ('"a\\\\b"', "is not a valid collection glob"),
        ('"a\\0b"', "is not a valid collection glob"),
        ('"a:b"', "is not a valid collection glob"),
        ('"*", "!"', "m.yaml:10:24: backups.nightly.collections[1]: an exclude needs a glob after '!'"),
    ],
)
def test_collection_globs_reject_path_and_invalid_characters(selector, expected):
    found = only_problem(with_backup(f"cluster: prod\nrepository: main\ncollections: [{selector}]\n"))
    assert expected in found


def test_only_excludes_select_nothing():
    found = only_problem(with_backup('cluster: prod\nrepository: main\ncollections: ["!tmp_*"]\n'))
    assert found == (
        "m.yaml:10:18: backups.nightly.collections: selects no collection: every entry excludes; "
        "put an include such as '*' first"
    )


# --------------------------------------------------------------------------- cross-references

TWO_CLUSTERS = """\
version: 1
clusters:
  prod: {url: "http://q0:6333"}
  dr: {url: "http://dr:6333"}
repositories:
  main: {path: ./backups}
  s3: {s3: {bucket: qdrant-backups}}
backups:
  nightly: {cluster: prod, repository: main, collections: ["*", "!tmp_*"]}
"""


def restore(body: str) -> str:
    return TWO_CLUSTERS + "restores:\n  r:\n" + textwrap.indent(textwrap.dedent(body), "    ")


def test_unknown_names_are_reported_where_they_are_used():
    text = TWO_CLUSTERS + """\
  other: {cluster: prodd, repository: mian}
restores:
  r: {from: nightl, to: nowhere}
"""
    assert problems(text) == [
        "m.yaml:10:20: backups.other.cluster: no cluster named 'prodd'; did you mean 'prod'?",
        "m.yaml:10:39: backups.other.repository: no repository named 'mian'; did you mean 'main'?",
        "m.yaml:12:13: restores.r.from: no backup named 'nightl'; did you mean 'nightly'?",
        "m.yaml:12:25: restores.r.to: no cluster named 'nowhere' (there are: prod, dr)",
    ]


def test_restore_onto_its_own_source_with_the_default_map():
    found = only_problem(restore("from: nightly\nto: prod\n"))
    assert found.startswith("m.yaml:13:9: restores.r.to: the default collections map {\"*\": \"*\"} would restore")
    assert "onto itself" in found


@pytest.mark.parametrize(
    "mapping, line_col",
    [
        ('{"*": "*"}', "14:24"),  # the value: 4 spaces, 'collections: ' and '{"*": '
        ("{docs: docs}", "14:25"),
        ('{"docs_*": "docs_*"}', "14:29"),
    ],
)
def test_restore_map_sending_a_name_to_itself_on_the_same_cluster(mapping, line_col):
    found = only_problem(restore(f"from: nightly\nto: prod\ncollections: {mapping}\n"))
    assert found.startswith(f"m.yaml:{line_col}: restores.r.collections")
    assert "onto itself" in found


def test_renames_on_the_same_cluster_and_copies_to_another_cluster_are_fine():
    load(restore('from: nightly\nto: prod\ncollections: {"*": "*_restored"}\n'))
    load(restore("from: nightly\nto: dr\n"))


def test_literal_backup_collections_are_checked_exactly():
    text = TWO_CLUSTERS.replace('["*", "!tmp_*"]', "[docs, docs_v2]") + "restores:\n  r:\n    from: nightly\n    to: prod\n"
    # The backup names its collections, so the map is checked on exactly those: '*' sends docs_v2 to itself.
    found = only_problem(text + '    collections: {docs: docs_restored, "*": "*"}\n')
    assert "'docs_v2' onto itself" in found
    m = load(text + '    collections: {docs: docs_restored, docs_v2: docs_v2_restored, "*": "*"}\n')
    assert m.restores["r"].target_name("docs_v2") == "docs_v2_restored"


def test_two_entries_into_one_target():
    found = problems(restore("from: nightly\nto: dr\ncollections: {a: x, b: x}\n"))
    assert found == [
        "m.yaml:14:28: restores.r.collections.b: 'b' -> 'x' and 'a' -> 'x' can both restore into 'x'; "
        "give each source its own target"
    ]


def test_a_rename_beside_an_identity_entry_is_valid_its_clash_is_decided_at_plan_time():
    # `{docs: docs_old, "*": "*"}` clashes only if the source holds a collection named docs_old,
    # which only the live cluster can tell; the planner refuses it then (tests/test_planner.py).
    manifest = load(restore('from: nightly\nto: dr\ncollections: {docs: docs_old, "*": "*"}\n'))
    assert manifest.restores["r"].target_name("docs") == "docs_old"
    assert manifest.restores["r"].target_name("images") == "images"


def test_two_patterns_into_overlapping_targets():
    found = only_problem(restore('from: nightly\nto: dr\ncollections: {"a_*": "x_*", "b_*": "x_*"}\n'))
    assert "can both restore into names matching 'x_*'" in found


@pytest.mark.parametrize(
    "mapping, expected",
    [
        ('{"docs_*": "restored"}', "is a glob that may match several collections, but the target 'restored' is one name"),
        ('{docs: "copy_*"}', "has a '*', so the source must be a pattern with exactly one '*'"),
        ('{"a*b*": "x_*"}', "has a '*', so the source must be a pattern with exactly one '*'"),
        ('{"a_*": "x_*_*"}', "may hold one '*' at most"),
        ('{"*": "*_copy", docs: other}', "the entry 'docs' is never used: the earlier entry '*' matches first"),
        ('{"d*": "*_copy", docs: other}', "the entry 'docs' is never used: the earlier entry 'd*' matches first"),
        ('{docs: "a?b"}', "is not a valid target collection name"),
        ('{"../x": y}', "is not a valid collection name or glob"),
        ("{}", "restores.r.collections: must not be empty"),
    ],
)
def test_restore_map_rules(mapping, expected):
    assert expected in only_problem(restore(f"from: nightly\nto: dr\ncollections: {mapping}\n"))


def test_via_url_needs_an_s3_repository():
    found = only_problem(restore("from: nightly\nto: dr\nvia: url\n"))
    assert found.startswith("m.yaml:14:10: restores.r.via: 'url' needs an S3 repository")
    load(restore("from: nightly\nto: dr\nvia: url\n").replace("repository: main", "repository: s3"))


def test_bad_at_is_explained():
    found = only_problem(restore("from: nightly\nto: dr\nat: yesterday\n"))
    assert found == (
        "m.yaml:14:9: restores.r.at: expected latest or an ISO 8601 timestamp such as 2024-05-01T12:00:00Z, got 'yesterday'"
    )


def test_every_problem_is_collected_in_one_pass():
    text = TWO_CLUSTERS + "  bad: {cluster: nope, repository: main, rpo: 5x, retention: {keep_last: 0}}\n  extra: 1\n"
    found = problems(text)
    assert len(found) == 4
    assert [f.split(":")[1] for f in found] == ["10", "10", "10", "11"]


# --------------------------------------------------------------------------- dataclass behaviour


def test_selects_last_matching_glob_decides():
    m = load(with_backup('cluster: prod\nrepository: main\ncollections: ["*", "!tmp_*", "tmp_keep", "!*_old"]\n'))
    backup = m.backups["nightly"]
    assert backup.selects("docs")
    assert not backup.selects("tmp_scratch")
    assert backup.selects("tmp_keep")
    assert not backup.selects("docs_old")
    assert not backup.selects("tmp_keep_old")
    assert backup.selects("Docs")  # case-sensitive globs: '!*_old' does not touch 'Docs'
    only = load(with_backup('cluster: prod\nrepository: main\ncollections: ["doc?"]\n')).backups["nightly"]
    assert only.selects("docs") and not only.selects("doc") and not only.selects("DOCS")


def test_target_name_first_matching_entry_wins():
    m = load(restore('from: nightly\nto: dr\ncollections: {docs: documents, "user_*": "customer_*_v2", "a*": "*"}\n'))
    r = m.restores["r"]
    assert r.collections == (("docs", "documents"), ("user_*", "customer_*_v2"), ("a*", "*"))
    assert r.target_name("docs") == "documents"
    assert r.target_name("user_eu") == "customer_eu_v2"
    assert r.target_name("user_") == "customer__v2"
    assert r.target_name("alpha") == "alpha"
    assert r.target_name("zeta") is None


def test_dataclasses_are_frozen():
    m = load(restore("from: nightly\nto: dr\n"))
    for obj, name in [
        (m, "version"),
        (m.state, "path"),
        (m.clusters["prod"], "urls"),
        (m.repositories["main"], "path"),
        (m.backups["nightly"], "rpo"),
        (m.restores["r"], "to"),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)
    assert isinstance(m.clusters["prod"].urls, tuple)
    assert isinstance(m.backups["nightly"].collections, tuple)
    assert isinstance(m.restores["r"].collections, tuple)


def test_field_names_others_code_against():
    assert [f.name for f in dataclasses.fields(Manifest)] == [
        "source", "base_dir", "sha256", "version", "state", "clusters", "repositories", "backups", "restores", "adopt"
    ]
    m = load(restore("from: nightly\nto: dr\n"))
    assert [f.name for f in dataclasses.fields(m.clusters["prod"])] == [
        "name", "urls", "api_key", "rest_port", "timeout", "discover", "snapshot_timeout", "snapshot_storage", "tls"
    ]
    assert [f.name for f in dataclasses.fields(m.repositories["main"])] == [
        "name", "kind", "path", "bucket", "prefix", "endpoint_url", "region", "s3", "encryption", "sse", "object_lock", "group",
        "dedup", "compression", "compression_level",
    ]
    assert [f.name for f in dataclasses.fields(m.state)] == ["kind", "path", "bucket", "key", "endpoint_url", "region", "s3", "sse"]
    assert [f.name for f in dataclasses.fields(m.backups["nightly"])] == [
        "name", "cluster", "repository", "collections", "rpo", "only_changed", "aliases", "retention", "max_reference_age"
    ]
    assert [f.name for f in dataclasses.fields(m.restores["r"])] == [
        "name", "from_backup", "to", "at", "collections", "if_exists", "aliases", "via", "topology", "storage", "method",
        "batch_size", "verify_sample", "copy_from",
    ]


# --------------------------------------------------------------------------- the schema file


def test_schema_is_valid_2020_12_and_closed_everywhere():
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, node.get("description", node)
            if node.get("type") == "object" or "object" in node.get("type", []):
                assert "additionalProperties" in node, node.get("description", node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)


def test_package_finds_the_schema_through_its_folder():
    assert SCHEMA_PATH == Path(__import__("qbr").__file__).parent / "schemas" / "manifest.v1.json"
    assert SCHEMA_PATH.is_file()


# --------------------------------------------------------------------------- never a traceback

_keys = st.sampled_from(
    ["version", "state", "clusters", "repositories", "backups", "restores", "prod", "main", "nightly", "url",
     "nodes", "api_key", "rest_port", "timeout", "s3", "path", "bucket", "prefix", "cluster", "repository",
     "collections", "rpo", "retention", "keep_last", "within", "from", "to", "at", "if_exists", "via", "*", "a*"]
)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True),
    st.sampled_from(["prod", "main", "nightly", "24h", "5x", "", "*", "!*", "latest", "http://q:1", "${X}", "$$", "a/b"]),
    st.text(max_size=8),
)
_trees = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _trees, max_size=6))
def test_any_structure_gives_a_manifest_or_a_manifest_error(data):
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        load_manifest_text(text, "m.yaml", BASE, {})
    except ManifestError as error:
        assert error.problems
        assert all(line.startswith("m.yaml:") for line in error.problems)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_a_manifest_or_a_manifest_error(raw):
    try:
        load_manifest_text(raw, "m.yaml", BASE, {})
    except ManifestError as error:
        assert all(re.match(r"^m\.yaml:\d+:\d+: ", line) for line in error.problems)
