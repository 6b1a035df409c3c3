"""Emulator nodes and clusters: every node serves REST on the same port at its own loopback address."""

from __future__ import annotations

import copy
import errno
import random
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from tests.emulator.accounting import Traffic, TrafficLog
from tests.emulator.activity import Activity
from tests.emulator.edge_store import ENGINES, EdgeEngine
from tests.emulator.faults import Faults
from tests.emulator.s3storage import S3Settings, S3Store, bucket_objects, make_client, unfinished_uploads
from tests.emulator.server import NodeHTTPServer, serve_in_thread
from tests.emulator.snapshots import SnapshotStore
from tests.emulator.state import ClusterState

P2P_PORT = 6335


class EmulatorNode:
    """One Qdrant peer: its address, peer id, snapshot storage, faults, request log and activity.

    Test knobs: `snapshot_latency` (seconds between the point-in-time view and the finished
    snapshot), `recover_latency` (seconds a recover keeps the node's replicas recovering; a list
    gives one value per recover), `during_snapshot(cb)`, `during_recover(cb)`.
    """

    def __init__(self, cluster: EmulatorCluster, index: int, peer_id: int, data_dir: Path):
        self.cluster = cluster
        self.index = index
        self.host = f"127.0.0.{index + 1}"
        self.port = 0
        self.peer_id = peer_id
        self.state: ClusterState = None  # type: ignore[assignment]  # set by the cluster
        self.faults = Faults()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.traffic = TrafficLog()  # the same requests with route, status and body bytes
        self.activity = Activity()
        self.telemetry_id = str(uuid.uuid4())
        self._recovery_locks: dict[tuple[str, int], threading.Lock] = {}
        self.errors: list[str] = []  # tracebacks of emulator bugs and of failed background work
        self.snapshots_dir = data_dir / "snapshots"
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        self.snapshots = SnapshotStore(self, self.snapshots_dir, data_dir / "tmp")
        self._server: NodeHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._background: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    @property
    def s3(self) -> S3Store | None:
        """This node's server-side S3 storage (None: snapshots on local disk): `fail_uploads(...)`,
        `uploaded_bytes`, `downloaded_bytes`, `calls`."""
        return self.snapshots.s3

    def __repr__(self) -> str:
        return f"EmulatorNode({self.url}, peer_id={self.peer_id}, up={self.is_up})"

    # -- lifecycle --------------------------------------------------------------------------
    def bind(self, port: int) -> None:
        self._server = NodeHTTPServer(self, (self.host, port))
        self.port = self._server.server_address[1]

    def serve(self) -> None:
        assert self._server is not None
        serve_in_thread(self._server, f"emulator-node-{self.index}")

    def down(self) -> None:
        """Refuse connections: close the listening socket and every open connection."""
        with self._lock:
            server, self._server = self._server, None
            connections = list(self._connections)
        if server is not None:
            server.halt()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def up(self) -> None:
        """Serve again at the same address and port."""
        if self._server is None:
            self.bind(self.port)
            self.serve()

    # -- bookkeeping used by the server ----------------------------------------------------
    def track_connection(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def record_request(self, method: str, path: str, query: dict[str, str], traffic: Traffic | None = None) -> Traffic:
        traffic = traffic or Traffic(method, path, dict(query))
        with self._lock:
            self.requests.append((method, path, dict(query)))
        return self.traffic.add(traffic)

    def shard_recovery_lock(self, collection: str, shard_id: int) -> threading.Lock:
        with self._lock:
            return self._recovery_locks.setdefault((collection, shard_id), threading.Lock())

    # -- test knobs -------------------------------------------------------------------------
    @property
    def snapshot_latency(self) -> float:
        return self.activity.snapshot_latency

    @snapshot_latency.setter
    def snapshot_latency(self, seconds: float) -> None:
        self.activity.snapshot_latency = float(seconds)

    @property
    def recover_latency(self) -> float | list[float]:
        return self.activity.recover_latency

    @recover_latency.setter
    def recover_latency(self, seconds: float | list[float]) -> None:
        self.activity.recover_latency = list(seconds) if isinstance(seconds, (list, tuple)) else float(seconds)

    def during_snapshot(self, callback: Callable[..., Any], times: int | None = 1) -> None:
        """Call `callback(node, collection, shard_id)` once the next snapshot made here has taken its
        point-in-time view and before it is written and answered (shard_id None: collection snapshot)."""
        self.activity.during_snapshot.add(callback, times)

    def during_recover(self, callback: Callable[..., Any], times: int | None = 1) -> None:
        """Call `callback(node, collection, shard_id)` while the next recover here runs: replicas are
        recovering and the old data is still in place (shard_id None: collection recover)."""
        self.activity.during_recover.add(callback, times)

    # -- request accounting -----------------------------------------------------------------
    def count_requests(self, method: str | None = None, route: str | None = None, path: str | None = None) -> int:
        """Requests matching a method, an exact route template (accounting.ROUTE_*) and a path regex."""
        return self.traffic.count(method, route, path)

    def route_counts(self) -> Counter:
        """{(method, route template): requests} since the start (or reset_traffic)."""
        return self.traffic.by_route()

    def download_bytes(self, **filters) -> int:
        """Snapshot body bytes this node served with status 200 (collection, shard, stream, full)."""
        return self.traffic.downloaded(**filters)

    def upload_bytes(self, **filters) -> int:
        """Request body bytes this node received on snapshot uploads."""
        return self.traffic.uploaded(**filters)

    def reset_traffic(self) -> None:
        self.traffic.clear()

    def run_background(self, work: Callable[[], Any]) -> None:
        """Run accepted (wait=false) work; failures are only recorded, as Qdrant only logs them."""

        def target() -> None:
            try:
                work()
            except Exception as err:  # noqa: BLE001 - background failures are data for tests
                self.errors.append(f"background task failed: {getattr(err, 'message', err)}")

        thread = threading.Thread(target=target, name=f"emulator-node-{self.index}-task", daemon=True)
        with self._lock:
            self._background = [t for t in self._background if t.is_alive()] + [thread]
        thread.start()

    def wait_background(self, timeout: float = 30.0) -> None:
        with self._lock:
            threads = list(self._background)
        for thread in threads:
            thread.join(timeout)


class EmulatorCluster:
    """A Qdrant cluster of `nodes` emulator nodes (a context manager).

    distributed (default: nodes > 1) shares one consensus state among the nodes, with shards
    placed on them; otherwise each node is an independent single-node Qdrant (standalone mode,
    where shard keys cannot be created: 405, as in Qdrant).

    recover_recreates_shard_keys: a collection recover that creates a custom-sharded collection
    also recreates its shard keys (the proposed fix of qdrant/qdrant#10135). Off by default, as
    in Qdrant 1.19.0: the collection comes back without shard keys and without points.

    snapshots_s3: server-side S3 snapshot storage shared by every node (s3storage.py), e.g.
    {"endpoint_url": ..., "bucket": ..., "prefix": "snapshots", "region": "us-east-1", "part_size": ...};
    credentials from the AWS environment unless "access_key"/"secret_key" are given.
    snapshots_s3_broken: declared S3, but the nodes keep snapshots on local disk (the config
    silently ignored, qdrant/qdrant#5026). url_recovery=False: `service.enable_snapshot_url_recovery:
    false`, http(s) recovery answers 403 (Qdrant >= 1.18.0).

    engine: "python" (default: points in Python dicts, archives of JSON lines) or "edge": each
    shard is an EdgeShard of qdrant-edge-py and snapshots hold real segment files in Qdrant's
    layout (edge_store.py says what that mode does not support).
    """

    def __init__(self, nodes: int = 3, api_key: str | None = None, read_only_api_key: str | None = None,
                 version: str = "1.19.0", port: int = 0, data_dir: str | Path | None = None,
                 distributed: bool | None = None, recover_recreates_shard_keys: bool = False,
                 snapshots_s3: dict | S3Settings | None = None, snapshots_s3_broken: bool = False,
                 url_recovery: bool = True, engine: str = "python"):
        if nodes < 1 or nodes > 250:
            raise ValueError("nodes must be between 1 and 250")
        if snapshots_s3_broken and not snapshots_s3:
            raise ValueError("snapshots_s3_broken needs snapshots_s3")
        self.snapshots_s3 = S3Settings.from_config(snapshots_s3) if snapshots_s3 else None
        self.snapshots_s3_broken = snapshots_s3_broken
        self.url_recovery = url_recovery
        self.s3_client = make_client(self.snapshots_s3) if self.snapshots_s3 else None
        self.api_key = api_key
        self.read_only_api_key = read_only_api_key
        self.version = version
        self.recover_recreates_shard_keys = recover_recreates_shard_keys
        self.started_at = time.time()
        self.port = port
        self.distributed = nodes > 1 if distributed is None else distributed
        self._own_data_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="qdrant-emulator-")) if data_dir is None else Path(data_dir)
        rng = random.Random(uuid.uuid4().int)
        peer_ids = [rng.randrange(1, 2**63) for _ in range(nodes)]
        self.nodes = [EmulatorNode(self, i, peer_ids[i], self.data_dir / f"node-{i}") for i in range(nodes)]
        if self.snapshots_s3 is not None and not snapshots_s3_broken:
            for node in self.nodes:
                node.snapshots.s3 = S3Store(self.snapshots_s3, self.s3_client)
        if self.distributed:
            shared = ClusterState(list(range(nodes)), dict(enumerate(peer_ids)), True)
            for node in self.nodes:
                node.state = shared
        else:
            for node in self.nodes:
                node.state = ClusterState([node.index], {node.index: node.peer_id}, False)
        self.engine = engine
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
        if engine == "edge":
            for state in self.states():
                state.engine = EdgeEngine(self.data_dir / "edge" / str(state.node_indexes[0]))
        self.started = False

    def states(self) -> list[ClusterState]:
        """Each consensus state once (one for a distributed cluster, one per standalone node)."""
        return list({id(node.state): node.state for node in self.nodes}.values())

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> EmulatorCluster:
        if self.started:
            return self
        for attempt in range(100):
            try:
                self._bind_all(self.port)
                break
            except OSError as err:
                for node in self.nodes:
                    node.down()
                if self.port or err.errno not in (errno.EADDRINUSE, errno.EACCES) or attempt == 99:
                    raise
        for node in self.nodes:
            node.serve()
        self.started = True
        return self

    def _bind_all(self, port: int) -> None:
        first = self.nodes[0]
        first.bind(port)
        for node in self.nodes[1:]:
            node.bind(first.port)

    def stop(self) -> None:
        for node in self.nodes:
            node.down()
        for node in self.nodes:
            node.wait_background(timeout=10)
        self.started = False
        for state in self.states():
            if state.engine is not None:
                with state.lock:
                    state.engine.close(list(state.collections.values()))
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmulatorCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- views ------------------------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def p2p_uri(self, index: int) -> str:
        return f"http://{self.nodes[index].host}:{P2P_PORT}/"

    def points(self, collection: str, node: int = 0) -> dict[Any, dict]:
        """Every point of the collection as `node` reads it: {id: {"vector": ..., "payload": ...}}."""
        state = self.nodes[node].state
        found = state.resolve(collection)
        with state.lock:
            return {pid: copy.deepcopy(data) for shard in found.shards.values()
                    for pid, data in shard.read_points(node).items()}

    def shard_points(self, collection: str, shard_id: int, node: int | None = None) -> dict[Any, dict]:
        """What one shard holds: the replica on `node`, or (None) the data of the in-sync replicas."""
        state = self.nodes[node or 0].state
        shard = state.resolve(collection).shards[shard_id]
        with state.lock:
            return copy.deepcopy(shard.points if node is None else shard.points_on(node))

    def set_replica_state(self, collection: str, shard_id: int, node: int, state: str,
                          points: dict | list | None = None) -> None:
        """Set the replica of `shard_id` on node index `node` to a ReplicaState, as consensus would.

        Dead, Recovery, PartialSnapshot, ManualRecovery take no updates: the replica keeps the data
        it has now (stale later). Active re-syncs it. `points` ({id: {"vector", "payload"}} or a
        list of point dicts) gives the replica data of its own, e.g. a partial copy."""
        self.nodes[node].state.set_replica_state(collection, shard_id, node, state, points)

    def replica_states(self, collection: str, node: int = 0) -> dict[int, dict[int, str]]:
        """{shard_id: {node index: state}} as consensus (of `node`'s cluster) sees it."""
        state = self.nodes[node].state
        found = state.resolve(collection)
        with state.lock:
            return {sid: {n: s.state_of(n) for n in s.replicas} for sid, s in sorted(found.shards.items())}

    def shard_keys(self, collection: str, node: int = 0) -> dict[Any, list[int]]:
        """{shard key: [shard ids]} of a custom-sharded collection."""
        state = self.nodes[node].state
        with state.lock:
            return dict(state.resolve(collection).key_mapping())

    def payload_indexes(self, collection: str, node: int = 0) -> dict[str, Any]:
        """The payload indexes consensus knows ({field: schema}), what payload_index.json carries;
        GET /collections shows what the shards' segments index instead, which can differ."""
        state = self.nodes[node].state
        with state.lock:
            return copy.deepcopy(state.resolve(collection).payload_schema)

    def collection_names(self, node: int = 0) -> list[str]:
        state = self.nodes[node].state
        with state.lock:
            return sorted(state.collections)

    def add_synthetic_collection(self, name: str, snapshot_size: int, node: int = 0) -> None:
        """A one-shard collection on `node` whose snapshots are generated tars of about `snapshot_size` bytes."""
        state = self.nodes[node].state
        collection = state.create_collection(name, {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1},
                                             synthetic_size=int(snapshot_size), replicas_on=[node])
        collection.config["uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"qdrant-emulator/{name}"))

    def s3_objects(self) -> dict[str, int]:
        """{key: size} of every object under the snapshots prefix in the S3 bucket (broken mode too)."""
        return bucket_objects(self.s3_client, self.snapshots_s3)

    def s3_unfinished_uploads(self) -> list[str]:
        """Keys of multipart uploads under the prefix that were never completed nor aborted."""
        return unfinished_uploads(self.s3_client, self.snapshots_s3)

    def wait_background(self, timeout: float = 30.0) -> None:
        """Wait for accepted (wait=false) work on every node."""
        for node in self.nodes:
            node.wait_background(timeout)

    # -- hooks and accounting over every node ----------------------------------------------
    def during_snapshot(self, callback: Callable[..., Any], times: int | None = 1) -> None:
        """`EmulatorNode.during_snapshot` on every node (`times` counts per node)."""
        for node in self.nodes:
            node.during_snapshot(callback, times)

    def during_recover(self, callback: Callable[..., Any], times: int | None = 1) -> None:
        for node in self.nodes:
            node.during_recover(callback, times)

    def count_requests(self, method: str | None = None, route: str | None = None, path: str | None = None) -> int:
        return sum(node.count_requests(method, route, path) for node in self.nodes)

    def route_counts(self) -> Counter:
        total: Counter = Counter()
        for node in self.nodes:
            total.update(node.route_counts())
        return total

    def download_bytes(self, **filters) -> int:
        return sum(node.download_bytes(**filters) for node in self.nodes)

    def upload_bytes(self, **filters) -> int:
        return sum(node.upload_bytes(**filters) for node in self.nodes)
