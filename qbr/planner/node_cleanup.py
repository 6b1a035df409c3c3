"""Snapshots qbr left on nodes (a killed run) are found and deleted, and stale records dropped."""

from __future__ import annotations

from typing import Any

from qbr.actions import (
    DeleteNodeSnapshot,
    as_params,
)
from qbr.plan import Action
from qbr.planner.draft import Draft
from qbr.snapshot_names import named_by_qdrant
from qbr.state import State
from qbr.world import Observed


def plan_node_snapshot_cleanup(draft: Draft, observed: Observed, state: State) -> None:
    """Snapshots qbr made on a node and did not get to delete (a killed run) are deleted, so
    Qdrant's disk does not fill, and records of ones already gone are dropped from the state.

    Only snapshots qbr recorded as its own are touched: by name, or, when the run was killed
    while Qdrant was making one (its name never reached the state; the entry is recorded with
    name None and the snapshots that were there before), the one snapshot named as Qdrant names
    its own that appeared on that node, collection and shard since. If several appeared, qbr
    cannot tell which is its own: it deletes none and says so."""
    entries = list(enumerate(state.node_snapshots))
    named = {(e.get("node"), e.get("collection"), e.get("shard_id"), e.get("name")) for _, e in entries if e.get("name")}
    claimed: set[tuple[Any, ...]] = set()
    cleanups: list[tuple[int, Action]] = []
    # Newest records first: a later run listed an earlier run's leftover among those that were there.
    for index, entry in sorted(entries, key=lambda pair: (pair[1].get("name") is None, pair[0]), reverse=True):
        cluster = observed.clusters.get(str(entry.get("cluster")))
        if cluster is None:
            continue
        collection = cluster.collections.get(str(entry.get("collection")))
        if collection is None:
            continue
        node, shard = entry.get("node"), entry.get("shard_id")
        here = {s.name for s in collection.node_snapshots if s.node == node and s.shard_id == shard}
        name = entry.get("name")
        where = f"collection {collection.name} on node {node}" + (f" (shard {shard})" if shard is not None else "")
        if name is not None:
            found = name if name in here else None
            reason = "qbr made it during a run that stopped before deleting it"
        else:
            before = set(entry.get("before") or ())
            appeared = sorted(
                n for n in here - before
                if (node, collection.name, shard, n) not in named | claimed and named_by_qdrant(n, collection.name, shard)
            )
            if len(appeared) > 1:
                draft.warnings.append(
                    f"a qbr run was killed while node {node} made a snapshot of {where}; since then {len(appeared)} "
                    f"snapshots appeared there ({', '.join(appeared)}) and qbr cannot tell which is its own: "
                    "delete it by hand"
                )
                continue
            found = appeared[0] if appeared else None
            reason = "qbr was making it when its run was killed, before it could record its name"
        if found is not None:
            claimed.add((node, collection.name, shard, found))
            title = f"snapshot {found} of {where}"
        else:
            title = f"record of snapshot {name} of {where}" if name else f"record of a snapshot qbr was making of {where}"
            reason = "the snapshot is not on the node (a killed run made none, or deleted it before recording that); qbr forgets it"
        cleanups.append((index, Action(
                id=f"cleanup.{cluster.name}.{node}.{collection.name}.{shard}.{found or f'record-{index}'}",
                kind="delete_node_snapshot",
                change="delete",
                group=f"cluster {cluster.name}",
                title=title,
                reason=reason,
                params=as_params(DeleteNodeSnapshot(
                    cluster=cluster.name, node=node, collection=collection.name, shard_id=shard, name=found, record=dict(entry),
                )),
            )))
    draft.actions.extend(action for _, action in sorted(cleanups, key=lambda pair: pair[0]))
