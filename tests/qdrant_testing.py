"""Calls only the tests make (writing points, reading them back, full-storage snapshots...):
kept out of qbr's client, which carries only what qbr itself calls."""

from __future__ import annotations

from typing import Any, ContextManager, Iterator

from qbr.qdrant import QdrantClient as _QbrClient
from qbr.qdrant import SnapshotInfo, SnapshotStream
from qbr.qdrant.shapes import path_segment, query_flag


class TestingClient(_QbrClient):
    """qbr's QdrantClient plus the calls tests use to build and inspect a world."""

    def for_node(self, url: str) -> TestingClient:
        """A client for another node of the same cluster, with the same key and settings."""
        return TestingClient(
            url,
            self._api_key,
            cluster=self.cluster,
            timeout=self.timeout,
            snapshot_timeout=self.snapshot_timeout,
            retries=self.retries,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            transport=self._transport,
            sleep=self._sleep,
        )

    def collection_aliases(self, collection: str) -> list[str]:
        path = f"/collections/{path_segment(collection)}/aliases"
        pairs = self._aliases(path, f"list the aliases of collection `{collection}`")
        return [alias for alias, _ in pairs]

    def upsert_points(self, collection: str, points: list[dict], wait: bool = True) -> None:
        self._call(
            "PUT", f"/collections/{path_segment(collection)}/points", what=f"upsert points into collection `{collection}`",
            params={"wait": query_flag(wait)}, json_body={"points": list(points)},
        )

    def scroll_points(self, collection: str, *, batch: int = 256, with_vectors: bool = True) -> Iterator[dict]:
        """Every point of the collection, page by page, with payload (and vectors)."""
        path = f"/collections/{path_segment(collection)}/points/scroll"
        offset: Any = None
        while True:
            body: dict[str, Any] = {"limit": batch, "with_payload": True, "with_vector": with_vectors}
            if offset is not None:
                body["offset"] = offset
            result = self._call("POST", path, what=f"scroll the points of collection `{collection}`", json_body=body)
            with self._parsing("POST", path):
                points = result["points"]
                if not isinstance(points, list):
                    raise ValueError("points is not a list")
                offset = result.get("next_page_offset")
            yield from points
            if offset is None:
                return

    def create_full_snapshot(self, *, wait: bool = True) -> SnapshotInfo | None:
        result = self._call("POST", "/snapshots", what="create a full snapshot", params={"wait": query_flag(wait)},
                            snapshot=True)
        if result is None:
            return None
        with self._parsing("POST", "/snapshots"):
            return SnapshotInfo.from_api(result)

    def list_full_snapshots(self) -> list[SnapshotInfo]:
        result = self._call("GET", "/snapshots", what="list full snapshots")
        return self._snapshot_list("GET", "/snapshots", result)

    def download_full_snapshot(self, name: str, *, chunk_size: int = 1 << 20) -> ContextManager[SnapshotStream]:
        return self._download(f"/snapshots/{path_segment(name)}", f"download full snapshot `{name}`", chunk_size)

    def delete_full_snapshot(self, name: str, *, wait: bool = True) -> None:
        self._call("DELETE", f"/snapshots/{path_segment(name)}", what=f"delete full snapshot `{name}`",
                   params={"wait": query_flag(wait)})

