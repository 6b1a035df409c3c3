"""Checked values -> the frozen dataclasses of model.py, with defaults filled in.

Runs only on data that passed the schema and the cross-reference checks, so it indexes freely.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from qbr.durations import parse_duration
from qbr.manifest.checks import parse_at, parse_s3_url
from qbr.manifest.model import (
    AdoptConfig,
    BackupConfig,
    ClusterConfig,
    Encryption,
    Manifest,
    RepositoryConfig,
    RestoreConfig,
    S3Options,
    ServerSideEncryption,
    SnapshotStorage,
    StateLocation,
    Storage,
    TlsConfig,
    Topology,
)
from qbr.retention import RetentionPolicy

DEFAULT_STATE_PATH = ".qbr/state.json"


def build(data: dict[str, Any], source: str, base_dir: Path, sha256: str) -> Manifest:
    """Checked values -> frozen dataclasses, with defaults filled in."""

    def local(path: str) -> Path:
        return Path(os.path.normpath(base_dir / os.path.expanduser(path)))

    def blank(value: Any) -> str | None:
        return value if value else None

    state_value = data.get("state", DEFAULT_STATE_PATH)
    if isinstance(state_value, dict) and "s3" in state_value:
        s3 = state_value["s3"]
        state = StateLocation(
            "s3", None, s3["bucket"], s3["key"], blank(s3.get("endpoint_url")), blank(s3.get("region")), _s3_options(s3),
            _sse(s3.get("sse")),
        )
    elif isinstance(state_value, str) and state_value.startswith("s3://"):
        bucket, key = parse_s3_url(state_value)  # type: ignore[misc]
        state = StateLocation("s3", None, bucket, key, None, None)
    else:
        path = state_value["path"] if isinstance(state_value, dict) else state_value
        state = StateLocation("path", local(path), None, None, None, None)

    clusters: dict[str, ClusterConfig] = {}
    for name, c in data["clusters"].items():
        urls = ([c["url"]] if "url" in c else []) + list(c.get("nodes", []))
        clusters[name] = ClusterConfig(
            name=name,
            urls=tuple(dict.fromkeys(u.rstrip("/") for u in urls)),
            api_key=blank(c.get("api_key")),
            rest_port=c.get("rest_port"),
            timeout=parse_duration(c["timeout"]) if "timeout" in c else None,
            discover="nodes" not in c,
            snapshot_timeout=parse_duration(c["snapshot_timeout"]) if "snapshot_timeout" in c else None,
            snapshot_storage=_snapshot_storage(c.get("snapshot_storage")),
            tls=TlsConfig(
                ca_bundle=local(c["tls"]["ca_bundle"]) if c.get("tls", {}).get("ca_bundle") else None,
                client_cert=local(c["tls"]["client_cert"]) if c.get("tls", {}).get("client_cert") else None,
                client_key=local(c["tls"]["client_key"]) if c.get("tls", {}).get("client_key") else None,
                verify=c.get("tls", {}).get("verify", True),
            ),
        )

    repositories: dict[str, RepositoryConfig] = {}
    for name, r in data["repositories"].items():
        if "s3" in r:
            s3 = r["s3"]
            repositories[name] = RepositoryConfig(
                name, "s3", None, s3["bucket"], s3.get("prefix", "").strip("/"),
                blank(s3.get("endpoint_url")), blank(s3.get("region")), _s3_options(s3),
            )
        else:
            repositories[name] = RepositoryConfig(name, "path", local(r["path"]), None, "", None, None)
        repositories[name] = _protection(repositories[name], r, local)
        repositories[name] = replace(repositories[name], dedup=bool(r.get("dedup", False)),
                                     compression=r.get("compression", "zstd"), compression_level=int(r.get("compression_level", 3)))

    if state.kind == "s3" and state.sse is None:  # the state shares the SSE of a repository in its bucket
        sharing = [r.sse for r in repositories.values() if r.kind == "s3" and r.sse is not None
                   and (r.bucket, r.endpoint_url) == (state.bucket, state.endpoint_url)]
        if sharing:
            state = replace(state, sse=sharing[0])

    backups: dict[str, BackupConfig] = {}
    for name, b in (data.get("backups") or {}).items():
        kept = b.get("retention", {})
        backups[name] = BackupConfig(
            name=name,
            cluster=b["cluster"],
            repository=b["repository"],
            collections=tuple(b.get("collections", ["*"])),
            rpo=parse_duration(b.get("rpo", "24h")),
            only_changed=b.get("only_changed", False),
            max_reference_age=parse_duration(b.get("max_reference_age", "7d")),
            aliases=b.get("aliases", True),
            retention=RetentionPolicy(
                keep_last=kept.get("keep_last"),
                hourly=kept.get("hourly"),
                daily=kept.get("daily"),
                weekly=kept.get("weekly"),
                monthly=kept.get("monthly"),
                yearly=kept.get("yearly"),
                within=parse_duration(kept["within"]) if "within" in kept else None,
            ),
        )

    restores: dict[str, RestoreConfig] = {}
    for name, r in (data.get("restores") or {}).items():
        at = r.get("at", "latest")
        restores[name] = RestoreConfig(
            name=name,
            from_backup=r["from"],
            to=r["to"],
            at=None if at == "latest" else parse_at(at),
            collections=tuple(r.get("collections", {"*": "*"}).items()),
            if_exists=r.get("if_exists", "skip"),
            aliases=r.get("aliases", True),
            via=r.get("via", "auto"),
            topology=Topology(**(r.get("topology") or {})),
            storage=_storage(r.get("storage")),
            method=r.get("method", "auto"),
            batch_size=r.get("batch_size", 256),
            verify_sample=r.get("verify_sample", 0),
            copy_from=r.get("copy_from", "live"),
        )

    adopt: dict[str, AdoptConfig] = {}
    for name, a in (data.get("adopt") or {}).items():
        origin = a["from"]["s3"]
        adopt[name] = AdoptConfig(
            name=name,
            bucket=origin["bucket"],
            prefix=origin.get("prefix", "snapshots").strip("/"),
            endpoint_url=origin.get("endpoint_url") or None,
            region=origin.get("region") or None,
            into=a["into"],
            cluster=a.get("cluster") or backups[a["into"]].cluster,
            window=parse_duration(a.get("window", "10m")),
            aliases_csv=local(a["aliases_csv"]) if a.get("aliases_csv") else None,
            filter=a.get("filter"),
        )

    return Manifest(
        source=source,
        base_dir=base_dir,
        sha256=sha256,
        version=int(data["version"]),
        state=state,
        clusters=clusters,
        repositories=repositories,
        backups=backups,
        restores=restores,
        adopt=adopt,
    )


def _s3_options(s3: dict[str, Any]) -> S3Options:
    """The optional client and locking keys of an s3 block (timeouts are durations)."""
    return S3Options(
        addressing_style=s3.get("addressing_style") or None,
        checksums=s3.get("checksums") or None,
        connect_timeout=parse_duration(s3["connect_timeout"]).total_seconds() if s3.get("connect_timeout") else None,
        read_timeout=parse_duration(s3["read_timeout"]).total_seconds() if s3.get("read_timeout") else None,
        max_attempts=s3.get("max_attempts"),
        locking=s3.get("locking", "conditional"),
    )


def _protection(config: RepositoryConfig, raw: dict[str, Any], local: Any) -> RepositoryConfig:
    """A repository's encryption (recipients read from their file here), SSE, Object Lock, group."""
    from qbr.encryption import canonical_recipient, read_recipients_file

    encryption = None
    if raw.get("encryption"):
        given = raw["encryption"]
        path = local(given["recipients_file"]) if given.get("recipients_file") else None
        texts = list(given.get("recipients") or ()) + list(read_recipients_file(path) if path else ())
        encryption = Encryption(tuple(dict.fromkeys(canonical_recipient(t) or t.strip() for t in texts)), path)
    sse = _sse(raw.get("sse"))
    lock = raw["object_lock"]["mode"].upper() if raw.get("object_lock") else None
    return replace(config, encryption=encryption, sse=sse, object_lock=lock, group=raw.get("group"))


def _snapshot_storage(raw: dict[str, Any] | None) -> SnapshotStorage | None:
    if not raw:
        return None
    s3 = raw["s3"]
    return SnapshotStorage(
        bucket=s3["bucket"],
        prefix=s3.get("prefix", "snapshots"),
        endpoint_url=s3.get("endpoint_url") or None,
        region=s3.get("region") or None,
    )


def _storage(raw: dict[str, Any] | None) -> Storage:
    if not raw:
        return Storage()
    return Storage(
        on_disk=raw.get("on_disk"),
        quantization=raw.get("quantization"),
        hnsw=dict(raw["hnsw"]) if raw.get("hnsw") else None,
        optimizers=dict(raw["optimizers"]) if raw.get("optimizers") else None,
    )


def _sse(raw: dict[str, Any] | None) -> ServerSideEncryption | None:
    return ServerSideEncryption(raw["mode"], raw.get("kms_key_id")) if raw else None
