"""Test-only fault points: named instants at which a test can have qbr killed, to prove crash safety.

qbr calls `reached("<point>")` at the instants that matter for crash safety (an action journaled,
a snapshot made, a part of an archive stored, a set record written, a state write...). A test
sets an environment variable before starting `qbr apply` as a subprocess, and qbr SIGKILLs
itself at the chosen instant: no cleanup, no finally blocks, exactly like `kill -9` or a lost
machine. tests/e2e/test_crash_safety.py and benchmarks/kill_sweep.py use it.

    QBR_TEST_KILL_AT=<point>:<n>[:<delay>]   SIGKILL this process the n-th time <point> is reached
                                             (after <delay> seconds, from a timer, so the kill
                                             lands in the middle of whatever comes next).
    QBR_TEST_FAULTPOINTS_LOG=<file>          append every point reached to <file>, one a line,
                                             to count how often each occurs in a run.

In production neither variable is set: the environment is read once, at import, and `reached`
costs one global check. Points reached from the lock's lease-renewal thread are not counted:
their number depends on timing, and a sweep needs "the n-th occurrence" to name the same instant
in every run.
"""

from __future__ import annotations

import os
import signal
import threading

KILL_ENV = "QBR_TEST_KILL_AT"
LOG_ENV = "QBR_TEST_FAULTPOINTS_LOG"
_UNCOUNTED_THREADS = ("qbr-lock-lease",)

#: Every point qbr reaches, and the instant it names (the sweep and the docs read this).
POINTS: dict[str, str] = {
    "action.journaled": "an action finished and the state file holds its journal entry",
    "snapshot.before_create": "the state records a snapshot being made on a node; the create request is not yet sent",
    "snapshot.created": "Qdrant made a snapshot on a node; qbr has not yet recorded its name in the state",
    "snapshot.recorded": "the node-local snapshot's name is in the state file; its download has not started",
    "transfer.chunk": "a chunk of a snapshot passed the sha256 verifier on its way into the repository",
    "s3.part_uploaded": "one part of an S3 multipart upload is stored; the upload is not completed",
    "local.chunk_written": "a chunk of a local write (archive, set record, state) is in its temp file",
    "local.before_rename": "a local write's temp file is complete and fsynced; it is not yet renamed into place",
    "snapshot.stored": "an archive is whole in the repository; the node-local snapshot is not yet deleted",
    "snapshot.deleted": "the node-local snapshot is deleted; the state still lists it",
    "set.before_write": "every archive of a set is stored; its set record is not yet written",
    "set.written": "a set record is written; the action is not yet journaled",
    "set.before_delete": "retention is about to delete a set record",
    "set.deleted": "retention deleted a set record; the action is not yet journaled",
    "archive.before_delete": "garbage collection is about to delete an unreferenced archive",
    "archive.deleted": "garbage collection deleted an archive; the action is not yet journaled",
    "node_snapshot.deleted": "a leftover node-local snapshot was deleted; the state still lists it",
    "state.before_write": "the state file is about to be written",
    "state.written": "the state file was written",
    "restore.collection_created": "a restore created its target collection; no archive is recovered yet",
    "restore.before_recover": "a restore is about to recover one archive onto a node (URL or upload)",
    "restore.upload_chunk": "a chunk of an archive was read from the repository for an upload to Qdrant",
    "restore.recovered": "a node recovered one archive; the uploaded copy (if any) is not yet deleted",
    "restore.before_record": "a restored collection has all its points; its provenance is not yet saved",
    "restore.copy_batch": "a batch of a logical copy is upserted into the target and its scroll position journaled in the state",
    "aliases.before_update": "a restore's alias update is about to be sent",
    "aliases.updated": "a restore's aliases were updated; the action is not yet journaled",
    "chunks.stored": "a dedup backup stored one new chunk; the index does not list it yet and no chunk list names it",
    "chunks.indexed": "a batch of new chunks is confirmed in the chunk index; the archive's chunk list is not written yet",
    "chunks.list_written": "an archive's chunk list is written (the archive exists); its pending marker is not yet removed",
    "sweep.index_written": "a chunk sweep wrote the index without the chunks it deletes; none is deleted yet",
    "sweep.chunk_deleted": "a chunk sweep deleted one unreferenced chunk",
    "adopt.copied": "one adopted snapshot was copied into the repository; its set record is not yet written",
}


def _parse(text: str) -> dict[str, tuple[int, float]]:
    armed: dict[str, tuple[int, float]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) not in (2, 3) or not fields[1].isdigit() or int(fields[1]) < 1:
            raise ValueError(f"{KILL_ENV}: {item!r} is not <point>:<n>[:<delay seconds>]")
        armed[fields[0]] = (int(fields[1]), float(fields[2]) if len(fields) == 3 else 0.0)
    return armed


_ARMED = _parse(os.environ.get(KILL_ENV, ""))
_LOG = os.environ.get(LOG_ENV) or None
_ACTIVE = bool(_ARMED or _LOG)
_counts: dict[str, int] = {}
_lock = threading.Lock()


def reached(point: str) -> None:
    """Mark that qbr reached `point`; in a test run, maybe die here. Free in production."""
    if _ACTIVE:
        _hit(point)


def _hit(point: str) -> None:
    if threading.current_thread().name.startswith(_UNCOUNTED_THREADS):
        return
    with _lock:
        count = _counts[point] = _counts.get(point, 0) + 1
        if _LOG is not None:
            with open(_LOG, "a") as log:
                log.write(point + "\n")
    armed = _ARMED.get(point)
    if armed is None or count != armed[0]:
        return
    if armed[1] > 0:
        timer = threading.Timer(armed[1], _die)
        timer.daemon = True
        timer.start()
    else:
        _die()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
