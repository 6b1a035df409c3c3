"""`qbr init --from URL`: read a live cluster and write a commented manifest to start from.

`survey` reads the cluster (one node's GET /, GET /cluster, its collections with their points
and its aliases: reads only); `render_manifest` is pure and writes the YAML: the cluster (its URL
overridable by $QDRANT_URL, its API key from $QDRANT_API_KEY, never written down), one repository
(an S3 bucket prefix or a folder), and one backup of every collection with a starting rpo and
retention, every choice commented. The text is validated with qbr's own loader before it is
written, and an existing file is never overwritten.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from qbr.errors import QbrError

SCHEMA_FILE = "qbr.schema.json"  # written beside the manifest, for editors (qbr schema prints it)
START_RPO = "24h"
START_RETENTION = "{keep_last: 3, daily: 7, weekly: 4, monthly: 6}"


@dataclass(frozen=True)
class Survey:
    url: str
    version: str
    nodes: tuple[str, ...]
    versions: dict[str, str]  # node -> Qdrant version
    collections: dict[str, int]  # name -> points
    aliases: tuple[tuple[str, str], ...] = ()  # (alias, collection)
    problems: tuple[str, ...] = field(default_factory=tuple)  # what could not be read (said in comments)


@dataclass(frozen=True)
class RepositoryChoice:
    kind: str  # s3 | path
    bucket: str = ""
    prefix: str = ""
    path: str = ""

    @staticmethod
    def parse(text: str | None) -> "RepositoryChoice":
        if not text:
            return RepositoryChoice("path", path="./qbr-backups")
        if text.startswith("s3://"):
            parts = urlsplit(text)
            if not parts.netloc:
                raise QbrError(f"--repository {text}: name a bucket, as s3://bucket/prefix")
            return RepositoryChoice("s3", bucket=parts.netloc, prefix=parts.path.strip("/"))
        if "://" in text:
            raise QbrError(f"--repository {text}: expected s3://bucket/prefix or a folder")
        return RepositoryChoice("path", path=text)


def survey(url: str, api_key: str | None) -> Survey:
    """Read what the manifest needs to know about the cluster at `url` (reads only)."""
    from qbr.qdrant import QdrantClient

    problems: list[str] = []
    try:
        backoff = float(os.environ.get("QBR_HTTP_BACKOFF", "0.5"))  # the knob qbr.connections reads too
    except ValueError:
        backoff = 0.5
    with QdrantClient(url, api_key=api_key, retries=2, backoff=backoff) as seed:
        version = seed.version()
        try:
            nodes = tuple(n.url for n in seed.nodes())
        except QbrError as error:
            nodes, problems = (url.rstrip("/"),), [f"GET /cluster failed ({error}); assumed one node"]
        collections = {name: seed.count_points(name, exact=False) for name in seed.list_collections()}
        aliases = tuple(seed.list_aliases())
    versions = {nodes[0]: version}
    for node in nodes[1:]:
        try:
            with QdrantClient(node, api_key=api_key, retries=1, backoff=backoff) as peer:
                versions[node] = peer.version()
        except QbrError as error:
            problems.append(f"node {node} did not answer ({error})")
    return Survey(url.rstrip("/"), version, nodes, versions, collections, aliases, tuple(problems))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _yaml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_manifest(found: Survey, repository: RepositoryChoice) -> str:
    """The manifest text: valid as written, and every choice explained in a comment."""
    points = sum(found.collections.values())
    listed = ", ".join(f"{name} ({count} points)" for name, count in sorted(found.collections.items())) or "none yet"
    mixed = len(set(found.versions.values())) > 1
    lines = [
        f"# yaml-language-server: $schema={SCHEMA_FILE}",
        f"# Written by `qbr init --from {found.url}`: a starting point, to read and adjust, then",
        "# `qbr validate`, `qbr plan` and `qbr apply`. Secrets never go in this file: the Qdrant API",
        "# key comes from $QDRANT_API_KEY, S3 credentials from the AWS chain (environment, profile, role).",
        "version: 1",
        "",
    ]
    if repository.kind == "s3":
        key = f"{repository.prefix}/state.json" if repository.prefix else "qbr/state.json"
        lines += [
            "# The state (restore provenance, the last apply's journal) lives beside the backups, so any",
            "# host or CI runner with the same credentials can plan and apply.",
            "state:",
            f"  s3: {{bucket: {repository.bucket}, key: {_yaml_string(key)}, endpoint_url: \"${{S3_ENDPOINT:-}}\", region: \"${{AWS_REGION:-us-east-1}}\"}}",
        ]
    else:
        lines += ["# The state file: .qbr/state.json beside this file (the default); state: s3://bucket/key to share it."]
    lines += [
        "",
        "clusters:",
        "  main:",
        f"    # Qdrant {found.version}" + (f" (versions differ: {', '.join(f'{n} {v}' for n, v in found.versions.items())})" if mixed else "")
        + f"; {len(found.nodes)} node{'s' if len(found.nodes) != 1 else ''}"
        + (": peers are discovered from GET /cluster at every run" if len(found.nodes) > 1 else ""),
        f"    url: ${{QDRANT_URL:-{found.url}}}",
        "    api_key: ${QDRANT_API_KEY:-}          # empty: the server has no API key",
    ]
    lines += [f"    # note: {problem}" for problem in found.problems]
    lines += ["", "repositories:", "  backups:"]
    if repository.kind == "s3":
        lines += [
            "    s3:",
            f"      bucket: {repository.bucket}",
            f"      prefix: {_yaml_string(repository.prefix)}",
            "      endpoint_url: ${S3_ENDPOINT:-}     # empty: AWS itself; or MinIO, Ceph...",
            "      region: ${AWS_REGION:-us-east-1}",
        ]
    else:
        lines += [f"    path: {_yaml_string(repository.path)}          # relative to this file's folder"]
    lines += [
        "",
        "backups:",
        "  daily:",
        "    cluster: main",
        "    repository: backups",
        f"    # Found {_plural(len(found.collections), 'collection')}, {_plural(points, 'point')}: {listed}.",
        "    # \"*\" takes every collection, including those created later; \"!name\" excludes one.",
        '    collections: ["*"]',
        f"    rpo: {START_RPO}                           # a new set once the newest is a day old; run apply hourly",
        "    aliases: true                       # record aliases with each set"
        + (f" ({len(found.aliases)} found: {', '.join(f'{a} -> {c}' for a, c in found.aliases[:5])}{', ...' if len(found.aliases) > 5 else ''})" if found.aliases else ""),
        "    # The last 3 sets, one a day for a week, one a week for a month, one a month for half a year.",
        f"    retention: {START_RETENTION}",
        "",
        "# To keep a restored copy on another cluster (a DR replica), add it under clusters: and:",
        "# restores:",
        "#   replica:",
        "#     from: daily",
        "#     to: dr",
        "#     if_exists: replace",
    ]
    return "\n".join(lines) + "\n"


def check_and_write(path: Path, text: str) -> None:
    """Validate `text` with qbr's loader (as if no environment were set), then create `path`;
    never overwrite an existing file."""
    from qbr.manifest import load_manifest_text

    load_manifest_text(text, str(path), path.parent.resolve(), env={})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise QbrError(f"{path} already exists; qbr init never overwrites a manifest (move it aside, or write another with -f)") from None
    except OSError as error:
        raise QbrError(f"cannot write {path}: {error.strerror or error}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_schema_beside(path: Path) -> Path | None:
    """The manifest's JSON Schema beside it, for the editor (an existing file is left alone)."""
    from qbr.manifest import SCHEMA_PATH

    target = path.parent / SCHEMA_FILE
    try:
        with open(target, "x", encoding="utf-8") as handle:
            handle.write(SCHEMA_PATH.read_text(encoding="utf-8"))
    except FileExistsError:
        return None
    return target
