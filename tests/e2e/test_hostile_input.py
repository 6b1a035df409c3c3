"""Hostile input through the CLI: broken manifests, flags, plan files, state files, tampered set
records and Qdrant answers that lie.

Every case runs against a copy of one established world (a backed-up and restored cluster, an
S3 repository on moto, a state file) and must end with exit 1, a clear message naming what is
wrong, no traceback, and nothing changed: not the repository listing, not the state's bytes,
not any cluster's collections, points or aliases.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qbr.repository import open_s3_repository
from tests.e2e.helpers import make_collection, qbr, write_manifest
from tests.emulator.cluster import EmulatorCluster
from tests.qdrant_testing import TestingClient as QdrantClient
from tests.s3_fixture import s3_client

LATER = 25  # hours from now: past the base manifest's rpo of 24h


def _stamp(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Base:
    """The established world every case starts from (its folder is copied for each case)."""

    folder: Path
    source: EmulatorCluster
    target: EmulatorCluster
    endpoint: str
    bucket: str
    manifest: str

    _repo: Any = None

    def repository(self):
        if self._repo is None:
            self._repo = open_s3_repository(self.bucket, prefix="hostile", endpoint_url=self.endpoint)
        return self._repo


MANIFEST = """
version: 1
clusters:
  prod: {{url: "{source}"}}
  dr: {{url: "{target}"}}
repositories:
  main:
    s3: {{bucket: {bucket}, prefix: hostile, endpoint_url: "{endpoint}", region: us-east-1}}
backups:
  nightly: {{cluster: prod, repository: main, collections: ["*"], rpo: 1h, retention: {{keep_last: 3}}}}
restores:
  dr: {{from: nightly, to: dr, collections: {{"*": "*_dr"}}, if_exists: replace}}
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory, s3_server) -> Base:
    source = EmulatorCluster(nodes=1, data_dir=tmp_path_factory.mktemp("source")).start()
    target = EmulatorCluster(nodes=1, data_dir=tmp_path_factory.mktemp("target")).start()
    bucket = f"qbr-hostile-{uuid.uuid4().hex[:12]}"
    s3_client(s3_server).create_bucket(Bucket=bucket)
    make_collection(source.urls[0], "docs", points=20)
    make_collection(source.urls[0], "notes", points=5)
    folder = tmp_path_factory.mktemp("base")
    manifest = MANIFEST.format(source=source.urls[0], target=target.urls[0], bucket=bucket, endpoint=s3_server)
    write_manifest(folder, manifest)
    # Two sets three hours apart, the target restored from the newer; then an rpo that keeps both
    # fresh, so a plan now has nothing to do and a restore has an older set it must not fall back to.
    for now in (_stamp(-3), _stamp(0)):
        run = qbr("apply", "--auto-approve", "--now", now, cwd=folder)
        assert run.exit_code == 0, run.output
    manifest = manifest.replace("rpo: 1h", "rpo: 24h")
    write_manifest(folder, manifest)
    assert sorted(target.collection_names()) == ["docs_dr", "notes_dr"]
    assert qbr("plan", "--detailed-exitcode", cwd=folder).exit_code == 0
    yield Base(folder, source, target, s3_server, bucket, manifest)
    source.stop()
    target.stop()


@dataclass
class Case:
    """One copy of the base world, for one hostile input."""

    folder: Path
    base: Base
    notes: list[str] = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        return self.folder / "qbr.yaml"

    @property
    def state_path(self) -> Path:
        return self.folder / ".qbr" / "state.json"

    def state(self) -> dict:
        return json.loads(self.state_path.read_text())

    def set_state(self, data: Any) -> None:
        self.state_path.write_text(json.dumps(data) if not isinstance(data, str) else data)

    def manifest(self, text: str) -> None:
        self.manifest_path.write_text(text)

    def edit_manifest(self, old: str, new: str) -> None:
        text = self.manifest_path.read_text()
        assert old in text, old
        self.manifest_path.write_text(text.replace(old, new))

    def saved_plan(self, *extra: str) -> dict:
        """A plan with actions (a backup is due a day from now), saved and parsed."""
        run = qbr("plan", "-o", "plan.json", "--now", _stamp(LATER), *extra, cwd=self.folder)
        assert run.exit_code == 0, run.output
        return json.loads((self.folder / "plan.json").read_text())

    def write_plan(self, data: Any) -> None:
        (self.folder / "plan.json").write_text(data if isinstance(data, str) else json.dumps(data))


