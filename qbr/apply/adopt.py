"""Adopt snapshot objects already in S3 as a set: each is copied inside S3 into the repository's
layout (no byte through qbr, the original left where it was), then the set record is written.

What a set records that the objects cannot tell is said as unknown, never made up: the sha256
(nobody computed one; the store's etag stands in) and the points count (-1: a restore of an
adopted set checks no count). The collection config comes from the live cluster when the
collection still exists there, otherwise from the snapshot's own config.json (a ranged read of
its first bytes)."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from qbr import __version__, faultpoints
from qbr.actions import AdoptSet
from qbr.apply.context import ActionContext
from qbr.errors import PreconditionError, QbrError
from qbr.records import ArchiveRecord, CollectionRecord, SetRecord, archive_key, config_digest, set_key, utc_iso

CONFIG_READ_LIMIT = 4 << 20  # config.json sits among a collection snapshot's first members


def check_adopt_set(ctx: ActionContext, p: AdoptSet, pre: dict[str, Any]) -> None:
    if pre.get("set_absent") and ctx.connections.repository(p.repository).head(set_key(p.backup, p.set_id)) is not None:
        raise PreconditionError(f"set {p.backup}/{p.set_id} already exists; run qbr plan again")


def adopt_set(ctx: ActionContext, p: AdoptSet, action_id: str) -> dict[str, Any]:
    adoption = ctx.connections.manifest.adopt.get(p.adoption)
    if adoption is None:
        raise QbrError(f"the manifest has no adopt entry {p.adoption!r} any more; run qbr plan again")
    copier = ctx.connections.copier_for(adoption.endpoint_url, adoption.region)
    repo = ctx.connections.repository(p.repository)
    collections: dict[str, CollectionRecord] = {}
    for name, entry in sorted(p.collections.items()):
        config = entry.get("config") or _config_of(copier, p.bucket, name, entry["archives"])
        params = config.get("params") or {}
        shard_number = int(params.get("shard_number") or 1)
        archives = []
        for archive in entry["archives"]:
            key = archive_key(name, p.backup, p.set_id, archive["name"])
            full_key = repo.full_key(key)
            etag = copier.copy(p.bucket, archive["key"], repo.bucket, full_key, int(archive["size"]), getattr(repo, "sse", None))
            faultpoints.reached("adopt.copied")
            archives.append(ArchiveRecord(
                key=key, size=int(archive["size"]), sha256="", kind=archive["kind"],
                shard_ids=tuple(archive["shard_ids"]) or tuple(range(shard_number)), node="adopted",
                etag=etag, adopted_from=f"s3://{p.bucket}/{archive['key']}",
            ))
        collections[name] = CollectionRecord(
            name=name, points_count=-1, config=config, config_sha256=config_digest(config),
            aliases=tuple(entry.get("aliases") or ()), shard_number=shard_number, qdrant_version=p.qdrant_version,
            copied_in=p.set_id, archives=tuple(sorted(archives, key=lambda a: a.shard_ids)),
        )
    record = SetRecord(
        backup=p.backup, set_id=p.set_id, created=p.created, cluster=p.cluster, qdrant_version=p.qdrant_version,
        collections=collections, completed=utc_iso(ctx.now()), qbr_version=__version__,
    )
    repo.put_bytes(set_key(p.backup, p.set_id), record.to_json(), if_none_match=True)
    faultpoints.reached("set.written")
    return {"journal": {"set": set_key(p.backup, p.set_id), "adopted": sum(len(c.archives) for c in collections.values())}}


def _config_of(copier: Any, bucket: str, collection: str, archives: list[dict[str, Any]]) -> dict[str, Any]:
    whole = next((a for a in archives if a["kind"] == "collection"), None)
    if whole is None:
        raise QbrError(
            f"collection {collection} is gone from the cluster and its shard snapshots hold no collection config; "
            "create the collection on the cluster (any content) so qbr can read its config, then apply again"
        )
    head = copier.read_head(bucket, whole["key"], CONFIG_READ_LIMIT)
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|") as tar:
            for member in tar:
                if member.name.lstrip("./") == "config.json" and member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        return dict(json.loads(handle.read()))  # CollectionConfigInternal: params, hnsw_config...
    except (tarfile.TarError, ValueError, EOFError):
        pass
    raise QbrError(f"snapshot {whole['key']} holds no readable config.json in its first bytes; it cannot be adopted")
