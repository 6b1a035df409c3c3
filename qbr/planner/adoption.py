"""Adoption: snapshot objects already in S3, in Qdrant's key layout (Qdrant's own S3 snapshot
storage, or what backup scripts left), grouped by time into sets of a backup. Every object is
either placed in exactly one planned set or listed with the reason it is not; none is deleted."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from typing import Any

from qbr.actions import AdoptSet, as_params
from qbr.durations import format_duration
from qbr.manifest import AdoptConfig, Manifest
from qbr.plan import Action
from qbr.planner.draft import Draft
from qbr.records import set_id_for, utc_iso
from qbr.world import LegacySnapshot, Observed

STAMP = r"(?P<stamp>[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2})\.snapshot"
SHOWN = 20  # object keys listed per set in the plan; the rest are counted


def parse_legacy_key(key: str, prefix: str) -> dict[str, Any] | str:
    """Where an object sits in Qdrant's layout: {collection, shard_id, name, stamp}, or why not.
    Names are parsed from the right, since collection names may hold '-'."""
    rest = key[len(prefix) + 1:] if prefix else key
    parts = rest.split("/")
    if len(parts) == 2:
        collection, name = parts
        match = re.fullmatch(re.escape(collection) + r"-[0-9]+-" + STAMP, name)
        shard_id = None
    elif len(parts) == 4 and parts[1] == "shards" and parts[2].isdigit():
        collection, _, shard, name = parts
        match = re.fullmatch(re.escape(collection) + f"-shard-{int(shard)}-" + STAMP, name)
        shard_id = int(shard)
    else:
        return "not in Qdrant's layout (<collection>/<name>.snapshot or <collection>/shards/<id>/<name>.snapshot)"
    if match is None:
        return "its name is not one Qdrant gives a snapshot of that collection or shard"
    return {"collection": collection, "shard_id": shard_id, "name": name, "stamp": match.group("stamp")}


def plan_adoptions(draft: Draft, manifest: Manifest, observed: Observed) -> None:
    for adopt in manifest.adopt.values():
        _plan_adoption(draft, manifest, adopt, observed)


def _plan_adoption(draft: Draft, manifest: Manifest, adopt: AdoptConfig, observed: Observed) -> None:
    backup = manifest.backups[adopt.into]
    repo = observed.repositories[backup.repository]
    found = observed.adoptions.get(adopt.name)
    if found is None:
        return
    group = f"adopt {adopt.name} (s3://{adopt.bucket}/{adopt.prefix} -> backup {backup.name})"
    taken = {a.adopted_from for s in repo.sets for c in s.collections.values() for a in c.archives if a.adopted_from}
    placed: list[tuple[datetime, LegacySnapshot, dict[str, Any]]] = []
    skipped: list[str] = []
    for obj in found.objects:
        where = f"s3://{adopt.bucket}/{obj.key}"
        if where in taken:
            continue
        parsed = parse_legacy_key(obj.key, adopt.prefix)
        if isinstance(parsed, str):
            skipped.append(f"{obj.key} ({parsed})")
        elif not backup.selects(parsed["collection"]):
            skipped.append(f"{obj.key} (backup {backup.name} does not select collection {parsed['collection']})")
        elif adopt.filter and not fnmatchcase(parsed["stamp"], adopt.filter):
            continue  # outside the user's filter: not theirs to adopt now
        else:
            moment = datetime.strptime(parsed["stamp"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=timezone.utc)
            placed.append((moment, obj, parsed))
    existing = {s.set_id for s in repo.sets_of(backup.name)}
    for members in _windows(sorted(placed, key=lambda item: (item[0], item[1].key)), adopt):
        skipped += _plan_set(draft, manifest, adopt, observed, group, members, existing, found.aliases)
    for line in skipped:
        draft.warnings.append(f"adopt {adopt.name}: not adopted, left where it is: {line}")


def _windows(placed: list[tuple[datetime, LegacySnapshot, dict[str, Any]]], adopt: AdoptConfig) -> list[list[Any]]:
    """Objects this close in time (from the first of a window) form one set."""
    windows: list[list[Any]] = []
    for item in placed:
        if windows and item[0] - windows[-1][0][0] <= adopt.window:
            windows[-1].append(item)
        else:
            windows.append([item])
    return windows


def _plan_set(
    draft: Draft, manifest: Manifest, adopt: AdoptConfig, observed: Observed, group: str,
    members: list[Any], existing: set[str], aliases: dict[str, tuple[str, ...]],
) -> list[str]:
    backup = manifest.backups[adopt.into]
    cluster = observed.clusters[adopt.cluster]
    by_collection: dict[str, list[tuple[LegacySnapshot, dict[str, Any]]]] = {}
    for _, obj, parsed in members:
        by_collection.setdefault(parsed["collection"], []).append((obj, parsed))
    collections: dict[str, Any] = {}
    skipped: list[str] = []
    for name, items in sorted(by_collection.items()):
        shards = {p["shard_id"]: (o, p) for o, p in sorted(items, key=lambda i: i[1]["stamp"]) if p["shard_id"] is not None}
        whole = [(o, p) for o, p in items if p["shard_id"] is None]
        if shards:
            chosen = [(o, p, "shard", [p["shard_id"]]) for o, p in shards.values()]
            skipped += [f"{o.key} (the set takes collection {name}'s shard snapshots)" for o, _ in whole]
        elif len(whole) == 1:
            chosen = [(whole[0][0], whole[0][1], "collection", [])]
        else:
            skipped += [f"{o.key} (several nodes' collection snapshots of {name} in one window: qbr adopts one "
                        "collection snapshot or per-shard snapshots)" for o, _ in whole]
            continue
        live = cluster.collections.get(name)
        collections[name] = {
            "archives": [{"key": o.key, "size": o.size, "etag": o.etag, "kind": kind, "shard_ids": ids, "name": p["name"]}
                         for o, p, kind, ids in chosen],
            "config": live.config if live is not None else None,
            "aliases": list(aliases.get(name, ())),
        }
    if not collections:
        return skipped
    created = members[0][0]
    set_id, n = set_id_for(created), 1
    base = set_id
    while set_id in existing:
        set_id, n = f"{base}-{n}", n + 1
    existing.add(set_id)
    draft.adopted.setdefault(backup.name, []).append(set_id)
    keys = [a["key"] for c in collections.values() for a in c["archives"]]
    listed = ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")
    draft.actions.append(Action(
        id=f"adopt.{adopt.name}.{set_id}",
        kind="adopt_set",
        change="create",
        group=group,
        title=f"set {set_id} of backup {backup.name} from {len(keys)} snapshots of {', '.join(collections)} "
              "(copied inside S3: 0 bytes through qbr)",
        reason=f"they were taken within {format_duration(adopt.window)} of {utc_iso(created)}: {listed}",
        precondition={"set_absent": True},
        params=as_params(AdoptSet(
            repository=backup.repository, backup=backup.name, set_id=set_id, created=utc_iso(created),
            cluster=adopt.cluster, qdrant_version=cluster.version, bucket=adopt.bucket,
            collections=collections, adoption=adopt.name,
        )),
    ))
    return skipped
