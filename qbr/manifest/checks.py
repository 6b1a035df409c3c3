"""Cross-reference checks: what the schema cannot say.

Names that must exist (clusters, repositories, backups), durations, timestamps, URLs without
credentials, state and prefix paths, and restore maps that are unambiguous and never restore a
collection onto itself. They run even when the schema found problems, so every value's type is
checked before use; a node (or a parent) that already has a problem is not reported again.
"""

from __future__ import annotations

import difflib
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from qbr.durations import parse_duration
from qbr.manifest.collection_map import OntoItself, has_glob, restore_collisions, shadowing_entry, split_star
from qbr.manifest.problems import PathKey, Problems, Tree, dotted_path, quote
from qbr.records import parse_utc

_S3_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")


def _check_protection(repository: dict[str, Any], base: PathKey, report: Any) -> None:
    """encryption's recipients are public keys; sse and object_lock need S3, group a folder."""
    from qbr.encryption import canonical_recipient

    encryption = repository.get("encryption")
    if isinstance(encryption, dict):
        recipients = encryption.get("recipients")
        for index, text in enumerate(recipients if isinstance(recipients, list) else []):
            if isinstance(text, str) and canonical_recipient(text) is None:
                secret = text.strip().startswith(("AGE-SECRET-KEY-", "-----BEGIN"))
                report(base + ("encryption", "recipients", index),
                       "this is a private key: list only public keys here (the identity stays out of the manifest)" if secret
                       else "expected an age recipient (age1...) or an ssh-ed25519 / ssh-rsa public key")
    s3 = isinstance(repository.get("s3"), dict)
    for key in ("sse", "object_lock"):
        if key in repository and not s3:
            report(base + (key,), f"{key} applies to an S3 repository; a folder has no {'server-side encryption' if key == 'sse' else 'Object Lock'}")
    if "group" in repository and s3:
        report(base + ("group",), "group applies to a folder; an S3 repository's access is set by IAM and bucket policy")
    sse = repository.get("sse")
    if isinstance(sse, dict) and sse.get("kms_key_id") and sse.get("mode") != "aws:kms":
        report(base + ("sse", "kms_key_id"), "kms_key_id needs mode aws:kms")