def fingerprint(case: Case) -> dict:
    """Everything a refused command must leave as it was."""
    files = {
        str(p.relative_to(case.folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(case.folder.rglob("*"))
        if p.is_file()
    }
    repository = sorted((o.key, o.size, o.etag) for o in case.base.repository().list(""))
    clusters = {}
    for name, cluster in (("source", case.base.source), ("target", case.base.target)):
        state = cluster.nodes[0].state  # read the emulator's own state: a lying node must not fool the check
        with state.lock:
            clusters[name] = {
                "collections": {c: len(cluster.points(c)) for c in state.collections},
                "aliases": dict(state.aliases),
                "snapshots": sorted(p.name for n in cluster.nodes for p in n.snapshots_dir.rglob("*.snapshot")),
            }
    return {"files": files, "repository": repository, "clusters": clusters}


@dataclass(frozen=True)
class Hostile:
    id: str
    prepare: Callable[[Case], list[str]]  # arranges the bad input; returns the qbr command line
    message: str  # what stderr must say (a regex)
    runs: bool = False  # the apply starts and fails in an action: only the journal may change
    exit_code: int = 1  # 0 for the few inputs qbr warns about and leaves alone


def manifest_case(id: str, text: str, message: str) -> Hostile:
    """A whole bad manifest, applied."""

    def prepare(case: Case) -> list[str]:
        case.manifest(text.format(**_urls(case)))
        return ["apply", "--auto-approve"]

    return Hostile(id, prepare, message)


def edit_case(
    id: str, old: str, new: str, message: str, command: tuple[str, ...] = ("apply", "--auto-approve"), exit_code: int = 1
) -> Hostile:
    """One edit to the base manifest, applied."""

    def prepare(case: Case) -> list[str]:
        case.edit_manifest(old, new)
        return list(command)

    return Hostile(id, prepare, message, exit_code=exit_code)


def _urls(case: Case) -> dict[str, str]:
    base = case.base
    return {"source": base.source.urls[0], "target": base.target.urls[0], "bucket": base.bucket, "endpoint": base.endpoint}


def flag_case(id: str, args: list[str], message: str) -> Hostile:
    return Hostile(id, lambda case: list(args), message)


def state_case(id: str, content: Any, message: str) -> Hostile:
    def prepare(case: Case) -> list[str]:
        case.set_state(content(case.state()) if callable(content) else content)
        return ["apply", "--auto-approve"]

    return Hostile(id, prepare, message)


def plan_case(id: str, edit: Callable[[Case, dict], Any], message: str, *, runs: bool = False) -> Hostile:
    """A saved plan, edited (or replaced), then applied."""

    def prepare(case: Case) -> list[str]:
        plan = case.saved_plan()
        replaced = edit(case, plan)
        case.write_plan(plan if replaced is None else replaced)
        return ["apply", "plan.json", "--now", _stamp(LATER)]

    return Hostile(id, prepare, message, runs)


def _edit_action(kind: str, change: Callable[[dict], None]) -> Callable[[Case, dict], None]:
    def edit(case: Case, plan: dict) -> None:
        change(next(a for a in plan["actions"] if a["kind"] == kind))

    return edit


def _edit_every(kind: str, change: Callable[[dict], None]) -> Callable[[Case, dict], None]:
    def edit(case: Case, plan: dict) -> None:
        for action in plan["actions"]:
            if action["kind"] == kind:
                change(action)

    return edit


def _other_lineage(case: Case, plan: dict) -> None:
    state = case.state()
    state["lineage"] = str(uuid.uuid4())
    case.set_state(state)


def _serial_moved(case: Case, plan: dict) -> None:
    state = case.state()
    state["serial"] += 1
    case.set_state(state)


def _manifest_changed(case: Case, plan: dict) -> None:
    case.edit_manifest("rpo: 24h", "rpo: 2d")


def _duplicate_ids(case: Case, plan: dict) -> None:
    plan["actions"].append(dict(plan["actions"][0]))


def _unknown_dependency(case: Case, plan: dict) -> None:
    plan["actions"][-1]["depends_on"] = ["backup.nightly.nope.copy.docs"]


def _cycle(case: Case, plan: dict) -> None:
    first, last = plan["actions"][0], plan["actions"][-1]
    first["depends_on"] = [last["id"]]


def _set_key(case: Case) -> str:
    keys = [o.key for o in case.base.repository().list("sets/nightly/")]
    assert keys, "the base world has a set"
    return keys[-1]


ROLLBACK = r"^Error: restore dr: refusing to restore from set \d{8}T\d{6}Z, because a newer set record of backup nightly cannot be read "


def set_case(id: str, tamper: Callable[[dict, str], Any], message: str, command: tuple[str, ...] = ("apply", "--auto-approve")) -> Hostile:
    """The newest set record, tampered with in the repository, then the command; the record is put back by the fixture."""

    def prepare(case: Case) -> list[str]:
        key = _set_key(case)
        repo = case.base.repository()
        original = repo.get_bytes(key)
        case.notes.append(key)
        tampered = tamper(json.loads(original), key)
        if isinstance(tampered, tuple):  # (new key, body): the record moved
            key, tampered = tampered
            case.notes.append(key)
        repo.put_bytes(key, tampered if isinstance(tampered, bytes) else json.dumps(tampered).encode())
        return list(command)

    return Hostile(id, prepare, message)


def _traversal_archive_keys(case: Case) -> list[str]:
    """A well-formed newest set whose archives point outside the repository; the state forgets the
    restore, so apply restores from that set again (if_exists: replace)."""
    key = _set_key(case)
    repo = case.base.repository()
    record = json.loads(repo.get_bytes(key))
    for collection in record["collections"].values():
        for archive in collection["archives"]:
            archive["key"] = "../../../etc/passwd"
    case.notes.append(key)
    repo.put_bytes(key, json.dumps(record).encode())
    state = case.state()
    state["restores"] = {}
    case.set_state(state)
    return ["apply", "--auto-approve"]


def lie_case(id: str, method: str, path: str, message: str, *, command: tuple[str, ...] | None = None, runs: bool = False,
             **fault: Any) -> Hostile:
    """The source node answers `method path` with a lie (emulator fault, every time). The plan runs
    past the rpo: a quiet tick reads no collection in detail, so a lie there would go unread."""
    command = command if command is not None else ("plan", "--now", _stamp(LATER))

    def prepare(case: Case) -> list[str]:
        body = fault.get("body")
        if callable(body):
            fault_kw = {**fault, "body": body(case)}
        else:
            fault_kw = fault
        case.base.source.nodes[0].faults.add(method=method, path=path, times=None, **fault_kw)
        return list(command)

    return Hostile(id, prepare, message, runs)


def _ok(result: Any) -> dict:
    return {"result": result, "status": "ok", "time": 0.001}


def _real_snapshot(case: Case, **overrides: Any) -> dict:
    """A snapshot that really exists on the node, described with some fields changed."""
    with QdrantClient(case.base.source.urls[0], backoff=0) as client:
        made = client.create_snapshot("docs")
    description = {"name": made.name, "size": made.size, "checksum": made.checksum, "creation_time": made.creation_time}
    return _ok({**description, **overrides})


APPLY_LATER = ("apply", "--auto-approve", "--now", _stamp(LATER))


CASES = [
    # ---------------------------------------------------------------- manifests
    manifest_case("yaml-broken", "version: 1\nclusters: {{prod: {{url: \"{source}\"}}\n", r"qbr\.yaml:3:1: invalid YAML"),
    manifest_case("yaml-tab-indent", "version: 1\nclusters:\n\tprod: {{url: x}}\n", r"qbr\.yaml:3:1: "),
    manifest_case("yaml-top-level-list", "- version: 1\n", r"qbr\.yaml:1:1: .*mapping"),
    manifest_case("yaml-empty", "", r"qbr\.yaml:1:1: the manifest is empty"),
    manifest_case("yaml-not-text", "version: 1\x00\n", r"not a text file: it contains NUL bytes"),
    manifest_case("yaml-alias-bomb", "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", r"qbr\.yaml:\d+:\d+: .*(anchor|alias)"),
    edit_case("version-2", "version: 1", "version: 2", r"qbr\.yaml:2:10: version: .*1"),
    edit_case("rpo-wrong-type", "rpo: 24h", "rpo: 5", r"backups\.nightly\.rpo: expected a duration"),
    edit_case("rpo-negative", "rpo: 24h", "rpo: -1h", r"backups\.nightly\.rpo: .*'-1h' is not a duration"),
    edit_case("rpo-zero", "rpo: 24h", "rpo: 0s", r"backups\.nightly\.rpo: .*longer than zero"),
    edit_case("rpo-huge", "rpo: 24h", "rpo: 99999999999w", r"backups\.nightly\.rpo: .*too long"),
    edit_case("keep-last-huge", "keep_last: 3", "keep_last: 1000000000000000000000000000000", r"keep_last: .*100000"),
    edit_case("keep-last-negative", "keep_last: 3", "keep_last: -1", r"keep_last: .*1"),
    edit_case("unknown-key", "rpo: 24h,", "rpo: 24h, rpoo: 2h,", r"qbr\.yaml:\d+:\d+: unknown key 'rpoo' in backups\.nightly; did you mean 'rpo'\?"),
    edit_case("unknown-top-key", "version: 1", "version: 1\nbackup: {}", r"qbr\.yaml:3:1: .*backup.*did you mean .?backups"),
    edit_case("traversal-glob", 'collections: ["*"]', 'collections: ["../x"]', r"collections\[0\]: .*not a valid collection glob"),
    edit_case("slash-glob", 'collections: ["*"]', 'collections: ["docs/*"]', r"not a valid collection glob"),
    # A glob that matches nothing is a warning, not an error (collections come and go); the
    # backup is left alone, and `qbr status` reports it late once its newest set ages past rpo.
    edit_case("glob-matches-nothing", 'collections: ["*"]', 'collections: ["nomatch_*"]',
              r"Warning: backup nightly: no collection on cluster prod matches \['nomatch_\*'\]",
              ("apply", "--auto-approve", "--now", _stamp(LATER)), exit_code=0),
    edit_case("rename-source-matches-nothing", '{"*": "*_dr"}', '{"nosuch": "nosuch_dr"}',
              r"Warning: restore dr: .*nosuch", exit_code=0),
    edit_case("traversal-target", '{"*": "*_dr"}', '{"docs": "../evil"}', r"restores\.dr\.collections\.docs: .*not a valid target"),
    edit_case("dots-target", '{"*": "*_dr"}', '{"docs": ".."}', r"restores\.dr\.collections\.docs: .*not a valid target"),
    edit_case("control-char-target", '{"*": "*_dr"}', '{"docs": "do\\u0007cs"}', r"not a valid target"),
    edit_case("unicode-rename-clash", '{"*": "*_dr"}', '{"docs": "dökümanlar", "notes": "dökümanlar"}',
              r"can both restore into 'dökümanlar'"),
    edit_case("restore-into-a-backed-up-collection", "to: dr,", "to: prod,",
              r"refusing to restore into collection docs_dr on cluster prod, because backup nightly backs it up"),
    edit_case("onto-itself-star", 'to: dr, collections: {"*": "*_dr"}', 'to: prod, collections: {"*": "*"}', r"onto itself"),
    edit_case("unknown-backup", "from: nightly", "from: nighlty", r"restores\.dr\.from: .*nighlty.*did you mean .?nightly"),
    edit_case("unknown-repository", "repository: main", "repository: mian", r"backups\.nightly\.repository: .*mian"),
    edit_case("url-not-http", "url: \"http://127.0.0.1", "url: \"ftp://127.0.0.1", r"clusters\.prod\.url: expected an http"),
    edit_case("url-with-credentials", "url: \"http://127.0.0.1", "url: \"http://admin:hunter2@127.0.0.1",
              r"clusters\.prod\.url: expected an http.*credentials"),
    edit_case("unset-variable", "rpo: 24h", "rpo: \"${QBR_HOSTILE_UNSET_VARIABLE}\"", r"QBR_HOSTILE_UNSET_VARIABLE"),
    edit_case("at-not-a-time", "if_exists: replace", "if_exists: replace, at: yesterday", r"restores\.dr\.at: expected latest"),
    edit_case("if-exists-bogus", "if_exists: replace", "if_exists: overwrite", r"restores\.dr\.if_exists: .*overwrite"),
    edit_case("state-bad-s3-url", "version: 1", "version: 1\nstate: s3://x/", r"state: expected s3://bucket/key"),
    # ---------------------------------------------------------------- flags
    flag_case("parallelism-zero", ["plan", "--parallelism", "0"], r"--parallelism.*0 is not in the range"),
    flag_case("parallelism-word", ["apply", "--auto-approve", "--parallelism", "many"], r"--parallelism.*'many' is not a valid integer"),
    flag_case("parallelism-huge", ["plan", "--detailed-exitcode", "--parallelism", "100000"], r"--parallelism.*100000 is not in the range"),
    flag_case("lock-timeout-negative", ["apply", "--auto-approve", "--lock-timeout", "-5s"], r"--lock-timeout.*'-5s' is not a duration"),
    flag_case("lock-timeout-word", ["apply", "--auto-approve", "--lock-timeout", "forever"], r"--lock-timeout.*'forever' is not a duration"),
    flag_case("now-word", ["plan", "--now", "yesterday"], r"--now.*'yesterday' is not an ISO 8601 timestamp"),
    flag_case("now-impossible-date", ["apply", "--auto-approve", "--now", "2026-13-45T00:00:00Z"], r"--now.*not an ISO 8601"),
    flag_case("missing-manifest", ["apply", "--auto-approve", "-f", "nope.yaml"], r"nope\.yaml: no such manifest file"),
    flag_case("missing-plan-file", ["apply", "nope.json"], r"cannot read plan file nope\.json"),
    # ---------------------------------------------------------------- plan files
    plan_case("plan-truncated", lambda case, plan: json.dumps(plan)[:200], r"plan\.json is not valid JSON \(truncated or edited\?\)"),
    plan_case("plan-not-json", lambda case, plan: "apply everything please", r"plan\.json is not valid JSON"),
    plan_case("plan-json-list", lambda case, plan: [plan], r"plan\.json is not a qbr plan \(expected a JSON object\)"),
    plan_case("plan-newer-format", lambda case, plan: {**plan, "format_version": 99}, r"plan\.json was made by a newer qbr \(plan format 99\)"),
    plan_case("plan-unknown-kind", _edit_action("copy_archive", lambda a: a.update(kind="drop_collection")),
              r"plan\.json is not a valid qbr plan \(actions/\d+/kind: .*drop_collection"),
    plan_case("plan-unknown-dependency", _unknown_dependency, r"depends on unknown backup\.nightly\.nope\.copy\.docs"),
    plan_case("plan-duplicate-ids", _duplicate_ids, r"plan\.json has duplicate action ids"),
    plan_case("plan-cycle", _cycle, r"dependency cycle through action"),
    plan_case("plan-other-lineage", _other_lineage, r"this plan was made from another state lineage"),
    plan_case("plan-stale-serial", _serial_moved, r"the state changed since this plan was made \(serial \d+ -> \d+\)"),
    plan_case("plan-manifest-changed", _manifest_changed, r"the manifest .*qbr\.yaml changed since this plan was made"),
    plan_case("plan-edited-collection", _edit_every("copy_archive", lambda a: a["params"].update(collection="../../etc")),
              r"collection \.\./\.\./etc no longer exists on cluster prod", runs=True),
    # ---------------------------------------------------------------- state files
    state_case("state-corrupt", '{"lineage": "x", "serial": ', r"the state file .*state\.json is not valid JSON"),
    state_case("state-empty", "", r"the state file .*state\.json is empty"),
    state_case("state-list", [1, 2], r"the state file .*state\.json is not a JSON object"),
    state_case("state-newer-format", lambda s: {**s, "format_version": 7}, r"written by a newer qbr \(format 7\); upgrade qbr"),
    state_case("state-wrong-types", lambda s: {**s, "serial": "many"}, r"the state file .*state\.json is malformed"),
    state_case("state-lineage-number", lambda s: {**s, "lineage": 42}, r"the state file .*state\.json has a malformed lineage"),
    state_case("state-not-qbr", {"hello": "world"}, r"has no valid format_version; it is not a qbr state file"),
    # ---------------------------------------------------------------- set records in the repository
    set_case("set-bad-json", lambda record, key: b"{not json",
             ROLLBACK + r"\(set record sets/nightly/\S+\.json is not valid JSON; repair or delete it\)"),
    set_case("set-id-mismatch", lambda record, key: {**record, "set_id": "20200101T000000Z"},
             ROLLBACK + r"\(set record \S+ names set nightly/20200101T000000Z; it was moved or edited by hand\)"),
    set_case("set-missing-fields", lambda record, key: {k: v for k, v in record.items() if k != "collections"},
             ROLLBACK + r"\(set record '\d{8}T\d{6}Z' is malformed \('collections'\); repair or delete it\)"),
    set_case("set-newer-format", lambda record, key: {**record, "format_version": 9},
             ROLLBACK + r"\(set '\d{8}T\d{6}Z' was written by a newer qbr \(format 9\); upgrade qbr\)"),
    set_case("set-bad-created", lambda record, key: {**record, "created": "last tuesday"}, ROLLBACK + r"\(set record .* is malformed"),
    Hostile("set-archive-key-traversal", _traversal_archive_keys,
            r"repository key '\.\./\.\./\.\./etc/passwd' has an empty, '\.' or '\.\.' segment", runs=True),
    # ---------------------------------------------------------------- Qdrant answers that lie
    lie_case("lie-collections-not-json", "GET", r"^/collections$", r"returned a malformed response to GET /collections \(not JSON\)",
             status=200, body="{not json"),
    lie_case("lie-root-html", "GET", r"^/$", r"returned a malformed response to GET / \(not JSON\)",
             status=200, body="<html><body>proxy login</body></html>"),
    lie_case("lie-count-string", "POST", r"^/collections/docs/points/count$", r"malformed response to POST /collections/docs/points/count",
             status=200, body=_ok({"count": "twenty"})),
    lie_case("lie-info-list", "GET", r"^/collections/docs$", r"malformed response to GET /collections/docs \(the result is not a JSON object\)",
             status=200, body=_ok([1, 2, 3])),
    lie_case("lie-cluster-bad-peer", "GET", r"^/cluster$", r"reported a peer without a usable address",
             status=200, body=_ok({"status": "enabled", "peer_id": 1, "peers": {"1": {"uri": "not a uri"}}})),
    lie_case("lie-snapshot-list-shape", "GET", r"^/collections/docs/snapshots$", r"malformed response to GET /collections/docs/snapshots",
             status=200, body=_ok([{"name": "x.snapshot", "size": "big"}])),
    lie_case("lie-wrong-checksum", "POST", r"^/collections/[^/]+/snapshots$", r"sha256 [0-9a-f]+… does not match the expected 0000000000000000…",
             command=APPLY_LATER, runs=True, status=200, body=lambda case: _real_snapshot(case, checksum="0" * 64)),
    lie_case("lie-wrong-size", "POST", r"^/collections/[^/]+/snapshots$", r"got \d+ bytes where 999999 were expected",
             command=APPLY_LATER, runs=True, status=200, body=lambda case: _real_snapshot(case, size=999999)),
    lie_case("lie-traversal-snapshot-name", "POST", r"^/collections/[^/]+/snapshots$", r"snapshot `\.\./\.\./\.\./etc/passwd`",
             command=APPLY_LATER, runs=True, status=200,
             body=_ok({"name": "../../../etc/passwd", "size": 10, "checksum": "0" * 64, "creation_time": None})),
]


@pytest.fixture
def case(base: Base, tmp_path: Path):
    folder = tmp_path / "world"
    shutil.copytree(base.folder, folder)
    this = Case(folder, base)
    originals = {o.key: base.repository().get_bytes(o.key) for o in base.repository().list("sets/")}
    yield this
    for cluster in (base.source, base.target):
        for node in cluster.nodes:
            node.faults.clear()
            for path in node.snapshots_dir.rglob("*.snapshot*"):
                path.unlink()
    repo = base.repository()
    for key in this.notes:
        if key in originals:
            repo.put_bytes(key, originals[key])
        else:
            repo.delete(key)


@pytest.mark.parametrize("hostile", CASES, ids=lambda h: h.id)
def test_hostile_input_is_refused_and_changes_nothing(hostile: Hostile, case: Case):
    args = hostile.prepare(case)
    before = fingerprint(case)
    run = qbr(*args, cwd=case.folder)
    case.base.source.nodes[0].faults.clear()
    after = fingerprint(case)
    assert run.exit_code == hostile.exit_code, run.output
    assert "Traceback" not in run.output and "unexpected error" not in run.output, run.output
    assert re.search(hostile.message, run.stderr if hostile.exit_code else run.output), run.output
    if hostile.runs:
        # The apply started: its journal says what failed, and nothing was done.
        state = case.state()
        assert state["journal"] and not [e for e in state["journal"] if e["status"] == "done"], state["journal"]
        recorded = {e["name"] for e in state["node_snapshots"]}
        made = set(after["clusters"]["source"].pop("snapshots")) - set(before["clusters"]["source"].pop("snapshots"))
        assert {Path(name).name for name in made} <= {Path(name).name for name in recorded}, "snapshots qbr made are recorded"
        for side in (before, after):
            side["files"].pop(".qbr/state.json")
    assert after == before, "nothing changed on disk, in S3 or in Qdrant"
