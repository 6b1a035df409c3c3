"""`qbr verify`: are the stored backups still whole, and do they restore?

Three depths, each a superset of the one before:
- every archive a set names is re-read from the repository, streamed, and its size and sha256
  compared with the set record (each distinct archive is read once, however many sets share it);
- `--deep` also walks the archive as a tar in the same single pass and checks it has the shape of
  a Qdrant snapshot, and counts each shard's points with a point counter: Qdrant's own engine
  (`qdrant-edge-py`, optional) by default; without one the points are left uncounted, and said so;
- `--restore-test CLUSTER` restores each backup's newest set into temporary collections on a
  cluster, compares exact points counts, and always deletes them again.

One concern a module: `scan` reads archives, `engine` counts points (PointCounter, chosen by
QBR_DEEP_ENGINE), `judge` measures scans against set records (pure), `run` orchestrates,
`restore_test` restores and counts, `report` holds the data they pass; qbr.render.verify renders.
"""

from qbr.render.verify import render_verify
from qbr.verify.engine import ENGINE_ENV, ENGINE_MODULE, PointCounter, QdrantEdgeCounter, choose_counter, load_engine
from qbr.verify.judge import archive_problems, check_sets, missing_entries, points_problems, uncounted
from qbr.verify.report import ArchiveScan, Finding, RestoreCheck, SetCheck, ShardScan, VerifyReport
from qbr.verify.restore_test import TEMP_PREFIX, restore_test
from qbr.verify.run import verify
from qbr.verify.scan import READ_CHUNK, scan_archive, scan_stream

__all__ = [
    "ENGINE_ENV",
    "ENGINE_MODULE",
    "READ_CHUNK",
    "TEMP_PREFIX",
    "ArchiveScan",
    "Finding",
    "PointCounter",
    "QdrantEdgeCounter",
    "RestoreCheck",
    "SetCheck",
    "ShardScan",
    "VerifyReport",
    "archive_problems",
    "check_sets",
    "choose_counter",
    "load_engine",
    "missing_entries",
    "points_problems",
    "render_verify",
    "restore_test",
    "scan_archive",
    "scan_stream",
    "uncounted",
    "verify",
]