def _maps(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def check_references(data: Any, tree: Tree, problems: Problems) -> None:
    """What the schema cannot say: names that must exist, durations, timestamps, URLs, restore maps."""
    if not isinstance(data, dict):
        return

    def report(path: PathKey, text: str, *, at_key: bool = False) -> None:
        if not tree.is_reported(path):
            problems.add(tree.key(path) if at_key else tree.pos(path), f"{dotted_path(path)}: {text}")

    clusters, repositories = _maps(data, "clusters"), _maps(data, "repositories")
    backups, restores = _maps(data, "backups"), _maps(data, "restores")

    _check_state(data.get("state"), report)

    for name, cluster in clusters.items():
        if not isinstance(cluster, dict):
            continue
        base = ("clusters", name)
        urls = [("url",)] if isinstance(cluster.get("url"), str) else []
        nodes = cluster.get("nodes")
        if isinstance(nodes, list):
            urls += [("nodes", i) for i, node in enumerate(nodes) if isinstance(node, str)]
        for sub in urls:
            url = cluster[sub[0]] if len(sub) == 1 else nodes[sub[1]]  # type: ignore[index]
            reason = _url_problem(url)
            if reason:
                report(base + sub, reason)
        _check_duration(cluster.get("timeout"), base + ("timeout",), report)
        _check_duration(cluster.get("snapshot_timeout"), base + ("snapshot_timeout",), report)

    for name, repository in repositories.items():
        if isinstance(repository, dict):
            _check_protection(repository, ("repositories", name), report)
        if isinstance(repository, dict) and isinstance(repository.get("path"), str):
            if _has_control(repository["path"]):
                report(("repositories", name, "path"), "a path may not hold control characters")
        if isinstance(repository, dict) and isinstance(repository.get("s3"), dict):
            s3 = repository["s3"]
            base = ("repositories", name, "s3")
            if isinstance(s3.get("prefix"), str):
                reason = _prefix_problem(s3["prefix"])
                if reason:
                    report(base + ("prefix",), reason)
            if isinstance(s3.get("endpoint_url"), str) and s3["endpoint_url"]:
                reason = _url_problem(s3["endpoint_url"])
                if reason:
                    report(base + ("endpoint_url",), reason)
            _check_s3_options(s3, base, report)

    for name, backup in backups.items():
        if not isinstance(backup, dict):
            continue
        base = ("backups", name)
        _check_name_ref(backup.get("cluster"), clusters, "cluster", base + ("cluster",), report)
        _check_name_ref(backup.get("repository"), repositories, "repository", base + ("repository",), report)
        _check_duration(backup.get("rpo"), base + ("rpo",), report)
        _check_duration(backup.get("max_reference_age"), base + ("max_reference_age",), report)
        retention = backup.get("retention")
        if isinstance(retention, dict):
            _check_duration(retention.get("within"), base + ("retention", "within"), report)
        selectors = backup.get("collections")
        if isinstance(selectors, list) and all(isinstance(s, str) for s in selectors) and selectors:
            for index, selector in enumerate(selectors):
                if selector == "!":
                    report(base + ("collections", index), "an exclude needs a glob after '!', such as '!tmp_*'")
            if all(s.startswith("!") for s in selectors):
                report(
                    base + ("collections",),
                    "selects no collection: every entry excludes; put an include such as '*' first",
                )

    for name, restore in restores.items():
        if not isinstance(restore, dict):
            continue
        base = ("restores", name)
        backup_name, target = restore.get("from"), restore.get("to")
        _check_name_ref(backup_name, backups, "backup", base + ("from",), report)
        _check_name_ref(target, clusters, "cluster", base + ("to",), report)
        at = restore.get("at")
        if isinstance(at, str) and at != "latest" and parse_at(at) is None:
            report(
                base + ("at",),
                f"expected latest or an ISO 8601 timestamp such as 2024-05-01T12:00:00Z, got {quote(at)}",
            )
        backup = backups.get(backup_name) if isinstance(backup_name, str) else None
        backup = backup if isinstance(backup, dict) else None
        if restore.get("via") == "url" and backup is not None and isinstance(backup.get("repository"), str):
            repository = repositories.get(backup["repository"])
            if isinstance(repository, dict) and "path" in repository and "s3" not in repository:
                report(
                    base + ("via",),
                    f"'url' needs an S3 repository (Qdrant downloads from a presigned URL), "
                    f"but backup {backup_name!r} writes to a folder; use auto or upload",
                )
        _check_restore_map(name, restore, backup, report)
        _check_restore_shape(restore, base, report)

    for name, adoption in _maps(data, "adopt").items():
        if not isinstance(adoption, dict):
            continue
        base = ("adopt", name)
        into = adoption.get("into")
        _check_name_ref(into, backups, "backup", base + ("into",), report)
        if adoption.get("cluster") is not None:
            _check_name_ref(adoption.get("cluster"), clusters, "cluster", base + ("cluster",), report)
        _check_duration(adoption.get("window"), base + ("window",), report)
        backup = backups.get(into) if isinstance(into, str) else None
        repository = repositories.get(backup.get("repository")) if isinstance(backup, dict) else None
        if isinstance(repository, dict) and "s3" not in repository:
            report(
                base + ("into",),
                f"backup {into!r} writes to a folder; adopted snapshots are copied inside S3, so its repository must be "
                "an S3 bucket on the snapshots' endpoint",
            )
        elif isinstance(repository, dict) and repository.get("encryption"):
            report(
                base + ("into",),
                f"backup {into!r} writes to an encrypted repository; adopted snapshots are copied inside S3 as they "
                "are, so they would be stored in clear: adopt into a repository without encryption",
            )


def _check_restore_shape(restore: dict[str, Any], base: PathKey, report: Any) -> None:
    """A target shape that contradicts itself."""
    topology = restore.get("topology")
    if isinstance(topology, dict):
        rf, wcf = topology.get("replication_factor"), topology.get("write_consistency_factor")
        if isinstance(rf, int) and isinstance(wcf, int) and wcf > rf:
            report(
                base + ("topology", "write_consistency_factor"),
                f"{wcf} is more than the replication_factor {rf}: no write could gather that many replicas' answers",
            )


def _check_state(state: Any, report: Any) -> None:
    if isinstance(state, str) and state.startswith("s3://"):
        if parse_s3_url(state) is None:
            report(("state",), "expected s3://bucket/key with a valid bucket name and a key that does not end in '/'")
    elif isinstance(state, str) and _has_control(state):
        report(("state",), "a path may not hold control characters")
    elif isinstance(state, dict) and isinstance(state.get("path"), str) and _has_control(state["path"]):
        report(("state", "path"), "a path may not hold control characters")
    elif isinstance(state, dict) and isinstance(state.get("s3"), dict):
        key = state["s3"].get("key")
        if isinstance(key, str) and (key.endswith("/") or not key.strip("/") or _has_control(key)):
            report(("state", "s3", "key"), "the state key must name an object: no trailing '/', no control characters")
        endpoint = state["s3"].get("endpoint_url")
        if isinstance(endpoint, str) and endpoint:
            reason = _url_problem(endpoint)
            if reason:
                report(("state", "s3", "endpoint_url"), reason)
        _check_s3_options(state["s3"], ("state", "s3"), report)
        sse = state["s3"].get("sse")
        if isinstance(sse, dict) and sse.get("kms_key_id") and sse.get("mode") != "aws:kms":
            report(("state", "s3", "sse", "kms_key_id"), "kms_key_id needs mode aws:kms")


def _check_s3_options(s3: dict[str, Any], base: PathKey, report: Any) -> None:
    """An s3 block's client settings: timeouts are durations; virtual addressing needs a host name."""
    _check_duration(s3.get("connect_timeout"), base + ("connect_timeout",), report)
    _check_duration(s3.get("read_timeout"), base + ("read_timeout",), report)
    endpoint = s3.get("endpoint_url")
    if s3.get("addressing_style") == "virtual" and isinstance(endpoint, str) and endpoint:
        host = urlsplit(endpoint).hostname or ""
        if host == "localhost" or re.fullmatch(r"[0-9.]+|\[?[0-9a-fA-F:]+\]?", host):
            report(
                base + ("addressing_style",),
                f"virtual puts the bucket in the host name ({quote('bucket.' + host)}), which an IP address or "
                "localhost endpoint cannot serve; use path",
            )


def _check_name_ref(value: Any, known: dict[str, Any], kind: str, path: PathKey, report: Any) -> None:
    if isinstance(value, str) and value not in known:
        choices = list(known)
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else (f" (there are: {', '.join(choices)})" if choices else "")
        report(path, f"no {kind} named {quote(value)}{hint}")


def _check_duration(value: Any, path: PathKey, report: Any) -> None:
    if isinstance(value, str):
        try:
            parse_duration(value)
        except ValueError as error:
            report(path, str(error))


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the URL has an invalid host or port"
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return "credentials do not belong in a URL; give the key as api_key: ${QDRANT_API_KEY}"
    if not parts.hostname:
        return "the URL has no host"
    if port == 0:
        return "the URL has an invalid port"
    return None


def _prefix_problem(prefix: str) -> str | None:
    stripped = prefix.strip("/")
    if not stripped:
        return None
    if "\\" in stripped or _has_control(stripped):
        return "a prefix may not hold backslashes or control characters"
    if any(part in ("", ".", "..") for part in stripped.split("/")):
        return "a prefix may not hold empty, '.' or '..' segments"
    return None


def parse_s3_url(text: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"s3://([^/]+)/(.+)", text)
    if match is None or not _S3_BUCKET.fullmatch(match.group(1)) or match.group(2).endswith("/"):
        return None
    return match.group(1), match.group(2)


def parse_at(text: str) -> datetime | None:
    try:
        return parse_utc(text.strip())
    except ValueError:
        return None


def _has_control(text: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


def _check_restore_map(name: str, restore: dict[str, Any], backup: dict[str, Any] | None, report: Any) -> None:
    """A restore map must be unambiguous: one target per name, no two names into one target,
    and never a collection restored onto itself."""
    base = ("restores", name, "collections")
    given = restore.get("collections")
    if given is None:
        entries = [("*", "*")]
        given_map = False
    elif isinstance(given, dict) and all(isinstance(v, str) for v in given.values()):
        entries = list(given.items())
        given_map = True
    else:
        return

    def at(left: str) -> PathKey:
        return base + (left,) if given_map else ("restores", name, "to")

    def entry(left: str, right: str) -> str:
        return f"{quote(left)} -> {quote(right)}" if given_map else 'the default collections map {"*": "*"}'

    usable: list[int] = []
    for index, (left, right) in enumerate(entries):
        if right.count("*") > 1:
            report(at(left), f"the target {quote(right)} may hold one '*' at most")
            continue
        if "?" in right or "[" in right:
            report(at(left), f"the target {quote(right)} is a name, or a name with one '*'; it may not hold ? or [...]")
            continue
        if "*" in right and right != "*" and split_star(left) is None:
            report(
                at(left),
                f"the target {quote(right)} has a '*', so the source must be a pattern with exactly one '*' "
                "(and no ? or [...]) whose match the '*' receives",
            )
            continue
        if "*" not in right and has_glob(left):
            report(
                at(left),
                f"the source {quote(left)} is a glob that may match several collections, but the target "
                f"{quote(right)} is one name; use '*' or a pattern such as 'restored_*'",
            )
            continue
        shadow = shadowing_entry(entries, index)
        if shadow is not None:
            report(
                at(left),
                f"the entry {quote(left)} is never used: the earlier entry {quote(shadow)} matches first "
                "(the first matching entry wins)",
            )
            continue
        usable.append(index)

    same_cluster = backup is not None and isinstance(restore.get("to"), str) and backup.get("cluster") == restore["to"]
    selectors = backup.get("collections", ["*"]) if backup is not None else ["*"]
    if not (isinstance(selectors, list) and all(isinstance(s, str) for s in selectors)):
        selectors = ["*"]

    for found in restore_collisions(entries, usable, selectors, same_cluster):
        if isinstance(found, OntoItself):
            left, right = entries[found.index]
            what = f"every collection matching {quote(found.source)}" if has_glob(found.source) else quote(found.source)
            report(
                at(left),
                f"{entry(left, right)} would restore {what} onto itself: cluster "
                f"{restore['to']!r} is the cluster backup {restore['from']!r} reads; rename the targets "
                "(such as {\"*\": \"*_restored\"}) or restore to another cluster",
            )
        else:
            left, right = entries[found.later]
            into = f"names matching {quote(found.target)}" if "*" in found.target else quote(found.target)
            report(
                at(left),
                f"{quote(left)} -> {quote(right)} and {quote(entries[found.earlier][0])} -> {quote(entries[found.earlier][1])} "
                f"can both restore into {into}; give each source its own target",
            )
