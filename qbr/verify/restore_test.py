"""`qbr verify --restore-test`: restore a set into temporary collections, count, delete them.

Each collection of the set is restored into `qbr_verify_<random>_<collection>` on the chosen
cluster through the same restore action `qbr apply` runs, its exact points count compared with
the set record, and the temporary collection deleted whatever happened. Nothing is written to
the state file.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable

from qbr.actions import RestoreCollection
from qbr.apply.restore import restore_collection
from qbr.apply.scratch import ScratchContext
from qbr.connections import Connections
from qbr.errors import QbrError
from qbr.manifest import Manifest
from qbr.planner import version_refusal
from qbr.records import SetRecord
from qbr.verify.report import RestoreCheck
from qbr.world import version_tuple

TEMP_PREFIX = "qbr_verify_"


def restore_test(
    manifest: Manifest,
    connections: Connections,
    record: SetRecord,
    cluster: str,
    *,
    clock: Callable[[], datetime] | None = None,
) -> list[RestoreCheck]:
    """Restore every collection of `record` into `qbr_verify_<random>_<collection>` on `cluster`,
    compare exact points counts, and delete each temporary collection whatever happened."""
    context = ScratchContext(connections, clock)
    backup = manifest.backups[record.backup]
    token = secrets.token_hex(4)
    checks: list[RestoreCheck] = []
    nodes = connections.cluster_nodes(cluster)
    versions = [connections.client(cluster, n.url).version() for n in nodes]
    target_version = min(versions, key=version_tuple)
    seed = connections.client(cluster, nodes[0].url)
    via = "url" if connections.can_presign(backup.repository) else "upload"
    for name, collection in sorted(record.collections.items()):
        temporary = f"{TEMP_PREFIX}{token}_{name}"
        check = RestoreCheck(record.backup, record.set_id, name, cluster, temporary, collection.points_count)
        refusal = version_refusal(collection.qdrant_version, target_version)
        if refusal:
            checks.append(replace(check, problem=f"cannot restore-test into cluster {cluster}: {refusal}"))
            continue
        if seed.collection_exists(temporary):  # never touch a collection this run did not make
            checks.append(replace(check, problem=f"a collection named {temporary} already exists on cluster {cluster}; run verify again"))
            continue
        params = RestoreCollection(
            restore=f"{TEMP_PREFIX}test",
            backup=record.backup,
            repository=backup.repository,
            set_id=record.set_id,
            source_collection=name,
            copied_in=collection.copied_in,
            target_cluster=cluster,
            target_collection=temporary,
            via=via,
        )
        try:
            output = restore_collection(context, params, f"verify.{record.backup}.{name}")
            points = int(output["journal"]["points"])
            check = replace(check, points=points)
            if points != collection.points_count:
                check = replace(check, problem=f"holds {points} points after the restore, the set recorded {collection.points_count}")
        except QbrError as error:
            check = replace(check, problem=f"restore into {temporary} on cluster {cluster} failed: {error}")
        except Exception as error:  # a bug must not leave the temporary collection behind, nor a traceback
            check = replace(check, problem=f"restore into {temporary} failed unexpectedly: {error.__class__.__name__}: {error}")
        finally:
            leftover = _drop(seed, temporary, cluster)
        if leftover:
            check = replace(check, problem=f"{check.problem + '; ' if check.problem else ''}{leftover}")
        checks.append(check)
    return checks


def _drop(seed: Any, collection: str, cluster: str) -> str | None:
    """Delete a temporary collection; a sentence when that failed (the user must delete it)."""
    try:
        if seed.collection_exists(collection):
            seed.delete_collection(collection)
        return None
    except QbrError as error:
        return f"the temporary collection {collection} could not be deleted from cluster {cluster} ({error}); delete it by hand"

