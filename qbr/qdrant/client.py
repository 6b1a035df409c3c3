"""The calls qbr makes to one Qdrant node, on top of the transport (see the package docstring)."""

from __future__ import annotations

import secrets
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, ContextManager, Iterable, Iterator

from qbr.errors import QdrantError
from qbr.qdrant.shapes import NodeRef, SnapshotInfo, create_body_from_config, path_segment, query_flag, rest_urls
from qbr.qdrant.streams import SnapshotStream, multipart_body, multipart_epilogue, multipart_preamble
from qbr.qdrant.transport import Transport

SNAPSHOT_PRIORITIES = ("no_sync", "snapshot", "replica")


class QdrantClient(Transport):
    """A REST client for one Qdrant node: the calls qbr makes, nothing more."""

    # ---------------------------------------------------------------- metadata

    def root(self) -> dict:
        """`GET /`: title, version, commit (bare JSON, not enveloped)."""
        data = self._call("GET", "/", what="read the server version", envelope=False)
        if not isinstance(data, dict):
            raise self._malformed("GET", "/", "not a JSON object")
        return data

    def version(self) -> str:
        version = self.root().get("version")
        if not isinstance(version, str) or not version:
            raise self._malformed("GET", "/", "no version")
        return version

    def cluster_status(self) -> dict:
        return self._call_dict("GET", "/cluster", what="read the cluster status")

    def nodes(self, rest_port: int | None = None) -> list[NodeRef]:
        """Every node of this node's cluster, as REST URLs (just this one when single-node)."""
        return rest_urls(self.cluster_status(), self.url, rest_port, self._where)

    def collection_cluster(self, collection: str) -> dict:
        return self._call_dict(
            "GET", f"/collections/{path_segment(collection)}/cluster",
            what=f"read the shard layout of collection `{collection}`",
        )

    # ---------------------------------------------------------------- collections

    def list_collections(self) -> list[str]:
        path = "/collections"
        result = self._call("GET", path, what="list collections")
        with self._parsing("GET", path):
            return sorted(str(item["name"]) for item in result["collections"])

    def collection_info(self, collection: str) -> dict:
        return self._call_dict("GET", f"/collections/{path_segment(collection)}", what=f"read collection `{collection}`")

    def collection_exists(self, collection: str) -> bool:
        path = f"/collections/{path_segment(collection)}/exists"
        result = self._call("GET", path, what=f"check whether collection `{collection}` exists")
        with self._parsing("GET", path):
            exists = result["exists"]
            if not isinstance(exists, bool):
                raise ValueError("exists is not a bool")
            return exists

    def create_collection(
        self, collection: str, config: dict, *, shard_number: int | None = None, replication_factor: int | None = None
    ) -> None:
        """Create a collection shaped like `config` (a `CollectionInfo.config`)."""
        body = create_body_from_config(config, shard_number=shard_number, replication_factor=replication_factor)
        self._call("PUT", f"/collections/{path_segment(collection)}", what=f"create collection `{collection}`", json_body=body)

    def create_shard_key(self, collection: str, key: Any, *, shards_number: int, replication_factor: int | None = None) -> None:
        """Create the shards of one shard key (custom sharding): `PUT /collections/{c}/shards`."""
        body: dict[str, Any] = {"shard_key": key, "shards_number": shards_number}
        if replication_factor is not None:
            body["replication_factor"] = replication_factor
        self._call("PUT", f"/collections/{path_segment(collection)}/shards",
                   what=f"create shard key {key!r} of collection `{collection}`", json_body=body)

    def create_payload_index(self, collection: str, field_name: str, field_schema: Any) -> None:
        """Create (or confirm) a payload index: `PUT /collections/{c}/index?wait=true`."""
        self._call("PUT", f"/collections/{path_segment(collection)}/index",
                   what=f"index payload field `{field_name}` of collection `{collection}`",
                   params={"wait": "true"}, json_body={"field_name": field_name, "field_schema": field_schema})

    def delete_collection(self, collection: str) -> None:
        self._call("DELETE", f"/collections/{path_segment(collection)}", what=f"delete collection `{collection}`")

    # ---------------------------------------------------------------- aliases

    def list_aliases(self) -> list[tuple[str, str]]:
        """Every alias of the node as (alias, collection), sorted."""
        return self._aliases("/aliases", "list aliases")

    def update_aliases(self, actions: list[dict]) -> None:
        """Apply alias actions in order (create_alias re-points an existing alias)."""
        self._call("POST", "/collections/aliases", what="update aliases", json_body={"actions": list(actions)})

    def _aliases(self, path: str, what: str) -> list[tuple[str, str]]:
        result = self._call("GET", path, what=what)
        with self._parsing("GET", path):
            return sorted((str(a["alias_name"]), str(a["collection_name"])) for a in result["aliases"])

    # ---------------------------------------------------------------- points

    def count_points(self, collection: str, exact: bool = True) -> int:
        path = f"/collections/{path_segment(collection)}/points/count"
        result = self._call("POST", path, what=f"count the points of collection `{collection}`",
                            json_body={"exact": exact})
        with self._parsing("POST", path):
            count = result["count"]
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError("count is not an integer")
            return count

    def scroll_page(
        self, collection: str, *, offset: Any = None, limit: int = 256, with_vector: bool = True,
        with_payload: bool = True, shard_key: Any = None,
    ) -> tuple[list[dict], Any]:
        """One page of points in id order from `offset` (None: the first): (points, the next page's
        offset, None after the last). `shard_key` reads one shard key's shards only."""
        path = f"/collections/{path_segment(collection)}/points/scroll"
        body: dict[str, Any] = {"limit": limit, "with_payload": with_payload, "with_vector": with_vector}
        if offset is not None:
            body["offset"] = offset
        if shard_key is not None:
            body["shard_key"] = shard_key
        result = self._call("POST", path, what=f"scroll the points of collection `{collection}`", json_body=body)
        with self._parsing("POST", path):
            points = result["points"]
            if not isinstance(points, list) or not all(isinstance(p, dict) and "id" in p for p in points):
                raise ValueError("points is not a list of records")
            return points, result.get("next_page_offset")

    def upsert_batch(self, collection: str, points: list[dict], *, shard_key: Any = None, wait: bool = True) -> None:
        """Insert or replace whole points (id, vector, payload); repeating it is harmless, so it is
        retried like a read. `shard_key`: where they go in a custom-sharded collection."""
        body: dict[str, Any] = {"points": points}
        if shard_key is not None:
            body["shard_key"] = shard_key
        self._call("PUT", f"/collections/{path_segment(collection)}/points",
                   what=f"upsert {len(points)} points into collection `{collection}`",
                   params={"wait": query_flag(wait)}, json_body=body)

    def retrieve_points(self, collection: str, ids: list[Any], *, with_vector: bool = True, with_payload: bool = True) -> list[dict]:
        """The points of these ids that exist (`POST /collections/{c}/points`)."""
        path = f"/collections/{path_segment(collection)}/points"
        result = self._call("POST", path, what=f"read {len(ids)} points of collection `{collection}`",
                            json_body={"ids": list(ids), "with_vector": with_vector, "with_payload": with_payload})
        with self._parsing("POST", path):
            if not isinstance(result, list):
                raise ValueError("not a list")
            return [dict(p) for p in result]

    def update_collection(self, collection: str, body: dict) -> None:
        """Change a collection's parameters in place (`PATCH /collections/{c}`, Qdrant's UpdateCollection)."""
        self._call("PATCH", f"/collections/{path_segment(collection)}",
                   what=f"update the parameters of collection `{collection}`", json_body=body)

    # ---------------------------------------------------------------- collection and shard snapshots

    def create_snapshot(
        self, collection: str, *, shard_id: int | None = None, wait: bool = True
    ) -> SnapshotInfo | None:
        """Make a snapshot on this node (of its local shards); None when accepted with wait=False."""
        path = self._snapshots_path(collection, shard_id)
        result = self._call(
            "POST", path, what=f"create a snapshot of {self._subject(collection, shard_id)}",
            params={"wait": query_flag(wait)}, snapshot=True, once=True,
        )
        if result is None:
            return None
        with self._parsing("POST", path):
            return SnapshotInfo.from_api(result)

    def snapshot_activity(self, collection: str) -> dict[str, int] | None:
        """This node's snapshot counters for a collection (`GET /telemetry`, details_level 2):
        running_snapshots, running_snapshot_recovery, total_snapshot_creations; None when the
        node will not tell (no telemetry rights, an older Qdrant)."""
        try:
            result = self._call("GET", "/telemetry", what="read telemetry", params={"details_level": "2"})
        except QdrantError:
            return None
        entries = (((result or {}).get("collections") or {}).get("snapshots")) or []
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == collection:
                return {k: int(entry.get(k) or 0) for k in ("running_snapshots", "running_snapshot_recovery", "total_snapshot_creations")}
        return {"running_snapshots": 0, "running_snapshot_recovery": 0, "total_snapshot_creations": 0}

    def list_snapshots(self, collection: str, *, shard_id: int | None = None) -> list[SnapshotInfo]:
        path = self._snapshots_path(collection, shard_id)
        result = self._call("GET", path, what=f"list the snapshots of {self._subject(collection, shard_id)}")
        return self._snapshot_list("GET", path, result)

    def download_snapshot(
        self, collection: str, name: str, *, shard_id: int | None = None, chunk_size: int = 1 << 20
    ) -> ContextManager[SnapshotStream]:
        path = f"{self._snapshots_path(collection, shard_id)}/{path_segment(name)}"
        return self._download(path, f"download snapshot `{name}` of {self._subject(collection, shard_id)}", chunk_size)

    def delete_snapshot(
        self, collection: str, name: str, *, shard_id: int | None = None, wait: bool = True, missing_ok: bool = False
    ) -> None:
        """Delete a snapshot; with missing_ok, one already gone (404) is not an error."""
        path = f"{self._snapshots_path(collection, shard_id)}/{path_segment(name)}"
        try:
            self._call(
                "DELETE", path, what=f"delete snapshot `{name}` of {self._subject(collection, shard_id)}",
                params={"wait": query_flag(wait)},
            )
        except QdrantError as error:
            if not (missing_ok and error.status == 404):
                raise

    def upload_snapshot(
        self,
        collection: str,
        open_archive: Callable[[], ContextManager[Iterable[bytes]]],
        *,
        filename: str,
        size: int | None = None,
        shard_id: int | None = None,
        priority: str = "snapshot",
        checksum: str | None = None,
        wait: bool = True,
    ) -> None:
        """Upload an archive and recover from it, streaming a multipart body built on the fly.

        `open_archive` is called once per attempt, so a retry re-reads the source from the start.
        Qdrant keeps the uploaded file in the collection's snapshot folder afterwards.
        """
        self._check_priority(priority)
        path = f"{self._snapshots_path(collection, shard_id)}/upload"
        what = f"upload snapshot `{filename}` to {self._subject(collection, shard_id)}"
        params = {"wait": query_flag(wait), "priority": priority}
        if checksum is not None:
            params["checksum"] = checksum
        boundary = "qbr-" + secrets.token_hex(16)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if size is not None:
            length = len(multipart_preamble(boundary, filename)) + size + len(multipart_epilogue(boundary))
            headers["Content-Length"] = str(length)

        def mismatch(sent: int) -> Exception:
            return QdrantError(
                f"Could not {what} on {self._where}: the archive gave {sent} bytes or more but its recorded size "
                f"is {size}; verify the archive in the repository.",
                node=self.node,
            )

        def body(stack: ExitStack) -> Iterator[bytes]:
            chunks = stack.enter_context(open_archive())
            return multipart_body(boundary, filename, chunks, size, mismatch)

        response = self._send("POST", path, what=what, params=params, headers=headers, body=body, snapshot=True, once=True)
        self._result(response, "POST", path, envelope=True)

    def recover_snapshot(
        self,
        collection: str,
        location: str,
        *,
        shard_id: int | None = None,
        priority: str = "snapshot",
        checksum: str | None = None,
        api_key: str | None = None,
        wait: bool = True,
    ) -> None:
        """Have the node recover from `location` (an http(s) URL, possibly presigned, or file://)."""
        self._check_priority(priority)
        path = f"{self._snapshots_path(collection, shard_id)}/recover"
        body: dict[str, Any] = {"location": location, "priority": priority}
        if checksum is not None:
            body["checksum"] = checksum
        if api_key is not None:
            body["api_key"] = api_key
        # A URL may be presigned: it is "the archive URL" in every message. A bare name (shard
        # recovery from the node's own snapshot folder) is no secret and helps the reader.
        hidden: list[tuple[str, str]] = []
        if "://" in location:
            source = "the archive URL"
            hidden += [(location, source), (location.split("?", 1)[0], source)]
        else:
            source = f"snapshot `{location}`"
        if api_key:
            hidden.append((api_key, "***"))
        self._call(
            "PUT", path, what=f"recover {self._subject(collection, shard_id)} from {source}",
            params={"wait": query_flag(wait)}, json_body=body, snapshot=True, hidden=hidden, once=True,
        )

    # ---------------------------------------------------------------- internals: paths and shapes

    @staticmethod
    def _snapshots_path(collection: str, shard_id: int | None) -> str:
        if shard_id is None:
            return f"/collections/{path_segment(collection)}/snapshots"
        return f"/collections/{path_segment(collection)}/shards/{int(shard_id)}/snapshots"

    @staticmethod
    def _subject(collection: str, shard_id: int | None) -> str:
        if shard_id is None:
            return f"collection `{collection}`"
        return f"shard {shard_id} of collection `{collection}`"

    def _check_priority(self, priority: str) -> None:
        if priority not in SNAPSHOT_PRIORITIES:
            raise QdrantError(
                f"Snapshot priority {priority!r} for {self._where} is not one Qdrant knows; "
                f"use one of {', '.join(SNAPSHOT_PRIORITIES)}.",
                node=self.node,
            )

    def _snapshot_list(self, method: str, path: str, result: Any) -> list[SnapshotInfo]:
        with self._parsing(method, path):
            if not isinstance(result, list):
                raise ValueError("not a list")
            return [SnapshotInfo.from_api(item) for item in result]

    @contextmanager
    def _parsing(self, method: str, path: str) -> Iterator[None]:
        """Turn a result of the wrong shape into a 'malformed response' error."""
        try:
            yield
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(method, path, f"unexpected result shape: {type(exc).__name__}") from None

