"""The conventions a user of Terraform and restic expects, through the CLI: qbr schema, shell
completion, force-unlock that asks, --debug tracebacks of failed actions, and qbr sets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from qbr.cli import cli
from qbr.locks import Lock, repository_target
from qbr.manifest import load_manifest
from tests.e2e.helpers import make_collection, qbr, write_manifest
from tests.qdrant_testing import TestingClient as QdrantClient

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture
def backed_up(emulator, tmp_path):
    prod = emulator(nodes=1)
    make_collection(prod.urls[0], "docs", points=25)
    make_collection(prod.urls[0], "notes", points=3)
    with QdrantClient(prod.urls[0], backoff=0) as client:
        client.update_aliases([{"create_alias": {"collection_name": "docs", "alias_name": "docs_current"}}])
    write_manifest(tmp_path, f"""
version: 1
clusters: {{prod: {{url: "{prod.urls[0]}"}}}}
repositories: {{folder: {{path: ./backups}}}}
backups: {{nightly: {{cluster: prod, repository: folder, rpo: 1h, aliases: true, retention: {{keep_last: 1}}}}}}
""")
    assert qbr("apply", "--auto-approve", cwd=tmp_path).exit_code == 0
    return prod, tmp_path


@pytest.mark.parametrize("which", ["manifest", "plan", "events"])
def test_qbr_schema_prints_each_json_schema(which):
    result = CliRunner().invoke(cli, ["schema", which] if which != "manifest" else ["schema"])
    assert result.exit_code == 0 and json.loads(result.output) == json.loads((SCHEMAS / f"{which}.v1.json").read_text())


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_each_shell(shell):
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0 and "_QBR_COMPLETE" in result.output


def test_completion_completes_commands_and_options():
    runner = CliRunner()
    env = {"_QBR_COMPLETE": "bash_complete", "COMP_WORDS": "qbr se", "COMP_CWORD": "1"}
    words = runner.invoke(cli, [], prog_name="qbr", env=env).output
    assert "plain,sets" in words and "plain,show" not in words
    env = {"_QBR_COMPLETE": "bash_complete", "COMP_WORDS": "qbr apply --metr", "COMP_CWORD": "2"}
    assert "plain,--metrics-file" in runner.invoke(cli, [], prog_name="qbr", env=env).output


def test_force_unlock_asks_unless_yes_and_a_lock_error_exits_4(backed_up):
    _, folder = backed_up
    dead = Lock(repository_target(load_manifest(folder / "qbr.yaml").repositories["folder"]), "apply")
    dead.acquire(0)
    dead._stop.set()  # its holder died
    assert qbr("apply", "--auto-approve", "--lock-timeout", "0", cwd=folder).exit_code == 4
    unasked = qbr("force-unlock", dead.info.id, cwd=folder)
    assert unasked.exit_code == 1 and "pass --yes" in unasked.stderr
    assert (folder / "backups" / "locks" / "exclusive.json").exists(), "nothing was removed"
    done = qbr("force-unlock", dead.info.id, "--yes", cwd=folder)
    assert done.exit_code == 0 and "Removed the lock" in done.stdout
    assert not (folder / "backups" / "locks" / "exclusive.json").exists()


def test_debug_shows_the_traceback_of_a_failed_action_and_plain_runs_do_not(backed_up):
    prod, folder = backed_up
    prod.nodes[0].faults.add(method="POST", path=r"/snapshots$", status=400, times=None)
    plain = qbr("apply", "--auto-approve", "--now", "2099-01-01T00:00:00Z", cwd=folder)
    assert plain.exit_code == 1 and "FAILED" in plain.stdout and "Traceback" not in plain.output
    debug = qbr("--debug", "apply", "--auto-approve", "--now", "2099-01-01T00:00:00Z", cwd=folder)
    assert debug.exit_code == 1 and "Traceback (most recent call last)" in debug.stderr and "create_snapshot" in debug.stderr


def test_sets_lists_like_restic_snapshots_and_describes_one_set(backed_up):
    _, folder = backed_up
    listed = qbr("sets", cwd=folder)
    assert listed.exit_code == 0, listed.output
    [set_id] = re.findall(r"^(\d{8}T\d{6}Z) ", listed.stdout, re.M)
    assert "newest complete set" in listed.stdout and "1 set of 1 backup" in listed.stdout
    assert qbr("sets", "nightly", cwd=folder).stdout == listed.stdout
    missing = qbr("sets", "nope", cwd=folder)
    assert missing.exit_code == 1 and "no backup named nope" in missing.stderr
    shown = qbr("sets", "describe", set_id, cwd=folder)
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    assert f"set nightly/{set_id}" in text and "Qdrant 1.19.0" in text and "kept because: keep_last #1; newest complete set" in text
    assert "docs: 25 points" in text and "notes: 3 points" in text and "aliases: docs_current" in text
    assert re.search(r"sha256 [0-9a-f]{64}", text)
    described = json.loads(qbr("sets", "describe", f"nightly/{set_id}", "--json", cwd=folder).stdout)
    assert described["kept"] and sorted(described["set"]["collections"]) == ["docs", "notes"]
    rows = json.loads(qbr("sets", "--json", cwd=folder).stdout)
    assert [r["set_id"] for r in rows] == [set_id] and rows[0]["stored_bytes"] > 0
    assert qbr("sets", "describe", "20000101T000000Z", cwd=folder).exit_code == 1
