"""Qdrant's REST API as qbr needs it: metadata, collections, aliases, points and snapshots.

One `QdrantClient` talks to one node. Everything that can go wrong comes back as a
`QdrantError` whose message is one sentence naming the node (without credentials), what
failed and what to do. Transient failures (connection errors, read timeouts, 429, 502,
503, 504) are retried with exponential backoff and jitter. Snapshot archives move as
streams in both directions, so memory stays flat whatever their size. Secrets (the API
key, `api_key` body fields, recovery locations that may be presigned URLs) never reach a
message.
"""

from qbr.qdrant.client import QdrantClient
from qbr.qdrant.shapes import NodeRef, SnapshotInfo, TransferInterrupted, create_body_from_config, rest_urls_from_cluster
from qbr.qdrant.streams import SnapshotStream

__all__ = [
    "NodeRef",
    "QdrantClient",
    "SnapshotInfo",
    "SnapshotStream",
    "TransferInterrupted",
    "create_body_from_config",
    "rest_urls_from_cluster",
]
